"""The chaos benchmark's account, on made-up journals and records: a rebill is unavoidable only when the
earlier answer never reached a function or the function died before storing it; a redrive that makes a new
request is counted apart; unfinished and unannounced records are found whichever record of a request they are."""

from collections import Counter

from bench import soak
from bench.chaos import answer_fates, build_account


def plan_of_one(request_id: str | None, message_id: str) -> soak.Plan:
    request = soak.Request(0, "queued", "short", valid=True, request_id=request_id or message_id)
    request.message_id = message_id
    return soak.Plan([request], "test")


def line(pid: int, event: str, **fields) -> dict:
    return {"pid": pid, "function": "SqsRequestFunction", "t": 0.0, "event": event, **fields}


def record(request_id: str, status: str, **fields) -> dict:
    return {"requestId": request_id, "status": status, "createdAt": fields.pop("createdAt", "1"), **fields}


def completed_after_two_calls(journal: list[dict]) -> dict:
    """The account of request "r": COMPLETED and announced, two chat calls, the kill points' `journal`."""
    return build_account(
        plan_of_one("r", "m"),
        [record("r", "COMPLETED")],
        {("r", "COMPLETED")},
        Counter(r=2),
        answer_fates(journal),
        {},
        {},
    )


def test_a_rebill_after_a_crash_between_answer_and_store_is_unavoidable_and_one_after_a_store_is_not():
    crashed = [
        line(1, "start"),
        line(1, "answered", requestId="r"),
        line(1, "killed", point="gateway-answered", requestId="r"),
        line(2, "start"),
        line(2, "answered", requestId="r"),
        line(2, "write", point="s3-write", key="results/requests/r.json"),
        line(2, "end"),
    ]
    account = completed_after_two_calls(crashed)
    assert (account["rebilled"], account["rebilled_unavoidable"]) == (1, 1)

    stored_then_asked_again = [
        line(1, "start"),
        line(1, "answered", requestId="r"),
        line(1, "write", point="s3-write", key="results/requests/r.json"),
        line(1, "end"),
        line(2, "start"),
        line(2, "answered", requestId="r"),
        line(2, "end"),
    ]
    account = completed_after_two_calls(stored_then_asked_again)
    assert (account["rebilled"], account["rebilled_unavoidable"]) == (1, 0)
    assert account["rebilled_avoidable"], account


def test_a_redrive_under_a_new_message_id_is_a_new_request_and_every_record_counts():
    records = [
        record("m1", "FAILED", createdAt="1", error={"kind": "X", "message": "gave up"}),
        record("m2", "COMPLETED", createdAt="2"),
    ]
    journal = [line(1, "start"), line(1, "answered", requestId="m2"), line(1, "end")]
    account = build_account(
        plan_of_one(None, "m1"),
        records,
        {("m2", "COMPLETED")},
        Counter(m1=1, m2=1),
        answer_fates(journal),
        {},
        {"m1": ["m2"]},
    )
    assert account["rebilled"] == 0 and account["billed_again_as_a_new_request"] == 1
    assert account["completed"] == 1  # the latest record is the request's end
    assert account["unannounced"] == ["m1: m1 FAILED, no event"]  # the old one counts too

    account = build_account(
        plan_of_one("r", "m"), [record("r", "PROCESSING")], set(), Counter(), answer_fates([]), {}, {}
    )
    assert len(account["stuck"]) == 1 and not account["lost"]
    account = build_account(plan_of_one("r", "m"), [], set(), Counter(), answer_fates([]), {}, {})
    assert account["lost"] == ["r: no record"]
