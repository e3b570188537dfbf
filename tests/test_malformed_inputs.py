"""Malformed inputs at both entry points: each ends in a clear FAILED record (or, when there is no request to
record, a logged skip), and none disturbs the valid requests that share its SQS batch.

Deploys cost seconds, so the cases share stacks. Every queued-body, upload and upload-event case goes into
one stack at once, each sent between two valid requests of the same entry point; the pollers take batches
in queue order, so each malformed message shares its batch with valid ones, which the batch test checks
from the invocation log. The routing-rule cases need a stack that reads its rules from SSM; they run round
by round, one rule file at a time (an upload under bad rules fails whatever it is, so their valid neighbour
is a queued request). Cases that show a bug in src/ are xfail(strict=True), the bug in the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from devtools.embedded_aws import DeployedStack, EmbeddedAws, Invocation
from devtools.emulator import EmulatorConfig, GatewayEmulator
from tests.plugins.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
DATA = Path(__file__).resolve().parent / "data"
TOKEN = "malformed-token"
NOVA = "amazon.nova-lite-v1:0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
MIB = 1024 * 1024
BUCKET = "BUCKET"  # replaced by the stack's bucket name when a body is sent
RULES_PARAMETER = "/quant/malformed-rules"
# As the `pipeline` fixture's stack: few gateway attempts, redelivery 1 s after a transient failure.
PARAMETERS = {
    "GatewayOrganisation": "acme",
    "GatewayMaxAttempts": "2",
    "MaxReceiveCount": "3",
    "RetryBaseDelaySeconds": "1",
    "PollMaxWaitSeconds": "1",
}
# The whole suite's messages are in flight at once, in one process: a batch can take 20 s of wall time
# (every handler thread shares the GIL with moto), so a message must stay hidden longer than that, or it
# would be delivered again while its first run is still going.
VISIBILITY_TIMEOUT = 90
IMAGE = {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}

# ---- the cases -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    entry: (
        str  # "queue": RequestQueue body; "upload": an object put in S3; "event": an UploadEventsQueue body
    )
    payload: Any  # queue/event: the body (dict or text); upload: the bytes, or a function making them
    expect: tuple[str, ...] = ()  # words the FAILED record's error message must all contain
    kind: str | None = None  # the error kind expected, when it matters
    metadata: dict[str, str] = field(default_factory=dict)  # upload: x-amz-meta-*
    skipped: str | None = None  # no request to record: words the "skipped" log line must contain
    record_key: str | None = None  # event: the S3 key its record is found by (else upload-message-<id>)
    bug: str | None = None  # a bug in src/ this case shows: the test is xfail(strict=True)

    @property
    def key(self) -> str:
        return f"incoming/malformed/{self.name}"


def full(**request: Any) -> dict[str, Any]:
    """A full-form body: `request` holds the chat request (one user message unless given)."""
    return {
        "request": {
            "modelId": NOVA,
            "messages": [{"role": "user", "content": "Hello"}],
            **request,
        }
    }


def user_content(*blocks: dict[str, Any]) -> dict[str, Any]:
    return full(messages=[{"role": "user", "content": [*blocks, {"text": "What is this?"}]}])


def s3_record(
    key: str, *, size: int = 1024, event_name: str = "ObjectCreated:Put", event_source: str = "aws:s3"
) -> dict[str, Any]:
    """One record of an S3 notification (events/s3_put.json's shape) for the stack's bucket."""
    record = json.loads((ROOT / "events" / "s3_put.json").read_text())["Records"][0]
    record["s3"]["bucket"]["name"] = BUCKET
    record["s3"]["object"].update(key=key, size=size)
    record.update(eventName=event_name, eventSource=event_source)
    return record


def without_object_key(record: dict[str, Any]) -> dict[str, Any]:
    del record["s3"]["object"]["key"]
    return record


def pdf_of(size: int) -> Callable[[], bytes]:
    return lambda: b"%PDF-1.4\n" + b"0" * (size - 9)


QUEUED_CASES = [
    Case("invalid-json", "queue", '{"requestId": "mal-json", "prompt": ', ("not valid JSON",)),
    Case("json-array", "queue", ["prompt", "hello"], ("body", "must be a JSON object, got array")),
    Case("json-string", "queue", '"just a string"', ("body", "must be a JSON object, got string")),
    Case("prompt-not-a-string", "queue", {"prompt": 42}, ("prompt", "must be a string, got integer")),
    Case("unknown-field", "queue", {"prompt": "x", "colour": "red"}, ("colour: unknown field",)),
    Case("empty-prompt", "queue", {"prompt": ""}, ("prompt", "at least 1 character")),
    Case("blank-prompt", "queue", {"prompt": "   "}, ("prompt", "must not be empty")),
    Case("request-and-prompt", "queue", {**full(), "prompt": "x"}, ("either `request` or `prompt`",)),
    Case("neither-request-nor-prompt", "queue", {"metadata": {}}, ("either `request` or `prompt`",)),
    Case(
        "short-form-field-beside-request",
        "queue",
        {**full(), "temperature": 0.5},
        ("temperature", "belong to the short form"),
    ),
    Case(
        "bad-role",
        "queue",
        full(messages=[{"role": "robot", "content": "x"}]),
        ("request.messages.0.role", "'robot'; expected one of 'assistant', 'system', 'user'"),
    ),
    Case("empty-messages", "queue", full(messages=[]), ("request.messages", "at least 1 item")),
    Case(
        "content-block-with-two-kinds",
        "queue",
        user_content({"text": "a", "image": IMAGE}),
        ("request.messages.0.content.0", "exactly one of text, image, video, document; it has text, image"),
    ),
    Case(
        "bad-image-format",
        "queue",
        user_content({"image": {**IMAGE, "format": "bmp"}}),
        ("content.0", "format"),
    ),
    Case(
        "bad-document-name",
        "queue",
        user_content({"document": {"format": "pdf", "name": 42, "source": IMAGE["source"]}}),
        ("content.0.document.name", "must be a string, got integer"),
    ),
    Case(
        "media-bytes-not-base64",
        "queue",
        user_content({"image": {"format": "png", "source": {"bytes": "not base64!!"}}}),
        ("content.0.image.source.bytes", "not valid base64"),
    ),
    Case("temperature-too-high", "queue", {"prompt": "x", "temperature": 2.5}, ("temperature", "2")),
    Case("max-tokens-zero", "queue", full(maxTokens=0), ("request.maxTokens", "greater than or equal to 1")),
    Case("max-tokens-too-high", "queue", {"prompt": "x", "maxTokens": 9000}, ("maxTokens", "8192")),
    Case("top-p-too-high", "queue", full(topP=1.5), ("request.topP", "less than or equal to 1")),
    Case(
        "five-stop-sequences",
        "queue",
        full(stopSequences=["a", "b", "c", "d", "e"]),
        ("request.stopSequences", "at most 4 items"),
    ),
    Case(
        "auto-execute-without-allowed-tools",
        "queue",
        {"prompt": "x", "toolConfig": {"tools": [], "autoExecute": True}},
        ("toolConfig", "allowedTools is required"),
    ),
    Case(
        "response-format-type-not-json",
        "queue",
        {"prompt": "x", "responseFormat": {"type": "xml", "jsonSchema": {}}},
        ("responseFormat.type", "'json'"),
    ),
    Case(
        "response-format-not-an-object",
        "queue",
        {"prompt": "x", "responseFormat": "json"},
        ("responseFormat", "must be a JSON object, got string"),
    ),
    Case(
        "claude-with-media-attachment",
        "queue",
        {
            "prompt": "x",
            "modelId": CLAUDE,
            "attachments": [{"uri": f"s3://{BUCKET}/attachments/diagram.png"}],
        },
        ("takes text only",),
    ),
    Case(
        "attachment-uri-not-s3",
        "queue",
        {"prompt": "x", "attachments": [{"uri": "https://example.com/a.png"}]},
        ("attachments.0.uri", "s3://"),
    ),
    Case(
        "attachment-missing",
        "queue",
        {"prompt": "x", "attachments": [{"uri": f"s3://{BUCKET}/attachments/nothing-here.png"}]},
        ("attachments/nothing-here.png", "404"),
        kind="SourceNotFoundError",
    ),
    Case(
        "attachment-unsupported-type",
        "queue",
        {"prompt": "x", "attachments": [{"uri": f"s3://{BUCKET}/attachments/program.elf"}]},
        ("unsupported file type", "ELF"),
        kind="UnsupportedMediaError",
    ),
    Case(
        "attachments-over-25-mb-together",
        "queue",
        {
            "prompt": "x",
            "attachments": [
                {"uri": f"s3://{BUCKET}/attachments/13mb-a.pdf"},
                {"uri": f"s3://{BUCKET}/attachments/13mb-b.pdf"},
            ],
        },
        ("request body would be", "over the limit of 25000000 bytes"),
        kind="RequestTooLargeError",
    ),
    Case(
        "twenty-one-attachments",
        "queue",
        {"prompt": "x", "attachments": [{"uri": f"s3://{BUCKET}/attachments/diagram.png"}] * 21},
        ("attachments", "at most 20 items"),
    ),
    Case("bad-request-id", "queue", {"requestId": "bad id!", "prompt": "x"}, ("requestId", "does not match")),
]

UPLOAD_CASES = [
    Case(
        "body-not-json",
        "event",
        "this is not json",
        ("not valid JSON",),
    ),
    Case("body-a-json-array", "event", [s3_record("incoming/x.png")], ("must be a JSON object",)),
    Case("body-without-records", "event", {"hello": "world"}, ("not an S3 event notification",)),
    Case("records-not-a-list", "event", {"Records": "none"}, ("not an S3 event notification",)),
    Case(
        "record-without-object-key",
        "event",
        {"Records": [without_object_key(s3_record("ignored"))]},
        ("s3.object.key",),
    ),
    Case(
        "object-gone",
        "event",
        {"Records": [s3_record("incoming/malformed/never-uploaded.png")]},
        ("incoming/malformed/never-uploaded.png", "404"),
        kind="SourceNotFoundError",
        record_key="incoming/malformed/never-uploaded.png",
    ),
    Case(
        "object-removed-event",
        "event",
        {"Records": [s3_record("incoming/removed.png", event_name="ObjectRemoved:Delete")]},
        skipped="event ObjectRemoved:Delete is not an object creation",
    ),
    Case(
        "key-under-results",
        "event",
        {"Records": [s3_record("results/incoming/photo.jpg.json")]},
        skipped="under the results prefix",
    ),
    Case(
        "folder-marker",
        "event",
        {"Records": [s3_record("incoming/folder/", size=0)]},
        skipped="folder marker",
    ),
    Case(
        "record-not-from-s3",
        "event",
        {"Records": [s3_record("incoming/from-elsewhere.png", event_source="aws:sns")]},
        skipped="incoming/from-elsewhere.png",
    ),
    Case(
        "unsupported-file",
        "upload",
        (DATA / "program.elf").read_bytes(),
        ("unsupported file type", "ELF"),
        kind="UnsupportedMediaError",
    ),
    Case("empty-file", "upload", b"", ("empty file",), kind="UnsupportedMediaError"),
    Case("truncated-png", "upload", (DATA / "truncated.png").read_bytes(), ("truncated png",)),
    Case(
        "oversize-pdf",
        "upload",
        pdf_of(25 * MIB + 1),
        (str(25 * MIB + 1), "over the limit of 25000000 bytes"),
        kind="RequestTooLargeError",
    ),
    Case(
        "bad-model-id-metadata",
        "upload",
        (SAMPLES / "diagram.png").read_bytes(),
        ("x-amz-meta-model-id", "not a model id"),
        metadata={"model-id": "not a model id!"},
    ),
    Case(
        "claude-model-id-metadata-on-an-image",
        "upload",
        (SAMPLES / "diagram.png").read_bytes(),
        ("takes text only",),
        metadata={"model-id": CLAUDE},
    ),
    Case(
        "prompt-metadata-too-long",
        "upload",
        (SAMPLES / "diagram.png").read_bytes(),
        ("x-amz-meta-prompt", "1 to 2000 characters"),
        metadata={"prompt": "p" * 2001},
    ),
]

# Rule files put in the SSM parameter, one round each; None: the parameter does not exist.
RULE_CASES = [
    Case(
        "parameter-missing",
        "rules",
        None,
        (RULES_PARAMETER, "not found"),
    ),
    Case("not-yaml", "rules", "rules: [}", ("invalid routing rules", "not valid YAML")),
    Case(
        "rule-matching-nothing",
        "rules",
        "default: {}\nrules:\n  - name: everything\n    match: {}\n",
        ("invalid routing rules", "rule 'everything'", "at least one of prefix, suffix, kind"),
    ),
    Case(
        "misspelt-field",
        "rules",
        "default: {}\nrules:\n  - name: typo\n    match: {prefix: incoming/}\n    model: nova\n",
        ("invalid routing rules", "rule 'typo'", "model: unknown field"),
    ),
    Case(
        "unknown-kind",
        "rules",
        "default: {}\nrules:\n  - name: sounds\n    match: {kind: audio}\n",
        ("invalid routing rules", "rule 'sounds'", "match.kind"),
    ),
    Case(
        "default-missing",
        "rules",
        "rules: []\n",
        ("invalid routing rules", "default: required field is missing"),
    ),
]

# ---- running them ----------------------------------------------------------------------------------------


@dataclass
class Sent:
    case: Case
    message_id: str | None = None  # the malformed message (found in the invocation log for uploads)
    neighbours: list[str] = field(default_factory=list)  # labels of the valid requests sent beside it


@dataclass
class World:
    pipeline: Pipeline
    sent: dict[str, Sent]
    records: list[dict[str, Any]]
    logs: list[str]

    def record_by_id(self, request_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["requestId"] == request_id), None)

    def record_by_key(self, key: str) -> dict[str, Any] | None:
        found = [r for r in self.records if (r.get("source") or {}).get("key") == key]
        assert len(found) <= 1, f"{len(found)} records for {key}"
        return found[0] if found else None

    def status_of(self, label: str) -> str | None:
        record = self.record_by_key(label) if label.startswith("incoming/") else self.record_by_id(label)
        return record and record["status"]


def function_log_messages(path: Path, logger_name: str) -> list[str]:
    """The messages one logger wrote in the functions' log (JSON lines from their processes)."""
    messages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a traceback's lines, say
        if isinstance(entry, dict) and entry.get("name", logger_name) == logger_name and "message" in entry:
            messages.append(str(entry["message"]))
    return messages


@pytest.fixture(scope="class")
def function_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the function processes write their logs (shared.uploads logs the skipped events)."""
    return tmp_path_factory.mktemp("functions") / "functions.log"


@pytest.fixture(scope="class")
def class_emulator() -> Iterator[GatewayEmulator]:
    with GatewayEmulator(EmulatorConfig(token=TOKEN)) as emulator:
        yield emulator
    assert not emulator.internal_errors, "the gateway emulator raised:\n" + "\n".join(
        emulator.internal_errors
    )


def deploy(
    emulator: GatewayEmulator,
    visibility_timeout: int,
    function_log: Path | None = None,
    batching_window: float | None = None,
    **parameters: str,
) -> DeployedStack:
    """`batching_window`: the SQS event sources' MaximumBatchingWindowInSeconds (None: the template's)."""
    return EmbeddedAws.deploy(
        ROOT / "template.yaml",
        parameters={**PARAMETERS, "GatewayBaseUrl": emulator.base_url, **parameters},
        extra_environment={"GATEWAY_TOKEN": TOKEN},
        visibility_timeout_override=visibility_timeout,
        batching_window_override=batching_window,
        function_log=function_log,
    )


def body_text(payload: Any, bucket: str) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return text.replace(BUCKET, bucket)


def send_queued(pipeline: Pipeline, case: Case) -> Sent:
    """The malformed body between two valid ones, in one SendMessageBatch so nothing comes between them."""
    payload = case.payload
    if isinstance(payload, dict) and "requestId" not in payload:
        payload = {"requestId": f"mal-{case.name}", **payload}
    neighbours = [f"ok-{case.name}-{side}" for side in ("a", "b")]
    bodies = [
        json.dumps({"requestId": neighbours[0], "prompt": "A valid neighbour"}),
        body_text(payload, pipeline.bucket),
        json.dumps({"requestId": neighbours[1], "prompt": "Another valid neighbour"}),
    ]
    result = pipeline.stack.client("sqs").send_message_batch(
        QueueUrl=pipeline.stack.physical_id("RequestQueue"),
        Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(bodies)],
    )
    assert not result.get("Failed"), result
    message_ids = {entry["Id"]: entry["MessageId"] for entry in result["Successful"]}
    return Sent(case, message_ids["1"], neighbours)


def send_upload(pipeline: Pipeline, case: Case) -> Sent:
    """A valid upload, the malformed upload or event, another valid upload."""
    neighbours = [f"incoming/ok/{case.name}-{side}.png" for side in ("a", "b")]
    image = (SAMPLES / "diagram.png").read_bytes()
    pipeline.upload(neighbours[0], image)
    message_id = None
    if case.entry == "event":
        message_id = pipeline.send(body_text(case.payload, pipeline.bucket), queue="UploadEventsQueue")
    else:
        data = case.payload() if callable(case.payload) else case.payload
        pipeline.upload(case.key, data, **case.metadata)
    pipeline.upload(neighbours[1], image)
    return Sent(case, message_id, neighbours)


def sqs_batches(stack: DeployedStack, function: str) -> list[Invocation]:
    return [i for i in stack.invocations.for_function(function) if i.trigger == "sqs"]


def labels_of(record: dict[str, Any]) -> list[str]:
    """What an SQS record carries: the requestId of a queued request, or the keys of an S3 event."""
    try:
        body = json.loads(record["body"])
    except json.JSONDecodeError:
        return []
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("Records"), list):
        keys = [((r.get("s3") or {}).get("object") or {}).get("key") for r in body["Records"]]
        return [unquote_plus(k) for k in keys if isinstance(k, str)]
    request_id = body.get("requestId")
    return [request_id] if isinstance(request_id, str) else []


def find_upload_message_ids(stack: DeployedStack, sent: dict[str, Sent]) -> None:
    """An upload's message id is known only once a batch carried its S3 notification."""
    for invocation in sqs_batches(stack, "S3UploadFunction"):
        for record in invocation.event["Records"]:
            for item in sent.values():
                if item.case.entry == "upload" and item.case.key in labels_of(record):
                    item.message_id = record["messageId"]


