"""The REINFORCE maths against finite differences and hand-computed cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from runtime.policy import PolicySpec, forward, forward_pass, init_params
from trainer.reinforce import (
    adam_step,
    backward,
    backward_pass,
    bernoulli_dlogit,
    categorical_dlogits,
    discounted_returns,
    gaussian_dlog_std,
    gaussian_dmean,
    log_likelihood_gradient,
    new_obs_stats,
    obs_std,
    rmsprop_step,
    standardise,
    survival_returns,
    time_baseline_advantages,
    update_obs_stats,
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


# --- format 2: every head x activation x {biases, none} x {normaliser, none} -----------

SPECS = {
    "bernoulli": PolicySpec(hidden=5, obs_dim=3),
    "categorical": PolicySpec(hidden=5, obs_dim=3, head="categorical", action_dim=4),
    "gaussian": PolicySpec(
        hidden=5,
        obs_dim=3,
        head="gaussian",
        action_dim=2,
        action_low=(-1.0, -2.0),
        action_high=(1.0, 2.0),
    ),
}


def log_likelihood(
    params: dict, spec: PolicySpec, obs: np.ndarray, actions: np.ndarray
) -> np.ndarray:
    """log pi(a | obs) per row, written from the densities (not from the trainer's maths)."""
    _, output = forward_pass(params, obs, spec)
    if spec.head == "bernoulli":
        prob = 1.0 / (1.0 + np.exp(-output))
        return np.log(np.where(actions == 1, prob, 1.0 - prob))
    if spec.head == "categorical":
        shifted = output - output.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return logp[np.arange(len(actions)), actions]
    log_std = params["log_std"]
    z = (actions - output) / np.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), axis=1)


def random_case(head: str, activation: str, biases: bool, normaliser: bool, seed: int):
    spec = dataclasses.replace(SPECS[head], activation=activation)
    rng = np.random.default_rng(seed)
    params = init_params(spec.hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for key in params:  # away from zero: biases, normaliser and log_std all matter
        if key == "obs_std":
            params[key] = rng.uniform(0.5, 2.0, params[key].shape)
        elif key != "W1" and key != "W2":
            params[key] = rng.normal(0.0, 0.5, params[key].shape)
    obs = rng.normal(0.0, 2.0, (30, spec.obs_dim))
    if head == "bernoulli":
        actions = (rng.random(30) < 0.5).astype(np.int64)
    elif head == "categorical":
        actions = rng.integers(0, spec.action_dim, 30)
    else:
        actions = rng.normal(0.0, 1.5, (30, spec.action_dim))  # unclipped samples
    return spec, params, obs, actions, rng.standard_normal(30)


@pytest.mark.parametrize("normaliser", [False, True])
@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("head", ["bernoulli", "categorical", "gaussian"])
def test_every_head_matches_finite_differences(
    head: str, activation: str, biases: bool, normaliser: bool
) -> None:
    seed = len(head) * 8 + 4 * (activation == "tanh") + 2 * biases + normaliser
    spec, params, obs, actions, advantages = random_case(head, activation, biases, normaliser, seed)
    grads = log_likelihood_gradient(params, spec, obs, actions, advantages)
    trained = set(params) - {"obs_mean", "obs_std"}
    assert set(grads) == trained  # the normaliser is statistics: no gradient

    def objective(shifted: dict) -> float:
        return float(np.sum(advantages * log_likelihood(shifted, spec, obs, actions)))

    step = 1e-6
    for key in sorted(trained):
        value = params[key]
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][index] = value[index] + step
            up = objective(shifted)
            shifted[key][index] = value[index] - step
            numeric[index] = (up - objective(shifted)) / (2 * step)
        error = np.linalg.norm(grads[key] - numeric) / np.linalg.norm(grads[key] + numeric)
        assert grads[key].shape == value.shape and error <= 1e-6, (key, error)


def test_backward_pass_is_backward_for_format_1_params() -> None:
    rng = np.random.default_rng(3)
    params = init_params(8, rng)
    obs = rng.standard_normal((20, 4))
    prob, hidden = forward(params, obs)
    dlogit = rng.standard_normal(20) * (rng.random(20) < 0.5) - prob
    old, new = backward(params, obs, hidden, dlogit), backward_pass(params, obs, hidden, dlogit)
    assert set(old) == set(new) and all(np.array_equal(old[k], new[k]) for k in old)


def test_head_gradients_hand_cases() -> None:
    np.testing.assert_allclose(
        bernoulli_dlogit(np.array([1, 0]), np.array([0.25, 0.25])), [0.75, -0.25]
    )
    probs = np.array([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(categorical_dlogits(np.array([2]), probs), [[-0.5, -0.25, 0.75]])
    action, mean, std = np.array([[3.0]]), np.array([[1.0]]), np.array([2.0])
    np.testing.assert_allclose(gaussian_dmean(action, mean, std), [[0.5]])  # 2 / 4
    np.testing.assert_allclose(gaussian_dlog_std(action, mean, std), [[0.0]])  # (2/2)^2 - 1


def test_adam_step_hand_case() -> None:
    params = {"W": np.array([1.0, -1.0]), "obs_mean": np.array([5.0])}
    grads = {"W": np.array([2.0, 0.0])}
    moment, cache = {"W": np.zeros(2)}, {"W": np.zeros(2)}
    new, new_moment, new_cache = adam_step(params, grads, moment, cache, 1, lr=0.1)
    # m = 0.1 g, v = 0.001 g^2; mhat = g, vhat = g^2: the first step is lr * sign(g)
    np.testing.assert_allclose(new_moment["W"], [0.2, 0.0])
    np.testing.assert_allclose(new_cache["W"], [0.004, 0.0])
    np.testing.assert_allclose(new["W"], [1.0 + 0.1 * 2.0 / (2.0 + 1e-8), -1.0])
    assert new["obs_mean"] is params["obs_mean"] and moment["W"][0] == 0.0  # untrained, pure
    second, _, _ = adam_step(new, grads, new_moment, new_cache, 2, lr=0.1)
    m2, v2 = 0.9 * 0.2 + 0.1 * 2.0, 0.999 * 0.004 + 0.001 * 4.0
    expected = new["W"][0] + 0.1 * (m2 / 0.19) / (np.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(second["W"][0], expected)


def test_rmsprop_and_zero_state_skip_the_normaliser() -> None:
    params = init_params(3, np.random.default_rng(0), biases=True, normaliser=True)
    cache = zeros_like_params(params)
    assert set(cache) == {"W1", "W2", "b1", "b2"}
    grads = {k: np.ones_like(v) for k, v in cache.items()}
    new, _ = rmsprop_step(params, grads, cache, lr=0.1)
    assert new["obs_std"] is params["obs_std"] and not np.array_equal(new["W1"], params["W1"])


def test_obs_stats_in_pieces_equal_the_whole() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, (500, 3))
    stats = new_obs_stats(3)
    for piece in np.array_split(data, 7):
        stats = update_obs_stats(stats, piece)
    assert stats.count == pytest.approx(500 + 1e-4)
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.var, data.var(axis=0), rtol=1e-5)
    assert np.all(obs_std(new_obs_stats(2)._replace(var=np.zeros(2))) > 0)
