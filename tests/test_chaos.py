"""The chaos benchmark (bench/chaos.py) at 80 requests: faults at every step boundary (gateway faults, a 401
window, AWS throttling and 5xx on every write, kills after the gateway's answer and after each write,
aborted poller executions, a function timing out mid-call), then a DLQ redrive and a sweeper run. Every
request ends in a terminal record, announced, and billed again only when a crash left no other way."""

import pytest

from bench.chaos import run_chaos


@pytest.mark.slow
def test_eighty_requests_under_chaos_all_end_announced_and_billed_once_where_possible():
    report = run_chaos(80, seed=5, drain_timeout=900)
    assert report["requests"] == 80 and report["completed"] + report["failed"] == 80, report
    assert report["lost"] == 0, report["lost_examples"]
    assert report["stuck"] == 0, report["stuck_examples"]
    assert report["unannounced"] == 0, report["unannounced_examples"]
    assert report["rebilled"] == report["rebilled_unavoidable"], report["rebilled_avoidable_examples"]
    # The faults really happened: kills, AWS faults reaching past the SDK, gateway faults.
    assert sum(report["kills"].values()) > 0, report
    assert report["aws_faults"] and report["gateway_faults"], report
