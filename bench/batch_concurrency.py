"""One SQS batch of 10 queued requests through SqsRequestFunction, against the same 10 requests handled one
message after another, in one run, with the gateway emulator adding 500 ms to every chat call.

Both ways run the real handler (src/handlers/sqs_request.py, `lambda_handler(event, context)`) in this
benchmark's phase process, with the function environment template.yaml gives it, and with real SQS-shaped
events: the messages are sent to RequestQueue and received from it, so every record has a receipt handle,
attributes and the queue's ARN as Lambda would give them. The batch is one invocation with 10 records (the
handler runs them in threads sharing one connection pool); the baseline is 10 invocations of one record each,
so the code path and the records written are the same. Every request has its own requestId, so idempotency
never skips work, and every record must end COMPLETED.

AWS and the gateway are remote services whose work never runs on the caller's CPU, so neither runs here:
- AWS is three moto servers, each in a process of its own (`python -m moto.server`), reached over HTTP:
  DynamoDB on one (AWS_ENDPOINT_URL_DYNAMODB), S3 on another (AWS_ENDPOINT_URL_S3), SQS and EventBridge on
  the third (AWS_ENDPOINT_URL, which boto3 uses for every service without an endpoint of its own). Only what
  the function touches is created, each on its service's server: ResultsTable (its keys and indexes read
  from template.yaml), the uploads bucket, RequestQueue and its dead-letter queue; EventBridge's default bus
  exists in moto. Embedded in this process (the embedded AWS), moto's CPU work per message (DynamoDB
  expression parsing, S3, EventBridge; ~90 ms) held the same GIL as the handler's threads: work that threads
  cannot overlap, counted against the batch here and never in AWS, where those calls are network waits.
- The gateway emulator runs in a process of its own (`python -m devtools.emulator`), for the same reason.

Each moto server does its own work one request at a time (one GIL each), which AWS would not. With one
server for everything, the batch queued all of it (~95 ms of server work per message, DynamoDB's update
expressions the most) behind one GIL; AWS services are separate and run in parallel, so each service the
function writes to heavily has its own server here. The DynamoDB server alone still does ~75 ms of it per
message, one request at a time, so the batch still pays that serially. The services split apart share no
state in this run: the bucket only receives result JSON under the results prefix (template.yaml notifies
UploadEventsQueue of the input prefix only, and neither exists here), and no EventBridge rule targets the
queue.

There are two phases, each in a child process of its own (the handler's runtime, and so its gateway client,
is built once per process, as in a Lambda container) with its own emulator: first with 500 ms added to every
chat call, then with none. In each phase a warm-up invocation runs first and is not timed, so neither way pays
the cold start (imports, the first connections), then the pair is repeated (batch
first, then sequential) and medians are reported. The phase with no added latency is the pipeline's own work
per message (the handler's CPU plus the round trips to the moto server), and shows how much of the remaining
gap is the gateway latency that concurrency overlaps and how much is that work.

The handlers' stdout (Powertools log lines and EMF metrics, one JSON line each) goes to a temporary file, as
Lambda sends it to CloudWatch, so the report stays readable. The function environment is taken from a deploy
of template.yaml into the embedded AWS (closed again at once), so it is not a second description of it.

    python bench/batch_concurrency.py               # the table, then one JSON line
    python bench/batch_concurrency.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from devtools.embedded_aws import EmbeddedAws, Template  # noqa: E402
from devtools.embedded_aws.sqs_poller import lambda_sqs_event  # noqa: E402
from devtools.emulator.process import EmulatorProcess  # noqa: E402

MESSAGES = 10
LATENCY_MS = 500
TARGET_RATIO = 0.2
TOKEN = "bench-token"
FUNCTION = "SqsRequestFunction"
QUEUE = "RequestQueue"


REGION = "us-east-1"
# boto3 needs credentials to sign requests; the moto server accepts any.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_server(name: str, start_timeout: float = 30.0) -> Iterator[str]:
    """A moto server for the services `name` says, in its own process; yields its URL, always stops it."""
    port = free_port()
    # stderr to a file (werkzeug logs every request there): a pipe nobody reads would fill and block it.
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(
                            f"the {name} moto server did not start:\n{log.read()[-2000:]}"
                        ) from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def function_setup() -> dict[str, Any]:
    """SqsRequestFunction's environment and identity as template.yaml deploys it, from a throwaway embedded
    deploy (closed at once): its GATEWAY_BASE_URL is a placeholder each phase replaces with its emulator's."""
    stack = EmbeddedAws.deploy(
        ROOT / "template.yaml",
        parameters={
            "GatewayOrganisation": "bench-org",
            "GatewayBaseUrl": "http://placeholder.invalid",
            "RetryBaseDelaySeconds": "0",
        },
        start_pollers=False,
    )
    try:
        function = stack.functions[FUNCTION]
        return {
            "environment": dict(function.environment),
            "name": function.name,
            "arn": function.arn,
            "memory": function.memory,
        }
    finally:
        stack.close()


