"""The streamed body is exactly `json.dumps` of the same request, for any media size."""

import base64
import io
import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.body import READ_CHUNK, MediaSizeMismatchError, encode_json_body
from shared.models import ChatRequest, parse, to_wire
from shared.sources import BytesSource


class TrickleStream(io.RawIOBase):
    """A stream that returns fewer bytes than asked, as network streams may."""

    def __init__(self, data: bytes, step: int):
        self._data = io.BytesIO(data)
        self._step = step

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(self._step, size if size >= 0 else self._step))


class Trickle:
    def __init__(self, data: bytes, step: int):
        self.data = data
        self.step = step

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self):
        return TrickleStream(self.data, self.step)


def request_with(*media) -> dict:
    content = [{"text": "Image 1:"}]
    for m in media:
        content.append({"image": {"format": "png", "source": {"bytes": m}}})
    content.append({"text": 'Describe "these" \u00e9\u4e2d\n'})
    return {"messages": [{"role": "user", "content": content}], "modelId": "amazon.nova-lite-v1:0"}


def plain_json(*datas: bytes) -> bytes:
    return json.dumps(request_with(*(base64.b64encode(d).decode() for d in datas))).encode()


BOUNDARY_SIZES = [0, 1, 2, 3, 4, READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1, 2 * READ_CHUNK + 2]


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_boundary_sizes_match_json_dumps(size):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    body = encode_json_body(request_with(BytesSource(data)))
    wire = b"".join(body)
    assert wire == plain_json(data)
    assert body.length == len(wire)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.one_of(st.integers(0, 10), st.integers(0, 3 * READ_CHUNK)), min_size=1, max_size=3),
    step=st.integers(1, READ_CHUNK + 7),
    seed=st.integers(0, 255),
)
def test_any_sizes_and_read_patterns_match_json_dumps(sizes, step, seed):
    datas = [bytes((seed + i) % 256 for i in range(n)) for n in sizes]
    body = encode_json_body(request_with(*(Trickle(d, step) for d in datas)))
    wire = b"".join(body)
    assert wire == plain_json(*datas)
    assert body.length == len(wire)


def test_a_chat_requests_wire_form_streams_the_same_bytes():
    data = b"\x89PNG" * 1000
    request = parse(ChatRequest, request_with(BytesSource(data, name="x.png")))
    body = encode_json_body(to_wire(request))
    assert b"".join(body) == plain_json(data)


def test_each_pass_reopens_the_source():
    body = encode_json_body(request_with(BytesSource(b"abc")))
    assert b"".join(body) == b"".join(body)


def test_a_source_that_lies_about_its_size_is_caught():
    class Liar(Trickle):
        @property
        def size(self):
            return len(self.data) + 3

    body = encode_json_body(request_with(Liar(b"abcdef", 4)))
    with pytest.raises(MediaSizeMismatchError):
        b"".join(body)


def test_memory_stays_near_one_chunk_for_a_large_item():
    data = b"\x00" * (8 * 1024 * 1024)
    body = encode_json_body(request_with(BytesSource(data)))
    tracemalloc.start()
    sent = 0
    for chunk in body:
        sent += len(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sent == body.length
    assert peak < 8 * READ_CHUNK  # a few chunks, never the whole base64 text (about 11 MB here)
