"""Found by the chaos benchmark: when S3 refuses the write of the gateway's answer for longer than the SDK's
retries (six attempts: `max_attempts` 5 counts the retries, about 10 s of backoff), the pipeline gives the request back with the answer in
memory only, and the next delivery asks the gateway, and pays, again. The function lived on and had time
left: nothing forced the answer to be lost (the issue's "billed once": the answer is persisted before
anything that can fail; a transient store error should not throw the billed answer away).

Failed until main's 8146d5f; kept as the regression test."""

from __future__ import annotations

import pytest

from tests.plugins.pipeline import Pipeline

# src/shared/runtime.py AWS_CONFIG: adaptive mode, max_attempts 5 retries, so six attempts per call.
SDK_ATTEMPTS = 6
REFUSED = 8  # S3 refuses the same write more times than that, then takes it


# The first delivery spends the SDK's backoff (up to 31 s: 1+2+4+8+16, jittered) on the refused write; the
# message must not come back while it does, or the deliveries it holds off use up MaxReceiveCount.
@pytest.mark.pipeline(visibility_timeout_override=60)
def test_an_answer_s3_refused_for_a_while_is_not_billed_again(pipeline: Pipeline):
    faults = pipeline.stack.server.faults
    # The first write of a result fails on every one of the SDK's attempts (and twice more); S3 is fine after.
    faults.add("s3:PutObject", "5xx", rate=1.0, repeat=REFUSED, times=1, key_prefix="results/")
    pipeline.send({"requestId": "s3-refused-once", "prompt": "hello"})
    pipeline.drain()

    # The store really failed, every one of the SDK's six attempts (the next delivery's write of the kept
    # answer may be refused the rest of the repeats, or, its body rebuilt, be a request of its own).
    [(rule, refused)] = faults.counts().items()
    assert rule == "s3:PutObject 5xx" and SDK_ATTEMPTS <= refused <= REFUSED
    assert pipeline.record("s3-refused-once")["status"] == "COMPLETED"
    assert pipeline.emulator.successful_chats_by_correlation_id() == {"s3-refused-once": 1}
