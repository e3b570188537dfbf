"""Found by the chaos benchmark: a message that cannot be read is recorded FAILED under its message id with
`create_only` (it may touch no other record). When EventBridge refuses that FAILED record's event, the
message is delivered again, but the redelivery finds the record there, `create_only` writes nothing and
returns no record, and nothing is announced: the request ends FAILED and is never announced (the same holds
for a crash between the record's write and the event).

Failed until main's 8146d5f; kept as the regression test."""

from __future__ import annotations

from tests.plugins.pipeline import Pipeline
from tests.test_resilience import announced, events_queue


def test_an_unreadable_message_is_announced_even_when_eventbridge_refused_it_once(pipeline: Pipeline):
    sqs, url = events_queue(pipeline)
    faults = pipeline.stack.server.faults
    faults.add("events:PutEvents", "failed-entry", rate=1.0, times=1)
    message_id = pipeline.send('{"prompt": "cut short')
    pipeline.drain()

    assert faults.counts() == {"events:PutEvents failed-entry": 1}
    record = pipeline.record(message_id)
    assert record["status"] == "FAILED" and "not valid JSON" in record["error"]["message"], record
    assert announced(sqs, url) == [(message_id, "AI Request Failed")]
