"""The gateway client against the emulator over loopback: every response pattern and every error class."""

import random
import time
from pathlib import Path

import httpx
import pytest

from shared.errors import (
    GatewayAuthError,
    GatewayCallsExhaustedError,
    GatewayNotFoundError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermanentGatewayError,
    RequestTooLargeError,
    TransientGatewayError,
)
from shared.gateway import GatewayClient, RetryPolicy
from shared.request_builder import build_chat_request, prepare
from shared.sources import BytesSource, FileSource
from tests.plugins.gateway import EMULATOR_TOKEN, FakeClock
from tests.sample_files import IMAGE_TOOL

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
NOVA = "amazon.nova-lite-v1:0"


def weather_tool(name="get_weather"):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"toolSpec": {"name": name, "description": "d", "inputSchema": {"json": schema}}}


class RecordingSleep:
    """Records the backoff waits instead of sleeping them, so tests stay fast and can check them."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


def client_for(emulator, token=EMULATOR_TOKEN, **kwargs):
    kwargs.setdefault("retry", RetryPolicy(base_delay=0.01, max_delay=0.05, read_timeout=2))
    return GatewayClient(emulator.base_url, "acme", lambda: token, rng=random.Random(7), **kwargs)


def text_request(prompt="Hello there", **options):
    return build_chat_request([], prompt, model_id=NOVA, **options)


def test_text_response(emulator):
    response = client_for(emulator).chat(text_request(), correlation_id="req-1")
    assert response.pattern == "text"
    assert "Hello there" in response.response.content
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    assert emulator.successful_chats_by_correlation_id() == {"req-1": 1}


def test_media_streamed_are_decoded_exactly(emulator):
    import hashlib

    items = [prepare(FileSource(SAMPLES / n)) for n in ("photo.jpg", "report.pdf", "clip.mp4")]
    response = client_for(emulator).chat(build_chat_request(items, "What are these?", model_id=NOVA))
    for name in ("photo.jpg", "report.pdf", "clip.mp4"):
        data = (SAMPLES / name).read_bytes()
        assert (
            f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}" in response.response.content
        )


@pytest.mark.parametrize(
    ("tool_config", "pattern"),
    [
        ({"tools": [weather_tool()]}, "tool_use"),
        ({"tools": [weather_tool(), weather_tool("get_time")]}, "tool_uses"),
        (
            {"tools": [weather_tool("calculate")], "autoExecute": True, "allowedTools": ["calculate"]},
            "auto_executed",
        ),
        ({"tools": [IMAGE_TOOL], "autoExecute": True, "allowedTools": ["generate_image"]}, "async_execution"),
    ],
)
def test_tool_patterns(emulator, tool_config, pattern):
    response = client_for(emulator).chat(text_request("Use the tool", tool_config=tool_config))
    assert response.pattern == pattern
    if pattern == "async_execution":
        assert response.pending_executions[0].execution_id.startswith("exec_")


def test_execution_lifecycle_and_404(emulator):
    clock = emulator.config.clock = FakeClock()
    emulator.config.execution_pending_seconds = 0.1
    emulator.config.execution_seconds = 0.3
    client = client_for(emulator)
    tool_config = {"tools": [IMAGE_TOOL], "autoExecute": True, "allowedTools": ["generate_image"]}
    execution_id = (
        client.chat(text_request("a red fox", tool_config=tool_config)).pending_executions[0].execution_id
    )
    assert client.get_execution(execution_id).status == "pending"
    clock.now += 0.2
    assert client.get_execution(execution_id).status == "running"
    clock.now += 0.1
    done = client.get_execution(execution_id)
    assert done.status == "complete"
    assert done.result["images"][0].startswith("data:image/png;base64,")
    with pytest.raises(GatewayNotFoundError):
        client.get_execution("exec_000000000000")


@pytest.mark.parametrize("status", ["429", "500", "502", "503", "504", "truncated"])
def test_transient_faults_are_retried(emulator, status):
    emulator.fail_next(status, count=2)
    sleep = RecordingSleep()
    response = client_for(emulator, sleep=sleep).chat(text_request())
    assert response.pattern == "text"
    assert len(sleep.waits) == 2


def test_retry_after_is_honoured(emulator):
    emulator.config.retry_after_seconds = 3
    emulator.fail_next("429")
    sleep = RecordingSleep()
    client_for(emulator, sleep=sleep).chat(text_request())
    assert sleep.waits == [3]


def test_read_timeout_is_retried(emulator):
    emulator.config.timeout_hold_seconds = 3
    emulator.fail_next("timeout")
    client = client_for(emulator, retry=RetryPolicy(base_delay=0.01, read_timeout=0.5))
    assert client.chat(text_request()).pattern == "text"


def test_transient_faults_give_up_within_the_deadline(emulator):
    emulator.config.retry_after_seconds = 0
    emulator.fail_next("503", count=100)
    client = client_for(emulator, retry=RetryPolicy(base_delay=0.2, max_delay=0.2, max_attempts=50))
    started = time.monotonic()
    with pytest.raises(TransientGatewayError) as caught:
        client.chat(text_request(), budget_seconds=1.0)
    assert time.monotonic() - started < 1.5
    assert caught.value.status == 503 and caught.value.retryable
    assert caught.value.attempts >= 2


def test_a_retry_after_longer_than_the_deadline_gives_up_at_once(emulator):
    emulator.config.retry_after_seconds = 30
    emulator.fail_next("429")
    sleep = RecordingSleep()
    with pytest.raises(TransientGatewayError) as caught:
        client_for(emulator, sleep=sleep).chat(text_request(), budget_seconds=5)
    assert caught.value.status == 429 and sleep.waits == []


def test_permanent_faults_are_not_retried(emulator):
    emulator.fail_next("400")
    sleep = RecordingSleep()
    with pytest.raises(PermanentGatewayError) as caught:
        client_for(emulator, sleep=sleep).chat(text_request())
    assert not caught.value.retryable and sleep.waits == []
    assert len([c for c in emulator.calls if "/chat" in c.path]) == 1


class RotatedToken:
    """A cached token that is stale until refreshed, as Powertools' cache is after a rotation."""

    def __init__(self, cached, current):
        self.value, self.current, self.refreshes = cached, current, 0

    def __call__(self):
        return self.value

    def refresh(self):
        self.refreshes += 1
        self.value = self.current


