"""No record is left unfinished: the poller's Catch, EventBridge's word on a poller that ended badly, the
sweeper's sparse index, and a rerun that polls again from the stored answer (no second chat)."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from handlers.event_shapes import InvalidEventError, finish_state
from shared.errors import TransientStoreError
from shared.poller import execution_name
from shared.records import SWEEP_INDEX, RecordStore, Status, SweepPolicy
from shared.stranded import fail_poller, sweep
from shared.telemetry import Telemetry
from tests.test_resilience import announced, events_queue
from tests.test_tool_poller import executions_of, image_request

NOW = 1_800_000_000.0
SOURCE = {"type": "sqs", "queue": "q", "messageId": "m"}


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingNotifier:
    """Keeps what would have been published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def request_finished(self, record: dict) -> None:
        self.published.append((record["requestId"], record["status"]))


def claim(records: RecordStore, request_id: str, lease: float = 60) -> None:
    outcome = records.claim(request_id, source=SOURCE, lease_seconds=lease, metadata=None, fingerprint="f")
    assert outcome.outcome == "claimed"


@pytest.fixture
def store(records_table):
    clock = Clock()
    policy = SweepPolicy(grace_seconds=900, poller_seconds=3600)
    return RecordStore(records_table, ttl_days=30, clock=clock, sweep=policy), clock, records_table


# --- names, shapes -------------------------------------------------------------------------------------------


def test_each_attempt_of_a_request_has_a_poller_name_of_its_own():
    names = {execution_name("req-1", attempt) for attempt in (1, 2, 3)}
    assert len(names) == 3
    # Made safe, cut to Step Functions' 80 characters, and still apart for ids that look alike once made safe.
    long_unsafe = execution_name("incoming/" + "é" * 200, 1)
    assert len(long_unsafe) <= 80 and all(c.isalnum() or c in "-_" for c in long_unsafe)
    assert execution_name("a/b", 1) != execution_name("a-b", 1)


def status_change(status: str, started_with: dict) -> dict:
    return {
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {
            "name": "n",
            "status": status,
            "input": json.dumps(started_with),
            "error": "States.Timeout",
            "cause": "x",
        },
    }


def test_a_poller_that_timed_out_is_read_from_its_status_change_event():
    asked = finish_state("F", status_change("TIMED_OUT", {"requestId": "r", "attempt": 2, "executions": []}))
    assert (asked.request_id, asked.attempt) == ("r", 2)
    assert "ended TIMED_OUT" in asked.failure and "States.Timeout" in asked.failure
    with pytest.raises(InvalidEventError, match="names the requestId"):
        finish_state("F", status_change("ABORTED", {"no": "request"}))
    with pytest.raises(InvalidEventError):
        finish_state("F", {"requestId": "r", "attempt": "2", "executions": []})


# --- the record store's side ---------------------------------------------------------------------------------


def indexed(table) -> dict[str, int]:
    items = table.scan(IndexName=SWEEP_INDEX)["Items"]
    return {item["requestId"]: int(item["sweepAt"]) for item in items}


def test_only_records_not_ended_or_not_announced_are_in_the_sweep_index(store):
    records, clock, table = store
    claim(records, "processing", lease=60)
    claim(records, "waiting")
    records.finish("waiting", Status.WAITING_FOR_TOOLS, {}, allowed_from=(Status.PROCESSING,))
    claim(records, "done")
    records.finish("done", Status.COMPLETED, {}, allowed_from=(Status.PROCESSING,))
    claim(records, "failed")
    records.fail("failed", RuntimeError("x"))
    records.mark_notified("failed")
    assert indexed(table) == {
        "processing": int(NOW + 60 + 900),  # lease, then time for the message's next delivery
        "waiting": int(NOW + 3600 + 900),  # the poller's own timeout, then the same grace
        "done": int(NOW + 900),  # ended, not yet announced: time for its delivery to announce it
    }
    clock.now += 60 + 900
    assert sorted(r["requestId"] for r in records.overdue()) == ["done", "processing"]


