"""template.yaml on the embedded AWS, wired to a gateway (the emulator, or Quant Cloud's when a token is set).

Shared by `make run` (devtools.run), `make invoke` (devtools.invoke) and the tests' `pipeline` fixture, so
all three deploy the stack the same way and read its records the same way.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from devtools.embedded_aws import DEFAULT_STACK_NAME, DeployedStack, EmbeddedAws
from devtools.emulator import EmulatorConfig, GatewayEmulator

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAMPLES = ROOT / "samples"
STACK_NAME = DEFAULT_STACK_NAME  # with moto's account and region, the events' bucket names match
QUANT_BASE_URL = "https://dashboard.quantcdn.io"
EMULATOR_ORGANISATION = "local"
SERVICE_NAME = "quant-ai-pipeline"  # the template's POWERTOOLS_SERVICE_NAME: the handlers' logger
# Seconds; like the real gateway's image generation (10 to 15 s) but short enough for a quick local run.
EMULATOR_EXECUTION_PENDING_SECONDS = 1.0
EMULATOR_EXECUTION_SECONDS = 5.0
# generate_image auto-executed: the gateway starts an async execution, which the ToolExecutionPoller polls.
IMAGE_MODEL = "amazon.nova-pro-v1:0"  # the tool needs a tool-capable model
IMAGE_PROMPT = "Generate an image of a lighthouse on a cliff at dawn."
IMAGE_TOOL_CONFIG = {
    "tools": [
        {
            "toolSpec": {
                "name": "generate_image",
                "description": "Generate an image from a description",
                "inputSchema": {"json": {"type": "object", "properties": {"prompt": {"type": "string"}}}},
            }
        }
    ],
    "autoExecute": True,
    "allowedTools": ["generate_image"],
}
# Local runs only: every queue's VisibilityTimeout (750 s in the template) becomes this, so a message that
# failed transiently comes back within the run, yet never while its first delivery is still running.
LOCAL_VISIBILITY_TIMEOUT = 30
LOCAL_PARAMETERS = {"RetryBaseDelaySeconds": "1"}
SCAN_ATTEMPTS = 5
# moto's ASL interpreter logs pages of its internals when a run is stopped (the stack closing, or `make
# invoke` preparing an event); what a run did is in its execution history and in the records.
STEP_FUNCTIONS_LOGGER = "moto.stepfunctions.parser"


class GatewayChoiceError(ValueError):
    pass


@dataclass(frozen=True)
class GatewayTarget:
    """Where the handlers send their requests. The token is never shown (repr, output, logs)."""

    kind: str  # "emulator", "quant", or where a given URL came from
    base_url: str
    organisation: str
    token: str = field(repr=False)

    @property
    def is_emulator(self) -> bool:
        return self.kind == "emulator"

    def describe(self) -> str:
        if self.is_emulator:
            return (
                f"gateway: local emulator at {self.base_url} (set QUANT_API_TOKEN and QUANT_ORGANISATION"
                " to use Quant Cloud's gateway)"
            )
        if self.kind == "quant":
            return f"gateway: Quant Cloud at {self.base_url}, organisation {self.organisation}"
        return f"gateway: {self.base_url}, organisation {self.organisation} ({self.kind})"

    def parameters(self) -> dict[str, str]:
        """The template parameters that point the functions at this gateway. The emulator serves its
        generated images itself, so image downloads are allowed from its address and nowhere else."""
        parameters = {"GatewayOrganisation": self.organisation, "GatewayBaseUrl": self.base_url}
        if self.is_emulator:
            parameters["ImageDownloadAllowedUrls"] = self.base_url
        return parameters

    def environment(self) -> dict[str, str]:
        """For a function run without the stack's secret: the token in GATEWAY_TOKEN."""
        return {"GATEWAY_TOKEN": self.token}

    def secret_values(self) -> dict[str, str]:
        """The token in the stack's own secret, which the functions read (through IAM) as in AWS."""
        return {"GatewayTokenSecret": self.token}


def image_request_message(request_id: str) -> dict[str, Any]:
    """A queued request (short form) that generates an image."""
    return {
        "requestId": request_id,
        "prompt": IMAGE_PROMPT,
        "modelId": IMAGE_MODEL,
        "toolConfig": IMAGE_TOOL_CONFIG,
    }


def quant_gateway_from(environ: Mapping[str, str]) -> GatewayTarget | None:
    """Quant Cloud's gateway when QUANT_API_TOKEN and QUANT_ORGANISATION are set; None for the emulator."""
    token = environ.get("QUANT_API_TOKEN", "").strip()
    organisation = environ.get("QUANT_ORGANISATION", "").strip()
    if not token and not organisation:
        return None
    if not (token and organisation):
        missing = "QUANT_ORGANISATION" if token else "QUANT_API_TOKEN"
        raise GatewayChoiceError(f"{missing} is not set: set both QUANT_API_TOKEN and QUANT_ORGANISATION")
    base_url = environ.get("QUANT_BASE_URL", "").strip() or QUANT_BASE_URL
    return GatewayTarget("quant", base_url.rstrip("/"), organisation, token)


def start_emulator(
    *,
    token: str | None = None,
    organisation: str | None = EMULATOR_ORGANISATION,
    port: int = 0,
    execution_seconds: float = EMULATOR_EXECUTION_SECONDS,
) -> GatewayEmulator:
    """A running emulator that insists on `token` (a fresh random one by default) and `organisation`."""
    config = EmulatorConfig(
        port=port,
        token=token or secrets.token_urlsafe(16),
        organization=organisation,
        execution_pending_seconds=min(EMULATOR_EXECUTION_PENDING_SECONDS, execution_seconds),
        execution_seconds=execution_seconds,
    )
    emulator = GatewayEmulator(config)
    emulator.start()
    return emulator


