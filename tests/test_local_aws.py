"""`make local-aws`'s env file: with exactly its variables, each function's handler, started in a fresh
process (as `sam local invoke --env-vars` would start it in a container), handles every file of events/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.invoke import seed_objects
from devtools.local_aws import env_file_contents, function_variables, write_env_file
from tests.test_invoke import FUNCTION_FOR_EVENT

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"

# A fresh interpreter, given nothing but the env file's variables: imports the handler from src/ (its
# working directory) and calls it with a context like Lambda's.
RUN_HANDLER = """
import importlib, json, sys

class Context:
    function_name = sys.argv[3]
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + sys.argv[3]
    memory_limit_in_mb = "512"
    aws_request_id = "local-aws-test"
    log_group_name = "/aws/lambda/" + sys.argv[3]
    log_stream_name = "local"

    def get_remaining_time_in_millis(self):
        return 60000

handler = importlib.import_module(sys.argv[1]).lambda_handler
with open(sys.argv[2]) as event:
    result = handler(json.load(event), Context())
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
def test_the_env_file_runs_every_handler_on_every_event_against_the_local_stack(pipeline, tmp_path):
    stack = pipeline.stack
    env_path = tmp_path / "local-aws.env.json"
    write_env_file(stack, env_path)
    env_file = json.loads(env_path.read_text())
    assert env_file == env_file_contents(stack)
    assert env_file["Parameters"]["AWS_ENDPOINT_URL"] == stack.endpoint
    # No token in the file: the handlers read it from the stack's secret, with their roles, as in AWS.
    assert all("GATEWAY_TOKEN" not in section for section in env_file.values())
    # Each function holds its own role's credentials, not the deployer's.
    keys = {function_variables(env_file, f)["AWS_ACCESS_KEY_ID"] for f in stack.functions}
    assert len(keys) == len(stack.functions)

    for name, function in sorted(FUNCTION_FOR_EVENT.items()):
        event = json.loads((EVENTS / name).read_text())
        notes: list[str] = []
        seed_objects(stack, event, None, notes)
        handler = stack.functions[function].handler.rsplit(".", 1)[0]
        completed = subprocess.run(
            [sys.executable, "-c", RUN_HANDLER, handler, str(EVENTS / name), stack.physical_id(function)],
            env=function_variables(env_file, function),
            cwd=ROOT / "src",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, f"{function} on {name}:\n{completed.stderr[-3000:]}"
        [result_line] = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(result_line.removeprefix("RESULT "))
        assert isinstance(result, dict), (name, result)

    # The upload event went all the way: its record, written with the function's role, is COMPLETED.
    records = {(r.get("source") or {}).get("key"): r for r in pipeline.records()}
    assert records["incoming/photo.jpg"]["status"] == "COMPLETED"