def test_the_sweeper_announces_what_ended_unannounced(store):
    records, clock, _ = store
    claim(records, "event-refused-every-time")
    records.finish("event-refused-every-time", Status.COMPLETED, {}, allowed_from=(Status.PROCESSING,))
    notifier = RecordingNotifier()
    clock.now += 901
    report = sweep(records=records, notifier=notifier, telemetry=Telemetry(), now=clock.now, limit=100)
    assert report == {"swept": 0, "byStatus": {}, "announced": 1, "more": False}
    assert notifier.published == [("event-refused-every-time", "COMPLETED")]
    assert records.get("event-refused-every-time")["status"] == "COMPLETED"
    assert list(records.overdue()) == []


def test_the_sweeper_ends_what_is_overdue_and_announces_it(store):
    records, clock, _ = store
    claim(records, "crashed-on-last-delivery")
    claim(records, "poller-lost")
    records.finish("poller-lost", Status.WAITING_FOR_TOOLS, {}, allowed_from=(Status.PROCESSING,))
    claim(records, "still-leased", lease=100_000)
    notifier = RecordingNotifier()
    clock.now += 3600 + 900
    report = sweep(records=records, notifier=notifier, telemetry=Telemetry(), now=clock.now, limit=100)
    assert report == {
        "swept": 2,
        "byStatus": {"PROCESSING": 1, "WAITING_FOR_TOOLS": 1},
        "announced": 0,
        "more": False,
    }
    for request_id in ("crashed-on-last-delivery", "poller-lost"):
        record = records.get(request_id)
        assert record["status"] == "FAILED" and record["error"]["kind"] == "StrandedError"
        assert record["error"]["retryable"] is True and record["notifiedAt"]
        assert "sweepAt" not in record and "sweepShard" not in record
    assert sorted(notifier.published) == [("crashed-on-last-delivery", "FAILED"), ("poller-lost", "FAILED")]
    assert records.get("still-leased")["status"] == "PROCESSING"
    # A second run finds nothing, and a redrive takes the failed record up again.
    assert (
        sweep(records=records, notifier=notifier, telemetry=Telemetry(), now=clock.now, limit=100)["swept"]
        == 0
    )
    claim(records, "crashed-on-last-delivery")


