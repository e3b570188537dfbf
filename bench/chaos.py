"""Chaos: the soak's requests through the whole pipeline on the embedded AWS with faults at every step
boundary, then a DLQ redrive and a sweeper run, then an account of where every request ended, whether it
was announced, and how often the gateway billed it.

template.yaml is deployed into moto (devtools.embedded_aws: each function in processes of its own under its
role, so a kill is a real kill), wired to the gateway emulator; the token is in the stack's secret, read by
the functions as in AWS. While the requests run (uploads and queued requests as in bench/soak.py, a share
of the queued ones generating an image, so the poller runs):

- the gateway: the soak's transient faults (429, 500, 503, timeouts, truncated 200s) on chat and execution
  polls, and answers slower than the caller's deadline (`slow`);
- a 401 window: the gateway moves to a new token, and only WINDOW seconds later does the stack's secret;
- AWS (devtools.embedded_aws.aws_faults, at the server the functions call): DynamoDB throttling and 5xx on
  every write, S3 5xx and throttling on result and image writes, PutEvents and StartExecution failures; some
  once (the SDK's own retries absorb them), some repeated past the SDK's retries, so they reach the code;
  S3 result writes slower than the function's Timeout (the function times out mid-call);
- kills (devtools.kill_points): the function's process killed with SIGKILL right after the gateway answered
  and right after each write (DynamoDB, S3, PutEvents, StartExecution);
- poller executions aborted (StopExecution) at a rate.

The sweeper runs on its schedule all along (every minute here). Then every fault is switched off and the
stack drained; the dead-letter queues are redriven as the README tells an operator (RequestDLQ's messages
moved back to RequestQueue, each a new message as SQS's move task makes it; for UploadEventsDLQ each object
copied onto itself, then the DLQ purged); once every unfinished record's sweep moment has passed the
sweeper runs once more, and the stack is drained again.

The account (last line, JSON):
- `requests`, `completed`, `failed`: the final record of each request (an upload redriven by a copy has a
  record per copy; the latest counts);
- `stuck`: a record that is not terminal at the end (PROCESSING, WAITING_FOR_TOOLS);
- `lost`: no record at all at the end (after the redrive, a request in a DLQ is not terminal either);
- `unannounced`: a terminal record with no EventBridge event for its final status (events are read from an
  SQS queue a rule sends every event of the pipeline's source to);
- `gateway_calls`: every chat call the emulator saw, faults included; `billed_calls`: those it answered with
  the work done (a 200 without an injected fault, or a slow 200), which the gateway bills;
- `rebilled`: billed calls beyond one per request (per requestId: a redrive that makes a new request, a
  queued one without requestId or an upload copied onto itself, is counted apart, in
  `billed_again_as_a_new_request`); `rebilled_unavoidable`: those whose earlier answer never
  got stored because the function died (killed, timed out) between the answer arriving and its S3 write, or
  never reached the function at all (the process died mid-call, or the answer came after the caller's
  deadline). From the kill points' journal: each `answered` line (the gateway's answer arrived, per request)
  is followed, in that process, by the S3 write of the request's result, or by the process's death (no end
  of its invocation), or by neither (the function lived on and still did not store it: avoidable).

Timings are scaled down from a deployment, keeping its ratios: the functions' Timeout 15 s (30 s for the
poll step, whose gateway calls have 20 s), so a claim's lease is 35 s and every queue's visibility timeout 40 s
(the template: 120 s, 150 s, 750 s), and the sweeper's grace 60 s (the template: at least 760 s, more than the
visibility timeout); RetryBaseDelaySeconds 1; PollTimeoutSeconds 60, PollerTimeoutSeconds 180.

    python bench/chaos.py                      # 1,000 requests
    python bench/chaos.py --requests 100 --seed 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote_plus

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT / "src"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from bench import soak  # noqa: E402
from devtools.embedded_aws import DeployedStack, EmbeddedAws  # noqa: E402
from devtools.embedded_aws.aws_faults import AwsFaults  # noqa: E402
from devtools.emulator import EmulatorConfig, GatewayEmulator  # noqa: E402
from devtools.local_pipeline import (  # noqa: E402
    LocalPipeline,
    image_request_message,
    quiet_step_functions_interpreter,
)

TERMINAL = ("COMPLETED", "FAILED")
ORGANISATION = "chaos-org"
PARAMETERS = {
    **soak.PARAMETERS,
    "GatewayOrganisation": ORGANISATION,
    "PollTimeoutSeconds": "60",
    "PollerTimeoutSeconds": "180",
    "SweepSchedule": "rate(1 minute)",
}
# The sweeper's grace (the template: at least 760 s, more than the queues' 750 s visibility timeout), scaled
# as the visibility timeout is: more than VISIBILITY_TIMEOUT. Given to every function (each claim sets the
# moment its record may be swept), past the parameter's minimum.
SWEEP_GRACE_SECONDS = 60
FUNCTION_TIMEOUTS = {
    "SqsRequestFunction": 15,
    "S3UploadFunction": 15,
    "PollExecutionFunction": 30,
    "FinishRequestFunction": 15,
}
# More than an entry point's Timeout plus the claim's lease margin (lease = Timeout - 10 + 30 = 35 s), as the
# template's 750 s is more than its 150 s: a message comes back only once its earlier delivery is over.
VISIBILITY_TIMEOUT = 40
IMAGE_NUMBERS = (0, 2, 5)  # request number % 10: 30 % of the valid queued requests generate an image
ROTATION_AT = 0.3  # of the requests sent when the gateway moves to a new token
ROTATION_WINDOW_SECONDS = 10.0  # until the stack's secret has it
SLOW_ANSWER_SECONDS = 8.0  # the entry points' gateway budget is 5 s (Timeout 15 - 10 s margin)
SLOW_RATE = 0.02
ABORT_RATE = 0.25  # of the poller's executions
KILL_RATES = {
    "gateway-answered": 0.02,
    "dynamodb-write": 0.004,  # about six writes a request
    "s3-write": 0.015,
    "events-write": 0.015,
    "states-write": 0.05,
}
# At most this many kills per request sent. A kill hands its whole batch back after VISIBILITY_TIMEOUT, and
# kills among the redelivered batches start yet another round: uncapped, an 80-request run took two to four
# rounds (100 to 155 s alone); a 1,000-request run stays under it (83 and 97 kills).
KILL_BUDGET = 0.1
DYNAMODB_WRITES = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:TransactWriteItems")
# Past the functions' SDK retries (adaptive mode, 5 attempts): such a fault reaches the code.
OUTLASTS_RETRIES = 8
RESULTS_PREFIX = "results/"
SCHEDULED_EVENT = {
    "version": "0",
    "id": "chaos-sweep",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "region": "us-east-1",
    "resources": [],
    "detail": {},
}


def arm_aws_faults(faults: AwsFaults) -> None:
    """(operation, kind, rate, repeat, options): most absorbed by the SDK, some reaching the code."""
    for operation in DYNAMODB_WRITES:
        faults.add(operation, "throttle", 0.03)
        faults.add(operation, "5xx", 0.01)
        faults.add(operation, "throttle", 0.003, repeat=OUTLASTS_RETRIES)
        faults.add(operation, "5xx", 0.003, repeat=OUTLASTS_RETRIES)
    faults.add("s3:PutObject", "5xx", 0.03, key_prefix=RESULTS_PREFIX)
    faults.add("s3:PutObject", "throttle", 0.02, key_prefix=RESULTS_PREFIX)
    faults.add("s3:PutObject", "5xx", 0.005, repeat=OUTLASTS_RETRIES, key_prefix=RESULTS_PREFIX)
    # Slower than the function's Timeout: it is ended mid-call (the write still lands, late).
    faults.add("s3:PutObject", "slow", 0.005, delay=20, key_prefix=RESULTS_PREFIX)
    faults.add("events:PutEvents", "5xx", 0.03)
    faults.add("events:PutEvents", "failed-entry", 0.03)
    faults.add("events:PutEvents", "throttle", 0.01, repeat=OUTLASTS_RETRIES)
    faults.add("states:StartExecution", "throttle", 0.05)
    faults.add("states:StartExecution", "5xx", 0.05, repeat=OUTLASTS_RETRIES)


@dataclass
class Chaos:
    """The switches the run turns on and off, and what they did."""

    stack: DeployedStack
    emulator: GatewayEmulator
    control: Path
    abort_rate: float = ABORT_RATE
    seed: int = 1
    max_kills: int | None = None
    aborted: list[str] = field(default_factory=list)
    rotations: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def kills(self, rates: dict[str, float]) -> None:
        temporary = self.control.with_suffix(".tmp")
        temporary.write_text(json.dumps({"rates": rates, "max_kills": self.max_kills}))
        temporary.replace(self.control)  # atomic: a process never reads half a file

    def start(self) -> None:
        """AWS faults and kills on, and poller executions aborted from now on."""
        arm_aws_faults(self.stack.server.faults)
        self.kills(KILL_RATES)
        self.start_aborting()

    def start_aborting(self) -> None:
        thread = threading.Thread(target=self._abort_executions, name="chaos-aborts", daemon=True)
        self._threads.append(thread)
        thread.start()

    def rotate_token(self, window: float = ROTATION_WINDOW_SECONDS) -> None:
        """The gateway takes a new token now; the stack's secret gets it `window` seconds later, and not
        before the gateway has refused the old one at least once (so the window is never missed)."""
        token = secrets.token_urlsafe(16)
        started = time.monotonic()
        calls_before = len(self.emulator.calls)
        self.emulator.config.token = token

        def refused() -> bool:
            return any(call.status == 401 for call in self.emulator.calls[calls_before:])

        def put_in_secret() -> None:
            if self._stop.wait(window):
                return
            deadline = time.monotonic() + 60
            while not refused() and time.monotonic() < deadline and not self._stop.wait(0.1):
                pass
            self.stack.client("secretsmanager").put_secret_value(
                SecretId=self.stack.physical_id("GatewayTokenSecret"), SecretString=token
            )
            self.rotations.append({"window_seconds": round(time.monotonic() - started, 1)})

        thread = threading.Thread(target=put_in_secret, name="chaos-rotation", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Every fault off (a rotation in progress completes first: the secret gets the new token)."""
        for thread in self._threads:
            if thread.name == "chaos-rotation":
                thread.join()
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.kills({})
        self.stack.server.faults.clear()
        config = self.emulator.config
        for name in ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_truncated_json", "rate_slow"):
            setattr(config, name, 0.0)

    def _abort_executions(self) -> None:
        """Each poller execution is drawn once; a drawn one is stopped a moment after it is first seen."""
        draw = random.Random(self.seed)
        seen: dict[str, float | None] = {}  # arn -> when to stop it (None: left alone)
        states = self.stack.client("stepfunctions")
        arn = self.stack.physical_id("ToolExecutionPoller")
        while not self._stop.wait(0.5):
            running = [
                execution["executionArn"]
                for page in states.get_paginator("list_executions").paginate(
                    stateMachineArn=arn, statusFilter="RUNNING"
                )
                for execution in page["executions"]
            ]
            now = time.monotonic()
            for execution in running:
                if execution not in seen:
                    seen[execution] = now + draw.uniform(0, 2) if draw.random() < self.abort_rate else None
                when = seen[execution]
                if when is not None and now >= when:
                    seen[execution] = None
                    with contextlib.suppress(states.exceptions.ExecutionDoesNotExist):
                        states.stop_execution(executionArn=execution, cause="chaos: aborted")
                        self.aborted.append(execution)


