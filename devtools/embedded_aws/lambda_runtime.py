"""Runs a function's Python handler in this process, the way Lambda's Python runtime runs it.

The event reaches the handler as a fresh copy of its JSON, the result goes back through JSON, and an exception
becomes Lambda's error result (`errorType` is the exception's class name, which is the error name Step
Functions matches in Retry and Catch).
"""

from __future__ import annotations

import decimal
import importlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from moto.awslambda.models import LambdaFunction

from devtools.embedded_aws.serverless import FunctionInfo

logger = logging.getLogger("devtools.embedded_aws")

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class LambdaError:
    error_type: str
    error_message: str
    stack_trace: list[str] = field(default_factory=list)

    @classmethod
    def from_exception(cls, error: BaseException) -> LambdaError:
        # Only the function's own frames, as Lambda's trace leaves out the runtime's.
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
        return cls(type(error).__name__, str(error), traceback.format_list(frames))

    def payload(self, request_id: str) -> dict[str, Any]:
        return {
            "errorMessage": self.error_message,
            "errorType": self.error_type,
            "requestId": request_id,
            "stackTrace": self.stack_trace,
        }


class LambdaRuntimeError(Exception):
    """The Lambda runtime, not the handler, failed the invocation (import error, unserialisable result...)."""

    def __init__(self, function: str, error: LambdaError) -> None:
        super().__init__(f"{function}: {error.error_type}: {error.error_message}")
        self.error = error


class LambdaContext:
    """The context object handlers receive; same attributes as the Python runtime's."""

    def __init__(self, function: FunctionInfo, request_id: str, deadline: float) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        # A string, as in the real runtime (it reads AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
        self.memory_limit_in_mb = str(function.memory)
        self.aws_request_id = request_id
        self.log_group_name = function.log_group
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


@dataclass(frozen=True)
class Invocation:
    function: str  # logical id
    trigger: str  # "invoke" (DeployedStack.invoke), "sqs", or "lambda:Invoke" (Step Functions, boto3)
    request_id: str
    event: Any
    result: Any
    error: LambdaError | None
    started_at: float  # time.time()
    duration: float  # seconds
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.error is None


