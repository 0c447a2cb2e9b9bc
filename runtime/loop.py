"""The control loop: observe, decide, act, at a fixed rate, for as long as it is asked to.

Timing is drift-free: step k is due at `start + k * period` on `time.monotonic_ns()`, so a late
step does not shift the ones after it. A step that ends after the next step's deadline is an
overrun: it is counted, the next step starts at once and the schedule stays on its grid (the
missed slots are skipped, never run in a burst). `hz = 0` runs as fast as possible.
Each wait ends `warm_up_us` early with one throwaway decision and a spin to the deadline, so
the real decision finds warm caches and starts on time (see `DEFAULT_WARM_UP_US`).

Every decision reads `slot.active` exactly once, so a policy swapped in by another thread
(the MQTT agent) takes effect between two decisions, never inside one. Listeners get an
`EpisodeResult` after every episode; `LoopStats` can be read from any thread meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from runtime.constants import DEFAULT_WARM_UP_US
from runtime.plants import Plant, PlantClosed
from runtime.slot import PolicySlot

log = logging.getLogger(__name__)

EPISODE_LATENCY_WINDOW = 10_000  # decisions per episode kept for its p50/p99
RECENT_WINDOW = 1_000  # most recent decisions and wake-ups kept for telemetry and the bench
RETURN_WINDOW = 100  # most recent episode returns kept for telemetry and health checks
STOP_POLL_NS = 100_000_000  # a long sleep wakes this often (0.1 s) to see a stop request


@dataclass(frozen=True, eq=False)  # each generated method costs start-up time
class EpisodeResult:
    """One finished episode, as listeners and `--json` see it."""

    episode: int  # 1 for the first episode of the run
    episode_return: float
    steps: int
    policy_version: int  # of the policy that took the episode's last decision
    decision_us_p50: float
    decision_us_p99: float
    overruns: int  # during this episode

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["return"] = data.pop("episode_return")
        return {"type": "episode", **data}


@dataclass(frozen=True, eq=False)
class LoopSummary:
    """The whole run, returned by `ControlLoop.run` (the final `--json` object)."""

    episodes: int
    decisions: int
    overruns: int
    mean_return: float | None  # over finished episodes
    duration_s: float
    decision_us_p50: float | None  # over the most recent decisions
    decision_us_p99: float | None
    policy_version: int
    stopped_by: str  # "episodes", "duration", "signal", "plant closed", ...

    def to_json(self) -> dict[str, Any]:
        return {"type": "summary", **asdict(self)}


class EpisodeListener(Protocol):
    def on_episode(self, result: EpisodeResult) -> None: ...


@dataclass(eq=False, repr=False)
class LoopStats:
    """Live counters. The loop thread writes them; any thread may read them.

    Single attributes are plain ints read atomically; use the methods for the windows.
    """

    decisions: int = 0
    episodes: int = 0
    overruns: int = 0
    started_ns: int = 0
    last_return: float | None = None
    total_return: float = 0.0
    policy_version: int = 0
    returns: deque = field(default_factory=lambda: deque(maxlen=RETURN_WINDOW))
    decision_ns: deque = field(default_factory=lambda: deque(maxlen=RECENT_WINDOW))
    lateness_ns: deque = field(default_factory=lambda: deque(maxlen=RECENT_WINDOW))

    def recent_decision_us(self) -> list[float]:
        """The most recent decision latencies in microseconds (oldest first)."""
        return [ns / 1000 for ns in _copy(self.decision_ns)]

    def recent_lateness_us(self) -> list[float]:
        """How late the most recent steps woke after their deadline, in microseconds."""
        return [ns / 1000 for ns in _copy(self.lateness_ns)]

    def recent_returns(self) -> list[float]:
        return list(_copy(self.returns))

    def snapshot(self) -> dict[str, Any]:
        """A consistent-enough view for telemetry (each value read once)."""
        latencies = self.recent_decision_us()
        p50, p99 = percentiles_us(latencies)
        returns = self.recent_returns()
        return {
            "decisions": self.decisions,
            "episodes": self.episodes,
            "overruns": self.overruns,
            "last_return": self.last_return,
            "mean_return": sum(returns) / len(returns) if returns else None,
            "decision_us_p50": p50,
            "decision_us_p99": p99,
            "policy_version": self.policy_version,
        }


def _copy(window: deque) -> tuple:
    for _ in range(10):  # the loop may append while we copy; C-level copies rarely collide
        try:
            return tuple(window)
        except RuntimeError:
            continue
    return ()


def percentiles_us(values: Iterable[float]) -> tuple[float | None, float | None]:
    """The 50th and 99th percentiles, interpolated as `np.percentile` does by default.

    Written out on a sorted array because `np.percentile` loads `numpy.ma` on NumPy 2 the
    first time it runs: tens of ms at the end of the first episode, an overrun at 100 Hz.
    """
    ordered = np.sort(np.fromiter(values, dtype=np.float64))
    if ordered.size == 0:
        return None, None
    return _percentile(ordered, 50), _percentile(ordered, 99)


def _percentile(ordered: np.ndarray, q: float) -> float:
    position = q / 100 * (ordered.size - 1)  # linear interpolation between closest ranks
    below = int(position)
    above = min(below + 1, ordered.size - 1)
    low, high = float(ordered[below]), float(ordered[above])
    return round(low + (high - low) * (position - below), 3)


class ControlLoop:
    """Runs a plant under the policy in `slot` until a bound is reached or `stop()` is called."""

    def __init__(
        self,
        plant: Plant,
        slot: PolicySlot,
        *,
        hz: float = 50.0,
        episodes: int | None = None,
        duration: float | None = None,
        warm_up_us: float = DEFAULT_WARM_UP_US,
        seed: int | None = None,
        listeners: Iterable[EpisodeListener] = (),
        notifier: Any = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plant = plant
        self.slot = slot
        self.period_ns = round(1e9 / hz) if hz > 0 else 0
        self.max_episodes = episodes
        self.duration_ns = round(duration * 1e9) if duration else None
        self.warm_up_ns = round(warm_up_us * 1000)
        self.seed = seed
        self.listeners = list(listeners)
        self.notifier = notifier
        self.clock = clock
        self.sleep = sleep
        self.stats = LoopStats()
        self.stop_reason: str | None = None
        self._watchdog_ns = 0
        self._next_watchdog = 0
        self._end_ns: int | None = None

    def stop(self, reason: str = "signal") -> None:
        """Ask the loop to stop at the end of the current step (safe from signal handlers)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None

    def interrupted(self) -> bool:
        """For a plant that waits on I/O (stdio's `should_stop`): True once a stop is requested
        or the run's duration is over, which a quiet bridge would otherwise outlast."""
        if self.stop_reason is None and self._end_ns is not None and self.clock() >= self._end_ns:
            self.stop("duration")
        return self.stop_reason is not None

    def run(self) -> LoopSummary:
        stats, clock, period = self.stats, self.clock, self.period_ns
        notifier = self.notifier
        self._watchdog_ns = getattr(notifier, "watchdog_interval_ns", 0) if notifier else 0
        stats.policy_version = self.slot.active.policy.version
        start = stats.started_ns = clock()
        end = self._end_ns = start + self.duration_ns if self.duration_ns is not None else None
        deadline = self._next_watchdog = start
        ready_sent = False
        episode_ns: deque = deque(maxlen=EPISODE_LATENCY_WINDOW)
        episode_return, episode_steps, episode_overruns = 0.0, 0, 0
        perf_ns = time.perf_counter_ns
        try:
            obs = self.plant.reset(self.seed)
            while self.stop_reason is None:
                active = self.slot.active  # exactly once per decision: swaps land between
                act = active.action
                before = perf_ns()
                if act is None:  # noqa: SIM108 - format 1's maths: greedy, as trainer eval and policy.h
                    action = 1 if active.probability(obs) > 0.5 else 0
                else:  # an int (discrete) or a float32 (k,) array (continuous)
                    action = act(obs)
                elapsed = perf_ns() - before
                episode_ns.append(elapsed)
                stats.decision_ns.append(elapsed)
                stats.decisions += 1
                if not ready_sent:
                    ready_sent = True
                    if notifier is not None:
                        notifier.ready()
                obs, reward, done = self.plant.step(action)
                episode_return += reward
                episode_steps += 1
                if done:
                    stats.policy_version = active.policy.version
                    self._finish_episode(
                        episode_return, episode_steps, episode_ns, episode_overruns, active
                    )
                    episode_ns.clear()
                    episode_return, episode_steps, episode_overruns = 0.0, 0, 0
                    if self.max_episodes is not None and stats.episodes >= self.max_episodes:
                        self.stop("episodes")
                        break
                    obs = self.plant.reset(None)
                now = clock()
                if self._watchdog_ns and now >= self._next_watchdog:
                    self._feed_watchdog(now)
                if end is not None and now >= end:
                    self.stop("duration")
                    break
                if period:
                    deadline += period
                    if end is not None and deadline >= end:  # the last step's period runs out
                        self._wait_until(end)  # (a stop signal meanwhile keeps its own reason)
                        self.stop("duration")
                        break
                    if now < deadline:
                        self._wait_until(deadline - self.warm_up_ns)
                        if self.warm_up_ns:
                            self._warm_up(deadline, obs)
                        if self.stop_reason is not None:  # a signal during the wait: no step
                            break
                        stats.lateness_ns.append(clock() - deadline)
                    else:  # missed: count, start now, stay on the grid
                        stats.overruns += 1
                        episode_overruns += 1
                        deadline += (now - deadline) // period * period
        except PlantClosed as reason:
            log.info("plant closed: %s", reason)
            self.stop("plant closed")
        return self._summary(clock() - start)

    def _wait_until(self, deadline: int) -> None:
        while self.stop_reason is None:
            now = self.clock()
            remaining = deadline - now
            if remaining <= 0:
                return
            nap = min(remaining, STOP_POLL_NS)
            if self._watchdog_ns:  # slow rates: keep feeding the watchdog while waiting
                if now >= self._next_watchdog:
                    self._feed_watchdog(now)
                nap = min(nap, self._next_watchdog - now)
            self.sleep(nap / 1e9)

    def _warm_up(self, deadline: int, obs: Any) -> None:
        """A throwaway decision on the coming observation, then spin until `deadline`
        (or a stop request: the wait before it may have ended early for one)."""
        clock = self.clock
        if self.stop_reason is None and clock() < deadline:
            self.slot.active.decide(obs)
        while clock() < deadline and self.stop_reason is None:
            pass

    def _feed_watchdog(self, now: int) -> None:
        self.notifier.watchdog()
        self._next_watchdog = now + self._watchdog_ns

    def _finish_episode(
        self, episode_return: float, steps: int, latencies: deque, overruns: int, active: Any
    ) -> None:
        stats = self.stats
        stats.episodes += 1
        stats.last_return = episode_return
        stats.total_return += episode_return
        stats.returns.append(episode_return)
        p50, p99 = percentiles_us(ns / 1000 for ns in latencies)
        result = EpisodeResult(
            episode=stats.episodes,
            episode_return=episode_return,
            steps=steps,
            policy_version=active.policy.version,
            decision_us_p50=p50,
            decision_us_p99=p99,
            overruns=overruns,
        )
        for listener in self.listeners:
            try:
                listener.on_episode(result)
            except Exception:  # a listener must never stop the controller
                log.exception("episode listener %r failed", listener)

    def _summary(self, elapsed_ns: int) -> LoopSummary:
        stats = self.stats
        p50, p99 = percentiles_us(stats.recent_decision_us())
        mean = stats.total_return / stats.episodes if stats.episodes else None
        return LoopSummary(
            episodes=stats.episodes,
            decisions=stats.decisions,
            overruns=stats.overruns,
            mean_return=round(mean, 3) if mean is not None else None,
            duration_s=round(elapsed_ns / 1e9, 3),
            decision_us_p50=p50,
            decision_us_p99=p99,
            policy_version=self.slot.active.policy.version,
            stopped_by=self.stop_reason or "unknown",
        )