def make_plan(total: int, seed: int) -> soak.Plan:
    """The soak's plan, with a share of the valid queued requests generating an image."""
    plan = soak.make_plan(total, seed)
    for request in plan.requests:
        # Three in ten of them: short or full forms that name their requestId.
        if request.kind == "queued" and request.valid and request.number % 10 in IMAGE_NUMBERS:
            request.variant = "image"
    return plan


def send_all(pipeline: LocalPipeline, plan: soak.Plan, chaos: Chaos) -> None:
    rotate_after = int(len(plan.requests) * ROTATION_AT)
    for number, request in enumerate(plan.requests):
        if number == rotate_after:
            chaos.rotate_token()
        if request.kind == "upload":
            pipeline.upload(request.key or "", soak.upload_bytes(request))
            continue
        if request.variant == "image":
            body = json.dumps(image_request_message(request.request_id or ""))
        else:
            body = soak.queued_body(request, pipeline.bucket)
        request.message_id = pipeline.send(body)
        if request.request_id is None:
            request.request_id = request.message_id  # recorded under the message id


def events_queue(stack: DeployedStack) -> str:
    """An SQS queue that every event of the pipeline's source reaches, to read what was announced."""
    events, sqs = stack.client("events"), stack.client("sqs")
    url = sqs.create_queue(QueueName="chaos-announced")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="chaos-announced", EventPattern=json.dumps({"source": ["quant.ai-pipeline"]}))
    events.put_targets(Rule="chaos-announced", Targets=[{"Id": "queue", "Arn": arn}])
    return url


