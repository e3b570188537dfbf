"""EventBridge rules whose targets are the stack's functions, delivered as AWS delivers them.

moto stores rules and targets but delivers only to queues, logs and buses, and its Step Functions never emit
their status changes. Here: a Step Functions execution that ends emits "Step Functions Execution Status
Change" (moto_fixes calls `execution_ended`), rules with a `rate(...)` schedule fire, and each matching
rule's function target is invoked asynchronously: only where an AWS::Lambda::Permission lets the rule invoke
it, retried as Lambda retries an asynchronous invocation (the function's EventInvokeConfig, else twice), and
sent to its OnFailure destination with the function's own role once the retries are spent.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from moto.events.models import EventPattern

from devtools.embedded_aws.aws_api import call
from devtools.embedded_aws.resources import (
    CreatedResource,
    DeployContext,
    ResourceType,
    UnsupportedPropertyError,
)

if TYPE_CHECKING:
    from devtools.embedded_aws.lambda_runtime import FunctionRuntime, Invocation

logger = logging.getLogger("devtools.embedded_aws")

EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"
# Lambda waits about one and then two minutes between the tries of an asynchronous invocation; locally seconds.
LOCAL_ASYNC_RETRY_DELAYS = (1.0, 2.0)
DEFAULT_ASYNC_RETRIES = 2
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_RATE_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class RuleTarget:
    target_id: str
    arn: str


@dataclass(frozen=True)
class EventRule:
    logical_id: str
    name: str
    arn: str
    pattern: Mapping[str, Any] | None
    schedule: str | None
    targets: tuple[RuleTarget, ...]


@dataclass(frozen=True)
class InvokePermission:
    function_name: str  # a name or an ARN, as the template gives it
    principal: str
    source_arn: str | None


@dataclass(frozen=True)
class AsyncInvokeConfig:
    maximum_retry_attempts: int = DEFAULT_ASYNC_RETRIES
    on_failure: str | None = None  # a queue's ARN


@dataclass
class RulesCreated:
    """Filled while the stack deploys (rules, permissions and invoke configs by function logical id)."""

    rules: dict[str, EventRule] = field(default_factory=dict)
    permissions: list[InvokePermission] = field(default_factory=list)
    invoke_configs: dict[str, AsyncInvokeConfig] = field(default_factory=dict)


def schedule_seconds(expression: str) -> float | None:
    """The period of `rate(N unit)`; None for cron expressions (not fired locally)."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    return int(match.group(1)) * _RATE_UNIT_SECONDS[match.group(2).rstrip("s")]


