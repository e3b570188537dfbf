"""The project's polling policy against a fixed 1-second poll, for async tool executions of 3 to 240 s.

Time is simulated: the gateway emulator reads a fake clock that the run advances at each Wait state, so the
whole benchmark takes seconds. The ToolExecutionPoller state machine is walked from its own definition
(statemachine/tool_execution_poller.asl.json): every state entered counts one transition, the Map and
FinishRequest included. Its PollExecution task is the project's real `poll_step`, calling the emulator
over HTTP through the project's GatewayClient; the baseline is the same walk with every wait set to 1 s.

Assumed: each Task and transition takes no time, so polls land exactly on the wait schedule. The poller's
first poll comes a little after the execution was created (the request Lambda starts the state machine
after its chat call); that gap is tried at several values and the worst result is reported, since
where the schedule falls against the completion instant decides the notice delay.

    python bench/polling.py                        # a table per tool, then one JSON line
    python bench/polling.py --durations 9,15,30    # other execution lengths, for exploring
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from devtools.emulator import EmulatorConfig, GatewayEmulator  # noqa: E402
from shared.gateway import GatewayClient  # noqa: E402
from shared.images import UrlAllowlist  # noqa: E402
from shared.tool_executions import poll_step  # noqa: E402

DEFINITION = ROOT / "statemachine" / "tool_execution_poller.asl.json"
DURATIONS = (3, 12, 60, 240)
# Seconds from the execution's creation (the chat call) to the poller's first poll. With whole-second waits
# and durations, a sweep over one second covers every phase of the schedule against the completion.
START_OFFSETS = tuple(round(0.1 * tenth, 1) for tenth in range(10))
TOOLS = ("generate_image", "search_web")
POLICY = {"timeoutSeconds": 300, "maxWaitSeconds": 5}  # the template's defaults
# The template substitutes these into the definition; the ARNs only need to tell the two functions apart.
SUBSTITUTIONS = {
    "PollTimeoutSeconds": str(POLICY["timeoutSeconds"]),
    "PollMaxWaitSeconds": str(POLICY["maxWaitSeconds"]),
    "PollMapConcurrency": "10",
}
TARGETS = {"12": {"notice_delay_s_max": 3, "polls_max": 7}}  # for generate_image
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a round start so schedules read easily
ORGANISATION = "bench-org"
TOKEN = "bench-token"
IMAGE_TOOL_CONFIG = {
    "tools": [
        {
            "toolSpec": {
                "name": "generate_image",
                "description": "Generates an image from a text prompt.",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"prompt": {"type": "string"}},
                        "required": ["prompt"],
                    }
                },
            }
        }
    ],
    "autoExecute": True,
    "allowedTools": ["generate_image"],
}


class SimClock:
    """The emulator's clock and the poller's `now`; only Wait states (and start offsets) move it."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class MemoryResults:
    """Just enough of shared.results.ResultStore for poll_step to save what a tool produced."""

    objects: dict[str, bytes] = field(default_factory=dict)

    def key_for_tool_file(self, request_id: str, execution_id: str, name: str) -> str:
        return f"results/{request_id}/{execution_id}/{name}"

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        self.objects[key] = data
        return f"mem://{key}"

    def put_json(self, key: str, document: dict[str, Any]) -> str:
        return self.put_bytes(key, json.dumps(document).encode(), "application/json")


def load_definition() -> dict[str, Any]:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return SUBSTITUTIONS.get(name, name)  # an ARN or table name: its placeholder name will do

    return json.loads(re.sub(r"\$\{(\w+)\}", substitute, DEFINITION.read_text()))


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def path_value(path: str, data: Any, context: dict[str, Any]) -> Any:
    """The JSONPath subset the definition uses: `$`, `$.a.b` and `$$.a.b` (the context object)."""
    root, rest = (context, path[2:]) if path.startswith("$$") else (data, path[1:])
    for part in filter(None, rest.split(".")):
        root = root[part]
    return root


def select(template: Any, data: Any, context: dict[str, Any]) -> Any:
    """Parameters and ItemSelector: keys ending in `.$` take a path's value, others are copied."""
    if not isinstance(template, dict):
        return template
    return {
        key.removesuffix(".$"): path_value(value, data, context)
        if key.endswith(".$")
        else select(value, data, context)
        for key, value in template.items()
    }


