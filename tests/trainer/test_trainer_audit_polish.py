"""Audit of issue 2: polishing evaluates each set of weights once.

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
from trainer.train import train


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
