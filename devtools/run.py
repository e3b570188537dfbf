"""`make run`: the whole pipeline on your machine, as it runs in AWS.

Deploys template.yaml into the embedded AWS (moto), points it at the gateway emulator (or at Quant Cloud's
gateway when QUANT_API_TOKEN and QUANT_ORGANISATION are set), uploads files under incoming/, sends queued
requests, waits until every request has an outcome, then prints a table and writes the results under out/.

    python -m devtools.run [--files a.pdf b.png] [--prompt "..."] [--out out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from devtools.local_pipeline import (
    ROOT,
    SAMPLES,
    SERVICE_NAME,
    STACK_NAME,
    GatewayChoiceError,
    GatewayTarget,
    LocalPipeline,
    deploy,
    display_path,
    emulator_target,
    function_output_to,
    image_request_message,
    quant_gateway_from,
    quiet_step_functions_interpreter,
    start_emulator,
)

DEFAULT_OUT = ROOT / "out"
DEFAULT_TIMEOUT_SECONDS = 150.0
DRAIN_SECONDS = 15.0
POLL_SECONDS = 0.3
PLAIN_PROGRESS_EVERY_SECONDS = 5.0
INPUT_PREFIX = "incoming/"  # the template's InputPrefix default
TERMINAL = ("COMPLETED", "FAILED")
STATES = ("queued", "PROCESSING", "WAITING_FOR_TOOLS", "COMPLETED", "FAILED")
# What run() writes under the output directory; only these are cleared before a run.
LOG_NAME = "functions.log"
OUTPUT_ENTRIES = ("uploads", "requests", "images", "summary.json", LOG_NAME)


@dataclass(frozen=True)
class Submission:
    """One request of the run: an upload under incoming/, or a message on the request queue."""

    source: str  # the key of an upload, "queue:<requestId>" for a queued request
    key: str | None = None
    path: Path | None = None
    request_id: str | None = None
    body: Mapping[str, Any] | None = None
    attachments: Mapping[str, Path] = field(default_factory=dict)  # objects put before the message is sent

    def finds(self, records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        for record in records:
            if "status" not in record:
                continue  # moto's update_item is not atomic: a scan can catch an item being created
            if self.key is not None and (record.get("source") or {}).get("key") == self.key:
                return record
            if self.request_id is not None and record.get("requestId") == self.request_id:
                return record
        return None


def sample_files(samples: Path = SAMPLES) -> list[Path]:
    return sorted(p for p in samples.iterdir() if p.is_file() and p.name != "README.md")


def upload_submissions(files: Sequence[Path]) -> list[Submission]:
    """incoming/<file name>; a name seen before goes under incoming/<n>/ so both are processed."""
    submissions, seen = [], Counter[str]()
    for path in files:
        seen[path.name] += 1
        folder = "" if seen[path.name] == 1 else f"{seen[path.name]}/"
        key = f"{INPUT_PREFIX}{folder}{path.name}"
        submissions.append(Submission(source=key, key=key, path=path))
    return submissions


def queued_submissions(bucket: str, samples: Path = SAMPLES) -> list[Submission]:
    """The four message shapes: short form, full form, an S3 attachment, and an auto-executed async tool."""
    bodies: list[tuple[dict[str, Any], dict[str, Path]]] = [
        (
            {"requestId": "short-form", "prompt": "In two sentences: what does a serverless integration do?"},
            {},
        ),
        (
            {
                "requestId": "full-form",
                "request": {
                    "modelId": "amazon.nova-lite-v1:0",
                    "messages": [
                        {"role": "system", "content": "You answer in one sentence."},
                        {"role": "user", "content": "What is a dead-letter queue for?"},
                    ],
                    "temperature": 0.3,
                    "maxTokens": 256,
                },
                "metadata": {"caller": "make run"},
            },
            {},
        ),
        (
            {
                "requestId": "with-attachment",
                "prompt": "Describe the attached diagram and what it shows.",
                "attachments": [{"uri": f"s3://{bucket}/attachments/diagram.png", "label": "diagram"}],
            },
            {"attachments/diagram.png": samples / "diagram.png"},
        ),
        (image_request_message("image-generation"), {}),
    ]
    return [
        Submission(
            source=f"queue:{body['requestId']}", request_id=body["requestId"], body=body, attachments=seeds
        )
        for body, seeds in bodies
    ]


# --- progress and the final table ------------------------------------------------------------------------------


class Progress:
    """One updating line on a terminal; a line every few seconds otherwise (CI logs, pipes)."""

    def __init__(self, stream: TextIO, interactive: bool) -> None:
        self._stream = stream
        self._interactive = interactive
        self._last_plain = float("-inf")

    def update(self, counts: Mapping[str, int], elapsed: float, final: bool = False) -> None:
        parts = [
            f"{counts[state]} {state.lower().replace('_', ' ')}" for state in STATES if counts.get(state)
        ]
        line = f"[{elapsed:5.1f} s] {_requests(sum(counts.values()))}: {', '.join(parts)}"
        if self._interactive:
            # Cut to the terminal's width: a wrapped line could not be rewritten in place.
            line = _fit(line, shutil.get_terminal_size().columns - 1)
            self._stream.write(f"\r\x1b[2K{line}" + ("\n" if final else ""))
            self._stream.flush()
        elif final or elapsed - self._last_plain >= PLAIN_PROGRESS_EVERY_SECONDS:
            self._last_plain = elapsed
            print(line, file=self._stream, flush=True)


@dataclass(frozen=True)
class Row:
    source: str
    status: str
    model: str
    tokens: str
    seconds: str
    answer: str

    @classmethod
    def of(cls, submission: Submission, record: Mapping[str, Any] | None, content: str | None) -> Row:
        if record is None:
            return cls(submission.source, "NO RECORD", "", "", "", "no record was written")
        usage = record.get("usage") or {}
        error = record.get("error")
        if record.get("status") == "FAILED" and error:
            answer = f"{error.get('kind')}: {error.get('message')}"
        else:
            answer = content if content is not None else record.get("content") or ""
        return cls(
            source=submission.source,
            status=str(record.get("status")),
            model=record.get("modelId") or "",
            tokens=str(usage["totalTokens"]) if "totalTokens" in usage else "",
            seconds=_seconds_between(record.get("createdAt"), record.get("updatedAt")),
            answer=_first_line(answer),
        )


def _requests(count: int) -> str:
    return f"{count} request" + ("" if count == 1 else "s")


def _seconds_between(start: str | None, end: str | None) -> str:
    if not (start and end):
        return ""
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def render_table(rows: Sequence[Row], width: int) -> str:
    headers = Row("source", "status", "model", "tokens", "seconds", "answer (first line) or error")
    columns = list(
        zip(*[(r.source, r.status, r.model, r.tokens, r.seconds) for r in [headers, *rows]], strict=True)
    )
    widths = [max(len(value) for value in column) for column in columns]
    widths[0] = min(widths[0], 32)  # long keys are cut rather than squeezing the answers out
    answer_width = max(20, width - sum(widths) - 2 * len(widths))
    lines = []
    for row in [headers, *rows]:
        cells = [row.source, row.status, row.model, row.tokens, row.seconds]
        text = "  ".join(
            _fit(cell, w).rjust(w) if column in (3, 4) else _fit(cell, w).ljust(w)
            for column, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        lines.append(f"{text}  {_fit(row.answer, answer_width)}".rstrip())
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


# --- the job ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    submission: Submission
    record: dict[str, Any] | None
    result: dict[str, Any] | None = None
    images: list[Path] = field(default_factory=list)
    saved: Path | None = None  # the JSON written under the output folder

    @property
    def completed(self) -> bool:
        return self.record is not None and self.record.get("status") == "COMPLETED"


def run_job(
    gateway: GatewayTarget,
    *,
    files: Sequence[Path] | None = None,
    prompt: str | None = None,
    out_dir: Path = DEFAULT_OUT,
    stream: TextIO | None = None,
    interactive: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    emulator: Any = None,
) -> int:
    """Deploys, submits, waits, reports; 0 when every request COMPLETED, 1 otherwise.

    `files` None means the samples plus the queued request examples; `emulator` is kept on the
    LocalPipeline for callers that steer it (tests).
    """
    stream = stream or sys.stdout
    interactive = stream.isatty() if interactive is None else interactive
    started = time.monotonic()
    print(gateway.describe(), file=stream, flush=True)
    _clear_outputs(out_dir)
    log_path = out_dir / LOG_NAME
    print(f"deploying template.yaml as stack {STACK_NAME} into the embedded AWS (moto)...", file=stream)
    # Until the stack is closed, so that what its handlers still log on the way out goes there too. Appended
    # to, as the function processes append to it: a write at this file object's own offset would overwrite.
    log_path.write_text("", encoding="utf-8")
    with (
        log_path.open("a", encoding="utf-8") as log,
        function_output_to(log, SERVICE_NAME),
        quiet_step_functions_interpreter(),
        deploy(gateway, function_log=log_path) as stack,
    ):
        pipeline = LocalPipeline(stack, emulator)
        print(
            f"deployed in {time.monotonic() - started:.1f} s: bucket {pipeline.bucket}; function logs go"
            f" to {display_path(log_path)}",
            file=stream,
            flush=True,
        )
        submissions = _submit(pipeline, files, prompt, stream)
        records = _wait(pipeline, submissions, timeout, Progress(stream, interactive))
        outcomes = [_collect(pipeline, s, records, out_dir) for s in submissions]
    rows = [Row.of(o.submission, o.record, (o.result or {}).get("content")) for o in outcomes]
    _write_summary(out_dir, rows)
    print(file=stream)
    print(render_table(rows, shutil.get_terminal_size((140, 24)).columns), file=stream)
    print(file=stream)
    return _report(outcomes, out_dir, time.monotonic() - started, stream)


def _submit(
    pipeline: LocalPipeline, files: Sequence[Path] | None, prompt: str | None, stream: TextIO
) -> list[Submission]:
    uploads = upload_submissions(sample_files() if files is None else files)
    queued = queued_submissions(pipeline.bucket) if files is None else []
    metadata = {"prompt": prompt} if prompt else {}
    # Queued first, the slowest (image generation, polled for seconds) first of all: it ends the run.
    for submission in sorted(queued, key=lambda s: s.request_id != "image-generation"):
        for key, path in submission.attachments.items():
            pipeline.upload(key, path.read_bytes())
        pipeline.send(dict(submission.body or {}))
    for submission in uploads:
        assert submission.path is not None and submission.key is not None
        pipeline.upload(submission.key, submission.path.read_bytes(), **metadata)
    what = f"{len(uploads)} uploads under {INPUT_PREFIX}" + (" (prompt from --prompt)" if prompt else "")
    if queued:
        what += f" and {len(queued)} queued requests ({', '.join(s.request_id or '' for s in queued)})"
    print(f"sent {what}", file=stream, flush=True)
    return uploads + queued


def _wait(
    pipeline: LocalPipeline, submissions: Sequence[Submission], timeout: float, progress: Progress
) -> list[dict[str, Any]]:
    """Polls the ResultsTable until every submission has a COMPLETED or FAILED record, or `timeout`."""
    started = time.monotonic()
    while True:
        records = pipeline.records()
        found = [s.finds(records) for s in submissions]
        counts = Counter(str(r["status"]) if r else "queued" for r in found)
        elapsed = time.monotonic() - started
        done = all(r is not None and r.get("status") in TERMINAL for r in found)
        if done or elapsed >= timeout:
            progress.update(counts, elapsed, final=True)
            break
        progress.update(counts, elapsed)
        time.sleep(POLL_SECONDS)
    try:
        # Notifications and the poller's last steps may still be running; let them end before reading.
        pipeline.drain(timeout=DRAIN_SECONDS)
    except TimeoutError as busy:
        print(f"warning: {busy}", file=sys.stderr)
    return pipeline.records()


def _collect(
    pipeline: LocalPipeline, submission: Submission, records: Sequence[dict[str, Any]], out_dir: Path
) -> Outcome:
    record = submission.finds(records)
    outcome = Outcome(submission, dict(record) if record else None)
    if record is None:
        return outcome
    if record.get("resultLocation"):
        outcome.result = pipeline.result_json(record)
    request_id = record["requestId"]
    files = [f for execution in record.get("executions") or [] for f in execution.get("files") or []]
    for index, uri in enumerate(files, start=1):
        target = out_dir / "images" / f"{submission.request_id or request_id}-{index}{Path(uri).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(pipeline.read_object(uri))
        outcome.images.append(target)
    if submission.key is not None:
        target = out_dir / "uploads" / f"{submission.key.removeprefix(INPUT_PREFIX)}.json"
    else:
        target = out_dir / "requests" / f"{request_id}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": submission.source,
        "status": record.get("status"),
        "record": record,
        "result": outcome.result,
        "images": [display_path(p) for p in outcome.images],
    }
    target.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    outcome.saved = target
    return outcome


def _write_summary(out_dir: Path, rows: Sequence[Row]) -> None:
    summary = [row.__dict__ for row in rows]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def _report(outcomes: Sequence[Outcome], out_dir: Path, seconds: float, stream: TextIO) -> int:
    folders = Counter(o.saved.parent for o in outcomes if o.saved is not None)
    listed = ", ".join(f"{display_path(folder)}/ ({count})" for folder, count in folders.items())
    print(f"results: {listed}: one JSON per request, its record and result", file=stream)
    for image in [image for o in outcomes for image in o.images]:
        print(f"image:   {display_path(image)}", file=stream)
    print(
        f"summary: {display_path(out_dir / 'summary.json')}; function logs: {display_path(out_dir / LOG_NAME)}",
        file=stream,
    )
    statuses = Counter(str(o.record["status"]) if o.record else "NO RECORD" for o in outcomes)
    counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    not_completed = [o.submission.source for o in outcomes if not o.completed]
    verdict = "all completed" if not not_completed else f"NOT COMPLETED: {', '.join(not_completed)}"
    print(f"{_requests(len(outcomes))}: {counts} in {seconds:.1f} s; {verdict}", file=stream, flush=True)
    return 0 if not not_completed else 1


def _clear_outputs(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_ENTRIES:
        entry = out_dir / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()


# --- command line ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", type=Path, help="your files instead of samples/ (or folders)")
    parser.add_argument("--prompt", help="the x-amz-meta-prompt of every upload (overrides routing's prompt)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: out/)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait")
    return parser.parse_args(argv)


def expand_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder stands for the files directly inside it. Raises for anything missing."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file: {path}")
    if not files:
        raise FileNotFoundError("no files to process")
    return files


def token_problem(gateway: GatewayTarget) -> str | None:
    """Asks the gateway, once and before anything is deployed, whether it takes the token: a refused token
    would otherwise fail every request after its retries. An unknown execution's 404 means it does."""
    import httpx

    url = f"{gateway.base_url}/api/v3/organizations/{quote(gateway.organisation, safe='')}/ai/tools/executions/token-check"
    try:
        status = httpx.get(url, headers={"Authorization": f"Bearer {gateway.token}"}, timeout=15).status_code
    except httpx.HTTPError as error:
        return (
            f"the gateway at {gateway.base_url} did not answer ({type(error).__name__}): check QUANT_BASE_URL"
        )
    if status == 401:
        return (
            f"the gateway at {gateway.base_url} refused the token (401): set QUANT_API_TOKEN to a valid token"
        )
    if status == 403:
        return (
            f"the gateway at {gateway.base_url} refused the token for organisation {gateway.organisation!r} (403):"
            " check QUANT_API_TOKEN and QUANT_ORGANISATION"
        )
    return None


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gateway = quant_gateway_from(os.environ if environ is None else environ)
        files = expand_files(args.files) if args.files else None
    except (GatewayChoiceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.prompt is not None and not (args.prompt.strip() and args.prompt.isascii()):
        # S3 user metadata travels in HTTP headers: US-ASCII only.
        print("error: --prompt must be non-empty ASCII text (it becomes x-amz-meta-prompt)", file=sys.stderr)
        return 2
    options = {"files": files, "prompt": args.prompt, "out_dir": args.out, "timeout": args.timeout}
    if gateway is not None:
        problem = token_problem(gateway)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return run_job(gateway, **options)
    emulator = start_emulator()
    try:
        return run_job(emulator_target(emulator), emulator=emulator, **options)
    finally:
        emulator.stop()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is closed and written; skipping the interpreter's teardown of moto's many objects saves
    # about two seconds.
    os._exit(status)
