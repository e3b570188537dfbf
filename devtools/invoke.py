"""`make invoke FN=<LogicalId> EVENT=events/<file>.json [ENV=env.json] [OBJECT=path]`: `sam local invoke`
without Docker.

Runs one function's handler with the event, the template's environment (with `--env-vars`-style overrides)
and the embedded AWS, then prints its return value and the records it wrote. Objects the event names are
seeded from samples/ (or OBJECT); the poll and finish events are first given a real execution and record.

    python -m devtools.invoke FN EVENT [--env ENV] [--object PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO
from urllib.parse import unquote_plus, urlsplit

import httpx
from botocore.exceptions import ClientError, ParamValidationError

from devtools.embedded_aws import DeployedStack, LambdaRuntimeError, Template
from devtools.embedded_aws.sqs_poller import lambda_sqs_event
from devtools.emulator import GatewayEmulator
from devtools.local_pipeline import (
    EMULATOR_ORGANISATION,
    IMAGE_MODEL,
    IMAGE_PROMPT,
    IMAGE_TOOL_CONFIG,
    SAMPLES,
    SERVICE_NAME,
    TEMPLATE,
    GatewayChoiceError,
    GatewayTarget,
    LocalPipeline,
    deploy,
    display_path,
    function_output_to,
    image_request_message,
    quant_gateway_from,
    quiet_step_functions_interpreter,
    start_emulator,
)

FUNCTION_TYPE = "AWS::Serverless::Function"
# Locally the token comes from GATEWAY_TOKEN (the template reads a secret), so ENV may set it too.
LOCAL_ONLY_VARIABLES = frozenset({"GATEWAY_TOKEN"})
# Short, so that preparing the finish event (polling an execution to its end) takes seconds.
INVOKE_EXECUTION_SECONDS = 3.0
EXECUTION_END = ("complete", "failed")
EXECUTION_FIELDS = ("executionId", "toolName", "toolUseId", "status", "polls", "files")  # as events/ has them


class InvokeError(Exception):
    """A problem with the command's arguments or files (exit status 2)."""


@dataclass
class InvokeReport:
    function: str
    gateway: str
    event: Any  # as the handler received it, after the preparation
    result: Any = None
    error: dict[str, Any] | None = None  # Lambda's error payload when the handler raised
    records: list[dict[str, Any]] = field(default_factory=list)  # created or changed by the invocation
    notes: list[str] = field(default_factory=list)  # environment, seeded objects, preparation


def environment_overrides(
    function: str, env_file: Mapping[str, Any] | None
) -> tuple[dict[str, str], list[str]]:
    """`sam local invoke --env-vars`: "Parameters" for every function, "<LogicalId>" for one; like SAM, only
    variables the template declares for the function are taken. Returns (taken, ignored names)."""
    properties = _function_properties(function)
    if not env_file:
        return {}, []
    if not isinstance(env_file, dict) or not all(isinstance(v, dict) for v in env_file.values()):
        raise InvokeError('ENV must be JSON like {"Parameters": {"NAME": "value"}, "<LogicalId>": {...}}')
    wanted = {**env_file.get("Parameters", {}), **env_file.get(function, {})}
    declared = set(properties.get("Environment", {}).get("Variables", {}))
    declared |= LOCAL_ONLY_VARIABLES
    taken = {name: _env_value(value) for name, value in wanted.items() if name in declared}
    return taken, sorted(set(wanted) - declared)


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _function_properties(function: str) -> dict[str, Any]:
    template = Template.load(TEMPLATE)
    functions = sorted(n for n, r in template.resources.items() if r.get("Type") == FUNCTION_TYPE)
    if function not in functions:
        raise InvokeError(f"{function} is not a function of template.yaml; functions: {', '.join(functions)}")
    return template.resource_properties(function)


