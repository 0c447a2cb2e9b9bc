"""Greedy evaluation in chunks of vectorised environments: every episode from a seed of its own.

A vector env seeds its environment i from seed + i (SyncVectorEnv, the NumPy Acrobot-v1): with
chunk k reset at seed + k, 250 episodes were about 100 initial states played again and again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer import evaluate
from trainer.evaluate import EVAL_CHUNK


class SeedEchoEnvs:
    """n environments seeded as SyncVectorEnv seeds them; each episode lasts one step and pays
    its environment's seed, so the returns name the seeds played."""

    def __init__(self, n: int) -> None:
        self.num_envs = n
        self.seeds = np.zeros(n)

    def reset(self, *, seed: int) -> tuple[np.ndarray, dict]:
        self.seeds = np.arange(seed, seed + self.num_envs, dtype=np.float64)
        return np.zeros((self.num_envs, 1)), {}

    def step(self, actions: Any) -> tuple:
        done = np.ones(self.num_envs, dtype=bool)
        return np.zeros((self.num_envs, 1)), self.seeds, done, ~done, {}

    def close(self) -> None:
        pass


def test_every_episode_of_a_long_evaluation_has_its_own_seed() -> None:
    episodes = 2 * EVAL_CHUNK + 50
    result = evaluate._first_episodes(SeedEchoEnvs, lambda obs: np.zeros(len(obs)), episodes, 7)
    assert result.returns == tuple(float(seed) for seed in range(7, 7 + episodes))


def test_the_numpy_acrobot_evaluates_as_gymnasium_does() -> None:
    from runtime.policy import init_params
    from trainer.acrobot import AcrobotVectorEnv
    from trainer.config import preset
    from trainer.gym_train import inspect_env

    config = preset("default", env="Acrobot-v1", hidden=8)
    spec = inspect_env(config).spec
    # rng 8's random policy swings up in -82, -252 and -133 steps: returns that tell apart
    params = init_params(8, np.random.default_rng(8), spec=spec, biases=True, normaliser=True)
    params = {key: value.astype(np.float32) for key, value in params.items()}
    gymnasium = evaluate.evaluate_env(params, spec, config.env, 3, 11)
    numpy = evaluate.evaluate_env(params, spec, config.env, 3, 11, make_envs=AcrobotVectorEnv)
    assert numpy.returns == gymnasium.returns and len(set(numpy.returns)) == 3
