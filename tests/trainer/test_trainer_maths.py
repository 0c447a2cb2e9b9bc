"""The REINFORCE maths against finite differences and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.policy import forward, init_params
from trainer.reinforce import (
    backward,
    discounted_returns,
    rmsprop_step,
    standardise,
    survival_returns,
    time_baseline_advantages,
    zeros_like_params,
)


def surrogate(params: dict, obs: np.ndarray, actions: np.ndarray, advantages: np.ndarray) -> float:
    """sum_i A_i log pi(a_i | obs_i): its gradient is the REINFORCE estimate."""
    prob, _ = forward(params, obs)
    return float(np.sum(advantages * np.log(np.where(actions, prob, 1.0 - prob))))


@pytest.mark.parametrize("hidden", [1, 7, 32])
def test_backward_matches_finite_differences(hidden: int) -> None:
    rng = np.random.default_rng(hidden)
    params = init_params(hidden, rng)
    obs = rng.standard_normal((40, 4))
    actions = rng.random(40) < 0.5
    advantages = rng.standard_normal(40)
    prob, hidden_out = forward(params, obs)
    grads = backward(params, obs, hidden_out, advantages * (actions - prob))
    step = 1e-6
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][index] = value[index] + step
            up = surrogate(shifted, obs, actions, advantages)
            shifted[key][index] = value[index] - step
            down = surrogate(shifted, obs, actions, advantages)
            numeric[index] = (up - down) / (2 * step)
        error = np.linalg.norm(grads[key] - numeric) / np.linalg.norm(grads[key] + numeric)
        assert error <= 1e-6, (key, error)


def test_discounted_returns_hand_case() -> None:
    rewards = np.array([1.0, 0.0, 2.0])
    # G2 = 2, G1 = 0 + 0.5 * 2 = 1, G0 = 1 + 0.5 * 1 = 1.5
    np.testing.assert_allclose(discounted_returns(rewards, 0.5), [1.5, 1.0, 2.0])


def test_discounted_returns_columns_are_independent_episodes() -> None:
    rewards = np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # lengths 3 and 1
    expected = np.array([[1 + 0.9 + 0.81, 1.0], [1.9, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(discounted_returns(rewards, 0.9), expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
def test_survival_returns_equal_discounted_returns_of_ones(gamma: float) -> None:
    lengths = np.array([1, 7, 3, 500])
    alive = np.arange(lengths.max())[:, None] < lengths[None, :]
    expected = discounted_returns(alive.astype(np.float64), gamma)
    np.testing.assert_allclose(survival_returns(lengths, gamma), expected, rtol=1e-12, atol=1e-12)


def test_rmsprop_step_hand_case() -> None:
    params = {"W": np.array([1.0, -1.0])}
    grads = {"W": np.array([2.0, 0.0])}
    cache = {"W": np.array([0.0, 4.0])}
    new, new_cache = rmsprop_step(params, grads, cache, lr=0.1, decay=0.99, eps=1e-5)
    # cache = 0.99 * c + 0.01 * g^2 -> [0.04, 3.96]; step = 0.1 * g / (sqrt(cache) + eps)
    np.testing.assert_allclose(new_cache["W"], [0.04, 3.96])
    np.testing.assert_allclose(new["W"], [1.0 + 0.1 * 2.0 / (0.2 + 1e-5), -1.0])
    assert params["W"][0] == 1.0 and cache["W"][0] == 0.0  # pure: inputs untouched


def test_time_baseline_subtracts_the_mean_of_live_episodes_at_each_step() -> None:
    returns = np.array([[3.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    alive = np.array([[True, True], [True, False], [True, False]])
    advantages = time_baseline_advantages(returns, alive, eps=0.0)
    centred = np.array([[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]])  # t=0 mean 2; later only one
    live = centred[alive]
    np.testing.assert_allclose(advantages, centred / live.std())


def test_standardise_and_zero_cache() -> None:
    values = standardise(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose([values.mean(), values.std()], [0.0, 1.0], atol=1e-7)
    cache = zeros_like_params(init_params(3, np.random.default_rng(0)))
    assert all(not v.any() for v in cache.values())
