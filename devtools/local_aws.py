"""`make local-aws`: the embedded AWS and the gateway emulator on loopback, template.yaml deployed, until Ctrl-C.

Writes an env file for `sam local invoke --env-vars` (SAM's format: "Parameters" for every function, then one
section per function) with each function's variables as deployed here, the endpoint (AWS_ENDPOINT_URL) and
the credentials of the function's own role, so that a handler run anywhere on this machine (in SAM's
container with `--docker-network host`, or a plain process) reaches this stack as that function.

    python -m devtools.local_aws [--env-file out/local-aws.env.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.embedded_aws import DeployedStack
from devtools.local_pipeline import ROOT, deploy, display_path, emulator_target, start_emulator

DEFAULT_ENV_FILE = ROOT / "out" / "local-aws.env.json"
DEFAULT_LOG = ROOT / "out" / "local-aws-functions.log"
# What Lambda sets by itself in every environment (sam local invoke too): not part of the env file.
RUNTIME_VARIABLES = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "LANG",
        "TZ",
        "PATH",
    }
)


def env_file_contents(stack: DeployedStack) -> dict[str, Any]:
    """SAM's --env-vars format; "Parameters" holds what every function shares (the endpoint, the region)."""
    sections = {
        logical_id: {name: value for name, value in variables.items() if name not in RUNTIME_VARIABLES}
        for logical_id, variables in stack.function_environments.items()
    }
    shared = {
        name: value
        for name, value in next(iter(sections.values()), {}).items()
        if all(section.get(name) == value for section in sections.values())
    }
    return {
        "Parameters": shared,
        **{
            logical_id: {name: value for name, value in variables.items() if name not in shared}
            for logical_id, variables in sections.items()
        },
    }


def function_variables(env_file: dict[str, Any], function: str) -> dict[str, str]:
    """What a function gets from the file, as `sam local invoke --env-vars` reads it."""
    return {**env_file.get("Parameters", {}), **env_file.get(function, {})}


def write_env_file(stack: DeployedStack, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(env_file_contents(stack), indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_aws", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    args = parser.parse_args(argv)
    emulator = start_emulator()
    gateway = emulator_target(emulator)
    DEFAULT_LOG.parent.mkdir(parents=True, exist_ok=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        with deploy(gateway, function_log=DEFAULT_LOG) as stack:
            write_env_file(stack, args.env_file)
            print(gateway.describe())
            print(f"embedded AWS at {stack.endpoint} (IAM enforced), stack {stack.stack_name} deployed")
            print(f"bucket {stack.physical_id('UploadsBucket')}, queue {stack.physical_id('RequestQueue')}")
            print(f"env file: {display_path(args.env_file)}; function logs: {display_path(DEFAULT_LOG)}")
            print(
                "  sam local invoke <Function> -e events/<file>.json"
                f" --env-vars {display_path(args.env_file)} --docker-network host"
            )
            print("Ctrl-C stops it.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                stopped.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
