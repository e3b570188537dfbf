"""The chaos benchmark's fault mechanisms, each shown doing what it says: AWS answering with errors (the
embedded AWS's fault layer, devtools.embedded_aws.aws_faults), function processes killed at a kill point
(devtools.kill_points), a function timing out mid-call, and the gateway emulator's slow answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devtools.emulator import GatewayEmulator
from tests.plugins.pipeline import Pipeline, emulator_gateway, pipeline_parameters

FUNCTION = "SqsRequestFunction"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def function_client(stack, service: str):
    """A client with the function's own role credentials, as its process has them, without SDK retries."""
    credentials = stack.function_credentials[FUNCTION]
    import boto3

    return boto3.client(
        service,
        region_name=stack.region,
        endpoint_url=stack.endpoint,
        config=NO_RETRIES,
        **credentials.client_arguments(),
    )


def error_code(call) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def test_chosen_aws_writes_are_refused_as_aws_refuses_them_and_only_while_switched_on(deploy_stack):
    stack = deploy_stack(start_pollers=False)
    faults = stack.server.faults
    table = stack.physical_id("ResultsTable")
    bucket = stack.physical_id("UploadsBucket")
    dynamodb, s3 = function_client(stack, "dynamodb"), function_client(stack, "s3")
    update = lambda: dynamodb.update_item(  # noqa: E731
        TableName=table,
        Key={"requestId": {"S": "r1"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
    )

    faults.add("dynamodb:UpdateItem", "throttle", rate=1.0)
    assert error_code(update) == "ProvisionedThroughputExceededException"
    stack.client("dynamodb").update_item(  # the deployer (the bench itself) is never faulted
        TableName=table,
        Key={"requestId": {"S": "r0"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
    )
    faults.clear()
    update()
    assert faults.counts() == {"dynamodb:UpdateItem throttle": 1}

    faults.add("dynamodb:UpdateItem", "5xx", rate=1.0)
    assert error_code(update) == "InternalServerError"
    faults.clear()

    # S3: only the keys chosen (results, not the rest), with S3's own codes.
    faults.add("s3:PutObject", "5xx", rate=1.0, key_prefix="results/images/")
    faults.add("s3:PutObject", "throttle", rate=1.0, key_prefix="results/slow-down/")
    assert error_code(lambda: s3.put_object(Bucket=bucket, Key="results/images/a.png", Body=b"x")) == (
        "InternalError"
    )
    assert (
        error_code(lambda: s3.put_object(Bucket=bucket, Key="results/slow-down/a", Body=b"x")) == "SlowDown"
    )
    s3.put_object(Bucket=bucket, Key="results/requests/a.json", Body=b"{}")
    faults.clear()

    # Step Functions and EventBridge.
    faults.add("states:StartExecution", "throttle", rate=1.0)
    states = function_client(stack, "stepfunctions")
    start = lambda: states.start_execution(  # noqa: E731
        stateMachineArn=stack.physical_id("ToolExecutionPoller"), input=json.dumps({"requestId": "x"})
    )
    assert error_code(start) == "ThrottlingException"
    faults.clear()
    faults.add("events:PutEvents", "5xx", rate=1.0)
    events = function_client(stack, "events")
    entry = {"Source": "quant.ai-pipeline", "DetailType": "AI Request Completed", "Detail": "{}"}
    assert error_code(lambda: events.put_events(Entries=[entry])) == "InternalException"
    faults.clear()


def test_a_refused_put_events_entry_delivers_nothing_and_a_repeated_fault_outlasts_retries(deploy_stack):
    stack = deploy_stack(start_pollers=False)
    faults = stack.server.faults
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName="announced")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rules = stack.client("events")
    rules.put_rule(Name="everything", EventPattern=json.dumps({"source": ["quant.ai-pipeline"]}))
    rules.put_targets(Rule="everything", Targets=[{"Id": "q", "Arn": arn}])
    events = function_client(stack, "events")
    entry = {"Source": "quant.ai-pipeline", "DetailType": "AI Request Completed", "Detail": '{"n": 1}'}

    faults.add("events:PutEvents", "failed-entry", rate=1.0)
    answer = events.put_events(Entries=[entry])
    assert answer["FailedEntryCount"] == 1 and answer["Entries"][0]["ErrorCode"] == "InternalFailure"
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None
    faults.clear()
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    assert len(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]) == 1

    # The same request (what an SDK retry sends) fails `repeat` times in a row; another is not held back.
    rule = faults.add("events:PutEvents", "5xx", rate=1.0, repeat=3)
    assert error_code(lambda: events.put_events(Entries=[entry])) == "InternalException"
    faults.remove(rule)
    other = {**entry, "Detail": '{"n": 2}'}
    assert events.put_events(Entries=[other])["FailedEntryCount"] == 0
    for _ in range(2):
        assert error_code(lambda: events.put_events(Entries=[entry])) == "InternalException"
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0


def journal(path: Path) -> list[dict]:
    """The function's own journal lines (the upload function also runs, for S3's test event)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [event for event in map(json.loads, lines) if event["function"] == FUNCTION]


def wait_for_failed_invocation(stack, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failed = [i for i in stack.invocations.for_function(FUNCTION) if i.error is not None]
        if failed:
            return failed[0]
        time.sleep(0.05)
    raise AssertionError(f"no failed invocation of {FUNCTION} in {timeout} s")


def deploy_with_kill_points(deploy_stack, emulator: GatewayEmulator, tmp_path: Path, rates: dict, **options):
    control, journal_path = tmp_path / "control.json", tmp_path / "journal.jsonl"
    control.write_text(json.dumps({"rates": rates}))
    stack = deploy_stack(
        parameters=pipeline_parameters(emulator),
        secret_values=emulator_gateway(emulator).secret_values(),
        visibility_timeout_override=120,  # one delivery within the test
        kill_points=(control, journal_path),
        **options,
    )
    return stack, journal_path


def send(stack, body: dict) -> None:
    stack.client("sqs").send_message(QueueUrl=stack.physical_id("RequestQueue"), MessageBody=json.dumps(body))


def test_a_function_process_is_really_killed_right_after_its_s3_write(deploy_stack, emulator, tmp_path):
    stack, journal_path = deploy_with_kill_points(deploy_stack, emulator, tmp_path, {"s3-write": 1.0})
    send(stack, {"requestId": "killed-after-s3", "prompt": "hello"})
    invocation = wait_for_failed_invocation(stack)

    assert invocation.error.error_type == "Runtime.ExitError"
    assert invocation.error.error_message.endswith("signal: kill")
    events = journal(journal_path)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "end" not in kinds  # the invocation never finished
    write, killed = events[-2], events[-1]
    assert write["event"] == "write" and write["point"] == "s3-write"
    assert write["key"] == "results/requests/killed-after-s3.json"
    assert killed == {**killed, "event": "killed", "point": "s3-write", "key": write["key"]}
    # The write itself happened; nothing after it did.
    stored = stack.client("s3").get_object(Bucket=stack.physical_id("UploadsBucket"), Key=write["key"])
    assert json.loads(stored["Body"].read())["requestId"] == "killed-after-s3"
    record = stack.client("dynamodb").get_item(
        TableName=stack.physical_id("ResultsTable"), Key={"requestId": {"S": "killed-after-s3"}}
    )["Item"]
    assert record["status"]["S"] == "PROCESSING"


def test_a_function_process_is_killed_when_the_gateway_answered_before_storing_it(
    deploy_stack, emulator, tmp_path
):
    stack, journal_path = deploy_with_kill_points(deploy_stack, emulator, tmp_path, {"gateway-answered": 1.0})
    send(stack, {"requestId": "killed-after-answer", "prompt": "hello"})
    invocation = wait_for_failed_invocation(stack)

    assert invocation.error.error_type == "Runtime.ExitError"
    events = journal(journal_path)
    assert [e["event"] for e in events][-2:] == ["answered", "killed"]
    assert events[-1]["requestId"] == "killed-after-answer"
    assert not [e for e in events if e["event"] == "write" and e["point"] == "s3-write"]
    assert emulator.successful_chats_by_correlation_id() == {"killed-after-answer": 1}


def test_a_function_times_out_mid_call_when_aws_is_slower_than_its_timeout(deploy_stack, emulator, tmp_path):
    stack, journal_path = deploy_with_kill_points(
        deploy_stack, emulator, tmp_path, {}, function_timeout_override={FUNCTION: 15}
    )
    # Timeout 15 s leaves the gateway call 5 s (the handler keeps 10 s back); the write takes 18 s.
    stack.server.faults.add("s3:PutObject", "slow", rate=1.0, delay=18, key_prefix="results/")
    send(stack, {"requestId": "timed-out", "prompt": "hello"})
    invocation = wait_for_failed_invocation(stack)

    assert invocation.error.error_type == "Sandbox.Timedout"
    assert "Task timed out after 15.00 seconds" in invocation.error.error_message
    events = journal(journal_path)
    assert "answered" in [e["event"] for e in events] and "end" not in [e["event"] for e in events]


def test_the_emulator_answers_late_when_asked_to(emulator):
    import httpx

    emulator.config.slow_seconds = 1.0
    emulator.fail_next("slow")
    body = {"modelId": "amazon.nova-lite-v1:0", "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    answer = httpx.post(
        f"{emulator.base_url}/api/v3/organizations/acme/ai/chat",
        json=body,
        headers={"Authorization": "Bearer test-token", "X-Correlation-Id": "late"},
        timeout=10,
    )
    assert answer.status_code == 200 and time.monotonic() - started >= 1.0
    [call] = emulator.calls
    assert (call.status, call.fault) == (200, "slow")


def test_the_chaos_benchmark_aborts_poller_executions_and_opens_a_401_window(pipeline, tmp_path):
    from bench.chaos import Chaos
    from devtools.local_pipeline import image_request_message

    chaos = Chaos(pipeline.stack, pipeline.emulator, tmp_path / "kill-points.json", abort_rate=1.0)
    pipeline.emulator.config.execution_seconds = 20  # still running when the abort comes
    chaos.start_aborting()
    # Shorter than the queue function's retries (MaxReceiveCount 3, delays 1 s then 2 s), so that the request
    # outlives the window and starts its execution.
    chaos.rotate_token(window=1)
    pipeline.send(image_request_message("aborted"))
    deadline = time.monotonic() + 60
    while not chaos.aborted and time.monotonic() < deadline:
        time.sleep(0.1)
    chaos.stop()

    [execution] = chaos.aborted
    states = pipeline.stack.client("stepfunctions")
    deadline = time.monotonic() + 30
    # moto records the end once its interpreter has unwound (AWS at once): wait for it.
    while (status := states.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        assert time.monotonic() < deadline, "the execution never ended"
        time.sleep(0.1)
    assert status == "ABORTED"
    # The gateway refused the stack's token until the secret had the new one.
    statuses = [call.status for call in pipeline.emulator.calls if call.kind == "chat"]
    assert statuses[0] == 401, statuses
    assert chaos.rotations and chaos.rotations[0]["window_seconds"] >= 1
    secret = pipeline.stack.client("secretsmanager").get_secret_value(
        SecretId=pipeline.stack.physical_id("GatewayTokenSecret")
    )
    assert secret["SecretString"] == pipeline.emulator.config.token


def test_kill_points_can_be_armed_in_chosen_functions_only(deploy_stack, emulator, tmp_path):
    rates = {"s3-write": 1.0, "dynamodb-write": 1.0}
    stack, journal_path = deploy_with_kill_points(deploy_stack, emulator, tmp_path, rates)
    (tmp_path / "control.json").write_text(json.dumps({"rates": rates, "functions": ["S3UploadFunction"]}))
    send(stack, {"requestId": "spared", "prompt": "hello"})
    stack.drain(timeout=60)

    assert [i.error for i in stack.invocations.for_function(FUNCTION)] == [None]
    assert "killed" not in [e["event"] for e in journal(journal_path)]


def test_kill_points_stop_once_the_journal_holds_max_kills(deploy_stack, emulator, tmp_path):
    rates = {"gateway-answered": 1.0}
    stack, journal_path = deploy_with_kill_points(deploy_stack, emulator, tmp_path, rates)
    (tmp_path / "control.json").write_text(json.dumps({"rates": rates, "max_kills": 1}))
    send(stack, {"requestId": "killed", "prompt": "hello"})
    wait_for_failed_invocation(stack)
    send(stack, {"requestId": "spared", "prompt": "hello"})  # its answer reaches the kill point too

    Pipeline(stack, emulator).wait_for_status("spared", "COMPLETED", timeout=60)
    events = journal(journal_path)
    assert [e["requestId"] for e in events if e["event"] == "killed"] == ["killed"]
    assert "spared" in [e["requestId"] for e in events if e["event"] == "answered"]
