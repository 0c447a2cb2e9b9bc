"""Audit of issue 2: wall_s counts the time between polishing updates (the greedy evaluations).

wall_s is "seconds since training started (excluding start-up and saving)", but each
polishing update restarted the clock where the last episode had left it: seed 2**31-1's
metrics.csv ended at 3.9 s of a 28 s run.
"""

from __future__ import annotations

from trainer.config import preset
from trainer.train import new_state, train


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.001  # every reading advances a little
        return self.now


def test_time_between_train_calls_in_one_process_counts() -> None:
    config = preset("default", seed=2, target_return=30.0, target_window=20, max_episodes=200)
    clock = FakeClock()
    state = train(config, new_state(config), clock=clock)
    before = state.wall_s[-1]
    clock.now += 50.0  # a polishing evaluation between two updates
    train(config, state, clock=clock, extra_updates=1)
    assert state.wall_s[-1] > before + 50.0


def test_a_resumed_state_carries_on_from_its_last_wall_s() -> None:
    config = preset("default", seed=2, max_episodes=24)
    state = train(config, new_state(config), clock=FakeClock())
    state.started = None  # as loaded from a checkpoint in a new process
    before = state.wall_s[-1]
    later = FakeClock()
    later.now = 10_000.0  # the gap between the processes does not count
    train(preset("default", seed=2, max_episodes=48), state, clock=later)
    assert before < state.wall_s[len(state.wall_s) // 2] < before + 5.0