def drain_queue(stack: DeployedStack, url: str) -> Iterator[dict[str, Any]]:
    sqs = stack.client("sqs")
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
    ).get("Messages", []):
        for message in messages:
            yield message
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def announced(stack: DeployedStack, url: str) -> set[tuple[str, str]]:
    found = set()
    for message in drain_queue(stack, url):
        detail = json.loads(message["Body"])["detail"]
        found.add((detail["requestId"], detail["status"]))
    return found


def redrive(stack: DeployedStack, plan: soak.Plan, aliases: dict[str, list[str]]) -> dict[str, int]:
    """As the README tells an operator: RequestDLQ's messages back to RequestQueue (what
    start-message-move-task does; moto has no move tasks), and for UploadEventsDLQ each object copied onto
    itself (a new ObjectCreated event, so a new request) before the DLQ is purged."""
    sqs, s3 = stack.client("sqs"), stack.client("s3")
    by_message_id = {r.message_id: r for r in plan.requests if r.message_id}
    queue = stack.physical_id("RequestQueue")
    moved = 0
    for message in drain_queue(stack, stack.physical_id("RequestDLQ")):
        new_id = sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])["MessageId"]
        request = by_message_id.get(message["MessageId"])
        if request is not None:
            by_message_id[new_id] = request
            if request.request_id == request.message_id:  # recorded under the message id: now the new one
                aliases[request.label].append(new_id)
        moved += 1
    copied = 0
    for message in drain_queue(stack, stack.physical_id("UploadEventsDLQ")):
        for record in json.loads(message["Body"]).get("Records", []):
            bucket, key = record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])
            s3.copy_object(
                Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, MetadataDirective="REPLACE"
            )
            copied += 1
    return {"request_dlq_moved": moved, "upload_dlq_objects_copied": copied}


