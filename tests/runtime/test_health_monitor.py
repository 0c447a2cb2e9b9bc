"""HealthMonitor: which episodes count, the baseline, the probation verdict, no-baseline warning."""

from __future__ import annotations

import logging

import pytest

from runtime.updates import HealthMonitor


def test_one_clean_episode_of_the_starting_version_is_a_baseline():
    monitor = HealthMonitor(3, None, starting_version=5)
    assert monitor.record(5, 500.0) is None  # the loop's first episode counts
    assert monitor.mean_return(5) == 500.0
    probation = monitor.start_probation(6, 5)
    assert (probation.threshold, probation.baseline, probation.skipped) == (250.0, 500.0, None)
    assert monitor.record(6, 480.0) is None  # straddles the swap: counts for nobody
    assert monitor.mean_return(6) is None
    assert monitor.record(6, 9.0) is None
    assert monitor.record(6, 10.0) is None
    decision = monitor.record(6, 11.0)
    assert decision is not None
    assert (decision.version, decision.mean_return, decision.episodes) == (6, 10.0, 3)
    assert (decision.threshold, decision.baseline) == (250.0, 500.0)
    assert "half of the previous policy's mean 500.0" in decision.reason


def test_without_a_starting_version_the_first_episode_counts_for_nobody():
    monitor = HealthMonitor(3, None)
    monitor.record(5, 500.0)
    assert monitor.mean_return(5) is None
    monitor.record(5, 400.0)
    assert monitor.mean_return(5) == 400.0


def test_an_episode_that_straddles_a_swap_is_ignored():
    monitor = HealthMonitor(2, None, starting_version=5)
    monitor.record(5, 500.0)
    monitor.start_probation(6, 5)
    monitor.record(6, 1.0)  # began under 5, ended under 6
    assert monitor.mean_return(6) is None
    assert monitor.record(6, 300.0) is None
    assert monitor.record(6, 300.0) is None  # passed: 300 >= 250
    assert monitor.mean_return(6) == 300.0
    # the update lands while an episode is near its end: that one is wholly 5's, the next
    # (begun under 5, ended under 6) nobody's
    monitor = HealthMonitor(2, None, starting_version=5)
    monitor.start_probation(6, 5)
    monitor.record(5, 500.0)
    monitor.record(6, 2.0)
    assert monitor.mean_return(5) == 500.0 and monitor.mean_return(6) is None


def test_an_update_before_the_first_episode_ends_is_applied_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger="runtime.updates")
    monitor = HealthMonitor(2, None, starting_version=5)
    probation = monitor.start_probation(6, 5)
    assert probation.threshold is None
    assert probation.skipped is not None
    assert probation.skipped.startswith("health check skipped: no baseline")
    for fragment in ("version 5", "version 6", "--rollback-below"):
        assert fragment in probation.skipped
    lines = [r for r in caplog.records if r.name == "runtime.updates"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    message = lines[0].getMessage()
    assert message.startswith("version 6: ") and "no baseline" in message
    assert "--rollback-below" in message and "\n" not in message
    for _ in range(5):  # nothing to judge it by: never a rollback
        assert monitor.record(6, 1.0) is None


def test_rollback_below_needs_no_baseline_and_logs_nothing(caplog):
    caplog.set_level(logging.WARNING, logger="runtime.updates")
    monitor = HealthMonitor(2, 100.0, starting_version=5)
    probation = monitor.start_probation(6, 5)
    assert (probation.threshold, probation.skipped) == (100.0, None)
    assert not [r for r in caplog.records if r.name == "runtime.updates"]
    monitor.record(6, 50.0)  # straddles
    monitor.record(6, 50.0)
    decision = monitor.record(6, 60.0)
    assert decision is not None and decision.threshold == 100.0
    assert decision.baseline is None and "--rollback-below" in decision.reason


def test_after_a_rollback_the_restored_version_needs_a_clean_episode_again():
    monitor = HealthMonitor(1, None, starting_version=5)
    monitor.record(5, 500.0)
    monitor.start_probation(6, 5)
    monitor.record(6, 500.0)  # straddles
    assert monitor.record(6, 5.0) is not None
    monitor.cancel()  # the agent swaps 5 back in
    monitor.record(5, 500.0)  # began under 6: ignored
    assert monitor.mean_return(5) == 500.0  # only the first, clean one
    monitor.record(5, 400.0)
    assert monitor.mean_return(5) == 450.0


def test_probation_episodes_must_be_positive():
    with pytest.raises(ValueError, match="probation episodes"):
        HealthMonitor(0, None)


def test_the_verdict_follows_the_probation_of_the_version_applied_last():
    monitor = HealthMonitor(2, 100.0, starting_version=5)
    assert monitor.verdict is None  # nothing applied yet
    monitor.start_probation(6, 5)
    assert monitor.verdict.to_json() == {"version": 6, "state": "pending"}
    monitor.record(6, 500.0)  # straddles
    monitor.record(6, 500.0)
    assert monitor.verdict.state == "pending"
    assert monitor.record(6, 500.0) is None
    assert monitor.verdict.to_json() == {"version": 6, "state": "passed"}
    monitor.record(6, 500.0)  # later episodes change nothing
    assert monitor.verdict.state == "passed"
    monitor.start_probation(7, 6)
    for _ in range(3):
        decision = monitor.record(7, 5.0)
    assert decision is not None and monitor.verdict.to_json() == {"version": 7, "state": "failed"}
    monitor.cancel()  # the rollback keeps the verdict
    assert monitor.verdict.state == "failed"
    unjudged = HealthMonitor(2, None, starting_version=5)
    unjudged.start_probation(6, 5)
    assert unjudged.verdict.to_json() == {"version": 6, "state": "skipped"}
