"""Both presets improve the return within a tiny budget (a few seconds in all)."""

from __future__ import annotations

import numpy as np

from trainer.config import TrainConfig, preset
from trainer.train import new_state, train


def test_default_improves_within_a_tiny_budget() -> None:
    config = preset("default", seed=3, max_episodes=160, eval_episodes=0)
    state = train(config)
    returns = np.array(state.returns)
    assert state.episodes >= 160 and state.updates >= 5
    assert returns[-32:].mean() > 3 * returns[:32].mean()


def test_seed_preset_improves_within_a_tiny_budget() -> None:
    config = preset("seed", seed=0, max_episodes=200, eval_episodes=0)
    assert (config.hidden, config.lr, config.batch, config.num_envs) == (100, 1e-3, 5, 1)
    assert config.backend == "gymnasium" and config.env == "CartPole-v1"
    assert config.baseline == "batch"
    returns = np.array(train(config).returns)
    assert returns[-50:].mean() > 2 * returns[:50].mean()  # seed 0: about 28 -> 78


def test_seed_preset_is_the_article_with_overrides_applied() -> None:
    config = preset("seed", lr=0.005)
    assert config.lr == config.lr_final == 0.005
    assert preset("seed", batch=10).batch_final == 10


def test_training_stops_at_the_solving_episode() -> None:
    config = preset("default", seed=0, target_return=30.0, target_window=20, eval_episodes=0)
    state = train(config)
    assert state.solved_at == state.episodes
    assert np.mean(state.returns[-20:]) >= 30.0
    assert np.mean(state.returns[-21:-1]) < 30.0 or state.episodes == 20


def test_history_columns_line_up() -> None:
    state = new_state(preset("default", seed=1, max_episodes=40, eval_episodes=0))
    train(preset("default", seed=1, max_episodes=40, eval_episodes=0), state)
    assert len(state.returns) == len(state.env_steps) == len(state.wall_s) == state.episodes
    assert state.episodes >= 40
    assert np.all(np.diff(state.env_steps) >= 0)
    assert state.env_steps[-1] >= sum(state.returns)  # steps of episodes still running count too


def test_default_budget_leaves_room_to_polish() -> None:
    # seed 110 solves at episode 875, but its greedy policy needs about 1,700 more episodes of
    # polishing to reach 487.5 (with 2,000 in all it saved a policy scoring 469 < 475 on
    # Gymnasium's CartPole-v1); the run itself takes too long for a test
    assert TrainConfig().max_episodes >= 875 + 1700