Invoke = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class Walk:
    """Runs a state machine definition with a simulated clock, counting every state entered. Only what
    this definition uses is supported; no faults are injected, so Retry and Catch never apply."""

    clock: SimClock
    invoke: Invoke  # (FunctionName, Payload) -> the function's result
    transitions: int = 0

    def run(self, machine: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            self.transitions += 1
            match state["Type"]:
                case "Map":
                    items = path_value(state["ItemsPath"], data, context)
                    outputs = []
                    for item in items:  # concurrency changes wall time, not transitions or polls
                        item_context = {**context, "Map": {"Item": {"Value": item}}}
                        item_input = select(state["ItemSelector"], data, item_context)
                        outputs.append(self.run(state["ItemProcessor"], item_input, item_context))
                    data = {**data, state["ResultPath"].removeprefix("$."): outputs}
                case "Task":
                    parameters = select(state["Parameters"], data, context)
                    payload = self.invoke(parameters["FunctionName"], parameters["Payload"])
                    data = path_value(state.get("OutputPath", "$"), {"Payload": payload}, context)
                case "Choice":
                    name = next(
                        (
                            choice["Next"]
                            for choice in state["Choices"]
                            if path_value(choice["Variable"], data, context) == choice["StringEquals"]
                        ),
                        state["Default"],
                    )
                    continue  # a Choice has no Next or End of its own
                case "Wait":
                    self.clock.advance(float(path_value(state["SecondsPath"], data, context)))
                case "Succeed":
                    return data
                case other:
                    raise ValueError(f"state {name}: type {other} is not simulated by this benchmark")
            if state.get("End"):
                return data
            name = state["Next"]


@dataclass
class Outcome:
    polls: int
    transitions: int
    notice_delay_s: float


class Bench:
    def __init__(self) -> None:
        self.clock = SimClock(EPOCH)
        self.emulator = GatewayEmulator(
            EmulatorConfig(token=TOKEN, organization=ORGANISATION, clock=self.clock)
        )
        self.machine = load_definition()
        self.results = MemoryResults()

    def __enter__(self) -> Bench:
        base_url = self.emulator.start()
        self.gateway = GatewayClient(base_url, ORGANISATION, lambda: TOKEN)
        self.gateway_url = base_url
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gateway.close()
        self.emulator.stop()

    def create_execution(self, seconds: float) -> str:
        """A real POST /chat with auto-executed image generation: the emulator starts the execution."""
        self.emulator.config.execution_seconds = seconds
        response = self.gateway.chat(
            {
                "modelId": "amazon.nova-pro-v1:0",
                "messages": [{"role": "user", "content": [{"text": "A red bicycle by a lake at dawn"}]}],
                "toolConfig": IMAGE_TOOL_CONFIG,
            }
        )
        (execution,) = response.pending_executions
        assert execution.execution_id is not None  # pending_executions only holds those with an id
        return execution.execution_id

    def run(self, tool: str, seconds: float, offset: float, fixed_wait: int | None) -> Outcome:
        self.emulator.reset()
        self.clock.now = EPOCH
        execution_id = self.create_execution(seconds)
        self.clock.advance(offset)
        finished: list[dict[str, Any]] = []

        def invoke(function: str, payload: dict[str, Any]) -> dict[str, Any]:
            if function == "FinishRequestFunctionArn":
                finished.extend(payload["executions"])  # each execution's final poll state
                return {"requestId": payload["requestId"], "status": "COMPLETED"}
            state = poll_step(
                payload,
                gateway=self.gateway,
                results=self.results,
                now=self.clock.now,
                allowlist=UrlAllowlist.parse(self.gateway_url),
            )
            if fixed_wait is not None and "nextWaitSeconds" in state:
                state["nextWaitSeconds"] = fixed_wait  # the baseline: same loop, same code, fixed wait
            return state

        walk = Walk(self.clock, invoke)
        # What PollerStarter sends. The tool name is what the wait policy looks at; the emulator only runs
        # image generation, so another name changes the poller's schedule, not the gateway's side.
        started = {
            "requestId": f"req-{tool}-{seconds}-{offset}",
            "executions": [{"executionId": execution_id, "toolName": tool, "toolUseId": "tooluse_bench"}],
        }
        walk.run(self.machine, started, {"Execution": {"StartTime": iso(self.clock.now)}})
        (final,) = finished
        if final["status"] != "complete":
            raise RuntimeError(f"{tool} {seconds} s, offset {offset} s: ended {final['status']}: {final}")
        polls = sum(1 for c in self.emulator.calls if c.kind == "executions")
        if polls != final["polls"]:
            raise RuntimeError(f"the gateway saw {polls} polls, poll_step counted {final['polls']}")
        return Outcome(polls, walk.transitions, final["noticeDelaySeconds"])

    def measure(self, tool: str, durations: tuple[int, ...]) -> dict[str, dict[str, dict[str, float]]]:
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for seconds in durations:
            per_strategy = {}
            for strategy, fixed_wait in (("policy", None), ("fixed_1s", 1)):
                outcomes = [self.run(tool, seconds, offset, fixed_wait) for offset in START_OFFSETS]
                delays = [o.notice_delay_s for o in outcomes]
                per_strategy[strategy] = {
                    "polls": max(o.polls for o in outcomes),
                    "transitions": max(o.transitions for o in outcomes),
                    "notice_delay_s": round(max(delays), 3),
                    "notice_delay_s_mean": round(statistics.mean(delays), 3),
                }
            figures[str(seconds)] = per_strategy
        return figures


def print_table(tool: str, figures: dict[str, dict[str, dict[str, float]]]) -> None:
    print(
        f"\n{tool}: worst case over first-poll offsets {list(START_OFFSETS)} s (mean notice delay in brackets)"
    )
    print(
        f"{'execution':>10} | {'policy: polls':>13}{'transitions':>12}{'notice s':>16} |"
        f" {'fixed 1 s: polls':>16}{'transitions':>12}{'notice s':>16}"
    )
    for seconds, row in figures.items():
        cells = []
        for strategy in ("policy", "fixed_1s"):
            f = row[strategy]
            notice = f"{f['notice_delay_s']:.2f} ({f['notice_delay_s_mean']:.2f})"
            width = 13 if strategy == "policy" else 16
            cells.append(f"{f['polls']:>{width}}{f['transitions']:>12}{notice:>16}")
        print(f"{seconds + ' s':>10} | {cells[0]} | {cells[1]}")


def targets_met(figures: dict[str, dict[str, dict[str, float]]]) -> tuple[bool, list[str]]:
    misses = []
    for seconds, target in TARGETS.items():
        if seconds not in figures:
            misses.append(f"{seconds} s: not measured")
            continue
        got = figures[seconds]["policy"]
        if got["notice_delay_s"] > target["notice_delay_s_max"]:
            misses.append(
                f"{seconds} s: noticed after {got['notice_delay_s']} s > {target['notice_delay_s_max']} s"
            )
        if got["polls"] > target["polls_max"]:
            misses.append(f"{seconds} s: {got['polls']} polls > {target['polls_max']}")
    return not misses, misses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--durations",
        default=",".join(map(str, DURATIONS)),
        help="execution lengths in whole seconds, comma-separated (default %(default)s)",
    )
    args = parser.parse_args()
    durations = tuple(int(d) for d in args.durations.split(","))
    with Bench() as bench:
        by_tool = {tool: bench.measure(tool, durations) for tool in TOOLS}
    for tool, figures in by_tool.items():
        print_table(tool, figures)
    met, misses = targets_met(by_tool["generate_image"])
    print(f"\ntargets for generate_image: {TARGETS}; {'met' if met else 'missed: ' + '; '.join(misses)}")
    summary = {
        "tool": "generate_image",
        "durations": by_tool["generate_image"],
        "targets": TARGETS,
        "met": met,
        "start_offsets_s": list(START_OFFSETS),
        "policy": POLICY,
        "other_tools": {tool: {"durations": f} for tool, f in by_tool.items() if tool != "generate_image"},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
