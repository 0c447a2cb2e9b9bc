"""The NumPy CartPole equals Gymnasium's CartPole-v1 bit for bit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from trainer.cartpole import CartPoleBatch


def test_matches_gymnasium_vector_env_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    reference = gym.make_vec("CartPole-v1", num_envs=64, vectorization_mode="vector_entry_point")
    reference.reset(seed=3)
    mine = CartPoleBatch(rng)
    mine.reset(64)
    mine.state = reference.unwrapped.state.copy()
    running = np.ones(64, dtype=bool)
    steps = 0
    while running.any():
        action = rng.random(64) < 0.5
        obs, _, terminated, _, _ = reference.step(action.astype(np.int64))
        my_obs, my_terminated = mine.step(action)
        # compare until each environment's first end (Gymnasium then autoresets it)
        assert np.array_equal(obs[running], my_obs[running].astype(np.float32))
        assert np.array_equal(terminated[running], my_terminated[running])
        running &= ~terminated
        steps += 1
    reference.close()
    assert steps > 20


def test_matches_the_single_gymnasium_env() -> None:
    reference = gym.make("CartPole-v1")
    obs, _ = reference.reset(seed=11)
    mine = CartPoleBatch(np.random.default_rng(0))
    mine.reset(1)
    mine.state = np.array(reference.unwrapped.state, dtype=np.float64).reshape(4, 1)
    rng = np.random.default_rng(1)
    terminated = False
    while not terminated:
        action = bool(rng.random() < 0.5)
        obs, _, terminated, _, _ = reference.step(int(action))
        my_obs, my_terminated = mine.step(np.array([action]))
        np.testing.assert_allclose(obs, my_obs[0], rtol=1e-6, atol=1e-7)
        assert terminated == bool(my_terminated[0])
    reference.close()


def test_reset_is_uniform_in_the_gymnasium_bounds() -> None:
    obs = CartPoleBatch(np.random.default_rng(0)).reset(1000)
    assert obs.shape == (1000, 4)
    assert np.all(np.abs(obs) <= 0.05) and np.abs(obs).max() > 0.049