@pytest.fixture(scope="class")
def world(class_emulator: GatewayEmulator, function_log: Path) -> Iterator[World]:
    stack = deploy(class_emulator, visibility_timeout=VISIBILITY_TIMEOUT, function_log=function_log)
    try:
        pipeline = Pipeline(stack, class_emulator)
        pipeline.upload("attachments/diagram.png", (SAMPLES / "diagram.png").read_bytes())
        pipeline.upload("attachments/program.elf", (DATA / "program.elf").read_bytes())
        for name in ("13mb-a.pdf", "13mb-b.pdf"):
            pipeline.upload(f"attachments/{name}", pdf_of(13 * MIB)())
        sent = {case.name: send_queued(pipeline, case) for case in QUEUED_CASES}
        sent |= {case.name: send_upload(pipeline, case) for case in UPLOAD_CASES}
        pipeline.drain(timeout=180)
        find_upload_message_ids(stack, sent)
        yield World(pipeline, sent, pipeline.records(), function_log_messages(function_log, "shared.uploads"))
    finally:
        stack.close()


def record_of(world: World, sent: Sent) -> dict[str, Any] | None:
    case = sent.case
    if case.entry == "upload":
        return world.record_by_key(case.key)
    if case.entry == "event":
        if case.record_key:
            return world.record_by_key(case.record_key)
        return world.record_by_id(f"upload-message-{sent.message_id}")
    payload = case.payload
    request_id = f"mal-{case.name}" if isinstance(payload, dict) and "requestId" not in payload else None
    # A message that cannot be read is recorded under its message id, whatever requestId it names.
    found = world.record_by_id(request_id) if request_id else None
    return found or world.record_by_id(sent.message_id or "")


