"""The REINFORCE maths: pure functions on parameter dicts (Williams 1992, Karpathy's pg-pong).

The policy is runtime.policy.forward: h = relu(W1 obs), p = sigmoid(W2 . h), p = p(action 1).
For a Bernoulli policy the gradient of log pi(a | obs) with respect to the logit is (a - p), so
the policy-gradient estimate of a batch is

    grad = sum over steps of  advantage_t * (a_t - p_t) * d logit_t / d params

which `backward` computes by the chain rule through the ReLU layer.
"""

from __future__ import annotations

import numpy as np

from runtime.constants import KEY_W1, KEY_W2
from runtime.policy import Params


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1} along axis 0 (time); further axes are independent episodes.

    The running sum restarts nowhere: pass one episode (T,) or episodes aligned in time (T, N)
    with zero reward after each episode's end.
    """
    returns = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros_like(rewards[0], dtype=np.float64)
    for t in reversed(range(len(rewards))):
        running = running * gamma + rewards[t]
        returns[t] = running
    return returns


def survival_returns(lengths: np.ndarray, gamma: float) -> np.ndarray:
    """discounted_returns of episodes paying +1 per step (CartPole), in closed form.

    Episode i of length L_i, aligned in time: G_t = sum_{k<L-t} gamma^k = (1 - gamma^(L-t)) /
    (1 - gamma) for t < L (L - t when gamma = 1), 0 after the end. Shape (max L, N).
    """
    steps_left = lengths[None, :] - np.arange(lengths.max())[:, None]  # L - t
    alive = steps_left > 0
    if gamma == 1.0:
        return np.where(alive, steps_left, 0).astype(np.float64)
    return np.where(alive, (1.0 - gamma ** np.maximum(steps_left, 0)) / (1.0 - gamma), 0.0)


def standardise(values: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(values - mean) / std over the whole array: the article's per-batch normalisation."""
    return (values - values.mean()) / (values.std() + eps)


def time_baseline_advantages(
    returns: np.ndarray, alive: np.ndarray, eps: float = 1e-8
) -> np.ndarray:
    """Advantages for episodes aligned in time, returns and alive both (T, N).

    A_t = (G_t - b_t) / std, where the baseline b_t is the mean return at time step t over the
    batch's episodes still running at t, and std is taken over every live step of the batch.
    Steps after an episode's end get advantage 0.
    """
    count = alive.sum(axis=1)
    baseline = (returns * alive).sum(axis=1) / np.maximum(count, 1)
    advantages = (returns - baseline[:, None]) * alive
    live = advantages[alive]
    return advantages / (live.std() + eps) if live.size else advantages


def backward(
    params: Params,
    obs: np.ndarray,
    hidden: np.ndarray,
    dlogit: np.ndarray,
) -> Params:
    """Gradient of sum_i dlogit_i * logit_i with respect to W1 and W2, summed over the rows.

    obs (M, 4), hidden (M, H) the ReLU outputs of forward, dlogit (M,): for REINFORCE
    advantage * (action - p), which makes this the policy-gradient ascent direction.
    """
    grad_w2 = hidden.T @ dlogit  # d logit / d W2 = h
    # d logit / d h = W2; ReLU passes the gradient only where it was active (a multiply by
    # the mask: several times faster than assigning zeros through a boolean index)
    grad_hidden = np.outer(dlogit, params[KEY_W2]) * (hidden > 0)
    grad_w1 = grad_hidden.T @ obs  # d h / d W1 = obs (outer product per row)
    return {KEY_W1: grad_w1, KEY_W2: grad_w2}


def rmsprop_step(
    params: Params,
    grads: Params,
    cache: Params,
    lr: float,
    decay: float = 0.99,
    eps: float = 1e-5,
) -> tuple[Params, Params]:
    """One RMSProp ascent step (Hinton's lecture 6e, as in the article). Returns new dicts.

    cache_k = decay * cache_k + (1 - decay) * g_k^2
    w_k    += lr * g_k / (sqrt(cache_k) + eps)
    """
    new_cache = {k: decay * cache[k] + (1.0 - decay) * grads[k] ** 2 for k in params}
    new_params = {k: params[k] + lr * grads[k] / (np.sqrt(new_cache[k]) + eps) for k in params}
    return new_params, new_cache


def zeros_like_params(params: Params) -> Params:
    """Optimiser state with the same keys and shapes as the parameters."""
    return {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