def create_resources(endpoints: dict[str, str], environment: dict[str, str]) -> dict[str, str]:
    """What the function touches, each on its service's moto server, named as the function's environment
    names them."""
    session = boto3.Session(region_name=REGION, **{k.lower(): v for k, v in FAKE_CREDENTIALS.items()})
    table = Template.load(ROOT / "template.yaml").resources["ResultsTable"]["Properties"]
    session.client("dynamodb", endpoint_url=endpoints["AWS_ENDPOINT_URL_DYNAMODB"]).create_table(
        TableName=environment["RESULTS_TABLE"],
        BillingMode=table["BillingMode"],
        KeySchema=table["KeySchema"],
        AttributeDefinitions=table["AttributeDefinitions"],
        GlobalSecondaryIndexes=table.get("GlobalSecondaryIndexes", []),
    )
    s3 = session.client("s3", endpoint_url=endpoints["AWS_ENDPOINT_URL_S3"])
    s3.create_bucket(Bucket=environment["RESULTS_BUCKET"])
    sqs = session.client("sqs", endpoint_url=endpoints["AWS_ENDPOINT_URL"])
    queue = Template.load(ROOT / "template.yaml").resources[QUEUE]["Properties"]
    dlq_url = sqs.create_queue(QueueName="RequestDLQ")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": environment["MAX_RECEIVE_COUNT"]}
    queue_url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={
            "VisibilityTimeout": str(queue["VisibilityTimeout"]),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return {"queue_url": queue_url, "queue_arn": queue_arn}


class Context:
    """The context attributes the handler (Powertools' inject_lambda_context) reads."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.function_name = setup["name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = setup["arn"]
        self.memory_limit_in_mb = str(setup["memory"])
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 110_000


class Phase:
    """One latency phase inside its child process: the handler here, AWS on the moto servers."""

    def __init__(self, setup: dict[str, Any]) -> None:
        from handlers.sqs_request import lambda_handler  # after the environment is set: Powertools reads it

        self.setup = setup
        self.handler = lambda_handler
        self.sqs = boto3.client("sqs")  # AWS_ENDPOINT_URL: the SQS/EventBridge server
        self.dynamodb = boto3.client("dynamodb")  # AWS_ENDPOINT_URL_DYNAMODB, where the handler writes

    def received_event(self, request_ids: list[str]) -> dict[str, Any]:
        """Sends one message per requestId, receives them all and returns the Lambda SQS event of that batch."""
        url = self.setup["queue_url"]
        for request_id in request_ids:
            body = {"requestId": request_id, "prompt": f"Say something about {request_id}", "maxTokens": 64}
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
        messages: list[dict[str, Any]] = []
        while len(messages) < len(request_ids):
            got = self.sqs.receive_message(
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
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return lambda_sqs_event(messages, self.setup["queue_arn"], REGION)

    def invoke(self, event: dict[str, Any]) -> float:
        started = time.perf_counter()
        result = self.handler(event, Context(self.setup))
        seconds = time.perf_counter() - started
        if result.get("batchItemFailures"):
            raise RuntimeError(f"the handler reported failures: {result}")
        return seconds

    def statuses(self, request_ids: list[str]) -> dict[str, str]:
        """Every record's status, from a scan of the results table on the DynamoDB server."""
        found = dict.fromkeys(request_ids, "MISSING")
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=self.setup["environment"]["RESULTS_TABLE"]
        )
        for item in (item for page in pages for item in page["Items"]):
            if item["requestId"]["S"] in found:
                found[item["requestId"]["S"]] = item["status"]["S"]
        return found

    def timed_pair(self, label: str) -> dict[str, Any]:
        """One batch of MESSAGES records, then the same number of one-record invocations, all distinct requests."""
        batch_ids = [f"batch-{label}-{n}" for n in range(MESSAGES)]
        sequential_ids = [f"seq-{label}-{n}" for n in range(MESSAGES)]
        batch_event = self.received_event(batch_ids)
        single_events = [self.received_event([request_id]) for request_id in sequential_ids]
        batch_seconds = self.invoke(batch_event)
        sequential_seconds = sum(self.invoke(event) for event in single_events)
        found = self.statuses(batch_ids + sequential_ids)
        return {
            "batch_seconds": batch_seconds,
            "sequential_seconds": sequential_seconds,
            "completed": sum(status == "COMPLETED" for status in found.values()),
            "records": len(found),
            "not_completed": {rid: status for rid, status in found.items() if status != "COMPLETED"},
        }