class EventRouter:
    """Delivers events to the function targets of the stack's rules, each delivery on a thread of its own."""

    def __init__(
        self,
        created: RulesCreated,
        runtimes: Mapping[str, FunctionRuntime],
        *,
        region: str,
        account_id: str,
        sqs_as_function: Callable[[str], Any],
        events_client: Any,
        deployer_sqs: Any,
        retry_delays: tuple[float, ...] = LOCAL_ASYNC_RETRY_DELAYS,
    ) -> None:
        self._created = created
        self._runtimes = runtimes
        self._region = region
        self._account_id = account_id
        self._sqs_as_function = sqs_as_function
        self._events = events_client
        self._deployer_sqs = deployer_sqs
        self._retry_delays = retry_delays
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.undelivered: list[
            tuple[str, str]
        ] = []  # (rule, why): no permission, not a function of the stack

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def start_schedules(self) -> None:
        for rule in self._created.rules.values():
            if not rule.schedule:
                continue
            period = schedule_seconds(rule.schedule)
            if period is None:
                logger.warning(
                    "rule %s: %s is not fired locally (rate() only)", rule.logical_id, rule.schedule
                )
                continue
            thread = threading.Thread(
                target=self._fire_every, args=(rule, period), name=f"schedule-{rule.logical_id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def fire_schedule(self, logical_id: str) -> None:
        """What the rule's schedule does at each tick, now."""
        rule = self._created.rules[logical_id]
        self._deliver(rule, self._scheduled_event(rule))

    def execution_ended(self, execution: Any) -> None:
        """moto's Step Functions ended an execution: EventBridge's status-change event, on the default bus."""
        if self._closed.is_set():
            return
        event = self._envelope(
            "aws.states",
            EXECUTION_STATUS_CHANGE,
            [execution.exec_arn],
            {
                "executionArn": execution.exec_arn,
                "stateMachineArn": execution.state_machine_arn,
                "name": execution.name,
                "status": execution.exec_status.value,
                "startDate": _epoch_ms(execution.start_date),
                "stopDate": _epoch_ms(execution.stop_date),
                "input": json.dumps(execution.input_data),
                "output": None if execution.output is None else json.dumps(execution.output),
                "inputDetails": {"included": True},
                "outputDetails": None if execution.output is None else {"included": True},
                "error": execution.error,
                "cause": execution.cause,
            },
        )
        self.publish(event)

    def publish(self, event: Mapping[str, Any]) -> None:
        for rule in self._created.rules.values():
            if (
                self._enabled(rule)
                and rule.pattern is not None
                and EventPattern.load(json.dumps(rule.pattern)).matches_event(event)
            ):
                self._deliver(rule, event)

    def close(self, timeout: float = 10) -> None:
        self._closed.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- internals ------------------------------------------------------------------------------------------

    def _deliver(self, rule: EventRule, event: Mapping[str, Any]) -> None:
        for target in rule.targets:
            function = self._function_for(target.arn)
            if function is None:
                self.undelivered.append(
                    (rule.logical_id, f"target {target.arn} is not a function of the stack")
                )
                continue
            if not self._permitted(function, rule):
                # AWS refuses the invocation and the event goes to the target's dead-letter queue, if any.
                logger.warning("rule %s may not invoke %s (no AWS::Lambda::Permission)", rule.name, function)
                self.undelivered.append((rule.logical_id, f"no permission to invoke {function}"))
                continue
            thread = threading.Thread(
                target=self._invoke_async, args=(function, dict(event)), name=f"async-{function}", daemon=True
            )
            with self._lock:
                if self._closed.is_set():
                    return
                self._pending += 1
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _invoke_async(self, function: str, event: dict[str, Any]) -> None:
        try:
            config = self._created.invoke_configs.get(function, AsyncInvokeConfig())
            invocation: Invocation | None = None
            for attempt in range(config.maximum_retry_attempts + 1):
                if attempt:
                    delay = self._retry_delays[min(attempt, len(self._retry_delays)) - 1]
                    if self._closed.wait(delay):
                        return
                invocation = self._runtimes[function].invoke(event, trigger="event")
                if invocation.succeeded:
                    return
            if invocation is not None and config.on_failure:
                self._send_failure(function, event, invocation, config)
        finally:
            with self._lock:
                self._pending -= 1

    def _send_failure(
        self, function: str, event: dict[str, Any], invocation: Invocation, config: AsyncInvokeConfig
    ) -> None:
        """Lambda's invocation record, sent with the function's role (as Lambda sends it)."""
        assert config.on_failure is not None and invocation.error is not None
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "requestContext": {
                "requestId": invocation.request_id,
                "functionArn": f"{self._runtimes[function].function.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": config.maximum_retry_attempts + 1,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {
                "errorType": invocation.error.error_type,
                "errorMessage": invocation.error.error_message,
            },
        }
        # Found by the deployer (Lambda knows the queue by its ARN); sent as the function (Lambda uses its role).
        queue_url = self._deployer_sqs.get_queue_url(QueueName=config.on_failure.rsplit(":", 1)[-1])[
            "QueueUrl"
        ]
        self._sqs_as_function(function).send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))

    def _function_for(self, arn: str) -> str | None:
        for logical_id, runtime in self._runtimes.items():
            if arn in (runtime.function.arn, f"{runtime.function.arn}:$LATEST"):
                return logical_id
        return None

    def _permitted(self, function: str, rule: EventRule) -> bool:
        info = self._runtimes[function].function
        return any(
            permission.function_name in (info.name, info.arn, info.logical_id)
            and permission.principal == "events.amazonaws.com"
            and permission.source_arn in (None, rule.arn)
            for permission in self._created.permissions
        )

    def _fire_every(self, rule: EventRule, period: float) -> None:
        while not self._closed.wait(period):
            if self._enabled(rule):
                self._deliver(rule, self._scheduled_event(rule))

    def _enabled(self, rule: EventRule) -> bool:
        """As the rule is now (DisableRule and EnableRule take effect at once), not as it was deployed."""
        return self._events.describe_rule(Name=rule.name)["State"] == "ENABLED"

    def _scheduled_event(self, rule: EventRule) -> dict[str, Any]:
        return self._envelope("aws.events", "Scheduled Event", [rule.arn], {})

    def _envelope(
        self, source: str, detail_type: str, resources: list[str], detail: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self._account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": resources,
            "detail": detail,
        }


