"""Polishing: each set of weights is evaluated once, and wall_s counts the time between
polishing updates (the greedy evaluations run between them).

It evaluated the last four candidates again after every polishing update (three of them
unchanged, and all four when the update left the weights as they were: a batch of episodes
that all reach 500 steps has no time-baseline gradient): seed 2**31-1 spent 24 of its 28
seconds there (4,152 episodes of polishing, about 50 ms per 100-episode evaluation).
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer import evaluate
from trainer.cli import SELECT_SEED_OFFSET, finish
from trainer.config import preset
from trainer.train import new_state, train


def test_polishing_evaluates_each_candidate_once(monkeypatch: pytest.MonkeyPatch) -> None:
    config = preset("default", seed=2, target_return=30.0, target_window=20, max_episodes=120)
    state = train(config)
    assert state.solved_at is not None
    evaluated: list[bytes] = []
    real = evaluate.evaluate_numpy

    def counted(params, episodes, seed):  # noqa: ANN001, ANN202
        evaluated.append(b"".join(params[k].tobytes() for k in sorted(params)))
        return real(params, episodes, seed)

    monkeypatch.setattr(evaluate, "evaluate_numpy", counted)
    updates = state.updates
    policy, mean = finish(config, state)
    assert state.updates > updates  # seed 2 polishes 3 updates to episode 120
    assert len(evaluated) == len(set(evaluated))  # never the same weights twice
    # the same choice as evaluating every candidate afresh
    fresh = max(
        (real({k: v.astype(np.float32) for k, v in p.items()}, 100, SELECT_SEED_OFFSET + 2).mean, i)
        for i, p in enumerate(state.recent + [state.params])
    )
    assert mean == fresh[0]


def test_choose_policy_remembers_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    candidates = [{"W1": rng.standard_normal((4, 4)), "W2": rng.standard_normal(4)}]
    candidates.append({k: v.copy() for k, v in candidates[0].items()})  # equal weights
    calls = []
    real = evaluate.evaluate_numpy
    monkeypatch.setattr(evaluate, "evaluate_numpy", lambda *args: calls.append(1) or real(*args))
    scores: dict[bytes, float] = {}
    first = evaluate.choose_policy(candidates, 10, 5, scores)
    second = evaluate.choose_policy(candidates, 10, 5, scores)
    assert len(calls) == 1 and first[1] == second[1]


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
