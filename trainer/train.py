"""The training loop: play a batch of episodes, compute the policy gradient, take an RMSProp step.

One flow for both presets. A batch is played in rounds: in a round up to `num_envs`
environments start together and are stepped in lock-step by one batched forward pass until the
last one ends (finished ones are masked), so the data of a round is a (time, env) grid.
Episodes are reported in finishing order as they end, so training stops at the exact episode
that completes the solving window.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.constants import OBS_DIM
from runtime.policy import Params, forward, init_params
from trainer.cartpole import MAX_EPISODE_STEPS, CartPoleBatch
from trainer.config import TrainConfig
from trainer.reinforce import (
    backward,
    discounted_returns,
    rmsprop_step,
    standardise,
    time_baseline_advantages,
    zeros_like_params,
)

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything needed to continue a run: parameters, optimiser, RNG and the history so far."""

    params: Params
    cache: Params
    rng: np.random.Generator
    returns: list[float] = field(default_factory=list)
    env_steps: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    updates: int = 0
    last_mean_return: float = 0.0  # of the last batch: drives the lr and batch schedules
    solved_at: int | None = None

    @property
    def episodes(self) -> int:
        return len(self.returns)


def new_state(config: TrainConfig) -> TrainState:
    rng = np.random.default_rng(config.seed)
    params = init_params(config.hidden, rng)
    return TrainState(params=params, cache=zeros_like_params(params), rng=rng)


# --- environments ----------------------------------------------------------------


class GymnasiumEnvs:
    """Gymnasium's CartPole-v1 behind CartPoleBatch's reset/step interface.

    One environment uses `gymnasium.make` (the article's single-action stepping); more use
    `make_vec(..., vectorization_mode="vector_entry_point")`, one per round width. Steps after
    an environment's first end (the vector env's autoreset step among them) are masked by
    the caller, so autoreset never leaks into the data.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.envs: dict = {}
        self.num_envs = 0

    def reset(self, num_envs: int) -> np.ndarray:
        import gymnasium as gym

        self.num_envs = num_envs
        seed = None
        if num_envs not in self.envs:
            seed = int(self.rng.integers(2**31))  # seeded once; later resets continue its RNG
            if num_envs == 1:
                self.envs[num_envs] = gym.make("CartPole-v1")
            else:
                self.envs[num_envs] = gym.make_vec(
                    "CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point"
                )
        obs, _ = self.envs[num_envs].reset(seed=seed)
        return obs.reshape(num_envs, OBS_DIM)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        env = self.envs[self.num_envs]
        if self.num_envs == 1:
            obs, _, terminated, _, _ = env.step(int(action[0]))
            return obs.reshape(1, OBS_DIM), np.array([terminated])
        obs, _, terminated, _, _ = env.step(action.astype(np.int64))
        return obs, terminated

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


class NumpyEnvs(CartPoleBatch):
    def close(self) -> None:
        pass


Envs = NumpyEnvs | GymnasiumEnvs


def make_envs(config: TrainConfig, rng: np.random.Generator) -> Envs:
    return GymnasiumEnvs(rng) if config.env == "gymnasium" else NumpyEnvs(rng)


# --- one round of episodes -----------------------------------------------------------


@dataclass
class Round:
    """A (time, env) grid of one round: observations, actions, and which steps were live."""

    obs: np.ndarray  # (T, N, 4) float32
    actions: np.ndarray  # (T, N) bool, True = push right
    alive: np.ndarray  # (T, N) bool


def play_round(
    envs: Envs,
    num_envs: int,
    params: Params,
    rng: np.random.Generator,
    on_episode_end: Callable[[np.ndarray, int], bool],
) -> tuple[Round, bool]:
    """Step `num_envs` environments until every episode ends; report episodes as they end.

    `on_episode_end(lengths, steps)` gets the lengths of the episodes that ended at one time
    step (in environment order) and the live environment steps of this round so far, and
    returns True to stop at once. Returns the round and whether it stopped early. CartPole
    pays +1 per step survived, so an episode's return is its length.
    """
    # float32 weights, as on the device; the gradient is computed in float64
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    obs_grid = np.empty((MAX_EPISODE_STEPS, num_envs, OBS_DIM), dtype=np.float32)
    actions = np.empty((MAX_EPISODE_STEPS, num_envs), dtype=bool)
    uniforms = rng.random((MAX_EPISODE_STEPS, num_envs), dtype=np.float32)  # action = u < p
    lengths = np.full(num_envs, MAX_EPISODE_STEPS)
    alive = np.ones(num_envs, dtype=bool)
    running, finished_steps = num_envs, 0
    obs = envs.reset(num_envs)
    stopped = False
    for t in range(MAX_EPISODE_STEPS):
        obs_grid[t] = obs
        prob, _ = forward(params32, obs_grid[t])
        np.less(uniforms[t], prob, out=actions[t])
        obs, terminated = envs.step(actions[t])
        ended = alive & terminated if t + 1 < MAX_EPISODE_STEPS else alive.copy()
        if ended.any():
            alive &= ~ended
            lengths[ended] = t + 1
            count = int(ended.sum())
            stopped = on_episode_end(np.full(count, t + 1), finished_steps + running * (t + 1))
            finished_steps += count * (t + 1)
            running -= count
            if stopped or running == 0:
                break
    steps = t + 1
    alive_grid = np.arange(steps)[:, None] < lengths[None, :]
    return Round(obs_grid[:steps], actions[:steps], alive_grid), stopped


# --- the update --------------------------------------------------------------------


def policy_gradient(params: Params, rounds: list[Round], config: TrainConfig) -> Params:
    """The REINFORCE gradient of a batch: advantages times d log pi, summed over live steps."""
    length = max(len(r.alive) for r in rounds)
    alive = np.concatenate([_pad(r.alive, length) for r in rounds], axis=1)
    returns = discounted_returns(alive.astype(np.float64), config.gamma)  # reward 1 per live step
    if config.baseline == "time":
        advantages = time_baseline_advantages(returns, alive)[alive]
    else:
        advantages = standardise(returns[alive])
    obs = np.concatenate([_pad(r.obs, length) for r in rounds], axis=1)[alive]
    actions = np.concatenate([_pad(r.actions, length) for r in rounds], axis=1)[alive]
    prob, hidden = forward(params, obs.astype(np.float64))
    dlogit = advantages * (actions - prob)  # d log pi(a|obs) / d logit = a - p
    return backward(params, obs, hidden, dlogit)


def _pad(grid: np.ndarray, length: int) -> np.ndarray:
    if len(grid) == length:
        return grid
    padding = np.zeros((length - len(grid), *grid.shape[1:]), dtype=grid.dtype)
    return np.concatenate([grid, padding])


def progress(config: TrainConfig, mean_return: float) -> float:
    """How far the last batch's mean return is towards the target, in [0, 1]."""
    return min(max(mean_return / config.target_return, 0.0), 1.0)