def choose_gateway(
    overrides: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[GatewayTarget, GatewayEmulator | None]:
    """Quant Cloud's with QUANT_API_TOKEN/QUANT_ORGANISATION; else the emulator, on the port of a local
    GATEWAY_BASE_URL from ENV if there is one (a gateway already listening there is used as it is)."""
    quant = quant_gateway_from(environ)
    if quant is not None:
        return quant, None
    organisation = overrides.get("GATEWAY_ORGANISATION", EMULATOR_ORGANISATION)
    token = overrides.get("GATEWAY_TOKEN")
    url = overrides.get("GATEWAY_BASE_URL")
    port = 0
    if url:
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            return GatewayTarget("GATEWAY_BASE_URL from ENV", url, organisation, token or ""), None
        port = parts.port
    try:
        emulator = start_emulator(
            token=token, organisation=organisation, port=port, execution_seconds=INVOKE_EXECUTION_SECONDS
        )
    except OSError:  # the port is taken: most likely `python -m devtools.emulator` runs there
        return GatewayTarget(
            "already listening; GATEWAY_BASE_URL from ENV", url or "", organisation, token or ""
        ), None
    target = GatewayTarget("emulator", emulator.base_url, organisation, emulator.config.token or "")
    return target, emulator


# --- objects the event names ----------------------------------------------------------------------------------


def objects_named(event: Any) -> list[tuple[str, str]]:
    """(bucket, key) of every object an S3 event, an SQS-wrapped one, or a request's attachments name."""
    found: list[tuple[str, str]] = []
    if not isinstance(event, dict):
        return found
    records = event.get("Records")
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, dict):
            continue
        if "s3" in record:
            s3 = record["s3"] if isinstance(record["s3"], dict) else {}
            bucket = (s3.get("bucket") or {}).get("name") if isinstance(s3.get("bucket"), dict) else None
            key = (s3.get("object") or {}).get("key") if isinstance(s3.get("object"), dict) else None
            if isinstance(bucket, str) and bucket and isinstance(key, str) and key:
                found.append((bucket, unquote_plus(key)))
        elif isinstance(record.get("body"), str):
            try:
                found.extend(objects_named(json.loads(record["body"])))
            except json.JSONDecodeError:
                continue  # a malformed message names nothing
    attachments = event.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        uri = attachment.get("uri", "") if isinstance(attachment, dict) else ""
        if uri.startswith("s3://"):
            bucket, _, key = uri[5:].partition("/")
            found.append((bucket, key))
    return found


def seed_objects(stack: DeployedStack, event: Any, object_path: Path | None, notes: list[str]) -> None:
    s3 = stack.client("s3")
    for bucket, key in dict.fromkeys(objects_named(event)):
        source = object_path or SAMPLES / PurePosixPath(key).name
        if not _is_file(source):
            notes.append(f"not seeded: s3://{bucket}/{key} (no {source}; pass OBJECT=path)")
            continue
        try:
            _create_bucket_if_missing(s3, bucket, notes)
            s3.put_object(Bucket=bucket, Key=key, Body=source.read_bytes())
        except (ClientError, ParamValidationError) as refused:
            # S3 would refuse it too (an invalid bucket name, a key over 1,024 bytes): the handler meets
            # what it would meet in AWS.
            notes.append(f"not seeded: s3://{bucket}/{key[:80]} ({_refusal(refused)})")
            continue
        notes.append(f"seeded s3://{bucket}/{key} from {display_path(source)}")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name no file system takes (too long, say): no sample has it
        return False


def _create_bucket_if_missing(s3: Any, bucket: str, notes: list[str]) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
        notes.append(f"created bucket {bucket}")


def _refusal(error: Exception) -> str:
    if isinstance(error, ClientError):
        problem = error.response.get("Error", {})
        return f"S3 refused it: {problem.get('Code')}: {problem.get('Message')}"
    return f"S3 would refuse it: {error}"


# --- events that need a real execution or record first ----------------------------------------------------------


def start_image_execution(gateway: GatewayTarget) -> dict[str, Any]:
    """A real POST /chat with generate_image auto-executed; returns the toolUse with its executionId."""
    response = httpx.post(
        f"{gateway.base_url}/api/v3/organizations/{gateway.organisation}/ai/chat",
        headers={"Authorization": f"Bearer {gateway.token}"},
        json={
            "modelId": IMAGE_MODEL,
            "messages": [{"role": "user", "content": IMAGE_PROMPT}],
            "toolConfig": IMAGE_TOOL_CONFIG,
        },
        timeout=60,
    )
    if response.status_code != 200:
        raise InvokeError(
            f"POST /chat to start an image execution: {response.status_code} {response.text[:200]}"
        )
    tool_use = response.json()["response"].get("toolUse")
    uses = tool_use if isinstance(tool_use, list) else [tool_use]
    started = [use for use in uses if isinstance(use, dict) and use.get("executionId")]
    if not started:
        raise InvokeError("POST /chat started no async execution (does the model support tools?)")
    return started[0]


def prepare_poll(event: dict[str, Any], gateway: GatewayTarget, notes: list[str]) -> dict[str, Any]:
    use = start_image_execution(gateway)
    execution = {**event["execution"], "executionId": use["executionId"], "toolUseId": use.get("toolUseId")}
    notes.append(
        f"prepared: POST /chat with generate_image auto-executed started execution {use['executionId']}"
        f" ({use.get('status')}); the event polls it, startedAt now"
    )
    return {**event, "execution": execution, "startedAt": _iso_now()}


