"""The NumPy CartPole matches Gymnasium's CartPole-v1 bit for bit."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from runtime import plants
from runtime.plants import CartPoleSim, Plant


def test_same_observations_as_gymnasium_for_10000_steps() -> None:
    gym = pytest.importorskip("gymnasium")
    env = gym.make("CartPole-v1")
    sim = CartPoleSim()
    actions = np.random.default_rng(2024).integers(0, 2, size=10_000)
    expected, _ = env.reset(seed=4321)
    got = sim.reset(4321)
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
    episodes = 0
    for step, action in enumerate(actions):
        expected, reward, terminated, truncated, _ = env.step(int(action))
        got, sim_reward, done = sim.step(int(action))
        assert got.tobytes() == expected.tobytes(), f"step {step}: {got} != {expected}"
        assert (sim_reward, done) == (reward, terminated or truncated)
        assert (sim.terminated, sim.truncated) == (terminated, truncated)
        if done:
            episodes += 1
            expected, _ = env.reset()  # no seed: both continue their generator
            assert sim.reset().tobytes() == expected.tobytes()
    assert episodes > 100
    env.close()


# sha256 of the float32 observations of Gymnasium's CartPole-v1 (reset seed 4321, actions from
# default_rng(2024), 10,000 steps, resets included), recorded with gymnasium 1.x; lets the
# bookworm venv (numpy 1.24, no gymnasium) check the sim against Gymnasium too.
GYMNASIUM_DIGEST = "4d6a7db6170c48849cca07af8cf182b746cd97c0f5381b609c40eb89146529ae"


def trajectory_digest(reset, step) -> str:
    digest = hashlib.sha256(reset(4321).tobytes())
    for action in np.random.default_rng(2024).integers(0, 2, size=10_000):
        obs, done = step(int(action))
        digest.update(obs.tobytes())
        if done:
            digest.update(reset(None).tobytes())
    return digest.hexdigest()


def test_sim_trajectory_matches_the_recorded_gymnasium_one() -> None:
    sim = CartPoleSim()
    assert trajectory_digest(sim.reset, lambda a: sim.step(a)[::2]) == GYMNASIUM_DIGEST


def test_the_recorded_digest_is_gymnasiums() -> None:
    gym = pytest.importorskip("gymnasium")
    env = gym.make("CartPole-v1")

    def step(action):
        obs, _, terminated, truncated, _ = env.step(action)
        return obs, terminated or truncated

    assert trajectory_digest(lambda seed: env.reset(seed=seed)[0], step) == GYMNASIUM_DIGEST


def test_truncates_at_500_like_the_time_limit() -> None:
    gym = pytest.importorskip("gymnasium")
    env = gym.make("CartPole-v1")
    sim = CartPoleSim()
    gains = np.array([0.5, 1.0, 10.0, 2.0])
    obs, _ = env.reset(seed=3)
    sim_obs = sim.reset(3)
    for step in range(1, 501):
        action = int(gains @ obs >= 0)
        obs, _, terminated, truncated, _ = env.step(action)
        sim_obs, _, done = sim.step(action)
        assert sim_obs.tobytes() == obs.tobytes()
        assert done == (terminated or truncated) == (step == 500)
    assert sim.truncated and not sim.terminated


def test_constants_are_gymnasiums() -> None:
    assert (plants.GRAVITY, plants.MASS_CART, plants.MASS_POLE) == (9.8, 1.0, 0.1)
    assert (plants.HALF_POLE_LENGTH, plants.FORCE, plants.TAU) == (0.5, 10.0, 0.02)
    assert math.isclose(plants.THETA_THRESHOLD, math.radians(12), rel_tol=1e-15)
    assert plants.X_THRESHOLD == 2.4
    assert isinstance(CartPoleSim(), Plant)


def test_reset_distribution_is_uniform_in_005() -> None:
    sim = CartPoleSim()
    starts = np.array([sim.reset(seed) for seed in range(500)])
    assert starts.shape == (500, 4) and np.all(np.abs(starts) <= 0.05)
    assert np.all(starts.min(axis=0) < -0.04) and np.all(starts.max(axis=0) > 0.04)
    assert sim.reset(9).tobytes() == CartPoleSim().reset(9).tobytes()