def run_phase(latency_ms: int, repeats: int, setup: dict[str, Any]) -> list[dict[str, Any]]:
    """The child process's work: an emulator adding latency_ms to every chat call, then the timed pairs."""
    label = f"{uuid.uuid4().hex[:8]}-{latency_ms}ms"
    cli_args = ("--token", TOKEN, "--latency-ms", str(latency_ms), "--quiet")
    with EmulatorProcess(*cli_args) as emulator:
        # GATEWAY_TOKEN: the token itself, as locally, so the function never reads the template's secret.
        os.environ.update(
            {**setup["environment"], "GATEWAY_TOKEN": TOKEN, "GATEWAY_BASE_URL": emulator.base_url}
        )
        with tempfile.TemporaryFile("w+") as handler_output:
            try:
                with contextlib.redirect_stdout(handler_output):
                    phase = Phase(setup)
                    # Warm-up: the cold start (imports, first connections) is paid here, outside both timings.
                    phase.invoke(phase.received_event([f"warmup-{label}"]))
                    pairs = [phase.timed_pair(f"{label}-{repeat}") for repeat in range(repeats)]
            except Exception:
                # The handler's log lines say why; the traceback alone would not.
                handler_output.seek(0)
                print("".join(handler_output.readlines()[-20:]), file=sys.stderr)
                raise
    # With --quiet the emulator writes to stderr only the tracebacks of its own failures.
    if emulator.stderr:
        raise SystemExit(f"the gateway emulator ({latency_ms} ms) raised:\n{emulator.stderr}")
    return pairs


def measure(
    latency_ms: int, repeats: int, setup: dict[str, Any], endpoints: dict[str, str]
) -> list[dict[str, Any]]:
    """One phase in a child process (its own runtime and gateway client, as a fresh Lambda container)."""
    environment = {**os.environ, **FAKE_CREDENTIALS, **endpoints}
    environment.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "BENCH_SETUP": json.dumps(setup)})
    # Also any other service-specific endpoint the caller set: it would take that service off the servers.
    stray = [name for name in environment if name.startswith("AWS_ENDPOINT_URL_") and name not in endpoints]
    for unset in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", *stray):
        environment.pop(unset, None)
    command = [sys.executable, __file__, "--phase", str(latency_ms), "--repeats", str(repeats)]
    # stderr passes through (tracebacks); stdout carries only the phase's JSON. The child stops its own
    # emulator on errors and on Ctrl-C (which reaches it too).
    done = subprocess.run(command, env=environment, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {latency_ms} ms phase failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def medians(rounds: list[dict[str, Any]]) -> tuple[float, float]:
    return (
        statistics.median(r["batch_seconds"] for r in rounds),
        statistics.median(r["sequential_seconds"] for r in rounds),
    )


def report(rounds: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    print(
        f"{MESSAGES} queued requests per way, {FUNCTION}, real SQS events, AWS as moto servers (dynamodb, s3,"
        " sqs/events) and the gateway emulator, each in its own process"
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
        "aws": "moto servers in their own processes: dynamodb, s3, and sqs/events",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per latency (default 3)")
    parser.add_argument("--phase", type=int, metavar="LATENCY_MS", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.phase is not None:
        print(json.dumps(run_phase(args.phase, args.repeats, json.loads(os.environ["BENCH_SETUP"]))))
        return
    setup = function_setup()
    # One server per busy service, as AWS runs them apart; SQS and EventBridge share the default endpoint.
    # The ExitStack stops every server started, also when a later one fails to start or a phase fails.
    with contextlib.ExitStack() as servers:
        endpoints = {
            variable: servers.enter_context(moto_server(name))
            for variable, name in (
                ("AWS_ENDPOINT_URL_DYNAMODB", "dynamodb"),
                ("AWS_ENDPOINT_URL_S3", "s3"),
                ("AWS_ENDPOINT_URL", "sqs/events"),
            )
        }
        setup.update(create_resources(endpoints, setup["environment"]))
        rounds = {latency: measure(latency, args.repeats, setup, endpoints) for latency in (LATENCY_MS, 0)}
    print(json.dumps(report(rounds)))


if __name__ == "__main__":
    main()
