"""Functions run as Lambda runs them: a process each, their own environment and role, their timeout and
memory size enforced by ending the process, a new process after a crash."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from devtools.embedded_aws import LambdaRuntimeError

DATA = Path(__file__).resolve().parent / "data"
FAKE_CODE = DATA / "fake_lambda"


def write_template(tmp_path: Path, resources: str, *, timeout: int = 5, memory: int = 256) -> Path:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            f"""
            Transform: AWS::Serverless-2016-10-31
            Globals:
              Function:
                Runtime: python3.13
                CodeUri: {FAKE_CODE}
                Handler: fake_handlers.echo.lambda_handler
                Timeout: {timeout}
                MemorySize: {memory}
                Environment:
                  Variables: {{GREETING: hello, STAGE_LABEL: test}}
            Resources:
            """
        )
        + textwrap.indent(textwrap.dedent(resources), "  ")
    )
    return template


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has ended; its parent has not reaped it yet.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_each_function_has_a_process_environment_and_role_of_its_own_and_stays_warm(deploy_stack, tmp_path):
    template = write_template(
        tmp_path,
        """
        Fast:
          Type: AWS::Serverless::Function
          Properties: {Environment: {Variables: {MODE: fast}}}
        Slow:
          Type: AWS::Serverless::Function
          Properties: {Environment: {Variables: {MODE: slow}}}
        """,
    )
    stack = deploy_stack(template=template)
    fast, slow = stack.invoke("Fast", {}), stack.invoke("Slow", {})

    # Two functions may set one variable differently: each process has its own.
    assert (fast["mode"], slow["mode"]) == ("fast", "slow")
    assert "MODE" not in os.environ
    assert len({fast["pid"], slow["pid"], os.getpid()}) == 3
    # Each under its own role's credentials, on the embedded AWS's endpoint.
    assert len({fast["access_key"], slow["access_key"], os.environ["AWS_ACCESS_KEY_ID"]}) == 3
    assert fast["endpoint"] == slow["endpoint"] == stack.endpoint
    # Warm: the same process, its module state kept.
    again = stack.invoke("Fast", {})
    assert (again["pid"], again["invocations"]) == (fast["pid"], 2)
    assert [i.cold for i in stack.invocations.for_function("Fast")] == [True, False]

    # Two invocations at once need two environments, as in Lambda.
    first = stack.client("lambda").invoke
    name = stack.physical_id("Slow")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: first(FunctionName=name, Payload=b'{"sleep": 0.5}'), range(2)))
    pids = {json.loads(response["Payload"].read())["pid"] for response in responses}
    assert len(pids) == 2 and slow["pid"] in pids


def test_a_function_past_its_timeout_is_ended_and_the_next_invocation_starts_cold(deploy_stack, tmp_path):
    template = write_template(tmp_path, "Echo: {Type: AWS::Serverless::Function}", timeout=1)
    stack = deploy_stack(template=template)
    warm = stack.invoke("Echo", {})
    started = time.monotonic()
    with pytest.raises(LambdaRuntimeError, match=r"Sandbox\.Timedout: .*Task timed out after 1\.00 seconds"):
        stack.invoke("Echo", {"sleep": 30})
    assert time.monotonic() - started < 3  # ended at the deadline, not when the handler would have returned
    assert not alive(warm["pid"])
    fresh = stack.invoke("Echo", {})
    assert fresh["pid"] != warm["pid"] and fresh["invocations"] == 1


def test_a_function_past_its_memory_size_ends_as_out_of_memory(deploy_stack, tmp_path):
    template = write_template(tmp_path, "Echo: {Type: AWS::Serverless::Function}", memory=128)
    stack = deploy_stack(template=template)
    small = stack.invoke("Echo", {"allocate_mb": 10})
    with pytest.raises(LambdaRuntimeError, match=r"Runtime\.OutOfMemory: .*signal: killed"):
        stack.invoke("Echo", {"allocate_mb": 200})
    assert not alive(small["pid"])
    invocations = stack.invocations.for_function("Echo")
    assert invocations[0].max_memory_mb < 128 <= invocations[1].max_memory_mb
    assert stack.invoke("Echo", {})["invocations"] == 1


def test_a_crash_ends_the_environment_and_the_next_invocation_gets_a_new_one(deploy_stack, tmp_path):
    template = write_template(tmp_path, "Echo: {Type: AWS::Serverless::Function}")
    stack = deploy_stack(template=template)
    before = stack.invoke("Echo", {})
    with pytest.raises(LambdaRuntimeError, match=r"Runtime\.ExitError: .*exit status 3"):
        stack.invoke("Echo", {"exit": 3})
    after = stack.invoke("Echo", {})
    assert after["pid"] != before["pid"] and after["invocations"] == 1


def test_a_batch_that_times_out_comes_back_and_is_delivered_again(deploy_stack, tmp_path):
    template = write_template(
        tmp_path,
        """
        Queue:
          Type: AWS::SQS::Queue
          Properties: {VisibilityTimeout: 30}
        Sleepy:
          Type: AWS::Serverless::Function
          Properties:
            Handler: fake_handlers.sleepy.lambda_handler
            Events:
              Work:
                Type: SQS
                Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 1}
        """,
        timeout=1,
    )
    stack = deploy_stack(template=template, visibility_timeout_override=2)
    stack.client("sqs").send_message(
        QueueUrl=stack.physical_id("Queue"), MessageBody="sleep on the first delivery"
    )
    stack.drain(timeout=30)
    first, second = stack.invocations.for_function("Sleepy")
    assert first.error is not None and first.error.error_type == "Sandbox.Timedout"
    assert second.succeeded and second.cold  # the timed-out process was ended
    assert second.event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"


def test_close_ends_every_process_and_gives_this_process_its_environment_back(
    deploy_stack, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_PROFILE", "someone-real")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    template = write_template(tmp_path, "Echo: {Type: AWS::Serverless::Function}")
    stack = deploy_stack(template=template)
    # While deployed, this process is the deployer, on the endpoint; no profile sends it elsewhere.
    assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint and "AWS_PROFILE" not in os.environ
    pid = stack.invoke("Echo", {})["pid"]
    stack.close()
    assert not alive(pid)
    assert os.environ["AWS_PROFILE"] == "someone-real" and "AWS_ENDPOINT_URL" not in os.environ
    with pytest.raises(RuntimeError, match="is closed"):
        stack.client("s3")