class RefusingNotifier(RecordingNotifier):
    """EventBridge refuses the events of the requests named."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def request_finished(self, record: dict) -> None:
        if record["requestId"] in self.refused:
            raise TransientStoreError("EventBridge refused the notification")
        super().request_finished(record)


def test_an_event_eventbridge_refuses_stops_no_sweep_and_waits_for_the_next(store):
    records, clock, _ = store
    for request_id in ("refused", "sent"):
        claim(records, request_id)
        records.finish(request_id, Status.COMPLETED, {}, allowed_from=(Status.PROCESSING,))
    claim(records, "stranded")
    clock.now += 60 + 901
    notifier = RefusingNotifier({"refused"})
    report = sweep(records=records, notifier=notifier, telemetry=Telemetry(), now=clock.now, limit=100)
    assert report == {"swept": 1, "byStatus": {"PROCESSING": 1}, "announced": 1, "more": False}
    assert sorted(notifier.published) == [("sent", "COMPLETED"), ("stranded", "FAILED")]
    assert [r["requestId"] for r in records.overdue()] == ["refused"]  # the next run tries again


def test_the_sweeper_leaves_a_record_taken_up_again_since_it_was_listed(store):
    records, clock, _ = store
    claim(records, "redelivered")
    clock.now += 60 + 901
    [listed] = list(records.overdue())
    claim(records, "redelivered")  # the message came back meanwhile: a new lease, a new sweep moment
    assert (
        records.fail("redelivered", RuntimeError("x"), allowed_from=(Status.PROCESSING,), expected=listed)
        is None
    )
    assert records.get("redelivered")["status"] == "PROCESSING"


def test_a_poller_failure_never_touches_a_later_attempt(store):
    records, _, _ = store
    claim(records, "rerun")
    records.finish("rerun", Status.WAITING_FOR_TOOLS, {}, allowed_from=(Status.PROCESSING,))
    notifier = RecordingNotifier()
    settled = fail_poller(
        "rerun", 2, "the poller failed", records=records, notifier=notifier, telemetry=Telemetry()
    )
    assert settled.record is None and notifier.published == []
    assert records.get("rerun")["status"] == "WAITING_FOR_TOOLS"
    settled = fail_poller(
        "rerun", 1, "the poller failed", records=records, notifier=notifier, telemetry=Telemetry()
    )
    assert settled.record["status"] == "FAILED" and notifier.published == [("rerun", "FAILED")]
    # Told again (the Catch, then EventBridge): nothing more happens.
    fail_poller("rerun", 1, "again", records=records, notifier=notifier, telemetry=Telemetry())
    assert notifier.published == [("rerun", "FAILED")]
    # A poller of a request with no record (started by hand, say) makes none.
    unknown = fail_poller("unknown", None, "x", records=records, notifier=notifier, telemetry=Telemetry())
    assert unknown.status is None and records.get("unknown") is None


# --- on the deployed template --------------------------------------------------------------------------------


def test_an_aborted_poller_fails_its_request_and_a_rerun_polls_again_without_a_second_chat(pipeline):
    sqs, url = events_queue(pipeline)
    pipeline.emulator.config.execution_seconds = 4
    message = image_request("aborted")
    pipeline.send(message)
    waiting = pipeline.wait_for_status("aborted", "WAITING_FOR_TOOLS")
    assert waiting["poller"] == execution_name("aborted", 1)
    [running] = executions_of(pipeline, "aborted")
    pipeline.stack.client("stepfunctions").stop_execution(
        executionArn=running["executionArn"], cause="operator"
    )
    pipeline.drain(timeout=60)

    record = pipeline.record("aborted")
    assert record["status"] == "FAILED", record
    assert record["error"]["kind"] == "PollerFailedError" and record["error"]["retryable"] is True
    assert "ended ABORTED" in record["error"]["message"]
    assert announced(sqs, url) == [("aborted", "AI Request Failed")]

    pipeline.send(message)  # the same request again (a resend, or a redrive)
    pipeline.drain(timeout=90)
    record = pipeline.record("aborted")
    assert record["status"] == "COMPLETED", record
    assert announced(sqs, url) == [("aborted", "AI Request Completed")]
    assert pipeline.emulator.successful_chats_by_correlation_id() == {"aborted": 1}  # billed once
    runs = {e["name"]: e["status"] for e in executions_of(pipeline, "aborted")}
    assert runs == {execution_name("aborted", 1): "ABORTED", execution_name("aborted", 2): "SUCCEEDED"}


def test_a_poller_broken_outside_its_tasks_catch_fails_the_request_once(pipeline):
    sqs, url = events_queue(pipeline)
    # A poll step whose answer the state machine cannot read: the Choice after it fails the whole Map.
    pipeline.stack.replace_handler("PollExecutionFunction", lambda event, context: {"unexpected": True})
    pipeline.send(image_request("broken-map"))
    pipeline.drain(timeout=60)
    record = pipeline.record("broken-map")
    assert record["status"] == "FAILED", record
    assert record["error"]["kind"] == "PollerFailedError"
    assert record["error"]["message"].startswith("the poller failed: States.Runtime")
    assert announced(sqs, url) == [("broken-map", "AI Request Failed")]
    [run] = executions_of(pipeline, "broken-map")
    assert run["status"] == "FAILED"  # and its status-change event found the record already ended


def test_the_scheduled_sweeper_ends_a_record_a_crash_left_processing(pipeline):
    sqs, url = events_queue(pipeline)
    table = boto3.resource("dynamodb").Table(pipeline.stack.physical_id("ResultsTable"))  # as the deployer
    long_ago = RecordStore(table, ttl_days=1, clock=Clock(time.time() - 7200))
    claim(long_ago, "crashed")  # as a delivery two hours ago left it: killed after its claim, on its last try
    claim(RecordStore(table, ttl_days=1), "in-flight")
    pipeline.stack.events.fire_schedule("SweepScheduleRule")  # the rule, its permission, the function's role
    pipeline.drain(timeout=60)
    [sweep_run] = pipeline.stack.invocations.for_function("SweeperFunction")
    assert sweep_run.succeeded and sweep_run.result["swept"] == 1, sweep_run
    record = pipeline.record("crashed")
    assert record["status"] == "FAILED" and record["error"]["kind"] == "StrandedError"
    assert pipeline.record("in-flight")["status"] == "PROCESSING"
    assert announced(sqs, url) == [("crashed", "AI Request Failed")]
