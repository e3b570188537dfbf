"""The record store on moto's DynamoDB: claims, leases, forward-only status, and the size split."""

import pytest

from shared.errors import InvalidRequestError, TransientGatewayError, TransientStoreError
from shared.records import MAX_INLINE_RESULT_BYTES, RecordStore, Status, split_for_item

SOURCE = {"type": "sqs", "queue": "q", "messageId": "m-1"}


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def store(records_table):
    clock = Clock()
    return RecordStore(records_table, ttl_days=30, clock=clock), clock


def claim(store, request_id="r-1", lease=60, fingerprint="request-one"):
    return store.claim(
        request_id, source=SOURCE, lease_seconds=lease, metadata={"caller": "test"}, fingerprint=fingerprint
    )


def test_first_claim_creates_the_record(store):
    records, clock = store
    result = claim(records)
    assert result.outcome == "claimed" and result.attempts == 1
    record = records.get("r-1")
    assert record["status"] == "PROCESSING" and record["source"] == SOURCE
    assert record["metadata"] == {"caller": "test"}
    assert record["expiresAt"] == int(clock.now + 30 * 86400)


def test_a_second_delivery_waits_while_the_lease_holds_and_takes_over_after(store):
    records, clock = store
    claim(records)
    assert claim(records).outcome == "busy"
    clock.now += 61
    taken = claim(records)
    assert taken.outcome == "claimed" and taken.attempts == 2


def test_a_released_claim_can_be_taken_at_once(store):
    records, _ = store
    claim(records)
    records.release("r-1", TransientGatewayError("503", status=503))
    again = claim(records)
    assert again.outcome == "claimed" and again.attempts == 2
    assert records.get("r-1")["lastError"]["retryable"] is True


def test_status_only_moves_forward(store):
    records, _ = store
    claim(records)
    assert records.finish("r-1", Status.COMPLETED, {"content": "hi"}, allowed_from=(Status.PROCESSING,))
    assert claim(records).outcome == "done"
    assert not records.finish("r-1", Status.WAITING_FOR_TOOLS, {}, allowed_from=(Status.PROCESSING,))
    assert not records.fail("r-1", InvalidRequestError("x", "late failure"))
    assert records.get("r-1")["status"] == "COMPLETED"


def test_fail_creates_a_record_for_a_request_that_never_got_claimed(store):
    records, _ = store
    assert records.fail("bad-1", InvalidRequestError("body", "not valid JSON"), source=SOURCE)
    record = records.get("bad-1")
    assert record["status"] == "FAILED"
    assert record["error"] == {
        "kind": "InvalidRequestError",
        "message": "body: not valid JSON",
        "retryable": False,
    }
    assert claim(records, "bad-1").outcome == "done"  # a permanent failure stays failed


def test_a_request_that_gave_up_can_be_claimed_again_after_a_redrive(store):
    records, _ = store
    claim(records)
    records.fail("r-1", TransientGatewayError("503"), message="gave up after 5 attempts: 503")
    assert records.get("r-1")["error"]["retryable"] is True
    again = claim(records)
    assert again.outcome == "claimed"
    assert "error" not in records.get("r-1")


def test_big_results_stay_out_of_the_item():
    small, in_s3 = split_for_item({"content": "short", "usage": {"inputTokens": 1}})
    assert not in_s3 and small["content"] == "short"
    big, in_s3 = split_for_item({"content": "x" * (MAX_INLINE_RESULT_BYTES + 1), "usage": {"inputTokens": 1}})
    assert in_s3 and "content" not in big and big["usage"] == {"inputTokens": 1}


def test_only_the_same_request_takes_a_record_over(store):
    records, clock = store
    claim(records)
    clock.now += 120  # the lease has expired
    assert claim(records, fingerprint="another-request").outcome == "conflict"
    assert claim(records).outcome == "claimed"
    records.fail("r-1", TransientStoreError("throttled"), message="gave up after 3 attempts")
    assert claim(records, fingerprint="another-request").outcome == "conflict"
    assert records.get("r-1")["status"] == "FAILED"
    assert claim(records).outcome == "claimed"  # a redrive of the same request


def test_a_record_created_only_when_new(store):
    records, _ = store
    claim(records)
    assert records.fail("r-1", InvalidRequestError("body", "unreadable"), create_only=True) is None
    assert records.get("r-1")["status"] == "PROCESSING"
    created = records.fail("m-1", InvalidRequestError("body", "unreadable"), create_only=True)
    assert created["status"] == "FAILED"


def test_a_redriven_record_will_be_announced_again(store):
    records, _ = store
    claim(records)
    records.fail("r-1", TransientStoreError("throttled"), message="gave up after 3 attempts")
    records.mark_notified("r-1")
    assert records.get("r-1")["notifiedAt"]
    assert claim(records).outcome == "claimed"
    assert "notifiedAt" not in records.get("r-1")
