"""The REINFORCE maths: pure functions on parameter dicts (Williams 1992, Karpathy's pg-pong).

The policy is runtime.policy.forward: h = relu(W1 obs), p = sigmoid(W2 . h), p = p(action 1).
For a Bernoulli policy the gradient of log pi(a | obs) with respect to the logit is (a - p), so
the policy-gradient estimate of a batch is

    grad = sum over steps of  advantage_t * (a_t - p_t) * d logit_t / d params

which `backward` computes by the chain rule through the ReLU layer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from runtime.constants import (
    HEAD_BERNOULLI,
    HEAD_CATEGORICAL,
    HEAD_GAUSSIAN,
    KEY_B1,
    KEY_B2,
    KEY_LOG_STD,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_W1,
    KEY_W2,
)
from runtime.policy import (
    Params,
    PolicySpec,
    forward_pass,
    gaussian_std,
    normalise,
    sigmoid,
    softmax,
)


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


def batch_advantages(returns: np.ndarray, alive: np.ndarray, baseline: str) -> np.ndarray:
    """The advantage of every live step of a batch of episodes aligned in time (returns and
    alive (T, B)), episode after episode: `time`, the time-indexed baseline
    (`time_baseline_advantages`); `batch`, the returns standardised over the batch (the
    article's)."""
    if baseline == "time":
        return time_baseline_advantages(returns, alive).T[alive.T]
    return standardise(returns.T[alive.T])


def backward(
    params: Params,
    obs: np.ndarray,
    hidden: np.ndarray,
    dlogit: np.ndarray,
) -> Params:
    """Gradient of sum_i dlogit_i * logit_i with respect to W1 and W2, summed over the rows.

    obs (M, 4), hidden (M, H) the ReLU outputs of forward, dlogit (M,): for REINFORCE
    advantage * (action - p), which makes this the policy-gradient ascent direction. Format 1's
    case of `backward_pass` (relu, no biases).
    """
    return backward_pass(params, obs, hidden, dlogit)


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

    Keys of `grads` only: the normaliser statistics in `params` are not trained.
    """
    new_cache = {k: decay * cache[k] + (1.0 - decay) * grads[k] ** 2 for k in grads}
    new_params = dict(params)
    for k in grads:
        new_params[k] = params[k] + lr * grads[k] / (np.sqrt(new_cache[k]) + eps)
    return new_params, new_cache


def zeros_like_params(params: Params) -> Params:
    """Optimiser state with the same keys and shapes as the trained parameters (all but the
    normaliser's obs_mean and obs_std)."""
    return {
        k: np.zeros_like(v, dtype=np.float64)
        for k, v in params.items()
        if k not in (KEY_OBS_MEAN, KEY_OBS_STD)
    }


# --- format 2: every head and activation, optional biases ------------------------------
#
# The surrogate whose gradient REINFORCE ascends is J = sum_i A_i log pi(a_i | obs_i). The
# head turns the network's output (logit, logits or mean) into a distribution; each function
# below is d log pi(a | obs) / d output for one head, per row. `backward_pass` carries
# A_i times that back through W2 h + b2 and act(W1 x + b1); the normaliser (obs_mean,
# obs_std) is running statistics, not trained, so it gets no gradient.


def bernoulli_dlogit(actions: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """d log pi(a) / d logit for p = sigmoid(logit): a - p. actions (M,) 0/1, prob (M,)."""
    return actions - prob


def categorical_dlogits(actions: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """d log softmax(z)[a] / d z: onehot(a) - probs. actions (M,) ints, probs (M, n)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(actions)), actions] = 1.0
    return onehot - probs


def gaussian_dmean(actions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """d log N(a; mean, std) / d mean: (a - mean) / std^2. actions, mean (M, k), std (k,)."""
    return (actions - mean) / std**2


def gaussian_dlog_std(actions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """d log N(a; mean, std) / d log_std: ((a - mean) / std)^2 - 1, per row (M, k)."""
    return ((actions - mean) / std) ** 2 - 1.0


def backward_pass(
    params: Params,
    x: np.ndarray,
    hidden: np.ndarray,
    doutput: np.ndarray,
    activation: str = "relu",
) -> Params:
    """Gradient of sum_i doutput_i . output_i over W1, W2 and, where params has them, b1, b2.

    x (M, obs_dim) the normalised observations, hidden (M, H) after the activation (as
    runtime.policy.forward_pass returns it), doutput (M,) for a bernoulli W2 (hidden,), else
    (M, n) for W2 (n, hidden). For format-1 params this is `backward`, operation for operation.
    """
    w2 = params[KEY_W2]
    if w2.ndim == 1:
        grads = {KEY_W2: hidden.T @ doutput}  # d logit / d W2 = h
        grad_hidden = np.outer(doutput, w2)
    else:
        grads = {KEY_W2: doutput.T @ hidden}  # d output_j / d W2[j] = h
        grad_hidden = doutput @ w2
    # through the activation, written with its output: relu' = (h > 0), tanh' = 1 - h^2 (a
    # multiply by relu's mask: several times faster than assigning zeros through an index)
    grad_pre = grad_hidden * (1.0 - hidden**2 if activation == "tanh" else hidden > 0)
    grads[KEY_W1] = grad_pre.T @ x  # d pre / d W1 = x (outer product per row)
    if KEY_B1 in params:
        grads[KEY_B1] = grad_pre.sum(axis=0)
    if KEY_B2 in params:
        grads[KEY_B2] = np.atleast_1d(doutput.sum(axis=0))  # bernoulli b2 is (1,)
    return grads


def log_likelihood_gradient(
    params: Params,
    spec: PolicySpec,
    obs: np.ndarray,
    actions: np.ndarray,
    advantages: np.ndarray,
) -> Params:
    """d/d params of sum_i advantages_i * log pi(actions_i | obs_i), for any head.

    obs (M, obs_dim) raw (the params' normaliser applies), actions (M,) for bernoulli and
    categorical, (M, k) the sampled, unclipped actions for gaussian. Trained keys only: no
    obs_mean/obs_std.
    """
    x = normalise(params, obs)
    hidden, output = forward_pass(params, obs, spec)
    if spec.head == HEAD_BERNOULLI:
        dlogp = bernoulli_dlogit(actions, sigmoid(output))
    elif spec.head == HEAD_CATEGORICAL:
        dlogp = categorical_dlogits(actions, softmax(output))
    else:
        std = gaussian_std(params)
        dlogp = gaussian_dmean(actions, output, std)
        dlog_std = gaussian_dlog_std(actions, output, std)
    # the advantage scales each step's log-probability gradient: the REINFORCE estimate
    weight = advantages if dlogp.ndim == 1 else advantages[:, None]
    grads = backward_pass(params, x, hidden, weight * dlogp, spec.activation)
    if spec.head == HEAD_GAUSSIAN:
        grads[KEY_LOG_STD] = (weight * dlog_std).sum(axis=0)
    return grads


def adam_step(
    params: Params,
    grads: Params,
    moment: Params,
    cache: Params,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[Params, Params, Params]:
    """One Adam ascent step (Kingma & Ba 2015, algorithm 1). Returns new dicts.

    moment_k = beta1 * moment_k + (1 - beta1) * g_k        first moment
    cache_k  = beta2 * cache_k + (1 - beta2) * g_k^2       second moment (RMSProp's cache)
    w_k     += lr * mhat_k / (sqrt(vhat_k) + eps), the hats divided by 1 - beta^step
    `step` counts from 1 (the trainer passes its update count + 1). Keys of `grads` only:
    the normaliser statistics are not trained.
    """
    new_moment = {k: beta1 * moment[k] + (1.0 - beta1) * grads[k] for k in grads}
    new_cache = {k: beta2 * cache[k] + (1.0 - beta2) * grads[k] ** 2 for k in grads}
    scale1, scale2 = 1.0 - beta1**step, 1.0 - beta2**step  # bias corrections of zero starts
    new_params = dict(params)
    for k in grads:
        mhat, vhat = new_moment[k] / scale1, new_cache[k] / scale2
        new_params[k] = params[k] + lr * mhat / (np.sqrt(vhat) + eps)
    return new_params, new_moment, new_cache


# --- the observation normaliser --------------------------------------------------------

OBS_STATS_PRIOR = 1e-4  # SB3 RunningMeanStd's epsilon: the count of its prior mean 0, var 1
OBS_VAR_EPS = 1e-8  # obs_std = sqrt(var + this), SB3 VecNormalize's epsilon: std stays > 0


class ObsStats(NamedTuple):
    """Running mean and variance of the observations seen, per component (count is a float:
    it starts at OBS_STATS_PRIOR)."""

    count: float
    mean: np.ndarray
    var: np.ndarray


def new_obs_stats(obs_dim: int) -> ObsStats:
    return ObsStats(OBS_STATS_PRIOR, np.zeros(obs_dim), np.ones(obs_dim))


def update_obs_stats(stats: ObsStats, batch: np.ndarray) -> ObsStats:
    """The statistics with the rows of `batch` (M, obs_dim) added: the parallel form of
    Welford's algorithm (Chan, Golub & LeVeque 1979), as SB3's RunningMeanStd.update."""
    batch_count = len(batch)
    batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
    total = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * batch_count / total
    m2 = stats.var * stats.count + batch_var * batch_count
    m2 = m2 + delta**2 * stats.count * batch_count / total
    return ObsStats(total, mean, m2 / total)


def obs_std(stats: ObsStats) -> np.ndarray:
    """The normaliser's obs_std: the running standard deviation, never 0."""
    return np.sqrt(stats.var + OBS_VAR_EPS)