def learning_rate(config: TrainConfig, mean_return: float) -> float:
    """Linear from lr to lr_final with progress: big steps while the policy is poor, small ones
    once it balances, where a big step mostly knocks a good policy off its plateau."""
    return config.lr + (config.lr_final - config.lr) * progress(config, mean_return)


def batch_size(config: TrainConfig, mean_return: float) -> int:
    """Geometric from batch to batch_final with progress: small batches give many updates per
    episode while learning; once episodes are long, wide rounds cost the step loop about the
    same per step as narrow ones, and the larger batch steadies the gradient."""
    ratio = config.batch_final / config.batch
    return int(round(config.batch * ratio ** progress(config, mean_return)))


# --- the run ------------------------------------------------------------------------


def train(
    config: TrainConfig,
    state: TrainState | None = None,
    on_batch: Callable[[TrainState], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainState:
    """Train until the trailing window reaches the target or max_episodes have been played.

    Continues `state` when given (resume). On KeyboardInterrupt the state holds the last
    completed batch (a partial batch is dropped) and the exception propagates.
    """
    state = state or new_state(config)
    envs = make_envs(config, state.rng)
    wall_offset = state.wall_s[-1] if state.wall_s else 0.0
    start = clock()
    try:
        while state.solved_at is None and state.episodes < config.max_episodes:
            rng_before = state.rng.bit_generator.state
            try:
                _train_batch(config, state, envs, lambda: wall_offset + clock() - start)
            except KeyboardInterrupt:
                state.rng.bit_generator.state = rng_before  # as if the batch never started
                raise
            if on_batch is not None:
                on_batch(state)
    finally:
        envs.close()
    return state


def _train_batch(
    config: TrainConfig,
    state: TrainState,
    envs: Envs,
    elapsed: Callable[[], float],
) -> None:
    """Play one batch and update; the history gains the batch's episodes only when it is done."""
    returns: list[float] = []
    env_steps: list[int] = []
    wall: list[float] = []
    steps_before = state.env_steps[-1] if state.env_steps else 0
    solved = False

    def on_episode_end(lengths: np.ndarray, round_steps: int) -> bool:
        nonlocal solved
        now = elapsed()
        for length in lengths.tolist():
            returns.append(float(length))
            env_steps.append(steps_before + round_steps)
            wall.append(now)
            if _is_solved(config, state.returns + returns):
                solved = True
                return True
        return state.episodes + len(returns) >= config.max_episodes

    batch = batch_size(config, state.last_mean_return)
    rounds: list[Round] = []
    for first in range(0, batch, config.num_envs):
        width = min(config.num_envs, batch - first)
        played, stopped = play_round(envs, width, state.params, state.rng, on_episode_end)
        rounds.append(played)
        steps_before += int(played.alive.sum())
        if stopped:
            break
    params, cache, updates = state.params, state.cache, state.updates
    if not solved and len(returns) == batch:  # a batch cut short by the end is not learnt from
        grads = policy_gradient(params, rounds, config)
        lr = learning_rate(config, state.last_mean_return)
        params, cache = rmsprop_step(params, grads, cache, lr, config.rms_decay, config.rms_eps)
        updates += 1
    # commit the batch in one go, so an interrupt leaves the state at a batch boundary
    state.params, state.cache, state.updates = params, cache, updates
    state.returns += returns
    state.env_steps += env_steps
    state.wall_s += wall
    state.last_mean_return = float(np.mean(returns))
    state.solved_at = state.episodes if solved else None


def _is_solved(config: TrainConfig, returns: list[float]) -> bool:
    window = config.target_window
    return len(returns) >= window and math.fsum(returns[-window:]) / window >= config.target_return
