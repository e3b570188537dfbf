"""The soak benchmark (bench/soak.py) at 100 requests, under 20% transient gateway faults and 2% invalid
requests: nothing lost, no gateway work done twice, every valid request COMPLETED, every invalid one FAILED
with its reason."""

import pytest

from bench.soak import run_soak


@pytest.mark.slow
def test_a_hundred_requests_under_transient_faults_all_end_where_they_should():
    report = run_soak(100, seed=3, drain_timeout=300)
    assert report["requests_sent"] == 100 and report["invalid_sent"] == 2
    assert report["lost"] == 0, report["lost_examples"]
    assert report["duplicates"] == 0, report["duplicate_examples"]
    assert report["valid_not_completed"] == [], report["valid_not_completed"]
    assert report["invalid_without_clear_failure"] == [], report["invalid_without_clear_failure"]
    assert report["completed"] == 98 and report["failed"] == 2
    assert report["in_dlq"] == 0 and report["dlq_without_gave_up_record"] == []
    # The faults really happened, so the retries were exercised.
    assert report["fault_share_of_chat_calls"] > 0.05, report["faults_injected"]
