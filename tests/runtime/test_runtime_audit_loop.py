"""Audit regressions for the control loop: a stop request during a long wait ends the run at once."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import make_active
from runtime.loop import ControlLoop
from runtime.plants import CartPoleSim
from runtime.policy import make_meta, parse_policy, policy_bytes
from runtime.slot import PolicySlot
from tests.runtime.test_runtime_loop import FakeClock

GAINS = np.array([0.5, 1.0, 10.0, 2.0], dtype=np.float32)


def slot() -> PolicySlot:
    params = {"W1": np.stack([GAINS, -GAINS]), "W2": np.array([1.0, -1.0], np.float32)}
    return PolicySlot(make_active(parse_policy(policy_bytes(params, make_meta(hidden=2))), "numpy"))


class BoundedTickingClock:
    """Fake monotonic ns: moves 1 us per read and on sleeps; fails instead of spinning forever."""

    def __init__(self, max_reads: int = 200_000) -> None:
        self.now, self.reads, self.max_reads = 1_000_000_000, 0, max_reads
        self.on_sleep = None

    def __call__(self) -> int:
        self.reads += 1
        assert self.reads < self.max_reads, "the loop spins after the stop request"
        self.now += 1000
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)
        if self.on_sleep:
            self.on_sleep()


@pytest.mark.parametrize("hz", [0.001, 1.0])
@pytest.mark.parametrize("warm_up_us", [0, 300, 100_000])
def test_a_stop_during_the_wait_ends_the_run_without_spinning_to_the_deadline(hz, warm_up_us):
    # found by the audit: at --hz 0.001 a SIGTERM during the wait left the warm-up spinning
    # at 100% CPU until the deadline, 1000 s later
    clock = BoundedTickingClock()
    loop = ControlLoop(
        CartPoleSim(), slot(), hz=hz, warm_up_us=warm_up_us, seed=3, clock=clock, sleep=clock.sleep
    )
    clock.on_sleep = lambda: loop.stop("SIGTERM")  # the signal lands during the first nap
    started = clock.now
    summary = loop.run()
    assert summary.stopped_by == "SIGTERM" and summary.decisions == 1
    assert clock.now - started < 200_000_000  # one 0.1 s nap, not the rest of the period
    assert len(loop.stats.lateness_ns) == 0  # no wake-up was measured for a step not taken


@pytest.mark.parametrize(
    ("hz", "duration", "decisions"), [(1.0, 1.0, 1), (1.0, 2.5, 3), (0.5, 3.0, 2)]
)
def test_a_duration_runs_its_full_length_at_slow_rates(hz, duration, decisions) -> None:
    # found by the audit: --hz 1 --duration 1 ended after 0 s (the next deadline was past the
    # end, so the run stopped at once), cutting the last step's period short
    clock = FakeClock()
    loop = ControlLoop(
        CartPoleSim(), slot(), hz=hz, duration=duration, warm_up_us=0, seed=1, clock=clock,
        sleep=clock.sleep,
    )  # fmt: skip
    summary = loop.run()
    assert summary.stopped_by == "duration" and summary.decisions == decisions
    assert summary.duration_s == duration


def test_a_signal_during_the_last_period_keeps_its_reason() -> None:
    clock = FakeClock()
    loop = ControlLoop(
        CartPoleSim(), slot(), hz=1, duration=1.0, warm_up_us=0, seed=1, clock=clock,
        sleep=clock.sleep,
    )  # fmt: skip
    naps = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock.sleep(seconds)
        if len(naps) == 3:
            loop.stop("SIGTERM")

    loop.sleep = sleep
    summary = loop.run()
    assert summary.stopped_by == "SIGTERM" and summary.duration_s == 0.3


def test_duration_ends_a_run_waiting_on_a_quiet_stdio_bridge() -> None:
    # found by the audit: --plant stdio --duration 1 ran until the bridge closed its output
    # (the plant waited for a line and only checked for signals)
    import itertools
    import os
    import threading

    from runtime.plants import StdioPlant

    read_end, write_end = os.pipe()  # a bridge that says nothing (for 5 s: then it closes)
    closed = []
    bridge_gives_up = threading.Timer(5.0, lambda: closed.append(os.close(write_end)))
    bridge_gives_up.start()
    try:
        with open(read_end, "rb", buffering=0) as infile, open(os.devnull, "wb") as outfile:
            plant = StdioPlant(infile, outfile, poll_seconds=0.001)
            clock = itertools.count(1_000_000_000, 100_000_000).__next__  # 0.1 s per read
            loop = ControlLoop(plant, slot(), hz=0, duration=0.5, seed=0, clock=clock)
            plant.should_stop = loop.interrupted
            summary = loop.run()
    finally:
        bridge_gives_up.cancel()
        bridge_gives_up.join()
        if not closed:
            os.close(write_end)
    assert summary.stopped_by == "duration" and summary.decisions == 0