def test_a_refused_token_is_fetched_anew_and_asked_once_more(emulator):
    token = RotatedToken(cached="before-the-rotation", current=EMULATOR_TOKEN)
    client = GatewayClient(emulator.base_url, "acme", token, retry=RetryPolicy(base_delay=0.01))
    assert client.chat(text_request()).pattern == "text"
    assert token.refreshes == 1
    assert [c.status for c in emulator.calls] == [401, 200]


def test_a_token_refused_even_when_fetched_anew_leaves_the_request_retryable(emulator):
    token = RotatedToken(cached="wrong", current="still-wrong")
    client = GatewayClient(emulator.base_url, "acme", token, retry=RetryPolicy(base_delay=0.01))
    with pytest.raises(GatewayAuthError) as caught:
        client.chat(text_request())
    assert caught.value.retryable and caught.value.status == 401
    assert token.refreshes == 1 and [c.status for c in emulator.calls] == [401, 401]


def test_wrong_token_is_401_and_never_shown(emulator, caplog):
    secret = "s3cr3t-token-value"
    client = client_for(emulator, token=secret)
    with pytest.raises(GatewayAuthError) as caught:
        client.chat(text_request())
    assert caught.value.status == 401
    assert secret not in str(caught.value) and secret not in repr(client) and secret not in caplog.text


def test_oversize_payload_is_413(emulator):
    emulator.config.max_body_bytes = 1000  # the gateway's own limit, lowered to keep the test small
    item = prepare(BytesSource((SAMPLES / "photo.jpg").read_bytes(), name="photo.jpg"))
    with pytest.raises(PayloadTooLargeError):
        client_for(emulator).chat(build_chat_request([item], "hi", model_id=NOVA))


def test_a_body_over_the_limit_is_not_sent(emulator):
    photo = (SAMPLES / "photo.jpg").read_bytes()  # 3,747 bytes: 4,996 as base64
    request = build_chat_request([prepare(BytesSource(photo, name="photo.jpg"))], "hi", model_id=NOVA)
    with pytest.raises(RequestTooLargeError) as caught:
        client_for(emulator, max_request_bytes=5000).chat(request)
    assert caught.value.size > 5000 and "over the limit of 5000 bytes" in str(caught.value)
    assert not emulator.calls
    assert client_for(emulator, max_request_bytes=6000).chat(request).pattern == "text"


def test_path_parameters_are_percent_encoded(emulator):
    client = GatewayClient(emulator.base_url, "acme corp/../x", lambda: EMULATOR_TOKEN, rng=random.Random(7))
    client.chat(text_request())
    [call] = emulator.calls
    assert call.path == "/api/v3/organizations/acme%20corp%2F..%2Fx/ai/chat"


@pytest.mark.parametrize("execution_id", ["../../chat", "exec_1?x=1", "exec 1", "", "e" * 129])
def test_an_execution_id_is_checked_before_it_is_used_in_a_url(emulator, execution_id):
    with pytest.raises(InvalidRequestError, match="executionId"):
        client_for(emulator).get_execution(execution_id)
    assert not emulator.calls


