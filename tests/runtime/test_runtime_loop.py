"""The control loop: drift-free timing, overruns, policy swaps between decisions, listeners, stats."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import make_active
from runtime.loop import ControlLoop, EpisodeResult, percentiles_us
from runtime.plants import CartPoleSim
from runtime.policy import init_params, make_meta, parse_policy, policy_bytes
from runtime.slot import ActivePolicy, PolicySlot

GAINS = np.array([0.5, 1.0, 10.0, 2.0], dtype=np.float32)


def policy(version: int = 1, sign: float = 1.0):
    params = {"W1": np.stack([GAINS, -GAINS]) * sign, "W2": np.array([1.0, -1.0], np.float32)}
    return parse_policy(policy_bytes(params, make_meta(hidden=2, version=version)))


def slot(version: int = 1) -> PolicySlot:
    return PolicySlot(make_active(policy(version), "numpy"))


class TimedPlant(CartPoleSim):
    """The sim, recording when each step happens and optionally taking time."""

    def __init__(self, clock=time.monotonic_ns, delays=None, advance=None) -> None:
        super().__init__()
        self.clock, self.delays, self.advance = clock, delays or {}, advance
        self.times: list[int] = []

    def step(self, action):
        self.times.append(self.clock())
        delay = self.delays.get(len(self.times), 0)
        if delay and self.advance:
            self.advance(delay)
        return super().step(action)


class FakeClock:
    """Monotonic nanoseconds that move only when someone sleeps or works."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)

    def work(self, ns: int) -> None:
        self.now += ns


def test_200_hz_keeps_its_mean_period_within_2_percent_over_2_s() -> None:
    # a timing test on a shared machine: a second run is allowed when the first met a load spike
    for attempt in range(2):
        plant = TimedPlant()
        summary = ControlLoop(plant, slot(), hz=200, duration=2.0, seed=0).run()
        mean_period_ms = np.diff(plant.times).mean() / 1e6
        if abs(mean_period_ms - 5.0) <= 0.02 * 5.0 or attempt == 1:
            break
    assert abs(mean_period_ms - 5.0) <= 0.02 * 5.0, (mean_period_ms, summary)
    assert summary.decisions + summary.overruns >= 395 and summary.stopped_by == "duration"
    assert summary.episodes == 0  # a 500-step episode takes 2.5 s at 200 Hz


def test_overruns_are_counted_and_the_schedule_stays_on_its_grid() -> None:
    clock = FakeClock()
    period = 10_000_000  # 100 Hz
    # step 5 takes 25 ms (misses two deadlines), step 9 takes 10.5 ms (misses one)
    plant = TimedPlant(clock, delays={5: 25_000_000, 9: 10_500_000}, advance=clock.work)
    loop = ControlLoop(
        plant, slot(), hz=100, duration=0.2, warm_up_us=0, seed=0, clock=clock, sleep=clock.sleep
    )  # a fake clock moves only when slept on: no spinning
    summary = loop.run()
    assert summary.overruns == 2
    start = plant.times[0]
    offsets = [(t - start) / period for t in plant.times]
    # on the grid except the two late starts (steps 6 and 10, started at once when the slow
    # step ended); the missed slots are skipped, not run in a burst
    assert offsets[:5] == [0, 1, 2, 3, 4]
    assert offsets[5] == 6.5 and offsets[6] == 7 and offsets[8] == 9
    assert offsets[9] == 10.05 and offsets[10] == 11
    assert np.all(np.diff(offsets) > 0)
    assert max(offsets) < 20


def test_hz_0_runs_flat_out_without_sleeping() -> None:
    slept = []
    loop = ControlLoop(CartPoleSim(), slot(), hz=0, episodes=2, seed=1, sleep=slept.append)
    summary = loop.run()
    assert summary.episodes == 2 and summary.decisions == 1000 and summary.overruns == 0
    assert slept == [] and summary.stopped_by == "episodes" and summary.mean_return == 500.0


class CountingSlot(PolicySlot):
    """Counts the loop thread's reads of `active` (`swap` in another thread reads it too)."""

    reads = 0

    @property
    def active(self):
        if threading.current_thread() is threading.main_thread():
            self.reads += 1
        return self._active

    @active.setter
    def active(self, value):
        self._active = value


def test_a_swap_from_another_thread_lands_between_two_decisions() -> None:
    first, second = policy(1), policy(2)
    calls = {1: 0, 2: 0}
    the_slot = CountingSlot(make_active(first, "numpy"))

    def counting(active, version):
        def probability(obs):
            calls[version] += 1
            return active.probability(obs)

        return ActivePolicy(active.policy, probability)

    the_slot.swap(counting(make_active(first, "numpy"), 1))
    results: list[EpisodeResult] = []

    class Listener:
        def on_episode(self, result):
            results.append(result)
            if result.episode == 2:  # another thread swaps while the loop keeps going
                threading.Thread(
                    target=the_slot.swap, args=(counting(make_active(second, "numpy"), 2),)
                ).start()

    reads_before = the_slot.reads
    loop = ControlLoop(CartPoleSim(), the_slot, hz=0, episodes=6, seed=3, listeners=[Listener()])
    summary = loop.run()
    assert calls[1] + calls[2] == summary.decisions == 3000
    assert calls[1] >= 1000 and calls[2] >= 1000
    reads = the_slot.reads - reads_before
    assert reads == summary.decisions + 2  # once per decision, plus the version at start and end
    assert [r.policy_version for r in results[:2]] == [1, 1] and results[-1].policy_version == 2
    assert summary.policy_version == 2