def _epoch_ms(moment: Any) -> int | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return int(moment.timestamp() * 1000)
    return int(float(moment) * 1000)


# --- the resources ---------------------------------------------------------------------------------------------


class EventsRule(ResourceType):
    type_name = "AWS::Events::Rule"
    applied = frozenset({"Name", "Description", "EventPattern", "ScheduleExpression", "State", "Targets"})
    _target_keys = frozenset({"Id", "Arn", "RetryPolicy", "DeadLetterConfig"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        if "EventPattern" not in properties and "ScheduleExpression" not in properties:
            raise UnsupportedPropertyError(f"{logical_id}: a rule needs EventPattern or ScheduleExpression")
        events = context.client("events")
        name = properties.get("Name") or context.physical_name(logical_id, 64)
        request: dict[str, Any] = {"Name": name, "State": properties.get("State", "ENABLED")}
        if "EventPattern" in properties:
            request["EventPattern"] = json.dumps(properties["EventPattern"])
        for key in ("ScheduleExpression", "Description"):
            if key in properties:
                request[key] = properties[key]
        arn = call(events, "PutRule", **request)["RuleArn"]
        targets = properties.get("Targets", [])
        for target in targets:
            unknown = sorted(set(target) - self._target_keys)
            if unknown:
                raise UnsupportedPropertyError(f"{logical_id}: target properties {unknown} are not supported")
        if targets:
            call(events, "PutTargets", Rule=name, Targets=targets)
        context.event_rules.rules[logical_id] = EventRule(
            logical_id=logical_id,
            name=name,
            arn=arn,
            pattern=properties.get("EventPattern"),
            schedule=properties.get("ScheduleExpression"),
            targets=tuple(RuleTarget(t["Id"], t["Arn"]) for t in targets),
        )
        return CreatedResource(name, {"Arn": arn})


class LambdaPermission(ResourceType):
    type_name = "AWS::Lambda::Permission"
    applied = frozenset({"Action", "FunctionName", "Principal", "SourceArn", "SourceAccount"})
    required = frozenset({"Action", "FunctionName", "Principal"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        if properties["Action"] != "lambda:InvokeFunction":
            raise UnsupportedPropertyError(f"{logical_id}: only lambda:InvokeFunction is supported")
        request = {"StatementId": logical_id, **properties}
        call(context.client("lambda"), "AddPermission", **request)
        context.event_rules.permissions.append(
            InvokePermission(properties["FunctionName"], properties["Principal"], properties.get("SourceArn"))
        )
        return CreatedResource(logical_id)


class LambdaEventInvokeConfig(ResourceType):
    type_name = "AWS::Lambda::EventInvokeConfig"
    applied = frozenset(
        {"FunctionName", "Qualifier", "MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"}
    )
    required = frozenset({"FunctionName", "Qualifier"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        function = context.function_named(logical_id, properties["FunctionName"])
        if "OnSuccess" in properties.get("DestinationConfig", {}):
            raise UnsupportedPropertyError(f"{logical_id}: OnSuccess destinations are not supported")
        on_failure = properties.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if on_failure is not None and ":sqs:" not in on_failure:
            raise UnsupportedPropertyError(f"{logical_id}: only SQS OnFailure destinations are supported")
        context.event_rules.invoke_configs[function.logical_id] = AsyncInvokeConfig(
            maximum_retry_attempts=int(properties.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES)),
            on_failure=on_failure,
        )
        return CreatedResource(f"{function.name}:{properties['Qualifier']}")
