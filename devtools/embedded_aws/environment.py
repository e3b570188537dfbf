"""Environments: what a function's process is given, and this process's own while a stack is deployed.

A function's process gets what Lambda's runtime sets (region, function name, memory size, task root...),
its role's credentials, the endpoint of the embedded AWS, and the template's variables for that function
alone. This process becomes the deploying identity on the same endpoint for as long as the stack is
deployed, and gets its environment back on close.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from devtools.embedded_aws.serverless import FunctionInfo

# A profile would send boto3 to other credentials; unset while deployed (the deployer's keys are set instead).
UNSET_WHILE_DEPLOYED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# What a Python function sees on Lambda besides its own variables (the rest of Lambda's list is about its
# runtime API, which these processes do not use).
LAMBDA_PATH = "/usr/local/bin:/usr/bin:/bin"


def function_process_environment(function: FunctionInfo, region: str, endpoint: str) -> dict[str, str]:
    """Lambda's reserved variables for the function, and AWS_ENDPOINT_URL pointing at the embedded AWS."""
    return {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": function.log_group,
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "_HANDLER": function.handler,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PATH": LAMBDA_PATH,
    }


class ProcessEnvironment:
    """Changes `os.environ` and remembers what was there, to put it back on restore()."""

    def __init__(self) -> None:
        self._originals: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def apply(self, values: Mapping[str, str | None]) -> None:
        """Sets each variable (None unsets it)."""
        with self._lock:
            for name, value in values.items():
                self._originals.setdefault(name, os.environ.get(name))
                _set(name, value)

    def restore(self) -> None:
        with self._lock:
            for name, value in self._originals.items():
                _set(name, value)
            self._originals.clear()


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