def assert_failed_clearly(record: dict[str, Any] | None, case: Case) -> None:
    assert record is not None, f"no record for {case.name}"
    assert record["status"] == "FAILED", record
    error = record["error"]
    missing = [word for word in case.expect if word not in error["message"]]
    assert not missing, f"{case.name}: {missing} not in {error['message']!r}"
    if case.kind:
        assert error["kind"] == case.kind, error


def params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(
            case, id=case.name, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        )
        for case in cases
    ]


class TestQueuedBodiesUploadsAndEvents:
    @pytest.mark.parametrize("case", params(QUEUED_CASES + UPLOAD_CASES))
    def test_ends_in_a_clear_failure_or_a_logged_skip(self, world: World, case: Case) -> None:
        sent = world.sent[case.name]
        if case.skipped:
            assert world.record_by_key(case.key) is None
            skips = [line for line in world.logs if line.startswith("skipped") and case.skipped in line]
            assert skips, (
                f"no skip logged for {case.name}; skip lines: {[s for s in world.logs if 'skip' in s]}"
            )
            return
        assert_failed_clearly(record_of(world, sent), case)
        if case.entry == "queue":
            assert record_of(world, sent)["error"]["retryable"] is False

    @pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in QUEUED_CASES + UPLOAD_CASES])
    def test_shares_its_batch_with_valid_requests_that_complete(self, world: World, case: Case) -> None:
        sent = world.sent[case.name]
        function = "SqsRequestFunction" if case.entry == "queue" else "S3UploadFunction"
        assert sent.message_id, f"{case.name} never reached {function}"
        carrying = [
            i
            for i in sqs_batches(world.pipeline.stack, function)
            if sent.message_id in {r["messageId"] for r in i.event["Records"]}
        ]
        deliveries = [
            (round(i.started_at, 2), round(i.duration, 2), len(i.event["Records"])) for i in carrying
        ]
        assert len(carrying) == 1, f"{case.name}: deliveries (start, seconds, batch size) {deliveries}"
        [batch] = carrying
        assert batch.succeeded, batch.error
        assert batch.result["batchItemFailures"] == [], batch.result
        valid_labels = {
            label
            for record in batch.event["Records"]
            for label in labels_of(record)
            if label.startswith(("ok-", "incoming/ok/"))
        }
        assert valid_labels, f"{case.name} was alone in its batch of {len(batch.event['Records'])}"
        assert {label: world.status_of(label) for label in valid_labels} == dict.fromkeys(
            valid_labels, "COMPLETED"
        )

    def test_every_valid_neighbour_completed_and_nothing_is_left_over(self, world: World) -> None:
        neighbours = [label for sent in world.sent.values() for label in sent.neighbours]
        assert {label: world.status_of(label) for label in neighbours} == dict.fromkeys(
            neighbours, "COMPLETED"
        )
        for queue in ("RequestQueue", "RequestDLQ", "UploadEventsQueue", "UploadEventsDLQ"):
            assert world.pipeline.queue_depth(queue) == 0, queue


