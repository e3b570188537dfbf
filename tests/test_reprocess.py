"""Reprocess: the ReprocessObjects state machine (Distributed Map over an S3 listing) on the deployed template
in the embedded AWS, every queued object through the upload queue and the real pipeline, with the emulator."""

from __future__ import annotations

import json

from devtools.reprocess_run import reprocess, run_records
from tests.plugins.pipeline import Pipeline

TEXTS = ("notes.txt", "data.csv", "page.md")


def upload_texts(pipeline: Pipeline, prefix: str = "incoming/") -> list[str]:
    keys = []
    for name in TEXTS:
        keys.append(f"{prefix}{name}")
        pipeline.upload(keys[-1], f"{name}: the quarterly figures are up".encode())
    pipeline.drain()
    return keys


def test_without_force_completed_objects_are_skipped_and_with_force_each_run_has_its_own(pipeline: Pipeline):
    keys = upload_texts(pipeline)
    first = {key: pipeline.record_for_key(key) for key in keys}
    assert {r["status"] for r in first.values()} == {"COMPLETED"}

    skipped = reprocess(pipeline.stack, {"prefix": "incoming/"}, "plain-run")
    assert skipped.status == "SUCCEEDED", skipped
    assert skipped.output == {
        "runId": "plain-run",
        "prefix": "incoming/",
        "force": False,
        "dryRun": False,
        "listed": 3,
        "queued": 0,
        "skipped": 3,
        "refused": 0,
    }

    forced = reprocess(pipeline.stack, {"prefix": "incoming/", "force": True}, "forced-run")
    assert forced.output["queued"] == 3 and forced.output["skipped"] == 0, forced
    pipeline.drain()
    listed = run_records(pipeline.stack, "forced-run")
    assert len(listed) == 3 and {r["status"] for r in listed} == {"COMPLETED"}
    for item in listed:
        assert item["requestId"].startswith("reprocess-forced-run-")
        assert item["source"]["reprocess"]["runId"] == "forced-run"
        record = pipeline.record(item["requestId"])
        assert record["runId"] == "forced-run" and record["source"]["key"] in keys
    # The earlier records are kept.
    for record in first.values():
        assert pipeline.record(record["requestId"])["status"] == "COMPLETED"
    print(json.dumps(forced.output))
