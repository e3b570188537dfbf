"""Soak: many requests through the whole pipeline on the embedded AWS while the gateway misbehaves, then an
account of where every request ended.

template.yaml is deployed into moto (devtools.embedded_aws) with the settings a real deployment would use
(GatewayMaxAttempts 6, MaxReceiveCount 5, the template's MaximumConcurrency), wired to the gateway emulator.
GatewayMaxAttempts is 6, not the template's 4: 16% of chat calls are billable faults (all but the 429s), so
with 4 one valid request in about 1,500 would meet the cap (four billable faults in a row) and end FAILED
GatewayCallsExhaustedError, the cap working as designed; with 6, one in about 60,000.
The emulator turns 20% of chat calls into transient faults, 4% each: 429 with Retry-After, 500, 503 with
Retry-After, a timeout (the connection held silent, then closed without an answer) and a 200 whose JSON is
cut in half. 60% of the requests are queued JSON messages (short and full forms, some with S3 attachments,
some without a requestId), 40% are uploads of the sample files; 2% of both are invalid on purpose.

The account: requests sent; COMPLETED; FAILED by error kind (with examples); messages in the dead-letter
queues (each must also have a FAILED record saying "gave up after N attempts"); lost (sent, with no terminal
record); duplicate gateway successes (a requestId the emulator answered with an un-faulted 200 more than
once). Uploads are matched to records by S3 key, queued requests by requestId (or SQS message id).

Only test-speed settings differ from a deployment: RetryBaseDelaySeconds 1 (redelivery after 1, 2, 4, 8 s
instead of 30, 60...), every queue's visibility timeout 60 s (the template's 750 s would only matter for a
handler that dies mid-run, which does not happen here), Retry-After 1 s and timeout faults held 1 s (so
the client's 90 s read timeout never comes into it: the closed connection is what it sees).

    python bench/soak.py                    # 1,000 requests: the table, then one JSON line
    python bench/soak.py --total 200 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT / "src"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from devtools.embedded_aws import DeployedStack, EmbeddedAws  # noqa: E402
from devtools.emulator import EmulatorConfig, GatewayEmulator  # noqa: E402
from tests.plugins.pipeline import Pipeline  # noqa: E402

SAMPLES = ROOT / "samples"
DATA = ROOT / "tests" / "data"
TOKEN = "soak-token"
NOVA = "amazon.nova-lite-v1:0"
QUEUED_SHARE = 0.6
INVALID_RATE = 0.02
FAULT_KINDS = ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_truncated_json")
FAULT_RATE = 0.20
PARAMETERS = {
    "GatewayOrganisation": "soak-org",
    "GatewayMaxAttempts": "6",
    "MaxReceiveCount": "5",
    "RetryBaseDelaySeconds": "1",
    "PollMaxWaitSeconds": "1",
}
VISIBILITY_TIMEOUT = 60
UPLOAD_SAMPLES = (
    "photo.jpg",
    "diagram.png",
    "animation.gif",
    "sticker.webp",
    "clip.mp4",
    "report.pdf",
    "sales.csv",
    "letter.docx",
    "budget.xlsx",
    "notes.txt",
    "readme.md",
    "config.json",
)
ATTACHMENTS = {"attachments/diagram.png": "diagram.png", "attachments/report.pdf": "report.pdf"}
QUEUED_VARIANTS = ("short", "short-no-id", "full", "short-attachment", "full-attachment")
# Each invalid variant, and the words its FAILED record's message must contain to count as a clear reason.
INVALID_QUEUED = {
    "invalid-json": "not valid JSON",
    "temperature-out-of-range": "temperature",
    "neither-request-nor-prompt": "either `request` or `prompt`",
    "missing-attachment": "attachments/missing-",
}
INVALID_UPLOADS = {
    "unsupported-binary": "unsupported file type",
    "gzip": "gzip archive",
    "empty-file": "empty file",
    "truncated-png": "truncated png",
}
TERMINAL = ("COMPLETED", "FAILED")


@dataclass
class Request:
    number: int
    kind: str  # "queued" or "upload"
    variant: str
    valid: bool
    request_id: str | None = None  # queued: the requestId, or the SQS message id once sent
    message_id: str | None = None  # queued: the SQS message id (an unreadable message's record is under it)
    key: str | None = None  # upload: the S3 key
    expected_reason: str | None = None  # invalid ones: words the FAILED message must contain

    @property
    def label(self) -> str:
        return self.key if self.kind == "upload" else str(self.request_id)


@dataclass
class Plan:
    requests: list[Request]
    run_id: str

    @property
    def invalid(self) -> list[Request]:
        return [r for r in self.requests if not r.valid]


def make_plan(total: int, seed: int, invalid_rate: float = INVALID_RATE) -> Plan:
    """Which requests to send, in the (shuffled) order they are sent; the same for the same seed."""
    rng = random.Random(seed)
    run_id = f"{seed}-{rng.randrange(16**6):06x}"
    queued = round(total * QUEUED_SHARE)
    invalid = round(total * invalid_rate)
    invalid_queued = round(invalid * QUEUED_SHARE)
    invalid_numbers = set(rng.sample(range(queued), invalid_queued))
    invalid_numbers |= set(rng.sample(range(queued, total), invalid - invalid_queued))
    # Invalid variants take turns, so even a small run has several kinds of each entry point.
    invalid_variants = {"queued": itertools.cycle(INVALID_QUEUED), "upload": itertools.cycle(INVALID_UPLOADS)}
    requests = []
    for number in range(total):
        kind = "queued" if number < queued else "upload"
        if number in invalid_numbers:
            variant = next(invalid_variants[kind])
            reason = (INVALID_QUEUED if kind == "queued" else INVALID_UPLOADS)[variant]
        else:
            valid_variants = QUEUED_VARIANTS if kind == "queued" else UPLOAD_SAMPLES
            variant, reason = valid_variants[number % len(valid_variants)], None
        request = Request(number, kind, variant, valid=reason is None, expected_reason=reason)
        if kind == "queued" and variant not in ("short-no-id", "invalid-json"):
            request.request_id = f"soak-{run_id}-{number:05d}"
        if kind == "upload":
            name = variant if request.valid else f"{variant}.bin"
            request.key = f"incoming/soak-{run_id}/{number:05d}-{name}"
        requests.append(request)
    rng.shuffle(requests)
    return Plan(requests, run_id)


def queued_body(request: Request, bucket: str) -> str:
    """The SQS message body of one queued request."""
    prompt = f"Soak request {request.number}: answer briefly."
    base: dict[str, Any] = {"requestId": request.request_id} if request.request_id else {}
    attachment = [{"uri": f"s3://{bucket}/attachments/diagram.png", "label": "diagram"}]
    full = {"modelId": NOVA, "messages": [{"role": "user", "content": prompt}], "maxTokens": 200}
    match request.variant:
        case "short" | "short-no-id":
            return json.dumps({**base, "prompt": prompt, "temperature": 0.2})
        case "full":
            return json.dumps({**base, "request": full, "metadata": {"caller": "soak", "n": request.number}})
        case "short-attachment":
            return json.dumps({**base, "prompt": prompt, "attachments": attachment})
        case "full-attachment":
            return json.dumps(
                {**base, "request": full, "attachments": [{"uri": f"s3://{bucket}/attachments/report.pdf"}]}
            )
        case "invalid-json":
            return '{"prompt": "cut short'
        case "temperature-out-of-range":
            return json.dumps({**base, "prompt": prompt, "temperature": 3})
        case "neither-request-nor-prompt":
            return json.dumps({**base, "metadata": {"n": request.number}})
        case "missing-attachment":
            uri = f"s3://{bucket}/attachments/missing-{request.number}.png"
            return json.dumps({**base, "prompt": prompt, "attachments": [{"uri": uri}]})
    raise ValueError(f"unknown queued variant {request.variant}")


def upload_bytes(request: Request) -> bytes:
    match request.variant:
        case "unsupported-binary":
            return (DATA / "program.elf").read_bytes()
        case "gzip":
            return (DATA / "notes.txt.gz").read_bytes()
        case "empty-file":
            return b""
        case "truncated-png":
            return (DATA / "truncated.png").read_bytes()
    return (SAMPLES / request.variant).read_bytes()


@dataclass
class Account:
    """Where each request ended."""

    sent: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failed_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lost: list[str] = field(default_factory=list)
    valid_not_completed: list[str] = field(default_factory=list)
    invalid_unclear: list[str] = field(default_factory=list)
    several_records: list[str] = field(default_factory=list)


def account_for(plan: Plan, records: list[dict[str, Any]]) -> Account:
    by_id = {r["requestId"]: r for r in records}
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        source = record.get("source") or {}
        if source.get("type") == "s3":
            by_key[source["key"]].append(record)
    account = Account(sent=len(plan.requests))
    for request in plan.requests:
        if request.kind == "upload":
            found = by_key.get(request.key or "", [])
            if len(found) > 1:
                account.several_records.append(request.label)
            record = found[0] if found else None
        else:
            # A message that cannot be read is recorded under its message id, whatever requestId it names.
            record = by_id.get(request.request_id or "") or by_id.get(request.message_id or "")
        status = (record or {}).get("status")
        if status not in TERMINAL:
            account.lost.append(f"{request.label} ({status or 'no record'})")
            continue
        assert record is not None
        if status == "COMPLETED":
            account.completed += 1
        else:
            error = record.get("error") or {}
            kind = error.get("kind", "?")
            account.failed[kind] += 1
            if len(account.failed_examples[kind]) < 3:
                account.failed_examples[kind].append(f"{request.variant}: {error.get('message', '')[:110]}")
        if request.valid and status != "COMPLETED":
            account.valid_not_completed.append(f"{request.label}: {status} {record.get('error')}")
        if not request.valid:
            message = (record.get("error") or {}).get("message", "")
            if status != "FAILED" or (request.expected_reason or "") not in message:
                account.invalid_unclear.append(f"{request.label} ({request.variant}): {status} {message!r}")
    return account


def dead_letters(stack: DeployedStack) -> dict[str, list[str]]:
    """What each DLQ holds, as labels (the upload's key, the queued request's requestId or message id)."""
    sqs = stack.client("sqs")
    found: dict[str, list[str]] = {}
    for queue in ("RequestDLQ", "UploadEventsDLQ"):
        url = stack.physical_id(queue)
        labels: list[str] = []
        while messages := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in messages:
                labels.append(dead_letter_label(queue, message))
        found[queue] = labels
    return found


def dead_letter_label(queue: str, message: dict[str, Any]) -> str:
    try:
        body = json.loads(message["Body"])
    except json.JSONDecodeError:
        return message["MessageId"]
    if queue == "UploadEventsDLQ":
        from urllib.parse import unquote_plus

        return ", ".join(unquote_plus(r["s3"]["object"]["key"]) for r in body.get("Records", []))
    return body.get("requestId") or message["MessageId"]


def gateway_figures(emulator: GatewayEmulator) -> dict[str, Any]:
    chats = [call for call in emulator.calls if call.kind == "chat"]
    faults = Counter(call.fault for call in chats if call.fault)
    successes = emulator.successful_chats_by_correlation_id()
    # A truncated 200 is work the gateway did whose answer never arrived; the retry does it again. The
    # emulator does not count it as a success (fault injected), so it is reported here, apart.
    truncated_then_done = {
        call.correlation_id
        for call in chats
        if call.fault == "truncated" and call.correlation_id in successes
    }
    return {
        "chat_calls": len(chats),
        "faults": dict(sorted(faults.items())),
        "fault_share": round(sum(faults.values()) / len(chats), 3) if chats else 0.0,
        "duplicates": {rid: n for rid, n in successes.items() if n > 1},
        "work_repeated_after_truncated_reply": len(truncated_then_done),
    }


def deploy(emulator: GatewayEmulator, function_log: Path | None = None) -> DeployedStack:
    return EmbeddedAws.deploy(
        ROOT / "template.yaml",
        parameters={**PARAMETERS, "GatewayBaseUrl": emulator.base_url},
        extra_environment={"GATEWAY_TOKEN": TOKEN},
        visibility_timeout_override=VISIBILITY_TIMEOUT,
        function_log=function_log,
    )


def send_all(pipeline: Pipeline, plan: Plan) -> None:
    for request in plan.requests:
        if request.kind == "upload":
            pipeline.upload(request.key or "", upload_bytes(request))
            continue
        message_id = pipeline.send(queued_body(request, pipeline.bucket))
        request.message_id = message_id
        if request.request_id is None:
            request.request_id = message_id  # recorded under the message id


def run_soak(
    total: int = 1000,
    *,
    seed: int = 1,
    fault_rate: float = FAULT_RATE,
    invalid_rate: float = INVALID_RATE,
    drain_timeout: float = 3600,
    handler_output: TextIO | None = None,
) -> dict[str, Any]:
    """Sends `total` requests, waits until the stack is idle and returns the account (see the module doc).

    `handler_output` receives the handlers' stdout (Powertools logs and EMF metrics; a file's are appended by
    the function processes themselves); None leaves it alone.
    """
    plan = make_plan(total, seed, invalid_rate)
    config = EmulatorConfig(
        token=TOKEN,
        seed=seed,
        retry_after_seconds=1,
        timeout_hold_seconds=1.0,
        **dict.fromkeys(FAULT_KINDS, fault_rate / len(FAULT_KINDS)),
    )
    with GatewayEmulator(config) as emulator:
        log_name = getattr(handler_output, "name", None)
        stack = deploy(emulator, Path(log_name) if isinstance(log_name, str) else None)
        try:
            pipeline = Pipeline(stack, emulator)
            for key, sample in ATTACHMENTS.items():
                pipeline.upload(key, (SAMPLES / sample).read_bytes())
            redirect = (
                contextlib.redirect_stdout(handler_output) if handler_output else contextlib.nullcontext()
            )
            with redirect:
                started = time.monotonic()
                send_all(pipeline, plan)
                sent_seconds = time.monotonic() - started
                pipeline.drain(timeout=drain_timeout)
                wall_seconds = time.monotonic() - started
            records = pipeline.records()
            dlq = dead_letters(stack)
        finally:
            stack.close()
        if emulator.internal_errors:
            raise RuntimeError("the gateway emulator raised:\n" + "\n".join(emulator.internal_errors))
        gateway = gateway_figures(emulator)
    return build_report(plan, records, dlq, gateway, wall_seconds, sent_seconds, seed)


def build_report(
    plan: Plan,
    records: list[dict[str, Any]],
    dlq: dict[str, list[str]],
    gateway: dict[str, Any],
    wall_seconds: float,
    sent_seconds: float,
    seed: int,
) -> dict[str, Any]:
    account = account_for(plan, records)
    gave_up = {
        r["requestId"]: r for r in records if (r.get("error") or {}).get("message", "").startswith("gave up")
    }
    gave_up_labels = {(r.get("source") or {}).get("key") or r["requestId"] for r in gave_up.values()}
    dlq_without_record = [label for labels in dlq.values() for label in labels if label not in gave_up_labels]
    in_dlq = sum(len(labels) for labels in dlq.values())
    # Deliveries that claimed each request (`attempts`; each makes up to GatewayMaxAttempts gateway calls).
    deliveries = Counter(int(r.get("attempts") or 0) for r in records)
    return {
        "requests_sent": account.sent,
        "queued": sum(r.kind == "queued" for r in plan.requests),
        "uploads": sum(r.kind == "upload" for r in plan.requests),
        "invalid_sent": len(plan.invalid),
        "completed": account.completed,
        "failed": sum(account.failed.values()),
        "failed_by_kind": dict(sorted(account.failed.items())),
        "failed_examples": {kind: examples for kind, examples in sorted(account.failed_examples.items())},
        "in_dlq": in_dlq,
        "in_dlq_by_queue": {queue: len(labels) for queue, labels in dlq.items()},
        "dlq_without_gave_up_record": dlq_without_record,
        "gave_up_records": len(gave_up),
        "lost": len(account.lost),
        "lost_examples": account.lost[:10],
        "duplicates": len(gateway["duplicates"]),
        "duplicate_examples": dict(list(gateway["duplicates"].items())[:10]),
        "valid_not_completed": account.valid_not_completed,
        "invalid_without_clear_failure": account.invalid_unclear,
        "uploads_with_several_records": account.several_records,
        "records_total": len(records),
        "records_by_attempts": {str(n): count for n, count in sorted(deliveries.items())},
        "chat_calls": gateway["chat_calls"],
        "faults_injected": gateway["faults"],
        "fault_share_of_chat_calls": gateway["fault_share"],
        "gateway_work_repeated_after_truncated_reply": gateway["work_repeated_after_truncated_reply"],
        "wall_seconds": round(wall_seconds, 1),
        "send_seconds": round(sent_seconds, 1),
        "requests_per_second": round(account.sent / wall_seconds, 2),
        "seed": seed,
    }


def print_table(report: dict[str, Any]) -> None:
    rows = [
        ("requests sent", report["requests_sent"]),
        ("  queued / uploads", f"{report['queued']} / {report['uploads']}"),
        ("  invalid on purpose", report["invalid_sent"]),
        ("COMPLETED", report["completed"]),
        ("FAILED", report["failed"]),
        *((f"  {kind}", count) for kind, count in report["failed_by_kind"].items()),
        ("in DLQ (RequestDLQ + UploadEventsDLQ)", report["in_dlq"]),
        ("  of which without a 'gave up' record", len(report["dlq_without_gave_up_record"])),
        ("lost (no terminal record)", report["lost"]),
        ("duplicate gateway successes (requestIds)", report["duplicates"]),
        ("valid requests not COMPLETED", len(report["valid_not_completed"])),
        ("invalid requests without a clear FAILED", len(report["invalid_without_clear_failure"])),
        (
            "records by attempts (0: refused before a claim)",
            ", ".join(f"{n}: {c}" for n, c in report["records_by_attempts"].items()),
        ),
        ("gateway chat calls", report["chat_calls"]),
        ("  faults injected", ", ".join(f"{k} {v}" for k, v in report["faults_injected"].items())),
        ("  fault share of chat calls", report["fault_share_of_chat_calls"]),
        ("  work redone after a truncated 200", report["gateway_work_repeated_after_truncated_reply"]),
        ("wall seconds (first send to idle)", report["wall_seconds"]),
        ("requests per second", report["requests_per_second"]),
    ]
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f"{name:<{width}}{value}")
    for kind, examples in report["failed_examples"].items():
        for example in examples:
            print(f"  e.g. {kind}: {example}")
    for name in ("lost_examples", "valid_not_completed", "invalid_without_clear_failure"):
        for item in report[name][:10]:
            print(f"{name}: {item}")
    targets = {
        "lost 0": report["lost"] == 0,
        "duplicates 0": report["duplicates"] == 0,
        "every valid request COMPLETED": not report["valid_not_completed"],
        "every invalid request FAILED with its reason": not report["invalid_without_clear_failure"],
        "every DLQ message has a 'gave up' record": not report["dlq_without_gave_up_record"],
    }
    print("targets: " + "; ".join(f"{name}: {'met' if met else 'MISSED'}" for name, met in targets.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--total", type=int, default=1000, help="requests to send (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="plan and fault sequence seed (default 1)")
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", prefix="soak-handlers-", suffix=".log", delete=False) as log:
        print(f"handler output (logs, EMF metrics): {log.name}")
        report = run_soak(args.total, seed=args.seed, handler_output=log)
    print_table(report)
    summary = {
        key: report[key]
        for key in (
            "requests_sent",
            "completed",
            "failed",
            "failed_by_kind",
            "in_dlq",
            "lost",
            "duplicates",
            "invalid_sent",
            "wall_seconds",
            "requests_per_second",
            "chat_calls",
            "faults_injected",
            "gateway_work_repeated_after_truncated_reply",
        )
    }
    summary["valid_not_completed"] = len(report["valid_not_completed"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
