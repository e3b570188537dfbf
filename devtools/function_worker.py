"""The inside of one Lambda execution environment: a process that imports a function's handler and runs it.

Started by devtools.embedded_aws.lambda_runtime (one process per concurrent instance of a function), it
takes the function's environment as its own, imports the handler from the function's code directory on the
first event (Lambda's init), then answers events one at a time over a pipe until the pipe closes. The
parent ends it at the function's timeout or memory size.

It imports nothing of moto or of the embedded AWS, so that the handler sees only what Lambda would give it.
"""

from __future__ import annotations

import decimal
import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from devtools.kill_points import KillPoints

# What the process loads before it takes a function's environment: the libraries every function imports,
# none of which reads the environment at import time (Powertools does, POWERTOOLS_DEBUG: not preloaded), and
# the AWS service models its clients read (devtools.service_models). A process forked from one that has
# them starts in milliseconds instead of the ~0.4 s a fresh interpreter takes (the real cold start is
# bench/cold_start.py's to measure).
PRELOAD = ("boto3", "botocore.session", "httpx", "pydantic", "pydantic.main", "devtools.service_models")


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    handler: str  # module.function, as in the template
    code_dir: str
    memory: int
    log_group: str
    environment: dict[str, str]
    log_path: str | None = None  # where stdout and stderr go; None keeps the parent's
    # The chaos benchmark's kill points (devtools.kill_points): (control file, journal file); None: none.
    kill_points: tuple[str, str] | None = None


class LambdaContext:
    """The context object handlers receive; same attributes as the Python runtime's."""

    def __init__(self, spec: FunctionSpec, request_id: str, deadline: float, log_stream: str) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # A string, as in the real runtime (it reads AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
        self.memory_limit_in_mb = str(spec.memory)
        self.aws_request_id = request_id
        self.log_group_name = spec.log_group
        self.log_stream_name = log_stream
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def json_default(value: Any) -> Any:
    # The Python runtime's marshaller writes Decimal (what boto3's DynamoDB layer returns) as a number.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_payload(error_type: str, message: str, stack_trace: list[str] | None = None) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": stack_trace or []}


def exception_payload(error: BaseException) -> dict[str, Any]:
    # Only the function's own frames, as Lambda's trace leaves out the runtime's.
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename != __file__]
    return error_payload(type(error).__name__, str(error), traceback.format_list(frames))


def load_handler(spec: FunctionSpec) -> Any:
    """The handler, or an error payload as the runtime reports an init failure."""
    module_name, _, function_name = spec.handler.replace("/", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        return error_payload("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}")
    except SyntaxError as error:
        return error_payload(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {error}"
        )
    except Exception as error:  # an init error fails the invocation, as in Lambda
        traceback.print_exc()
        return exception_payload(error)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        return error_payload(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return handler


def take_environment(spec: FunctionSpec) -> None:
    """The function's environment and code directory, and nothing of the parent's."""
    os.environ.clear()
    os.environ.update(spec.environment)
    sys.path[:] = [
        spec.code_dir,
        *[entry for entry in sys.path if "site-packages" in entry or "lib/python" in entry],
    ]
    os.chdir(spec.code_dir)
    if spec.log_path is not None:
        log = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    time.tzset()


def serve(connection: Any, spec: FunctionSpec) -> None:
    """Answers `(request_id, deadline, event_json)` with `("ok", result_json)` or `("error", payload)`."""
    take_environment(spec)
    kill_points = None
    if spec.kill_points is not None:
        kill_points = KillPoints(*spec.kill_points, function=spec.logical_id)
        kill_points.install()
    log_stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{os.urandom(16).hex()}"
    handler: Any = None
    while True:
        try:
            request_id, deadline, event_json = connection.recv()
        except EOFError:  # the parent closed the pipe: the environment is shut down
            return
        if handler is None:
            loaded = load_handler(spec)
            if isinstance(loaded, dict):
                connection.send(("init-error", loaded))
                return  # Lambda starts a new environment after a failed init
            handler = loaded if kill_points is None else kill_points.wrap_handler(loaded)
        os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()}"
        context = LambdaContext(spec, request_id, deadline, log_stream)
        try:
            result = handler(json.loads(event_json), context)
        except Exception as error:  # what Lambda does: the invocation fails with an error result
            traceback.print_exc()
            connection.send(("error", exception_payload(error)))
            continue
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        try:
            connection.send(("ok", json.dumps(result, default=json_default)))
        except (TypeError, ValueError) as error:
            connection.send(
                ("error", error_payload("Runtime.MarshalError", f"Unable to marshal response: {error}"))
            )
