"""Runs a function's handler as Lambda does: in a process of its own, ended at its timeout or memory size.

Each concurrent instance of a function is a process (devtools.function_worker) with the function's own
environment and role credentials; an idle one is reused (a warm start), a new one is started when none is
idle (a cold start), and one that timed out, ran out of memory or crashed is never reused. The event goes to
the handler as JSON and the result comes back as JSON; an exception becomes Lambda's error result
(`errorType` is the exception's class name, which is the error name Step Functions matches in Retry and Catch).
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import multiprocessing.spawn
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from unittest import mock

from moto.awslambda.models import LambdaFunction

from devtools import function_worker
from devtools.embedded_aws.serverless import FunctionInfo
from devtools.function_worker import FunctionSpec, LambdaContext, json_default

logger = logging.getLogger("devtools.embedded_aws")

Handler = Callable[[Any, Any], Any]

# How often a running invocation's process is checked against the function's memory size. An allocation
# faster than this can pass the limit briefly before the process is ended, as Lambda's own accounting allows.
MEMORY_CHECK_SECONDS = 0.02


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

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> LambdaError:
        return cls(payload["errorType"], payload["errorMessage"], list(payload.get("stackTrace", [])))

    def payload(self, request_id: str) -> dict[str, Any]:
        return {
            "errorMessage": self.error_message,
            "errorType": self.error_type,
            "requestId": request_id,
            "stackTrace": self.stack_trace,
        }


class LambdaRuntimeError(Exception):
    """The Lambda runtime, not the handler, failed the invocation (import error, unserialisable result,
    timeout, out of memory, a crash)."""

    def __init__(self, function: str, error: LambdaError) -> None:
        super().__init__(f"{function}: {error.error_type}: {error.error_message}")
        self.error = error


class FunctionError(Exception):
    """The handler raised in its own process; this stands for that exception in the caller's process, under
    the exception's class name (as Lambda's errorType gives it)."""

    def __init__(self, function: str, error: LambdaError) -> None:
        super().__init__(error.error_message)
        self.function = function
        self.error = error


def function_error(function: str, error: LambdaError) -> FunctionError:
    name = error.error_type if error.error_type.isidentifier() else "FunctionError"
    return type(name, (FunctionError,), {"__module__": "function"})(function, error)


# Lambda's own error results for an environment that did not answer.
RUNTIME_ERRORS = ("Runtime.", "Sandbox.")


def is_runtime_error(error: LambdaError) -> bool:
    return error.error_type.startswith(RUNTIME_ERRORS)


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
    cold: bool = False  # a new process (its init ran in this invocation)
    max_memory_mb: float = 0.0  # the process's peak resident memory so far

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


@functools.cache
def process_context() -> Any:
    """Function processes are forked from a server process that has the common libraries loaded already.

    It is a fresh interpreter (not a fork of this process, which runs moto's threads), started on first use.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["devtools.function_worker", *function_worker.PRELOAD])
    return context


# multiprocessing re-imports this program's main module in every child it starts (so that pickled objects
# of the main module resolve); a function's process must not load `make run`'s program, moto and all.
_start_lock = threading.Lock()
_original_preparation_data = multiprocessing.spawn.get_preparation_data


def _preparation_without_main(name: str) -> dict[str, Any]:
    data = _original_preparation_data(name)
    data.pop("init_main_from_name", None)
    data.pop("init_main_from_path", None)
    return data


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name.removeprefix("SIG").lower()
    except ValueError:
        return str(-code)


@dataclass(frozen=True)
class _Outcome:
    result: Any = None
    error: LambdaError | None = None
    reusable: bool = True


class FunctionProcess:
    """One execution environment: a process serving one function, one invocation at a time."""

    def __init__(self, spec: FunctionSpec) -> None:
        context = process_context()
        self._connection, child_connection = context.Pipe()
        self.process = context.Process(
            target=function_worker.serve,
            args=(child_connection, spec),
            name=f"lambda-{spec.logical_id}",
            daemon=True,
        )
        with (
            _start_lock,
            mock.patch.object(multiprocessing.spawn, "get_preparation_data", _preparation_without_main),
        ):
            self.process.start()
        child_connection.close()
        self.spec = spec
        self.peak_memory_mb = 0.0

    def memory_mb(self) -> float:
        """Resident memory of the process (Lambda counts what the environment holds, not what it reserved)."""
        try:
            with open(f"/proc/{self.process.pid}/statm", encoding="ascii") as statm:
                resident_pages = int(statm.read().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    def invoke(self, request_id: str, event_json: str, deadline: float, timeout: int) -> _Outcome:
        try:
            self._connection.send((request_id, deadline, event_json))
        except OSError:  # the process ended while idle (killed from outside, say)
            return self._ended(request_id)
        while True:
            try:
                answered = self._connection.poll(MEMORY_CHECK_SECONDS)
                kind, payload = self._connection.recv() if answered else (None, None)
            except (EOFError, OSError):  # the process ended, or the stack closed its pipe
                return self._ended(request_id)
            if answered:
                if kind == "ok":
                    return _Outcome(result=json.loads(payload))
                return _Outcome(error=LambdaError.from_payload(payload), reusable=kind == "error")
            memory = self.memory_mb()
            self.peak_memory_mb = max(self.peak_memory_mb, memory)
            if memory > self.spec.memory:
                self.kill()
                logger.warning(
                    "%s used %.0f MB of its %d MB: ended as Lambda ends it",
                    self.spec.logical_id,
                    memory,
                    self.spec.memory,
                )
                message = f"RequestId: {request_id} Error: Runtime exited with error: signal: killed"
                return _Outcome(error=LambdaError("Runtime.OutOfMemory", message), reusable=False)
            if time.time() >= deadline:
                self.kill()
                logger.warning("%s ran past its %s s timeout: ended", self.spec.logical_id, timeout)
                message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
                return _Outcome(error=LambdaError("Sandbox.Timedout", message), reusable=False)
            if not self.process.is_alive():
                return self._ended(request_id)

    def _ended(self, request_id: str) -> _Outcome:
        self.process.join(5)
        code = self.process.exitcode or 0
        status = f"signal: {_signal_name(code)}" if code < 0 else f"exit status {code}"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {status}"
        return _Outcome(error=LambdaError("Runtime.ExitError", message), reusable=False)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def close(self) -> None:
        self._connection.close()
        self.kill()


class FunctionRuntime:
    """One function: its processes (warm ones reused), or a test's in-process stand-in handler."""

    def __init__(self, function: FunctionInfo, log: InvocationLog, spec: FunctionSpec) -> None:
        self.function = function
        self.spec = spec
        self._log = log
        self._handler: Handler | None = None
        self._lock = threading.Lock()
        self._idle: list[FunctionProcess] = []
        self._running: set[FunctionProcess] = set()
        self._closed = False

    def replace_handler(self, handler: Handler | None) -> None:
        """Tests only: run this callable in the caller's process instead of the template's handler in the
        function's own (None restores the template's)."""
        with self._lock:
            self._handler = handler

    def invoke(
        self, event: Any, trigger: str, environment_overrides: Mapping[str, str | None] | None = None
    ) -> Invocation:
        """Runs the handler once. Overrides give this invocation a fresh process of its own with them."""
        request_id = str(uuid.uuid4())
        event_json = json.dumps(event)
        event = json.loads(event_json)  # the record keeps what the handler received
        self._log.record_start()
        started_at = time.time()
        started = time.monotonic()
        outcome = _Outcome(reusable=False)  # what an unexpected failure leaves: the process is not reused
        cold = False
        peak = 0.0
        try:
            with self._lock:
                handler = self._handler
            if handler is not None:
                outcome = self._run_in_this_process(handler, event, request_id)
            else:
                process, cold = self._acquire(environment_overrides)
                try:
                    outcome = process.invoke(
                        request_id, event_json, started_at + self.function.timeout, self.function.timeout
                    )
                finally:
                    peak = process.peak_memory_mb
                    self._release(process, outcome.reusable and not environment_overrides)
        finally:
            error = outcome.error
            exception = None
            if error is not None and not is_runtime_error(error):
                exception = function_error(self.function.logical_id, error)
            invocation = Invocation(
                function=self.function.logical_id,
                trigger=trigger,
                request_id=request_id,
                event=event,
                result=outcome.result,
                error=error,
                started_at=started_at,
                duration=time.monotonic() - started,
                exception=outcome.exception if isinstance(outcome, _InProcessOutcome) else exception,
                cold=cold,
                max_memory_mb=peak,
            )
            self._log.record_end(invocation)
        if error is not None:
            logger.info(
                "%s (%s) failed: %s: %s",
                self.function.logical_id,
                request_id,
                error.error_type,
                error.error_message,
            )
        return invocation

    def _acquire(self, overrides: Mapping[str, str | None] | None) -> tuple[FunctionProcess, bool]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.function.logical_id}: the stack is closed")
            if not overrides and self._idle:
                process = self._idle.pop()
                self._running.add(process)
                return process, False
        spec = self.spec
        if overrides:
            environment = {**spec.environment, **overrides}
            spec = replace(spec, environment={k: v for k, v in environment.items() if v is not None})
        process = FunctionProcess(spec)
        with self._lock:
            self._running.add(process)
        return process, True

    def _release(self, process: FunctionProcess, reusable: bool) -> None:
        with self._lock:
            self._running.discard(process)
            if reusable and not self._closed and process.process.is_alive():
                self._idle.append(process)
                return
        process.close()

    def close(self) -> None:
        """Ends every process; an invocation still running gets Lambda's exit error."""
        with self._lock:
            self._closed = True
            processes = [*self._idle, *self._running]
            self._idle.clear()
        for process in processes:
            process.close()

    def _run_in_this_process(self, handler: Handler, event: Any, request_id: str) -> _InProcessOutcome:
        deadline = time.time() + self.function.timeout
        context = LambdaContext(self.spec, request_id, deadline, "in-process")
        try:
            result = handler(event, context)
        except Exception as error:  # what Lambda does: the invocation fails with an error result, logged
            logger.error(
                "%s (%s) raised %s: %s", self.function.logical_id, request_id, type(error).__name__, error
            )
            return _InProcessOutcome(error=LambdaError.from_exception(error), exception=error)
        if time.time() > deadline:
            # A stand-in handler runs on a thread, which cannot be stopped: its result is dropped.
            message = (
                f"RequestId: {request_id} Error: Task timed out after {self.function.timeout:.2f} seconds"
            )
            return _InProcessOutcome(error=LambdaError("Sandbox.Timedout", message))
        try:
            return _InProcessOutcome(result=json.loads(json.dumps(result, default=json_default)))
        except (TypeError, ValueError) as error:
            return _InProcessOutcome(
                error=LambdaError("Runtime.MarshalError", f"Unable to marshal response: {error}")
            )


@dataclass(frozen=True)
class _InProcessOutcome(_Outcome):
    exception: BaseException | None = None


class MotoLambdaBridge:
    """Makes moto's Lambda Invoke (used by Step Functions' lambda:invoke tasks) run the function's handler.

    moto would start the function in a Docker container; `_invoke_lambda` is the one method that does so.
    """

    def __init__(self, runtimes_by_name: Mapping[str, FunctionRuntime]) -> None:
        self._runtimes_by_name = runtimes_by_name
        self._patcher: Any = None

    def start(self) -> None:
        bridge = self

        def invoke_function(function: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            return bridge.invoke(function.function_name, event)

        self._patcher = mock.patch.object(LambdaFunction, "_invoke_lambda", invoke_function)
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