def test_listeners_get_every_episode_and_a_failing_one_does_not_stop_the_loop() -> None:
    seen: list[EpisodeResult] = []

    class Broken:
        def on_episode(self, result):
            raise RuntimeError("boom")

    class Recorder:
        def on_episode(self, result):
            seen.append(result)

    weak = parse_policy(
        policy_bytes(init_params(4, np.random.default_rng(0)), make_meta(hidden=4, version=9))
    )
    loop = ControlLoop(
        CartPoleSim(), PolicySlot(make_active(weak, "numpy")), hz=0, episodes=4, seed=0,
        listeners=[Broken(), Recorder()],
    )  # fmt: skip
    summary = loop.run()
    assert [r.episode for r in seen] == [1, 2, 3, 4]
    assert sum(r.steps for r in seen) == summary.decisions
    assert all(r.episode_return == r.steps and r.policy_version == 9 for r in seen)
    assert all(0 < r.decision_us_p50 <= r.decision_us_p99 for r in seen)
    assert summary.mean_return == np.mean([r.episode_return for r in seen])
    assert seen[0].to_json()["return"] == seen[0].episode_return


def test_stats_can_be_read_from_another_thread_while_the_loop_runs() -> None:
    loop = ControlLoop(CartPoleSim(), slot(4), hz=0, episodes=20, seed=0)
    snapshots = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            snapshots.append(loop.stats.snapshot())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        summary = loop.run()
    finally:
        stop.set()
        thread.join()
    assert summary.episodes == 20 and len(snapshots) > 1
    final = loop.stats.snapshot()
    assert final["decisions"] == 10_000 and final["episodes"] == 20 and final["overruns"] == 0
    assert final["last_return"] == 500.0 and final["mean_return"] == 500.0
    assert final["policy_version"] == 4 and final["decision_us_p99"] >= final["decision_us_p50"]
    assert len(loop.stats.recent_decision_us()) == 1000


def test_stop_from_another_thread_ends_the_current_step() -> None:
    loop = ControlLoop(CartPoleSim(), slot(), hz=50, seed=0)  # unbounded
    timer = threading.Timer(0.2, loop.stop, args=("test",))
    timer.start()
    started = time.monotonic()
    summary = loop.run()
    assert time.monotonic() - started < 1.0
    assert summary.stopped_by == "test" and 5 <= summary.decisions <= 15


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1000])
def test_percentiles_match_numpy(size: int) -> None:
    values = np.random.default_rng(size).exponential(5.0, size)
    expected = tuple(round(float(v), 3) for v in np.percentile(values, [50, 99]))
    assert percentiles_us(values.tolist()) == pytest.approx(expected, abs=1e-9)
    assert percentiles_us([]) == (None, None)


def test_an_episode_report_loads_no_numpy_ma() -> None:
    """np.percentile imports numpy.ma on NumPy 2 (tens of ms: an overrun after episode 1)."""
    code = (
        "import sys, numpy; before = 'numpy.ma' in sys.modules;"  # NumPy 1.x loads it anyway
        " from runtime.loop import percentiles_us; percentiles_us([1.0, 2.0]);"
        " print(before or 'numpy.ma' not in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    ).stdout
    assert out.strip() == "True"


class CountingDecisions:
    """Wraps a decision function and counts its calls."""

    def __init__(self, probability) -> None:
        self.probability, self.calls = probability, 0

    def __call__(self, obs):
        self.calls += 1
        return self.probability(obs)


class RecordingPlant(CartPoleSim):
    """The sim, recording every action it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[int] = []

    def step(self, action):
        self.actions.append(action)
        return super().step(action)


class TickingClock(FakeClock):
    """A fake clock that also moves 1 us each time it is read, so a spin loop ends."""

    def __call__(self) -> int:
        self.now += 1000
        return self.now


@pytest.mark.parametrize("warm_up_us", [0, 300])
def test_warm_up_adds_one_throwaway_decision_per_wait_and_changes_no_action(warm_up_us) -> None:
    active = slot().active
    counting = CountingDecisions(active.probability)
    plant = RecordingPlant()
    the_slot = PolicySlot(ActivePolicy(active.policy, counting))
    clock = TickingClock()  # deterministic: a loaded machine cannot make a wait overshoot
    loop = ControlLoop(
        plant,
        the_slot,
        hz=200,
        duration=0.3,
        warm_up_us=warm_up_us,
        seed=0,
        clock=clock,
        sleep=clock.sleep,
    )
    summary = loop.run()
    waits = len(loop.stats.lateness_ns)
    assert summary.overruns == 0 and summary.decisions >= 55 and waits >= summary.decisions - 1
    assert counting.calls == summary.decisions + (waits if warm_up_us else 0)
    assert max(loop.stats.lateness_ns) <= 2000  # the spin ends on the deadline's tick
    flat_out = RecordingPlant()  # the same seed without waits: the same greedy actions
    ControlLoop(flat_out, slot(), hz=0, episodes=summary.episodes + 1, seed=0).run()
    assert plant.actions == flat_out.actions[: len(plant.actions)]


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
    # regression: at --hz 0.001 a SIGTERM during the wait left the warm-up spinning
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
    # regression: --hz 1 --duration 1 ended after 0 s (the next deadline was past the
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
    # regression: --plant stdio --duration 1 ran until the bridge closed its output
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