def sweeper(stack: DeployedStack) -> str | None:
    """The sweeper function's logical id, when template.yaml has one."""
    found = sorted(logical_id for logical_id in stack.functions if "Sweep" in logical_id)
    return found[0] if found else None


def run_sweeper(stack: DeployedStack, pipeline: LocalPipeline, max_wait: float = 300) -> dict[str, Any]:
    """Waits until the sweep moment (`sweepAt`) of every record still in the sweeper's index (not ended, or
    ended and not yet announced) has passed (at most `max_wait` seconds), then runs the sweeper as its
    schedule does."""
    name = sweeper(stack)
    if name is None:
        return {"sweeper": "none in template.yaml"}
    due = [float(r["sweepAt"]) for r in pipeline.records() if "sweepAt" in r]
    waited = min(max([0.0, *due]) + 1 - time.time(), max_wait)
    if waited > 0:
        time.sleep(waited)
    result = stack.invoke(name, SCHEDULED_EVENT)
    return {"sweeper": name, "sweeper_waited_seconds": round(max(waited, 0), 1), "sweeper_result": result}


# --- the account -----------------------------------------------------------------------------------------------


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class AnswerFates:
    """Per requestId, what became of the gateway answers that reached a function."""

    answered: Counter[str] = field(default_factory=Counter)
    died_before_stored: Counter[str] = field(default_factory=Counter)  # the process died in between
    not_stored_alive: Counter[str] = field(default_factory=Counter)  # it lived on and did not store it
    kills: Counter[str] = field(default_factory=Counter)  # by point


def answer_fates(journal: list[dict[str, Any]]) -> AnswerFates:
    fates = AnswerFates()
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in journal:
        by_pid[event["pid"]].append(event)
        if event["event"] == "killed":
            fates.kills[event["point"]] += 1
    for events in by_pid.values():
        for index, event in enumerate(events):
            if event["event"] != "answered" or not event.get("requestId"):
                continue
            request_id = event["requestId"]
            fates.answered[request_id] += 1
            stored = ended = False
            for later in events[index + 1 :]:  # one invocation at a time per process: up to its end
                if later["event"] == "end":
                    ended = True
                    break
                if (
                    later["event"] == "write"
                    and later.get("point") == "s3-write"
                    and str(later.get("key") or "").endswith(f"/{request_id}.json")
                ):
                    stored = True
                    break
            if not stored:
                (fates.not_stored_alive if ended else fates.died_before_stored)[request_id] += 1
    return fates


