"""A chat request's JSON body, streamed: media go from their source through base64 onto the wire.

The body is byte for byte what `json.dumps(request)` would give with every media item as its base64
text, but the base64 text is never held whole: only one chunk of the source at a time.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shared.models import StreamedMedia

# A multiple of 3, so every chunk but the last encodes to base64 without padding.
READ_CHUNK = 3 * 64 * 1024


class MediaSizeMismatchError(RuntimeError):
    """The source gave a different number of bytes than it declared: the Content-Length would lie."""


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


@dataclass(frozen=True)
class JsonBody:
    length: int
    _segments: tuple[bytes, ...]
    _media: tuple[StreamedMedia, ...]

    def __iter__(self) -> Iterator[bytes]:
        """A fresh pass over the body each time (a retry sends it again from the sources)."""
        for segment, media in zip(self._segments, (*self._media, None), strict=True):
            yield segment
            if media is not None:
                yield from _base64_chunks(media)


def encode_json_body(payload: Any) -> JsonBody:
    """`payload` is plain JSON data in which media appear as `StreamedMedia` objects."""
    marker = uuid.uuid4().hex
    media: list[StreamedMedia] = []

    def swap_media(value: Any) -> Any:
        if isinstance(value, StreamedMedia):
            media.append(value)
            return f"{marker}:{len(media) - 1}"
        if isinstance(value, dict):
            return {k: swap_media(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [swap_media(v) for v in value]
        return value

    skeleton = json.dumps(swap_media(payload)).encode()
    segments: list[bytes] = []
    rest = skeleton
    for index in range(len(media)):
        # The placeholder keeps its quotes; the base64 text goes between them (it needs no escaping).
        before, rest = rest.split(f'"{marker}:{index}"'.encode(), 1)
        segments.append(before + b'"')
        rest = b'"' + rest
    segments.append(rest)
    length = sum(map(len, segments)) + sum(base64_length(m.size) for m in media)
    return JsonBody(length, tuple(segments), tuple(media))


def _base64_chunks(media: StreamedMedia) -> Iterator[bytes]:
    stream = media.open()
    sent = 0
    pending = b""  # at most 2 bytes left over from the last read
    try:
        while True:
            data = stream.read(READ_CHUNK)
            if not data:
                break
            sent += len(data)
            if pending:
                data = pending + data
            whole = len(data) - len(data) % 3
            if whole:
                yield base64.b64encode(data if whole == len(data) else data[:whole])
            pending = data[whole:]
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    if pending:
        yield base64.b64encode(pending)
    if sent != media.size:
        raise MediaSizeMismatchError(f"source gave {sent} bytes, declared {media.size}")