class CountingMeter:
    """A request's billable calls, kept in memory: `limit` calls, then GatewayCallsExhaustedError."""

    def __init__(self, limit):
        self.limit = limit
        self.taken = 0
        self.given_back = 0

    def before_call(self):
        if self.taken - self.given_back >= self.limit:
            raise GatewayCallsExhaustedError(self.limit)
        self.taken += 1

    def not_billed(self):
        self.given_back += 1


def test_the_meter_counts_what_may_be_billed_and_stops_at_its_limit(emulator):
    emulator.fail_next("429", count=2)  # refused at the door: given back
    emulator.fail_next("500", count=5)  # may have been billed: kept
    meter = CountingMeter(limit=3)
    client = client_for(emulator, retry=RetryPolicy(base_delay=0.01, max_delay=0.01, max_attempts=10))
    with pytest.raises(GatewayCallsExhaustedError, match=r"gave up after 3 gateway calls: .*500"):
        client.chat(text_request(), meter=meter)
    assert (meter.taken, meter.given_back) == (5, 2)
    assert len([c for c in emulator.calls if c.kind == "chat"]) == 5


def test_emulator_rejects_what_the_client_would_have_refused(emulator):
    # The client validates first; a raw request sent past it is refused by the gateway with the field named.
    import httpx

    body = {"messages": [{"role": "user", "content": "x"}], "modelId": NOVA, "stopSequences": list("abcde")}
    reply = httpx.post(
        f"{emulator.base_url}/api/v3/organizations/acme/ai/chat",
        json=body,
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
    )
    assert reply.status_code == 400 and "stopSequences" in reply.text
    with pytest.raises(InvalidRequestError, match="stopSequences"):
        client_for(emulator).chat(body)


class TricklingGateway:
    """Answers 200 at once, then sends its JSON one byte every 0.2 s: every single read is quick, so only a
    deadline on the whole call can end it. `headers_too`: the status line and headers come that way too."""

    def __init__(self, headers_too: bool = False):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                body = b'{"response": {"role": "assistant", "content": "' + b"x" * 200 + b'"}}'
                head = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                )
                if not headers_too:
                    self.wfile.write(head)
                    head = b""
                try:
                    for byte in head + body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "status-line-headers-and-body"])
def test_a_gateway_sending_a_byte_at_a_time_cannot_outlive_the_budget(headers_too):
    gateway = TricklingGateway(headers_too=headers_too)  # 45 to 60 s of trickle, no read ever waits 0.3 s
    try:
        client = GatewayClient(gateway.url, "acme", lambda: "t", retry=RetryPolicy(max_attempts=1))
        # Only the deadline on the whole call can end it before the answer is whole.
        with pytest.raises(TransientGatewayError, match="no complete answer by the deadline"):
            client.chat(text_request(), budget_seconds=1.5)
    finally:
        gateway.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"response": {"content": "x", "toolUse": {"name": "t", "input": {"x": NaN}}}}',
        b'{"response": {"content": "x"}, "usage": {"inputTokens": 1e400}}',
        b'{"response": {"content": "x"}, "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"response": {"content": "\xff\xfe"}}',
    ],
    ids=["nan", "infinity", "nested-too-deep", "not-utf8"],
)
def test_an_answer_that_cannot_be_read_breaks_the_contract_and_is_not_asked_again(body):
    from shared.errors import ContractBreachError
    from shared.gateway import read_response
    from shared.models import ChatResponse

    response = httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    with pytest.raises(ContractBreachError) as caught:
        read_response("POST", "/chat", response, ChatResponse)
    assert not caught.value.retryable


def test_a_credential_echoed_in_an_error_body_is_blanked():
    from shared.gateway import read_response
    from shared.models import ChatResponse

    echoed = {"error": "bad request; headers were authorization: Bearer tok-123 and x-api-key=k"}
    response = httpx.Response(400, json=echoed)
    with pytest.raises(PermanentGatewayError) as caught:
        read_response("POST", "/chat", response, ChatResponse, secret="x-api-key=k")
    assert "tok-123" not in str(caught.value) and "x-api-key=k" not in str(caught.value)


def test_a_call_that_never_went_out_is_not_counted(emulator):
    from shared.models import ChatRequest, parse

    class VanishingSource:
        """Media whose source fails as the body is sent (the S3 object went away mid-read)."""

        size = 10

        def open(self):
            raise OSError("the object went away mid-read")

    image = {"image": {"format": "png", "source": {"bytes": VanishingSource()}}}
    request = parse(
        ChatRequest, {"messages": [{"role": "user", "content": [image, {"text": "hi"}]}], "modelId": NOVA}
    )
    meter = CountingMeter(limit=3)
    with pytest.raises(OSError):
        client_for(emulator).chat(request, meter=meter)
    assert meter.taken == meter.given_back == 1
