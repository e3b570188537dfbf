"""`make run` end to end: the same function on the samples, with the gateway emulator; every record checked."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pytest

from devtools import run
from devtools.local_pipeline import GatewayChoiceError, emulator_target, quant_gateway_from, start_emulator
from tests.plugins.gateway import EMULATOR_TOKEN
from tests.sample_files import MEDIA_SAMPLES, SAMPLE_KINDS, SAMPLES

QUEUED = ["short-form", "full-form", "with-attachment", "image-generation"]


def proof(path: Path) -> str:
    """The line the emulator writes for a media item it decoded (see devtools/emulator/replies.py)."""
    kind, fmt = MEDIA_SAMPLES[path.name]
    data = path.read_bytes()
    return f"{kind} 1: {fmt}, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}"


def saved(out: Path, folder: str, name: str) -> dict:
    return json.loads((out / folder / f"{name}.json").read_text())


@pytest.mark.slow
def test_make_run_on_the_samples_completes_every_request(tmp_path, capsys, monkeypatch):
    # The table fits the terminal; under pytest-xdist the terminal is another process's.
    monkeypatch.setenv("COLUMNS", "140")
    status = run.main(["--out", str(tmp_path)], environ={})
    output = capsys.readouterr().out
    assert status == 0, output
    assert output.startswith("gateway: local emulator at http://127.0.0.1:")

    samples = sorted(p for p in SAMPLES.iterdir() if p.name != "README.md")
    assert {p.name for p in samples} == set(SAMPLE_KINDS)  # every kind is exercised
    sources = [f"incoming/{p.name}" for p in samples] + [f"queue:{r}" for r in QUEUED]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["source"] for row in summary] == sources
    table = output.split("answer (first line) or error", 1)[1]
    for row in summary:
        assert row["status"] == "COMPLETED" and row["model"].startswith("amazon.nova-"), row
        assert int(row["tokens"]) > 0 and float(row["seconds"]) >= 0 and row["answer"], row
        line = next(line for line in table.splitlines() if line.startswith(row["source"]))
        assert "COMPLETED" in line and row["tokens"] in line and row["answer"][:15] in line

    for path in samples:
        document = saved(tmp_path, "uploads", path.name)
        record, result = document["record"], document["result"]
        assert document["status"] == record["status"] == "COMPLETED", record
        assert record["source"]["key"] == f"incoming/{path.name}" and record["attempts"] == 1
        assert result["content"] == record["content"] and result["usage"] == record["usage"]
        if path.name in MEDIA_SAMPLES:
            assert proof(path) in record["content"]
        else:
            first_line = path.read_text().splitlines()[0]
            assert first_line[:30] in record["content"]

    requests = {request_id: saved(tmp_path, "requests", request_id)["record"] for request_id in QUEUED}
    assert all(r["status"] == "COMPLETED" and r["source"]["type"] == "sqs" for r in requests.values())
    assert "Echo: In two sentences" in requests["short-form"]["content"]
    assert requests["full-form"]["metadata"] == {"caller": "make run"}
    assert proof(SAMPLES / "diagram.png") in requests["with-attachment"]["content"]
    image = requests["image-generation"]
    assert image["modelId"] == "amazon.nova-pro-v1:0" and image["pattern"] == "async_execution"
    [execution] = image["executions"]
    assert execution["status"] == "complete" and execution["polls"] >= 2  # pending first, polled to the end
    [png] = sorted((tmp_path / "images").iterdir())
    assert png.name == "image-generation-1.png" and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert saved(tmp_path, "requests", "image-generation")["images"] == [str(png)]

    assert "16 requests: 16 COMPLETED" in output and "all completed" in output
    assert (tmp_path / "functions.log").stat().st_size > 0  # the handlers' logs, not on the screen
    assert '"level"' not in output and "_aws" not in output


@pytest.mark.slow
def test_files_and_prompt_and_a_refused_request_make_the_run_fail(tmp_path):
    emulator = start_emulator(execution_seconds=1)
    try:
        emulator.fail_next("400")  # the first chat request is refused for good
        stream = io.StringIO()
        status = run.run_job(
            emulator_target(emulator),
            emulator=emulator,
            files=[SAMPLES / "photo.jpg", SAMPLES / "diagram.png"],
            prompt="Count the shapes",
            out_dir=tmp_path,
            stream=stream,
        )
    finally:
        emulator.stop()
    output = stream.getvalue()
    assert status == 1
    rows = {row["source"]: row for row in json.loads((tmp_path / "summary.json").read_text())}
    assert sorted(rows) == ["incoming/diagram.png", "incoming/photo.jpg"]  # no samples, no queued requests
    [failed] = [row for row in rows.values() if row["status"] == "FAILED"]
    [completed] = [row for row in rows.values() if row["status"] == "COMPLETED"]
    assert failed["answer"].startswith("PermanentGatewayError: ") and "400" in failed["answer"]
    record = saved(tmp_path, "uploads", completed["source"].removeprefix("incoming/"))["record"]
    assert "Echo: Count the shapes" in record["content"]  # the prompt went in as x-amz-meta-prompt
    assert f"NOT COMPLETED: {failed['source']}" in output
    assert "\r" not in output  # not a terminal: plain progress lines


def test_stale_outputs_are_cleared_and_nothing_else(tmp_path):
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "old.json").write_text("{}")
    (tmp_path / "mine.txt").write_text("keep")
    run._clear_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_files_keep_their_names_and_folders_expand(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "x.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "a" / ".hidden").write_text("")
    files = run.expand_files([tmp_path / "a", tmp_path / "b" / "x.pdf"])
    assert files == [tmp_path / "a" / "x.pdf", tmp_path / "b" / "x.pdf"]
    assert [s.key for s in run.upload_submissions(files)] == ["incoming/x.pdf", "incoming/2/x.pdf"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        run.expand_files([tmp_path / "missing.png"])


def test_bad_arguments_exit_2_before_deploying(tmp_path, capsys):
    assert run.main(["--files", str(tmp_path / "missing.png")], environ={}) == 2
    assert run.main(["--prompt", "caf\u00e9"], environ={}) == 2
    assert run.main([], environ={"QUANT_API_TOKEN": "t"}) == 2
    errors = capsys.readouterr().err
    assert "no such file" in errors and "ASCII" in errors and "QUANT_ORGANISATION is not set" in errors


def test_the_real_gateway_is_chosen_by_the_environment_and_the_token_never_shown():
    assert quant_gateway_from({}) is None
    gateway = quant_gateway_from({"QUANT_API_TOKEN": "s3cr3t", "QUANT_ORGANISATION": "acme"})
    assert gateway is not None and gateway.base_url == "https://dashboard.quantcdn.io"
    assert gateway.parameters() == {"GatewayOrganisation": "acme", "GatewayBaseUrl": gateway.base_url}
    assert gateway.environment() == {"GATEWAY_TOKEN": "s3cr3t"}
    assert "Quant Cloud" in gateway.describe() and "s3cr3t" not in gateway.describe() + repr(gateway)
    custom = quant_gateway_from(
        {
            "QUANT_API_TOKEN": "t",
            "QUANT_ORGANISATION": "gov",
            "QUANT_BASE_URL": "https://dash.quantgov.cloud/",
        }
    )
    assert custom is not None and custom.base_url == "https://dash.quantgov.cloud"
    with pytest.raises(GatewayChoiceError, match="QUANT_API_TOKEN"):
        quant_gateway_from({"QUANT_ORGANISATION": "acme"})


def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_otherwise():
    terminal, plain = io.StringIO(), io.StringIO()
    for elapsed in (0.0, 1.0, 6.0):
        run.Progress(terminal, interactive=True).update({"queued": 2, "COMPLETED": 1}, elapsed)
    progress = run.Progress(plain, interactive=False)
    for elapsed in (0.0, 1.0, 6.0):
        progress.update({"queued": 2, "COMPLETED": 1}, elapsed)
    assert terminal.getvalue().count("\r") == 3 and "\n" not in terminal.getvalue()
    assert plain.getvalue().splitlines() == [
        "[  0.0 s] 3 requests: 2 queued, 1 completed",
        "[  6.0 s] 3 requests: 2 queued, 1 completed",
    ]


def test_the_table_cuts_long_cells_to_the_width():
    rows = [run.Row("incoming/" + "k" * 60, "COMPLETED", "amazon.nova-lite-v1:0", "72", "2.5", "a" * 300)]
    lines = run.render_table(rows, width=120).splitlines()
    assert len(lines) == 3 and all(len(line) <= 120 for line in lines)
    assert lines[2].endswith("...") and "COMPLETED" in lines[2] and lines[1].startswith("---")


def test_a_token_the_gateway_refuses_is_named_once_before_anything_runs(emulator, tmp_path, capsys):
    environ = {
        "QUANT_API_TOKEN": "not-the-token",
        "QUANT_ORGANISATION": "acme",
        "QUANT_BASE_URL": emulator.base_url,
    }
    started = time.monotonic()
    assert run.main(["--out", str(tmp_path)], environ=environ) == 2
    assert time.monotonic() - started < 10  # no deploy, no retries
    captured = capsys.readouterr()
    assert captured.err.count("error:") == 1 and "set QUANT_API_TOKEN to a valid token" in captured.err
    assert "not-the-token" not in captured.err + captured.out
    assert [c.status for c in emulator.calls] == [401]

    environ["QUANT_API_TOKEN"] = EMULATOR_TOKEN
    assert run.token_problem(run.quant_gateway_from(environ)) is None  # a 404 for the unknown execution