class InvocationLog:
    """Every invocation of the stack's handlers, in the order they finished; safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: list[Invocation] = []
        self._started = 0

    def record_start(self) -> None:
        with self._lock:
            self._started += 1

    def record_end(self, invocation: Invocation) -> None:
        with self._lock:
            self._finished.append(invocation)

    @property
    def started(self) -> int:
        with self._lock:
            return self._started

    @property
    def in_progress(self) -> int:
        with self._lock:
            return self._started - len(self._finished)

    def snapshot(self) -> list[Invocation]:
        with self._lock:
            return list(self._finished)

    def for_function(self, logical_id: str) -> list[Invocation]:
        return [invocation for invocation in self.snapshot() if invocation.function == logical_id]

    def count(self, logical_id: str | None = None) -> int:
        return len(self.snapshot() if logical_id is None else self.for_function(logical_id))

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[Invocation]:
        return iter(self.snapshot())


def _json_default(value: Any) -> Any:
    # The Python runtime's marshaller writes Decimal (what boto3's DynamoDB layer returns) as a number.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class FunctionRuntime:
    """One function's handler: imported on first use (a cold start), then kept (a warm container)."""

    def __init__(self, function: FunctionInfo, log: InvocationLog) -> None:
        self.function = function
        self._log = log
        self._handler: Handler | None = None
        self._handler_lock = threading.Lock()

    def replace_handler(self, handler: Handler | None) -> None:
        """Tests only: run this callable instead of the template's handler (None restores the template's)."""
        with self._handler_lock:
            self._handler = handler

    def invoke(self, event: Any, trigger: str) -> Invocation:
        request_id = str(uuid.uuid4())
        event = json.loads(json.dumps(event))  # the handler gets its own copy, parsed from JSON as in Lambda
        self._log.record_start()
        started_at = time.time()
        started = time.monotonic()
        result: Any = None
        error: LambdaError | None = None
        exception: BaseException | None = None
        try:
            result, error, exception = self._run(event, request_id)
        finally:
            invocation = Invocation(
                function=self.function.logical_id,
                trigger=trigger,
                request_id=request_id,
                event=event,
                result=result,
                error=error,
                started_at=started_at,
                duration=time.monotonic() - started,
                exception=exception,
            )
            self._log.record_end(invocation)
        return invocation

    def _run(self, event: Any, request_id: str) -> tuple[Any, LambdaError | None, BaseException | None]:
        started = time.time()
        deadline = started + self.function.timeout
        handler_or_error = self._load_handler()
        if isinstance(handler_or_error, LambdaError):
            return None, handler_or_error, None
        context = LambdaContext(self.function, request_id, deadline)
        try:
            result = handler_or_error(event, context)
        except Exception as error:  # what Lambda does: the invocation fails with an error result, logged
            logger.error(
                "%s (%s) raised %s: %s",
                self.function.logical_id,
                request_id,
                type(error).__name__,
                error,
                exc_info=error,
            )
            return None, LambdaError.from_exception(error), error
        if time.time() > deadline:
            # Lambda would have stopped the handler; a thread cannot be stopped, so the result is dropped.
            logger.warning("%s ran past its %s s timeout", self.function.logical_id, self.function.timeout)
            message = (
                f"RequestId: {request_id} Error: Task timed out after {self.function.timeout:.2f} seconds"
            )
            return None, LambdaError("Sandbox.Timedout", message), None
        try:
            return json.loads(json.dumps(result, default=_json_default)), None, None
        except (TypeError, ValueError) as error:
            return None, LambdaError("Runtime.MarshalError", f"Unable to marshal response: {error}"), None

    def _load_handler(self) -> Handler | LambdaError:
        with self._handler_lock:
            if self._handler is not None:
                return self._handler
            module_name, _, function_name = self.function.handler.replace("/", ".").rpartition(".")
            # Lambda retries a failed init on the next invocation, so failures are not cached.
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                return LambdaError(
                    "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}"
                )
            except SyntaxError as error:
                return LambdaError(
                    "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {error}"
                )
            except Exception as error:  # an init error fails the invocation, as in Lambda
                logger.error("importing %s failed", module_name, exc_info=error)
                return LambdaError.from_exception(error)
            handler = getattr(module, function_name, None)
            if not callable(handler):
                return LambdaError(
                    "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
                )
            self._handler = handler
            return handler


class MotoLambdaBridge:
    """Makes moto's Lambda Invoke (used by Step Functions' lambda:invoke tasks) call the in-process handler.

    moto would start the function in a Docker container; `_invoke_lambda` is the one method that does so.
    """

    def __init__(self, runtimes_by_name: Mapping[str, FunctionRuntime]) -> None:
        self._runtimes_by_name = runtimes_by_name
        self._patcher: Any = None

    def start(self) -> None:
        bridge = self

        def invoke_in_process(function: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            return bridge.invoke(function.function_name, event)

        self._patcher = mock.patch.object(LambdaFunction, "_invoke_lambda", invoke_in_process)
        self._patcher.start()

    def stop(self) -> None:
        if self._patcher is not None:
            self._patcher.stop()
            self._patcher = None

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool, str]:
        """moto's contract: (response payload as JSON, whether it is an error, log tail)."""
        runtime = self._runtimes_by_name.get(function_name)
        if runtime is None:
            error = LambdaError(
                "EmbeddedAws.UnknownFunction", f"{function_name} is not a function of the stack"
            )
            return json.dumps(error.payload("")), True, ""
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        invocation = runtime.invoke(event, trigger="lambda:Invoke")
        if invocation.error is not None:
            return json.dumps(invocation.error.payload(invocation.request_id)), True, ""
        return json.dumps(invocation.result), False, ""