def billed_by_request(emulator: GatewayEmulator) -> Counter[str]:
    """Chat calls the gateway did the work of and answered: a 200 with no fault, or a slow 200."""
    return Counter(
        call.correlation_id
        for call in emulator.calls
        if call.kind == "chat" and call.status == 200 and call.fault in (None, "slow") and call.correlation_id
    )


def final_records(
    plan: soak.Plan, records: list[dict[str, Any]], aliases: dict[str, list[str]]
) -> dict[str, list[dict[str, Any]]]:
    """Each request's records (label -> oldest first): queued by requestId (or message ids), uploads by key."""
    by_id = {r["requestId"]: r for r in records}
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        source = record.get("source") or {}
        if source.get("type") == "s3" and not record["requestId"].startswith("upload-message-"):
            by_key[source.get("key", "")].append(record)
    found = {}
    for request in plan.requests:
        if request.kind == "upload":
            matched = by_key.get(request.key or "", [])
        else:
            ids = [request.request_id, request.message_id, *aliases.get(request.label, [])]
            matched = [by_id[i] for i in dict.fromkeys(ids) if i and i in by_id]
        found[request.label] = sorted(matched, key=lambda r: str(r.get("createdAt") or ""))
    return found


def rebill(account: dict[str, Any], label: str, request_id: str, calls: int, fates: AnswerFates) -> None:
    """Counts one request's calls beyond the first, and how many of them no code could have spared."""
    rebills = max(0, calls - 1)
    if not rebills:
        return
    never_arrived = max(0, calls - fates.answered[request_id])
    died = fates.died_before_stored[request_id]
    unavoidable = min(rebills, never_arrived + died)
    account["rebilled"] += rebills
    account["rebilled_unavoidable"] += unavoidable
    causes = account["rebilled_by_cause"]
    causes["answer never reached the function"] += min(rebills, never_arrived)
    causes["function died before storing the answer"] += unavoidable - min(rebills, never_arrived)
    if rebills > unavoidable:
        causes["avoidable"] += rebills - unavoidable
        account["rebilled_avoidable"].append(
            f"{label} ({request_id}): {calls} billed calls, {never_arrived} never arrived, {died} died before"
            f" storing, {fates.not_stored_alive[request_id]} not stored by a function that lived on"
        )


def build_account(
    plan: soak.Plan,
    records: list[dict[str, Any]],
    events: set[tuple[str, str]],
    billed: Counter[str],
    fates: AnswerFates,
    dlq_at_end: dict[str, list[str]],
    aliases: dict[str, list[str]],
) -> dict[str, Any]:
    account: dict[str, Any] = {
        "completed": 0,
        "failed": 0,
        "failed_by_kind": Counter(),
        "lost": [],
        "stuck": [],
        "unannounced": [],
        "rebilled": 0,
        "rebilled_unavoidable": 0,
        "rebilled_avoidable": [],
        "rebilled_by_cause": Counter(),
        "billed_again_as_a_new_request": 0,
    }
    in_dlq = {label for labels in dlq_at_end.values() for label in labels}
    for label, found in final_records(plan, records, aliases).items():
        final = found[-1] if found else None
        status = (final or {}).get("status")
        if final is None:
            account["lost"].append(f"{label}: no record{' (in a DLQ)' if label in in_dlq else ''}")
        elif status in TERMINAL:
            if status == "COMPLETED":
                account["completed"] += 1
            else:
                account["failed"] += 1
                account["failed_by_kind"][(final.get("error") or {}).get("kind", "?")] += 1
        # Every record of the request counts: one a redrive left behind under an old id included.
        unfinished = [r for r in found if r.get("status") not in TERMINAL]
        if unfinished:
            account["stuck"].append(
                f"{label}: "
                + "; ".join(
                    f"{r['requestId']} {r.get('status')}, attempts {r.get('attempts')},"
                    f" lastError {((r.get('lastError') or {}).get('message') or '')[:100]!r}"
                    for r in unfinished
                )
            )
        for record in found:
            if record.get("status") in TERMINAL and (record["requestId"], record["status"]) not in events:
                account["unannounced"].append(f"{label}: {record['requestId']} {record['status']}, no event")
        # Billed once per requestId: a redrive that gives a request a new one (a queued request without a
        # requestId gets a new message id; an upload copied onto itself is a new upload) makes a new request,
        # as the README says; such calls are counted apart.
        billed_ids = [record["requestId"] for record in found if billed[record["requestId"]]]
        if len(billed_ids) > 1:
            account["billed_again_as_a_new_request"] += len(billed_ids) - 1
        for request_id in billed_ids:
            rebill(account, label, request_id, billed[request_id], fates)
    account["failed_by_kind"] = dict(sorted(account["failed_by_kind"].items()))
    account["rebilled_by_cause"] = {k: v for k, v in account["rebilled_by_cause"].items() if v}
    return account


