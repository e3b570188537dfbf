"""Deploys a SAM template into moto served on loopback, and runs each function in processes of its own under
its own role: an AWS account on this machine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID

from devtools.embedded_aws.aws_server import Credentials, LocalAwsServer
from devtools.embedded_aws.catalog import resource_type_for
from devtools.embedded_aws.environment import (
    UNSET_WHILE_DEPLOYED,
    ProcessEnvironment,
    function_process_environment,
)
from devtools.embedded_aws.event_rules import EventRouter, RulesCreated
from devtools.embedded_aws.lambda_runtime import (
    FunctionRuntime,
    Handler,
    InvocationLog,
    LambdaRuntimeError,
    MotoLambdaBridge,
)
from devtools.embedded_aws.moto_fixes import EXECUTION_END_LISTENERS, moto_fixes, step_functions_as_their_role
from devtools.embedded_aws.resources import CreatedResource, DeployContext
from devtools.embedded_aws.roles import StackRoles, translate
from devtools.embedded_aws.serverless import FunctionInfo
from devtools.embedded_aws.sqs_poller import SqsPoller
from devtools.embedded_aws.template import (
    PseudoParameters,
    Resolver,
    Template,
    TemplateError,
    creation_order,
    generated_role_owner,
)
from devtools.function_worker import FunctionSpec

logger = logging.getLogger("devtools.embedded_aws")

DEFAULT_STACK_NAME = "quant-ai-local"
DEFAULT_REGION = "us-east-1"
STATE_MACHINE_TYPE = "AWS::Serverless::StateMachine"
# How long close() waits for handlers that are still running before it stops moto anyway.
CLOSE_GRACE_SECONDS = 30.0
# How often drain() looks again while the stack is busy: at first, and whenever a handler has run since;
# while only moto is busy (messages waiting out a visibility timeout, executions between steps), the wait
# doubles up to the longest, each look being a few signed requests checked against IAM.
DRAIN_CHECK_SECONDS = 0.05
DRAIN_CHECK_LONGEST_SECONDS = 0.4


@dataclass(frozen=True)
class DeployedResource:
    logical_id: str
    type: str
    physical_id: Any  # what Ref gives
    attributes: Mapping[str, Any]  # what Fn::GetAtt gives
    properties: Mapping[str, Any]  # as resolved from the template (SAM Globals merged)


class EmbeddedAws:
    """Entry point: `EmbeddedAws.deploy("template.yaml", parameters={...})`. One stack at a time per process."""

    _active: ClassVar[DeployedStack | None] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def deploy(
        cls,
        template: str | Path,
        parameters: Mapping[str, Any] | None = None,
        extra_environment: Mapping[str, str] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        *,
        visibility_timeout_override: int | None = None,
        batching_window_override: float | None = None,
        start_pollers: bool = True,
        function_log: Path | None = None,
        secret_values: Mapping[str, str] | None = None,
        function_timeout_override: Mapping[str, int] | None = None,
        kill_points: tuple[Path, Path] | None = None,
    ) -> DeployedStack:
        """Starts moto's server, creates every resource of the template, starts the SQS pollers.

        `visibility_timeout_override` is for tests and local runs only: it replaces every queue's
        VisibilityTimeout (seconds) so a failed message comes back quickly. `batching_window_override`, tests
        only: every SQS event source's MaximumBatchingWindowInSeconds (a lone message waits it out).
        `extra_environment` is added to every function's environment (and wins over the template's values).
        `function_log`: a file the function processes' output (their logs) is appended to, instead of this
        process's stdout and stderr. `secret_values`: the value to put in each of these secrets (by logical
        id) once deployed, before any function runs, as an operator does after the first deploy.
        Benchmarks only: `function_timeout_override` gives the functions named (by logical id) another
        Timeout; `kill_points` (control file, journal file) arms devtools.kill_points in every function
        process. Faults in AWS itself: `stack.server.faults` (devtools.embedded_aws.aws_faults).
        """
        with cls._active_lock:
            if cls._active is not None:
                raise RuntimeError(
                    f"stack {cls._active.stack_name} is still deployed; close() it first (moto and os.environ are"
                    " process-wide, so only one stack can be deployed at a time)"
                )
            stack = DeployedStack(Template.load(template), stack_name, DEFAULT_REGION, DEFAULT_ACCOUNT_ID)
            cls._active = stack
        try:
            stack._deploy(
                parameters or {},
                extra_environment or {},
                visibility_timeout_override,
                batching_window_override,
                start_pollers,
                function_log,
                secret_values or {},
                function_timeout_override or {},
                kill_points,
            )
        except BaseException:
            stack.close()
            raise
        return stack

    @classmethod
    def _release(cls, stack: DeployedStack) -> None:
        with cls._active_lock:
            if cls._active is stack:
                cls._active = None


class DeployedStack:
    """A deployed template: its resources in moto (served at `endpoint`), its functions in their processes."""

    def __init__(self, template: Template, stack_name: str, region: str, account_id: str) -> None:
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.resources: dict[str, DeployedResource] = {}
        self.outputs: dict[str, Any] = {}
        self.environment: dict[str, str] = {}  # what extra_environment added to every function's
        self.function_environments: dict[str, dict[str, str]] = {}  # each function's, as its process has it
        self.functions: dict[str, FunctionInfo] = {}
        self.server = LocalAwsServer(region, account_id)
        self.roles: StackRoles | None = None
        self.function_credentials: dict[str, Credentials] = {}
        self.invocations = InvocationLog()
        self.pollers: list[SqsPoller] = []
        self.events: EventRouter | None = None  # EventBridge's deliveries to the functions
        self.events_created: RulesCreated | None = None  # the rules, permissions and invoke configs
        self._runtimes: dict[str, FunctionRuntime] = {}
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._clients_lock = threading.Lock()
        self._process_environment = ProcessEnvironment()
        self._cleanup = ExitStack()
        self._closing = False
        self._closed = False

    # --- deploy ---------------------------------------------------------------------------------------------

    def _deploy(
        self,
        parameters: Mapping[str, Any],
        extra_environment: Mapping[str, str],
        visibility_timeout_override: int | None,
        batching_window_override: float | None,
        start_pollers: bool,
        function_log: Path | None,
        secret_values: Mapping[str, str],
        function_timeout_override: Mapping[str, int],
        kill_points: tuple[Path, Path] | None,
    ) -> None:
        self._cleanup.callback(EmbeddedAws._release, self)
        parameter_values = self.template.parameter_values(parameters)
        pseudo = PseudoParameters(self.stack_name, self.account_id, self.region)
        resolver = Resolver(self.template, parameter_values, pseudo, self.physical_id, self.attribute)
        order = self._creation_order(resolver)

        self.server.start()
        self._cleanup.callback(self.server.stop)
        assert self.server.deployer is not None
        # This process acts as the deployer; a profile would send boto3 elsewhere.
        self._cleanup.callback(self._process_environment.restore)
        self._process_environment.apply(
            {
                **dict.fromkeys(UNSET_WHILE_DEPLOYED),
                **self.server.deployer.environment(),
                "AWS_ENDPOINT_URL": self.server.endpoint,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
            }
        )
        for patcher in moto_fixes():
            patcher.start()
            self._cleanup.callback(patcher.stop)

        # After the environment is set: the translator asks boto3 for the region, which reads the profile.
        translated = translate(self.template, self.region)
        self.roles = StackRoles(translated, self.client("iam"), self.stack_name)
        context = DeployContext(
            stack_name=self.stack_name,
            region=self.region,
            account_id=self.account_id,
            partition=pseudo.partition,
            template_dir=self.template.directory,
            client=self.client,
            role_arn=self.roles.role_arn,
            visibility_timeout_override=visibility_timeout_override,
            batching_window_override=batching_window_override,
            function_timeout_override=function_timeout_override,
        )
        for logical_id in order:
            self._create(resolver, context, logical_id)
        self.outputs = {
            name: resolver.resolve(output["Value"])
            for name, output in self.template.outputs.items()
            if resolver.is_output_included(name)
        }
        self.roles.put_policies(resolver)
        for logical_id, value in secret_values.items():
            self.client("secretsmanager").put_secret_value(
                SecretId=self.physical_id(logical_id), SecretString=value
            )
        role_sessions: dict[str, Credentials] = {}

        def role_credentials(role_arn: str) -> dict[str, Any]:
            if role_arn not in role_sessions:
                role_sessions[role_arn] = self.server.assume_role(role_arn, "states")
            return dict(role_sessions[role_arn].client_arguments())

        for patcher in step_functions_as_their_role(self.server.endpoint, role_credentials):
            patcher.start()
            self._cleanup.callback(patcher.stop)

        self.functions = dict(context.functions)
        self.environment = dict(extra_environment)
        for logical_id, function in self.functions.items():
            credentials = self.server.assume_role(function.role_arn, function.name)
            self.function_credentials[logical_id] = credentials
            self.function_environments[logical_id] = {
                **function_process_environment(function, self.region, self.server.endpoint),
                **credentials.environment(),
                **function.environment,
                **extra_environment,
            }
        self._runtimes = {
            logical_id: FunctionRuntime(
                function,
                self.invocations,
                FunctionSpec(
                    logical_id=logical_id,
                    name=function.name,
                    arn=function.arn,
                    handler=function.handler,
                    code_dir=str(function.code_dir),
                    memory=function.memory,
                    log_group=function.log_group,
                    environment=self.function_environments[logical_id],
                    log_path=None if function_log is None else str(function_log),
                    kill_points=None if kill_points is None else (str(kill_points[0]), str(kill_points[1])),
                ),
            )
            for logical_id, function in self.functions.items()
        }
        self._cleanup.callback(self._close_runtimes)
        bridge = MotoLambdaBridge({runtime.function.name: runtime for runtime in self._runtimes.values()})
        bridge.start()
        self._cleanup.callback(bridge.stop)
        # Runs before bridge.stop (callbacks run in reverse), while handlers can still be reached.
        self._cleanup.callback(self._stop_executions_and_wait)

        self.events_created = context.event_rules
        self.events = EventRouter(
            context.event_rules,
            self._runtimes,
            region=self.region,
            account_id=self.account_id,
            sqs_as_function=lambda logical_id: self.client("sqs", as_function=logical_id),
            events_client=self.client("events"),
            deployer_sqs=self.client("sqs"),
        )
        machines = set(self._state_machine_arns())

        def execution_ended(execution: Any) -> None:
            if self.events is not None and execution.state_machine_arn in machines:
                self.events.execution_ended(execution)

        EXECUTION_END_LISTENERS.append(execution_ended)
        self._cleanup.callback(EXECUTION_END_LISTENERS.remove, execution_ended)
        # Runs first at close: no event is delivered while the stack stops its executions.
        self._cleanup.callback(self.events.close)
        if start_pollers:
            self.events.start_schedules()

        for function in self.functions.values():
            for source in function.events.values():
                if source.enabled:
                    # Lambda's poller reads the queue with the function's role, as AWS does.
                    self.pollers.append(
                        SqsPoller(
                            source,
                            self._runtimes[function.logical_id],
                            self.client("sqs", as_function=function.logical_id),
                            self.region,
                            counting_client=self.client("sqs"),
                            arrivals=self.server.queue_arrivals(source.queue_url),
                        )
                    )
        if start_pollers:
            self._cleanup.callback(self._stop_pollers)
            for poller in self.pollers:
                poller.start()

    def _creation_order(self, resolver: Resolver) -> list[str]:
        dependencies: dict[str, set[str]] = {}
        for logical_id in self.template.resources:
            if not resolver.is_included(logical_id):
                continue
            resource_type = resource_type_for(logical_id, self.template.resource_type(logical_id))
            properties = self.template.resource_properties(logical_id)
            resource_type.check_properties(logical_id, properties)
            dependencies[logical_id] = resolver.dependencies(properties) | set(
                self.template.depends_on(logical_id)
            )
        return creation_order(dependencies)

    def _create(self, resolver: Resolver, context: DeployContext, logical_id: str) -> None:
        type_name = self.template.resource_type(logical_id)
        try:
            properties = resolver.resolve(self.template.resource_properties(logical_id))
            created: CreatedResource = resource_type_for(logical_id, type_name).create(
                context, logical_id, properties
            )
        except Exception as error:
            error.add_note(f"while creating {logical_id} ({type_name}) in the embedded AWS")
            raise
        self.resources[logical_id] = DeployedResource(
            logical_id, type_name, created.physical_id, created.attributes, properties
        )

    # --- what a deployed stack offers -----------------------------------------------------------------------

    def physical_id(self, logical_id: str) -> Any:
        """What `Ref` gives: bucket name, queue URL, table name, function name, state machine ARN..."""
        return self._resource(logical_id).physical_id

    def attribute(self, logical_id: str, name: str) -> Any:
        """What `Fn::GetAtt` gives."""
        resource = self._resource(logical_id)
        if name not in resource.attributes:
            raise TemplateError(
                f"Fn::GetAtt {logical_id}.{name}: {resource.type} offers {sorted(resource.attributes)} here"
            )
        return resource.attributes[name]

    @property
    def endpoint(self) -> str:
        """Where the embedded AWS answers (http://127.0.0.1:<port>): every function's AWS_ENDPOINT_URL."""
        return self.server.endpoint

    def client(self, service: str, *, as_function: str | None = None) -> Any:
        """A boto3 client on the embedded AWS, as the deployer (allowed everything) or with a function's role
        credentials. Clients are thread-safe, so one per service and identity is shared."""
        if self._closed:
            # moto is stopped: a client now would reach nothing (or, without the endpoint, the real AWS).
            raise RuntimeError(f"stack {self.stack_name} is closed")
        credentials = None if as_function is None else self.function_credentials[as_function]
        with self._clients_lock:
            key = (service, as_function)
            if key not in self._clients:
                self._clients[key] = self.server.client(service, credentials)
            return self._clients[key]

    def invoke(
        self, logical_id: str, event: Any, environment_overrides: Mapping[str, str | None] | None = None
    ) -> Any:
        """Runs the function's handler like `sam local invoke` and returns its result (JSON round-tripped).

        The handler's exception is raised as a FunctionError of the same class name (a stand-in handler's
        as itself); a runtime failure (import error, unserialisable result, timeout, out of memory, crash)
        raises LambdaRuntimeError. Overrides (None unsets) give this invocation a fresh process of its own.
        """
        runtime = self._runtime(logical_id)
        invocation = runtime.invoke(event, trigger="invoke", environment_overrides=environment_overrides)
        if invocation.exception is not None:
            raise invocation.exception
        if invocation.error is not None:
            raise LambdaRuntimeError(logical_id, invocation.error)
        return invocation.result

    def replace_handler(self, logical_id: str, handler: Handler | None) -> None:
        """Tests only: the function runs `handler(event, context)` in this process instead of its code in its
        own; None undoes it."""
        self._runtime(logical_id).replace_handler(handler)

    def drain(self, timeout: float = 60) -> None:
        """Blocks until every polled queue is empty with nothing in flight, no handler is running and every
        state machine execution has ended; raises TimeoutError saying what is still busy otherwise."""
        deadline = time.monotonic() + timeout
        pause = DRAIN_CHECK_SECONDS
        while True:
            self._raise_if_poller_failed()
            if self._busy_in_this_process() and time.monotonic() < deadline:
                # Busy without asking moto: every question to it is a signed request checked against IAM.
                pause = DRAIN_CHECK_SECONDS
                time.sleep(pause)
                continue
            started = self.invocations.started
            busy = self._busy()
            # An invocation that started while looking (a redelivered message, a new execution) means look again.
            if not busy and self.invocations.started == started:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stack {self.stack_name} still busy after {timeout} s: {'; '.join(busy)}")
            pause = DRAIN_CHECK_SECONDS if self.invocations.started != started else pause
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, DRAIN_CHECK_LONGEST_SECONDS)

    def wait_for_executions(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Waits until no execution of the stack's state machines runs; returns every execution's description."""
        deadline = time.monotonic() + timeout
        while running := self._executions("RUNNING"):
            if time.monotonic() >= deadline:
                names = ", ".join(execution["executionArn"] for execution in running)
                raise TimeoutError(f"executions still running after {timeout} s: {names}")
            time.sleep(0.05)
        stepfunctions = self.client("stepfunctions")
        return [
            stepfunctions.describe_execution(executionArn=execution["executionArn"])
            for execution in sorted(self._executions(), key=lambda execution: execution["startDate"])
        ]

    def close(self) -> None:
        """Stops the pollers, executions and function processes, then moto; puts os.environ back. Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            self._cleanup.close()
        finally:
            self._closed = True

    def __enter__(self) -> DeployedStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------------------

    def _resource(self, logical_id: str) -> DeployedResource:
        owner = generated_role_owner(self.template, logical_id)
        if logical_id not in self.resources and owner is not None and self.roles is not None:
            # SAM's generated role, referred to by the template (e.g. in a resource policy): made with its owner.
            arn = self.roles.role_arn(owner)
            return DeployedResource(logical_id, "AWS::IAM::Role", self.roles.names[owner], {"Arn": arn}, {})
        if logical_id not in self.resources:
            if logical_id in self.template.resources:
                raise TemplateError(
                    f"{logical_id} is not created (its condition is false, or it comes later)"
                )
            raise TemplateError(f"{logical_id}: no such resource in {self.template.path.name}")
        return self.resources[logical_id]

    def _runtime(self, logical_id: str) -> FunctionRuntime:
        if logical_id not in self._runtimes:
            raise TemplateError(
                f"{logical_id} is not a function of the stack (functions: {sorted(self._runtimes)})"
            )
        return self._runtimes[logical_id]

    def _state_machine_arns(self) -> list[str]:
        return [
            resource.physical_id
            for resource in self.resources.values()
            if resource.type == STATE_MACHINE_TYPE
        ]

    def _executions(self, status: str | None = None) -> list[dict[str, Any]]:
        paginator = self.client("stepfunctions").get_paginator("list_executions")
        executions = []
        for arn in self._state_machine_arns():
            request = {"stateMachineArn": arn} | ({"statusFilter": status} if status else {})
            for page in paginator.paginate(**request):
                executions.extend(page["executions"])
        return executions

    def _busy_in_this_process(self) -> bool:
        return bool(self.invocations.in_progress) or any(poller.batches_in_flight for poller in self.pollers)

    def _busy(self) -> list[str]:
        busy = []
        for poller in self.pollers:
            if not poller.started:
                continue
            counts = poller.queue_counts()
            if any(counts.values()) or poller.batches_in_flight:
                details = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
                busy.append(
                    f"queue {poller.source.queue_arn}: {details}, batches in flight {poller.batches_in_flight}"
                )
        if self.invocations.in_progress:
            busy.append(f"{self.invocations.in_progress} handler invocation(s) running")
        if self.events is not None and self.events.pending:
            busy.append(f"{self.events.pending} EventBridge delivery(ies) pending")
        busy.extend(
            f"execution {execution['executionArn']} running" for execution in self._executions("RUNNING")
        )
        return busy

    def _raise_if_poller_failed(self) -> None:
        for poller in self.pollers:
            if poller.failure is not None:
                raise RuntimeError(
                    f"the SQS poller of {poller.source.function_logical_id} died"
                ) from poller.failure

    def _stop_pollers(self) -> None:
        for poller in self.pollers:
            poller.stop()
        deadline = time.monotonic() + CLOSE_GRACE_SECONDS
        stuck = [
            name for poller in self.pollers for name in poller.join(max(0.0, deadline - time.monotonic()))
        ]
        if stuck:
            logger.warning("SQS poller threads still running at close: %s", stuck)

    def _close_runtimes(self) -> None:
        for runtime in self._runtimes.values():
            runtime.close()

    def _stop_executions_and_wait(self) -> None:
        """Executions run on moto's threads; stopped here so that none calls AWS once moto is gone."""
        stepfunctions = self.client("stepfunctions")
        for execution in self._executions("RUNNING"):
            try:
                stepfunctions.stop_execution(executionArn=execution["executionArn"], cause="stack closed")
            except ClientError as error:
                # It ended between listing and stopping: nothing left to stop.
                logger.debug("stopping %s: %s", execution["executionArn"], error)
        deadline = time.monotonic() + CLOSE_GRACE_SECONDS
        while self.invocations.in_progress and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.invocations.in_progress:
            logger.warning("%d handler invocation(s) still running at close", self.invocations.in_progress)