def emulator_target(emulator: GatewayEmulator) -> GatewayTarget:
    """The running emulator, with the organisation and token it insists on (any, when it insists on none)."""
    organisation = emulator.config.organization or EMULATOR_ORGANISATION
    token = emulator.config.token or secrets.token_urlsafe(16)
    return GatewayTarget("emulator", emulator.base_url, organisation, token)


def deploy(
    gateway: GatewayTarget,
    *,
    parameters: Mapping[str, str] | None = None,
    extra_environment: Mapping[str, str] | None = None,
    start_pollers: bool = True,
    function_log: Path | None = None,
) -> DeployedStack:
    """template.yaml as stack `quant-ai-local`, wired to `gateway`, with local timings; the function
    processes' output goes to `function_log` when given."""
    return EmbeddedAws.deploy(
        TEMPLATE,
        parameters={**LOCAL_PARAMETERS, **gateway.parameters(), **(parameters or {})},
        extra_environment=extra_environment,
        secret_values=gateway.secret_values(),
        stack_name=STACK_NAME,
        visibility_timeout_override=LOCAL_VISIBILITY_TIMEOUT,
        start_pollers=start_pollers,
        function_log=function_log,
    )


@dataclass
class LocalPipeline:
    """A deployed stack plus the helpers to feed it and read what it recorded."""

    stack: DeployedStack
    emulator: GatewayEmulator | None = None

    @property
    def bucket(self) -> str:
        return self.stack.physical_id("UploadsBucket")

    @property
    def table(self) -> Any:
        return self.stack.client("dynamodb")

    def upload(self, key: str, data: bytes, **metadata: str) -> None:
        self.stack.client("s3").put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata)

    def send(self, body: dict[str, Any] | str, queue: str = "RequestQueue") -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.stack.client("sqs").send_message(
            QueueUrl=self.stack.physical_id(queue), MessageBody=text
        )["MessageId"]

    def drain(self, timeout: float = 60) -> None:
        self.stack.drain(timeout=timeout)

    def records(self) -> list[dict[str, Any]]:
        """Every record of the ResultsTable; safe to call while handlers are writing."""
        for _ in range(SCAN_ATTEMPTS - 1):
            try:
                return self._scan()
            except RuntimeError as race:
                # moto's DynamoDB is not thread-safe: a scan that meets an item being updated fails with
                # "dictionary changed size during iteration". A new scan sees the table as it is then.
                if "changed size during iteration" not in str(race):
                    raise
                time.sleep(0.05)
        return self._scan()

    def _scan(self) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        pages = self.table.get_paginator("scan").paginate(TableName=self.stack.physical_id("ResultsTable"))
        items = [item for page in pages for item in page["Items"]]
        return [plain({k: deserializer.deserialize(v) for k, v in item.items()}) for item in items]

    def record(self, request_id: str) -> dict[str, Any]:
        found = [r for r in self.records() if r["requestId"] == request_id]
        assert found, f"no record {request_id}; records: {[r['requestId'] for r in self.records()]}"
        return found[0]

    def wait_for_status(self, request_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        """The request's record once it has `status` (while the stack keeps running, unlike drain())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.records() if r["requestId"] == request_id]
            if found and found[0].get("status") == status:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"{request_id} never reached {status}")

    def record_for_key(self, key: str) -> dict[str, Any]:
        found = [r for r in self.records() if (r.get("source") or {}).get("key") == key]
        assert len(found) == 1, f"{len(found)} records for {key}: {self.records()}"
        return found[0]

    def read_object(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        return self.stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()

    def result_json(self, record: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self.read_object(record["resultLocation"]))

    def queue_depth(self, queue: str) -> int:
        attributes = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.physical_id(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


def display_path(path: Path) -> str:
    """Relative to the current directory when inside it: shorter, and what the user typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def plain(value: Any) -> Any:
    """DynamoDB's Decimals as int or float, as the handlers' JSON has them."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@contextmanager
def function_output_to(log: TextIO, service_name: str) -> Iterator[None]:
    """The handlers' log lines and metrics go to `log` rather than stdout (in AWS they go to CloudWatch).

    Powertools' logger keeps the stream it found when first created, so its handler is pointed at `log`
    for the duration and back afterwards; warnings of plain loggers (and moto's) go to `log` too.
    """
    service_logger = logging.getLogger(service_name)
    originals = {h: h.stream for h in _stream_handlers(service_logger)}
    root_handler = logging.StreamHandler(log)
    root_handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(root_handler)
    for handler in originals:
        _set_stream(handler, log)
    try:
        with redirect_stdout(log):
            yield
    finally:
        logging.getLogger().removeHandler(root_handler)
        # A handler made during the run found `log` as stdout: it gets the stdout it would have found.
        for handler in _stream_handlers(service_logger):
            if handler.stream is log:
                _set_stream(handler, originals.get(handler, sys.stdout))


def _stream_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    return [h for h in logger.handlers if type(h) is logging.StreamHandler]


def _set_stream(handler: logging.StreamHandler, stream: TextIO) -> None:
    # Not setStream(): it flushes the old stream, which may be closed by now (pytest's capsys).
    with handler.lock:
        handler.stream = stream


@contextmanager
def quiet_step_functions_interpreter() -> Iterator[None]:
    logger = logging.getLogger(STEP_FUNCTIONS_LOGGER)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