# --- the run ---------------------------------------------------------------------------------------------------


def deploy(
    emulator: GatewayEmulator, token: str, control: Path, journal: Path, log: Path | None
) -> DeployedStack:
    return EmbeddedAws.deploy(
        ROOT / "template.yaml",
        parameters={**PARAMETERS, "GatewayBaseUrl": emulator.base_url},
        secret_values={"GatewayTokenSecret": token},
        extra_environment={"SWEEP_GRACE_SECONDS": str(SWEEP_GRACE_SECONDS)},
        visibility_timeout_override=VISIBILITY_TIMEOUT,
        function_timeout_override=FUNCTION_TIMEOUTS,
        kill_points=(control, journal),
        function_log=log,
    )


def run_chaos(
    total: int = 1000,
    *,
    seed: int = 1,
    drain_timeout: float = 3600,
    handler_output: TextIO | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Sends `total` requests under every fault, redrives, sweeps, and returns the account."""
    plan = make_plan(total, seed)
    aliases: dict[str, list[str]] = defaultdict(list)  # label -> message ids a redrive gave it
    token = secrets.token_urlsafe(16)
    config = EmulatorConfig(
        token=token,
        organization=ORGANISATION,
        seed=seed,
        retry_after_seconds=1,
        timeout_hold_seconds=1.0,
        slow_seconds=SLOW_ANSWER_SECONDS,
        rate_slow=SLOW_RATE,
        execution_pending_seconds=0.5,
        execution_seconds=3.0,
        **dict.fromkeys(soak.FAULT_KINDS, soak.FAULT_RATE / len(soak.FAULT_KINDS)),
    )
    with contextlib.ExitStack() as cleanup:
        directory = workdir or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        control, journal_path = directory / "kill-points.json", directory / "journal.jsonl"
        emulator = cleanup.enter_context(GatewayEmulator(config))
        log_name = getattr(handler_output, "name", None)
        stack = deploy(
            emulator, token, control, journal_path, Path(log_name) if isinstance(log_name, str) else None
        )
        cleanup.callback(stack.close)
        cleanup.enter_context(quiet_step_functions_interpreter())
        pipeline = LocalPipeline(stack, emulator)
        for key, sample in soak.ATTACHMENTS.items():
            pipeline.upload(key, (soak.SAMPLES / sample).read_bytes())
        announced_url = events_queue(stack)
        chaos = Chaos(stack, emulator, control, seed=seed, max_kills=math.ceil(total * KILL_BUDGET))
        redirect = contextlib.redirect_stdout(handler_output) if handler_output else contextlib.nullcontext()
        with redirect:
            started = time.monotonic()
            chaos.start()
            send_all(pipeline, plan, chaos)
            pipeline.drain(timeout=drain_timeout)
            chaos_seconds = time.monotonic() - started
            chaos.stop()
            pipeline.drain(timeout=drain_timeout)
            dlq_before = {queue: pipeline.queue_depth(queue) for queue in ("RequestDLQ", "UploadEventsDLQ")}
            redriven = redrive(stack, plan, aliases)
            pipeline.drain(timeout=drain_timeout)
            swept = run_sweeper(stack, pipeline)
            pipeline.drain(timeout=drain_timeout)
            wall_seconds = time.monotonic() - started
        records = pipeline.records()
        dlq_at_end = soak.dead_letters(stack)
        # EventBridge's deliveries to functions that failed every retry (the poller-ended rule, the schedule).
        async_dlq = pipeline.queue_depth("AsyncEventsDLQ") if "AsyncEventsDLQ" in stack.resources else None
        events = announced(stack, announced_url)
        invocation_errors = Counter(
            invocation.error.error_type for invocation in stack.invocations if invocation.error is not None
        )
        aws_faults = stack.server.faults.counts()
        journal = read_journal(journal_path)
    if emulator.internal_errors:
        raise RuntimeError("the gateway emulator raised:\n" + "\n".join(emulator.internal_errors))
    fates = answer_fates(journal)
    billed = billed_by_request(emulator)
    account = build_account(plan, records, events, billed, fates, dlq_at_end, aliases)
    chats = [call for call in emulator.calls if call.kind == "chat"]
    return {
        "requests": len(plan.requests),
        "completed": account["completed"],
        "failed": account["failed"],
        "lost": len(account["lost"]),
        "stuck": len(account["stuck"]),
        "unannounced": len(account["unannounced"]),
        "gateway_calls": len(chats),
        "billed_calls": sum(billed.values()),
        "rebilled": account["rebilled"],
        "rebilled_unavoidable": account["rebilled_unavoidable"],
        "rebilled_by_cause": account["rebilled_by_cause"],
        "billed_again_as_a_new_request": account["billed_again_as_a_new_request"],
        "failed_by_kind": account["failed_by_kind"],
        "queued": sum(r.kind == "queued" for r in plan.requests),
        "uploads": sum(r.kind == "upload" for r in plan.requests),
        "image_requests": sum(r.variant == "image" for r in plan.requests),
        "invalid": len(plan.invalid),
        "gateway_faults": dict(sorted(Counter(call.fault for call in chats if call.fault).items())),
        "gateway_401": sum(call.status == 401 for call in emulator.calls),
        "token_rotations": chaos.rotations,
        "aws_faults": aws_faults,
        "kills": dict(sorted(fates.kills.items())),
        "invocation_errors": dict(sorted(invocation_errors.items())),
        "executions_aborted": len(chaos.aborted),
        "dlq_before_redrive": dlq_before,
        **redriven,
        **swept,
        "in_dlq_at_end": {queue: len(labels) for queue, labels in dlq_at_end.items()},
        "async_events_dlq_at_end": async_dlq,
        "lost_examples": account["lost"][:10],
        "journal": str(journal_path) if workdir else None,
        "stuck_examples": account["stuck"][:10],
        "unannounced_examples": account["unannounced"][:10],
        "rebilled_avoidable_examples": account["rebilled_avoidable"][:10],
        "chaos_seconds": round(chaos_seconds, 1),
        "wall_seconds": round(wall_seconds, 1),
        "seed": seed,
    }


def print_table(report: dict[str, Any]) -> None:
    skip = {"lost_examples", "stuck_examples", "unannounced_examples", "rebilled_avoidable_examples"}
    width = max(len(name) for name in report) + 2
    for name, value in report.items():
        if name not in skip:
            print(f"{name:<{width}}{value}")
    for name in sorted(skip):
        for item in report[name]:
            print(f"{name}: {item}")
    targets = {
        "lost 0": report["lost"] == 0,
        "stuck 0": report["stuck"] == 0,
        "unannounced 0": report["unannounced"] == 0,
        "rebilled = rebilled_unavoidable": report["rebilled"] == report["rebilled_unavoidable"],
    }
    print("targets: " + "; ".join(f"{name}: {'met' if met else 'MISSED'}" for name, met in targets.items()))


SUMMARY = (
    "requests",
    "completed",
    "failed",
    "lost",
    "stuck",
    "unannounced",
    "gateway_calls",
    "billed_calls",
    "rebilled",
    "rebilled_unavoidable",
    "rebilled_by_cause",
    "billed_again_as_a_new_request",
    "kills",
    "aws_faults",
    "gateway_faults",
    "executions_aborted",
    "invocation_errors",
    "dlq_before_redrive",
    "sweeper",
    "wall_seconds",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="plan and fault sequence seed (default 1)")
    parser.add_argument("--keep", type=Path, help="a directory to keep the kill points' journal in")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", prefix="chaos-handlers-", suffix=".log", delete=False) as log:
        print(f"handler output (logs, EMF metrics): {log.name}")
        report = run_chaos(args.requests, seed=args.seed, handler_output=log, workdir=args.keep)
    print_table(report)
    print(json.dumps({key: report[key] for key in SUMMARY}))


if __name__ == "__main__":
    main()
