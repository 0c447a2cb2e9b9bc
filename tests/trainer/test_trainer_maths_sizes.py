"""The maths on random sizes, scales, gammas and dtypes.

The gradient check uses a numerically stable log-sigmoid: with large weights the policy
saturates, and log(1 - p) of the plain surrogate loses the digits a 1e-6 check needs (1e-4
relative error there, all of it in the reference, none in `backward`).
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.policy import forward, init_params
from trainer.reinforce import backward, discounted_returns, rmsprop_step


def log_likelihood(params: dict, obs: np.ndarray, actions: np.ndarray, adv: np.ndarray) -> float:
    logit = np.maximum(obs @ params["W1"].T, 0.0) @ params["W2"]
    # log sigmoid(z) = -log(1 + e^-z) for action 1, log sigmoid(-z) for action 0
    return float(np.sum(adv * -np.logaddexp(0.0, np.where(actions, -logit, logit))))


@pytest.mark.parametrize(
    "hidden, rows, scale", [(1, 1, 1.0), (2, 3, 0.3), (5, 17, 3.0), (64, 50, 2.0)]
)
def test_backward_matches_finite_differences_at_any_scale(
    hidden: int, rows: int, scale: float
) -> None:
    rng = np.random.default_rng(hidden * 100 + rows)
    params = {k: v * scale for k, v in init_params(hidden, rng).items()}
    obs = rng.standard_normal((rows, 4)) * scale
    actions = rng.random(rows) < 0.5
    adv = rng.standard_normal(rows)
    prob, hidden_out = forward(params, obs)
    grads = backward(params, obs, hidden_out, adv * (actions - prob))
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][index] += 1e-6
            up = log_likelihood(shifted, obs, actions, adv)
            shifted[key][index] -= 2e-6
            numeric[index] = (up - log_likelihood(shifted, obs, actions, adv)) / 2e-6
        scale = max(np.linalg.norm(grads[key] + numeric), 1e-8)  # a dead ReLU: both are 0
        error = np.linalg.norm(grads[key] - numeric) / scale
        assert error <= 1e-6, (key, error)
    # float32 in, float32 out, agreeing with float64 to float32's precision
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    prob32, hidden32 = forward(p32, obs.astype(np.float32))
    dlogit32 = (adv * (actions - prob32)).astype(np.float32)
    grads32 = backward(p32, obs.astype(np.float32), hidden32, dlogit32)
    for key in grads:
        assert grads32[key].dtype == np.float32
        np.testing.assert_allclose(
            grads32[key], grads[key], rtol=1e-4, atol=1e-4 * np.abs(grads[key]).max()
        )


def test_discounted_returns_equal_a_direct_loop() -> None:
    rng = np.random.default_rng(7)
    for trial in range(60):
        gamma = (0.0, 1.0, float(rng.random()))[trial % 3]
        rewards = rng.standard_normal(int(rng.integers(1, 40))) * 5
        expected, running = np.zeros_like(rewards), 0.0
        for t in reversed(range(len(rewards))):
            running = running * gamma + rewards[t]
            expected[t] = running
        np.testing.assert_allclose(
            discounted_returns(rewards, gamma), expected, rtol=1e-12, atol=1e-12
        )
        from32 = discounted_returns(rewards.astype(np.float32), gamma)
        assert from32.dtype == np.float64
        np.testing.assert_allclose(from32, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_rmsprop_step_is_the_formula(dtype: type, tolerance: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        decay, eps, lr = (
            rng.uniform(0.01, 0.999),
            10 ** rng.uniform(-8, -1),
            10 ** rng.uniform(-5, 0),
        )
        params, grads = ({"W": rng.standard_normal((3, 4)).astype(dtype)} for _ in range(2))
        cache = {"W": rng.random((3, 4)).astype(dtype)}
        new, new_cache = rmsprop_step(params, grads, cache, lr, decay, eps)
        g, c, w = (x["W"].astype(np.float64) for x in (grads, cache, params))
        expected_cache = decay * c + (1 - decay) * g**2
        np.testing.assert_allclose(new_cache["W"], expected_cache, rtol=tolerance)
        expected = w + lr * g / (np.sqrt(expected_cache) + eps)
        np.testing.assert_allclose(new["W"], expected, rtol=tolerance, atol=tolerance)