# ---- routing rules from SSM ------------------------------------------------------------------------------


@dataclass
class RulesRound:
    record: dict[str, Any] | None
    neighbour_status: str | None
    upload_dlq_depth: int


@pytest.fixture(scope="class")
def rules_rounds(class_emulator: GatewayEmulator) -> Iterator[dict[str, RulesRound]]:
    # One delivery, so a bad rule file gives up at once; a short visibility timeout for a batch that raised;
    # no batching window, for a round's lone upload waits it out twice (its delivery, its move to the DLQ).
    stack = deploy(
        class_emulator,
        visibility_timeout=3,
        batching_window=0,
        RoutingRulesParameterName=RULES_PARAMETER,
        MaxReceiveCount="1",
    )
    try:
        pipeline = Pipeline(stack, class_emulator)
        # The bucket's s3:TestEvent meets the cold start, which may outlast the 3 s visibility timeout:
        # let it settle before the rounds count dead letters.
        pipeline.drain(timeout=60)
        ssm = stack.client("ssm")
        rounds = {}
        for case in RULE_CASES:
            if case.payload is not None:
                ssm.put_parameter(Name=RULES_PARAMETER, Value=case.payload, Type="String", Overwrite=True)
            before = pipeline.queue_depth("UploadEventsDLQ")
            pipeline.upload(case.key + ".jpg", (SAMPLES / "photo.jpg").read_bytes())
            pipeline.send({"requestId": f"ok-rules-{case.name}", "prompt": "Unaffected by routing rules"})
            pipeline.drain(timeout=60)
            rounds[case.name] = RulesRound(
                record=next(
                    (
                        r
                        for r in pipeline.records()
                        if (r.get("source") or {}).get("key") == case.key + ".jpg"
                    ),
                    None,
                ),
                neighbour_status=pipeline.record(f"ok-rules-{case.name}")["status"],
                upload_dlq_depth=pipeline.queue_depth("UploadEventsDLQ") - before,
            )
        yield rounds
    finally:
        stack.close()


class TestInvalidRoutingRules:
    @pytest.mark.parametrize("case", params(RULE_CASES))
    def test_uploads_fail_naming_the_problem_and_wait_in_the_dlq(
        self, rules_rounds: dict[str, RulesRound], case: Case
    ) -> None:
        result = rules_rounds[case.name]
        assert_failed_clearly(result.record, case)
        assert result.record is not None and result.record["error"]["retryable"] is True  # redrive once fixed
        assert result.upload_dlq_depth == 1

    @pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in RULE_CASES])
    def test_queued_requests_are_unaffected(self, rules_rounds: dict[str, RulesRound], case: Case) -> None:
        assert rules_rounds[case.name].neighbour_status == "COMPLETED"
