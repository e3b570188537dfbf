"""`make reprocess PREFIX=incoming/ [FORCE=1] [PROMPT=...] [MODEL=...] [DRY_RUN=1] [ALL=1]`: the state `make run`
leaves (template.yaml on the embedded AWS, every sample uploaded under incoming/ and processed), then the real
ReprocessObjects state machine run with that input; prints the run's counts and its records as `make run`
prints its table. The gateway is the local emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.local_pipeline import (
    LocalPipeline,
    deploy,
    emulator_target,
    function_output_to,
    quiet_step_functions_interpreter,
    start_emulator,
)
from devtools.reprocess_run import reprocess, run_records
from devtools.run import (
    INPUT_PREFIX,
    SERVICE_NAME,
    Row,
    _first_line,
    _seconds_between,
    render_table,
    sample_files,
)

OUT = Path(__file__).resolve().parents[1] / "out"
SETTLE_SECONDS = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make reprocess", description=__doc__)
    parser.add_argument("--prefix", default=INPUT_PREFIX, help="what to reprocess (default incoming/)")
    parser.add_argument(
        "--force", action="store_true", help="also objects already COMPLETED, as a run of its own"
    )
    parser.add_argument("--prompt", help="the prompt for this run, instead of the routing rule's")
    parser.add_argument("--model-id", help="the model for this run (within AllowedModelIds)")
    parser.add_argument("--dry-run", action="store_true", help="only count")
    parser.add_argument(
        "--all", action="store_true", help='with an empty prefix: the whole bucket ("all": true)'
    )
    return parser.parse_args(argv)


def run_input(args: argparse.Namespace) -> dict[str, object]:
    given: dict[str, object] = {"prefix": args.prefix, "force": args.force, "dryRun": args.dry_run}
    if args.prompt:
        given["prompt"] = args.prompt
    if args.model_id:
        given["modelId"] = args.model_id
    if args.all:
        given["all"] = True
    return given


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    log_path = OUT / "functions.log"
    log_path.write_text("", encoding="utf-8")
    emulator = start_emulator()
    # Inside the stack's `with` this process's output goes to the function log (function_output_to): what
    # the run reports is printed once the stack is closed, as `make run` prints its table.
    report: list[str] = []
    status = 0
    try:
        with (
            log_path.open("a", encoding="utf-8") as log,
            function_output_to(log, SERVICE_NAME),
            quiet_step_functions_interpreter(),
            deploy(emulator_target(emulator), function_log=log_path) as stack,
        ):
            pipeline = LocalPipeline(stack, emulator)
            files = sample_files()
            for path in files:
                pipeline.upload(f"{INPUT_PREFIX}{path.name}", path.read_bytes())
            print(
                f"as `make run` leaves it: {len(files)} samples uploaded under {INPUT_PREFIX}; processing...",
                file=sys.__stdout__,
                flush=True,
            )
            pipeline.drain(timeout=SETTLE_SECONDS)
            given = run_input(args)
            print(f"reprocess run with {json.dumps(given)} ...", file=sys.__stdout__, flush=True)
            started = time.monotonic()
            outcome = reprocess(stack, given, timeout=SETTLE_SECONDS)
            if outcome.status != "SUCCEEDED":
                cause = json.loads(outcome.cause or "{}").get("errorMessage", outcome.cause)
                report.append(f"run {outcome.run_id} {outcome.status}: {outcome.error}: {cause}")
                return 1
            pipeline.drain(timeout=SETTLE_SECONDS)
            seconds = time.monotonic() - started
            counts = outcome.output or {}
            report.append(
                f"run {outcome.run_id}: listed {counts['listed']}, queued {counts['queued']}, skipped"
                f" {counts['skipped']}, refused {counts['refused']}"
                + (" (dry run: nothing queued)" if counts.get("dryRun") else "")
                + f"; {seconds:.1f} s"
            )
            rows = []
            for item in sorted(run_records(stack, outcome.run_id), key=lambda r: r["source"]["key"]):
                record = pipeline.record(item["requestId"])
                usage = record.get("usage") or {}
                error = record.get("error")
                answer = f"{error['kind']}: {error['message']}" if error else record.get("content") or ""
                rows.append(
                    Row(
                        source=record["source"]["key"],
                        status=str(record.get("status")),
                        model=record.get("modelId") or "",
                        tokens=str(usage.get("totalTokens", "")),
                        seconds=_seconds_between(record.get("createdAt"), record.get("updatedAt")),
                        answer=_first_line(answer),
                    )
                )
            report.append("")
            width = shutil.get_terminal_size((140, 24)).columns
            report.append(render_table(rows, width) if rows else "(no requests)")
            status = 1 if any(row.status != "COMPLETED" for row in rows) else 0
    finally:
        emulator.stop()
        print("\n".join(report))
    return status


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as devtools.run: skip the interpreter's teardown of moto's objects