def prepare_finish(stack: DeployedStack, event: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The record as the pipeline leaves it (WAITING_FOR_TOOLS), and the executions polled to their end.

    The image request goes through RequestQueue and SqsRequestFunction; the ToolExecutionPoller run that
    starts is stopped (this invocation is its last step), and PollExecutionFunction polls as it would.
    """
    request_id = event["requestId"]
    pipeline = LocalPipeline(stack)
    pipeline.send(image_request_message(request_id))
    _deliver_queued_messages(stack, "RequestQueue", "SqsRequestFunction")
    stopped = _stop_poller_runs(stack)
    record = pipeline.record(request_id)
    if record["status"] != "WAITING_FOR_TOOLS":
        raise InvokeError(f"preparing the record: {request_id} is {record['status']}: {record.get('error')}")
    policy = {"timeoutSeconds": 60, "maxWaitSeconds": 5}
    finals = [_poll_to_end(stack, request_id, execution, policy) for execution in record["executions"]]
    templates = event.get("executions") or [dict.fromkeys(EXECUTION_FIELDS)]
    executions = [
        {key: final[key] for key in [*templates[min(i, len(templates) - 1)], "error"] if key in final}
        for i, final in enumerate(finals)
    ]
    polled = ", ".join(f"{f['executionId']} until {f['status']} ({f['polls']} polls)" for f in finals)
    notes.append(
        f"prepared: record {request_id} is WAITING_FOR_TOOLS (an image request sent through RequestQueue"
        " and SqsRequestFunction)"
    )
    notes.append(
        f"prepared: {'its ToolExecutionPoller run stopped' if stopped else 'no ToolExecutionPoller run'};"
        f" PollExecutionFunction polled {polled}; the event's executions are those"
    )
    return {**event, "executions": executions}


def _deliver_queued_messages(stack: DeployedStack, queue: str, function: str) -> None:
    """What Lambda's SQS poller does, once: receive, invoke, delete what was processed."""
    sqs = stack.client("sqs")
    url = stack.physical_id(queue)
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
    ).get("Messages", [])
    arn = stack.attribute(queue, "Arn")
    result = stack.invoke(function, lambda_sqs_event(messages, arn, stack.region))
    failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
    for message in messages:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _stop_poller_runs(stack: DeployedStack) -> int:
    stepfunctions = stack.client("stepfunctions")
    arn = stack.physical_id("ToolExecutionPoller")
    running = stepfunctions.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]
    # moto cannot stop an execution whose thread has not begun; once its first poll is done it waits.
    deadline = time.monotonic() + 30
    while running and not stack.invocations.for_function("PollExecutionFunction"):
        if time.monotonic() > deadline:
            raise InvokeError("the ToolExecutionPoller run did not make its first poll within 30 s")
        time.sleep(0.05)
    # Stopped runs would reach FinishRequestFunction through the rule on aborted pollers, and fail the
    # record this invocation is to finish: the rule stays off for this invocation (its stack is thrown away
    # after it), as an operator would turn it off.
    events = stack.client("events")
    rule = stack.physical_id("PollerEndedRule") if "PollerEndedRule" in stack.resources else None
    if rule is not None:
        events.disable_rule(Name=rule)
    for execution in running:
        stepfunctions.stop_execution(executionArn=execution["executionArn"], cause="stopped by make invoke")
    stack.drain(timeout=30)  # its poll step, if one was running, ends before ours start
    return len(running)


def _poll_to_end(
    stack: DeployedStack, request_id: str, execution: dict[str, Any], policy: dict[str, Any]
) -> dict[str, Any]:
    """The ToolExecutionPoller's loop for one execution: poll, wait as told, until it ends."""
    state: dict[str, Any] = {
        "requestId": request_id,
        "execution": {k: execution.get(k) for k in ("executionId", "toolName", "toolUseId")},
        "startedAt": _iso_now(),
        "policy": policy,
    }
    while True:
        state = stack.invoke("PollExecutionFunction", state)
        if state["status"] in EXECUTION_END:
            return state
        time.sleep(state["nextWaitSeconds"])


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


# --- the invocation ---------------------------------------------------------------------------------------------


