"""Found by the chaos benchmark: when S3 refuses the write of the gateway's answer for longer than the SDK's
retries (six attempts: `max_attempts` 5 counts the retries, about 10 s of backoff), the pipeline gives the request back with the answer in
memory only, and the next delivery asks the gateway, and pays, again. The function lived on and had time
left: nothing forced the answer to be lost (the issue's "billed once": the answer is persisted before
anything that can fail; a transient store error should not throw the billed answer away).

This test fails on the code as it is; it is left failing on purpose for the pipeline's owner (src/)."""

from __future__ import annotations

import threading
import time

from tests.plugins.pipeline import Pipeline

# src/shared/runtime.py AWS_CONFIG: adaptive mode, max_attempts 5 retries, so six attempts per call.
REFUSED = 8  # S3 refuses the same write more times than that, then takes it


def test_an_answer_s3_refused_for_a_while_is_not_billed_again(pipeline: Pipeline):
    faults = pipeline.stack.server.faults
    # The first write of a result fails on every one of the SDK's attempts (and twice more); S3 is fine after.
    rule = faults.add("s3:PutObject", "5xx", rate=1.0, repeat=REFUSED, key_prefix="results/")

    def stop_after_first_draw() -> None:
        deadline = time.monotonic() + 60
        while not faults.injected and time.monotonic() < deadline:
            time.sleep(0.01)
        faults.remove(rule)  # what it drew still fails its retries

    watcher = threading.Thread(target=stop_after_first_draw)
    watcher.start()
    pipeline.send({"requestId": "s3-refused-once", "prompt": "hello"})
    watcher.join()
    pipeline.drain()

    assert faults.counts() == {"s3:PutObject 5xx": REFUSED}  # the store really failed, retries and all
    assert pipeline.record("s3-refused-once")["status"] == "COMPLETED"
    assert pipeline.emulator.successful_chats_by_correlation_id() == {"s3-refused-once": 1}
