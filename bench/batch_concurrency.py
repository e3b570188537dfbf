"""One SQS batch of 10 queued requests through SqsRequestFunction, against the same 10 requests handled one
message after another, in one run, with the gateway emulator adding 500 ms to every chat call.

Both ways run the real handler (src/handlers/sqs_request.py) on template.yaml deployed into the embedded AWS
(moto), with real SQS-shaped events: the messages are sent to RequestQueue and received from it, so every
record has a receipt handle, attributes and the queue's ARN as Lambda would give them. The batch is one
invocation with 10 records (the handler runs them in threads sharing one connection pool); the baseline is
10 invocations of one record each, so the code path and the records written are the same. Every request has
its own requestId, so idempotency never skips work, and every record must end COMPLETED.

The gateway emulator runs in a process of its own (`python -m devtools.emulator`), as the real gateway is a
remote service whose work never runs on the caller's CPU. In this process, the emulator's CPU work (parsing
each request, building each reply) would hold the same GIL as the handler's threads: work per message that
threads cannot overlap, which would count against the batch here and never in AWS. moto's DynamoDB, S3 and
EventBridge still run in this process (the embedded AWS is in-process), so their CPU work stays in both ways.

There are two phases, each with its own emulator process and its own deploy of the stack (one embedded stack
at a time; a fresh deploy starts the function cold, so it builds its gateway client for that emulator):
first with 500 ms added to every chat call, then with none. In each phase a warm-up invocation runs first and
is not timed, so neither way pays the cold start (imports, pydantic model builds, the first connections),
then the pair is repeated (batch first, then sequential) and medians are reported. The phase with no added
latency is the pipeline's own work per message (moto's CPU work, where in AWS it would be network waits), and
shows how much of the remaining gap is the gateway latency that concurrency overlaps and how much is that CPU
work, which threads cannot overlap.

The handlers' stdout (Powertools log lines and EMF metrics, one JSON line each) goes to a temporary file, as
Lambda sends it to CloudWatch, so the report stays readable.

    python bench/batch_concurrency.py               # the table, then one JSON line
    python bench/batch_concurrency.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from devtools.embedded_aws import DeployedStack, EmbeddedAws  # noqa: E402
from devtools.embedded_aws.sqs_poller import lambda_sqs_event  # noqa: E402
from devtools.emulator.process import EmulatorProcess  # noqa: E402

MESSAGES = 10
LATENCY_MS = 500
TARGET_RATIO = 0.2
TOKEN = "bench-token"
FUNCTION = "SqsRequestFunction"
QUEUE = "RequestQueue"


def deploy(gateway_url: str) -> DeployedStack:
    # No pollers: this benchmark invokes the function itself, with events it builds from received messages.
    return EmbeddedAws.deploy(
        ROOT / "template.yaml",
        parameters={
            "GatewayOrganisation": "bench-org",
            "GatewayBaseUrl": gateway_url,
            "RetryBaseDelaySeconds": "0",
        },
        extra_environment={"GATEWAY_TOKEN": TOKEN},
        start_pollers=False,
    )


def received_event(stack: DeployedStack, request_ids: list[str]) -> dict[str, Any]:
    """Sends one message per requestId, receives them all and returns the Lambda SQS event of that batch."""
    sqs = stack.client("sqs")
    url = stack.physical_id(QUEUE)
    for request_id in request_ids:
        body = {"requestId": request_id, "prompt": f"Say something about {request_id}", "maxTokens": 64}
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    messages: list[dict[str, Any]] = []
    while len(messages) < len(request_ids):
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, len(request_ids) - len(messages)),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            raise RuntimeError(f"received {len(messages)} of {len(request_ids)} messages just sent")
        messages.extend(got)
    # Processed messages are deleted, as the SQS poller would; left alone they would come back later.
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return lambda_sqs_event(messages, stack.attribute(QUEUE, "Arn"), stack.region)


def invoke(stack: DeployedStack, event: dict[str, Any]) -> float:
    started = time.perf_counter()
    result = stack.invoke(FUNCTION, event)
    seconds = time.perf_counter() - started
    if result.get("batchItemFailures"):
        raise RuntimeError(f"the handler reported failures: {result}")
    return seconds


def statuses(stack: DeployedStack, request_ids: list[str]) -> dict[str, str]:
    table = stack.client("dynamodb")
    found = {}
    for request_id in request_ids:
        item = table.get_item(
            TableName=stack.physical_id("ResultsTable"), Key={"requestId": {"S": request_id}}
        ).get("Item")
        found[request_id] = item["status"]["S"] if item else "MISSING"
    return found


def timed_pair(stack: DeployedStack, label: str) -> dict[str, Any]:
    """One batch of MESSAGES records, then the same number of one-record invocations, all distinct requests."""
    batch_ids = [f"batch-{label}-{n}" for n in range(MESSAGES)]
    sequential_ids = [f"seq-{label}-{n}" for n in range(MESSAGES)]
    batch_event = received_event(stack, batch_ids)
    single_events = [received_event(stack, [request_id]) for request_id in sequential_ids]
    batch_seconds = invoke(stack, batch_event)
    sequential_seconds = sum(invoke(stack, event) for event in single_events)
    found = statuses(stack, batch_ids + sequential_ids)
    return {
        "batch_seconds": batch_seconds,
        "sequential_seconds": sequential_seconds,
        "completed": sum(status == "COMPLETED" for status in found.values()),
        "records": len(found),
        "not_completed": {rid: status for rid, status in found.items() if status != "COMPLETED"},
    }


def measure(latency_ms: int, repeats: int, handler_output: TextIO) -> list[dict[str, Any]]:
    """One phase: an emulator process adding latency_ms to every chat call, the stack deployed against it."""
    label = f"{uuid.uuid4().hex[:8]}-{latency_ms}ms"
    cli_args = ("--token", TOKEN, "--latency-ms", str(latency_ms), "--quiet")
    with EmulatorProcess(*cli_args) as emulator:
        stack = deploy(emulator.base_url)
        try:
            with contextlib.redirect_stdout(handler_output):
                # Warm-up: the cold start (imports, first connections) is paid here, outside both timings.
                invoke(stack, received_event(stack, [f"warmup-{label}"]))
                pairs = [timed_pair(stack, f"{label}-{repeat}") for repeat in range(repeats)]
        finally:
            stack.close()
    # With --quiet the emulator writes to stderr only the tracebacks of its own failures.
    if emulator.stderr:
        raise SystemExit(f"the gateway emulator ({latency_ms} ms) raised:\n{emulator.stderr}")
    return pairs


def medians(rounds: list[dict[str, Any]]) -> tuple[float, float]:
    return (
        statistics.median(r["batch_seconds"] for r in rounds),
        statistics.median(r["sequential_seconds"] for r in rounds),
    )


def report(rounds: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    print(
        f"{MESSAGES} queued requests per way, {FUNCTION}, real SQS events, embedded AWS (moto),"
        " gateway emulator in its own process"
    )
    print(f"{'latency':<9}{'round':<7}{'batch s':>10}{'sequential s':>15}{'ratio':>8}{'COMPLETED':>12}")
    for latency, pairs in rounds.items():
        for number, r in enumerate(pairs, 1):
            ratio = r["batch_seconds"] / r["sequential_seconds"]
            done = f"{r['completed']}/{r['records']}"
            print(
                f"{f'{latency} ms':<9}{number:<7}{r['batch_seconds']:>10.3f}{r['sequential_seconds']:>15.3f}"
                f"{ratio:>8.3f}{done:>12}"
            )
    batch, sequential = medians(rounds[LATENCY_MS])
    batch_0, sequential_0 = medians(rounds[0])
    ratio = batch / sequential
    every_round = [r for pairs in rounds.values() for r in pairs]
    completed = sum(r["completed"] for r in every_round)
    expected = sum(r["records"] for r in every_round)
    for r in every_round:
        for request_id, status in r["not_completed"].items():
            print(f"NOT COMPLETED: {request_id} is {status}")
    print(f"median at {LATENCY_MS} ms: batch {batch:.3f} s, sequential {sequential:.3f} s, ratio {ratio:.3f}")
    print(
        f"median at 0 ms (the pipeline's own work): batch {batch_0:.3f} s, sequential {sequential_0:.3f} s"
        f" ({sequential_0 / MESSAGES * 1000:.0f} ms per message)"
    )
    # Concurrent calls wait out the latency together, and partly while other threads do their CPU work.
    print(
        f"the added {LATENCY_MS} ms per chat call costs the batch +{batch - batch_0:.3f} s (one latency at most)"
        f" and the sequential way +{sequential - sequential_0:.3f} s (one per message)"
    )
    print(f"records COMPLETED: {completed}/{expected} ({2 * MESSAGES} per round, warm-ups not counted)")
    print(
        f"target: ratio <= {TARGET_RATIO} at {LATENCY_MS} ms: {'met' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    return {
        "messages": MESSAGES,
        "latency_ms": LATENCY_MS,
        "batch_seconds": round(batch, 3),
        "sequential_seconds": round(sequential, 3),
        "ratio": round(ratio, 3),
        "rounds": len(rounds[LATENCY_MS]),
        "records_completed": completed,
        "records_expected": expected,
        "batch_seconds_no_latency": round(batch_0, 3),
        "sequential_seconds_no_latency": round(sequential_0, 3),
        "target_met": ratio <= TARGET_RATIO and completed == expected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per latency (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryFile("w+") as handler_output:
        rounds = {latency: measure(latency, args.repeats, handler_output) for latency in (LATENCY_MS, 0)}
    print(json.dumps(report(rounds)))


if __name__ == "__main__":
    main()