def invoke(
    function: str,
    event: Any,
    *,
    env_file: Mapping[str, Any] | None = None,
    object_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    log: TextIO | None = None,
    announce: Callable[[str], None] | None = None,
) -> InvokeReport:
    """Deploys the stack (no SQS pollers: only this function runs), prepares, invokes, reports.

    The handlers' logs go to `log` (stderr by default, as sam shows them); `announce` gets the gateway
    line as soon as it is known."""
    overrides, ignored = environment_overrides(function, env_file)
    gateway, emulator = choose_gateway(overrides, os.environ if environ is None else environ)
    report = InvokeReport(function, gateway.describe(), event)
    if announce is not None:
        announce(report.gateway)
    if overrides:
        report.notes.append(f"environment from ENV: {', '.join(sorted(overrides))}")
    if ignored:
        report.notes.append(
            f"ignored from ENV (not declared for {function}, as sam ignores them): {', '.join(ignored)}"
        )
    try:
        with (
            function_output_to(log or sys.stderr, SERVICE_NAME),
            quiet_step_functions_interpreter(),
            # The function processes' logs go to stderr, as sam shows them.
            deploy(
                gateway, extra_environment=overrides, start_pollers=False, function_log=Path("/dev/stderr")
            ) as stack,
        ):
            seed_objects(stack, event, object_path, report.notes)
            try:
                if function == "PollExecutionFunction" and _preparable_poll(event):
                    report.event = prepare_poll(event, _effective(gateway, overrides), report.notes)
                elif function == "FinishRequestFunction" and _preparable_finish(event):
                    report.event = prepare_finish(stack, event, report.notes)
                elif function in ("PollExecutionFunction", "FinishRequestFunction"):
                    report.notes.append("not prepared: the event is not shaped like events/ has it")
            except InvokeError as unprepared:
                # The handler still runs, on the event as given: what it does with it is the point.
                report.notes.append(f"not prepared: {unprepared}")
            pipeline = LocalPipeline(stack, emulator)
            before = {r["requestId"]: r for r in pipeline.records()}
            invoked_before = len(stack.invocations.for_function(function))
            try:
                report.result = stack.invoke(function, report.event)
            except LambdaRuntimeError as error:
                report.error = error.error.payload(stack.invocations.for_function(function)[-1].request_id)
            except Exception:
                # The handler's own exception is the invocation's error result, shown as sam shows it.
                invocations = stack.invocations.for_function(function)
                if len(invocations) == invoked_before or invocations[-1].error is None:
                    raise
                report.error = invocations[-1].error.payload(invocations[-1].request_id)
            report.records = [r for r in pipeline.records() if before.get(r["requestId"]) != r]
    finally:
        if emulator is not None:
            emulator.stop()
    return report


def _get(event: Any, key: str) -> Any:
    return event.get(key) if isinstance(event, dict) else None


def _preparable_poll(event: Any) -> bool:
    """Shaped like events/poll_execution.json: an execution to replace with a real one."""
    return isinstance(_get(event, "execution"), dict)


def _preparable_finish(event: Any) -> bool:
    """Shaped like events/finish_request.json: a request id, and executions as objects if any."""
    executions = _get(event, "executions")
    return (
        isinstance(_get(event, "requestId"), str)
        and bool(_get(event, "requestId"))
        and (
            executions is None
            or (isinstance(executions, list) and all(isinstance(e, dict) for e in executions))
        )
    )


def _effective(gateway: GatewayTarget, overrides: Mapping[str, str]) -> GatewayTarget:
    """The gateway the handlers will call: ENV's values win over the template's."""
    return GatewayTarget(
        gateway.kind,
        overrides.get("GATEWAY_BASE_URL", gateway.base_url),
        overrides.get("GATEWAY_ORGANISATION", gateway.organisation),
        overrides.get("GATEWAY_TOKEN", gateway.token),
    )


def print_report(report: InvokeReport, stream: TextIO, *, with_gateway: bool = True) -> None:
    if with_gateway:
        print(report.gateway, file=stream)
    print(f"function: {report.function}", file=stream)
    for note in report.notes:
        print(note, file=stream)
    if report.error is not None:
        print(f"\n{report.function} raised (Lambda error result):", file=stream)
        print(json.dumps(report.error, indent=2), file=stream)
    else:
        print(f"\n{report.function} returned:", file=stream)
        print(json.dumps(report.result, indent=2, ensure_ascii=False), file=stream)
    print(f"\nrecords written to the ResultsTable: {len(report.records)}", file=stream)
    for record in report.records:
        print(json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True), file=stream)


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvokeError(f"{what} {path}: no such file") from None
    except json.JSONDecodeError as error:
        raise InvokeError(f"{what} {path} is not JSON: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.invoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("function", help="the function's logical id in template.yaml, e.g. S3UploadFunction")
    parser.add_argument("event", type=Path, help="event JSON file, e.g. events/s3_put.json")
    parser.add_argument("--env", type=Path, help='overrides: {"Parameters": {...}, "<LogicalId>": {...}}')
    parser.add_argument("--object", type=Path, help="the content of the objects the event names")
    args = parser.parse_args(argv)
    try:
        if args.object is not None and not args.object.is_file():
            raise InvokeError(f"OBJECT {args.object}: no such file")
        event = _load_json(args.event, "EVENT")
        env_file = _load_json(args.env, "ENV") if args.env else None
        report = invoke(
            args.function,
            event,
            env_file=env_file,
            object_path=args.object,
            announce=lambda line: print(line, flush=True),
        )
    except (InvokeError, GatewayChoiceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report, sys.stdout, with_gateway=False)
    return 1 if report.error is not None else 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # everything is written; moto's teardown would add seconds
