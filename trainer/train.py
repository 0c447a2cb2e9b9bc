"""The training loop: play episodes, and every `batch` finished episodes take one RMSProp step.

One flow for both presets. `width` environment slots are stepped in lock-step by one batched
forward pass; a slot whose episode ends is restarted at once, so no step of the loop is spent on
a finished episode. Finished episodes are reported in finishing order, so training stops at the
exact episode that completes the solving window. Every `batch` finished episodes the policy
takes a step; episodes still running then carry on under the new weights (with one slot, as in
the article, none are running at that moment).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime.constants import OBS_DIM
from runtime.policy import Params, PolicySpec, forward, init_params
from trainer.cartpole import MAX_EPISODE_STEPS, CartPoleBatch
from trainer.config import TrainConfig, solve_target
from trainer.reinforce import (
    ObsStats,
    backward,
    batch_advantages,
    rmsprop_step,
    survival_returns,
    zeros_like_params,
)

log = logging.getLogger(__name__)

RING_STEPS = 2 * MAX_EPISODE_STEPS  # rows of the step history: an episode never outlives them
UNIFORM_BLOCK = 256  # steps of action noise drawn at once
RECENT_POLICIES = 4  # weights kept from the last updates: candidates for the saved policy


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
    recent: list[Params] = field(default_factory=list)  # weights after the last few updates
    # the clock's reading at wall_s 0 in this process: set by the first train() call, so that
    # the evaluations between polishing updates count as training time (they did not)
    started: float | None = None
    # the generic flow's (trainer/gym_train.py); None and empty on CartPole-v1's flow
    spec: PolicySpec | None = None  # what the policy computes: None is format 1
    threshold: float | None = None  # the env's spec.reward_threshold
    moment: Params = field(default_factory=dict)  # Adam's first moment (cache: its second)
    obs_stats: ObsStats | None = None  # the running observation statistics (normaliser)

    @property
    def episodes(self) -> int:
        return len(self.returns)

    def trim(self) -> None:
        """Drop a half-recorded episode (an interrupt between the appends)."""
        count = min(len(self.returns), len(self.env_steps), len(self.wall_s))
        del self.returns[count:], self.env_steps[count:], self.wall_s[count:]


def new_state(config: TrainConfig) -> TrainState:
    rng = np.random.default_rng(config.seed)
    params = init_params(config.hidden, rng)
    return TrainState(params=params, cache=zeros_like_params(params), rng=rng)


# --- environments ----------------------------------------------------------------


class GymnasiumEnv:
    """One Gymnasium CartPole-v1 (`gymnasium.make`) behind CartPoleBatch's interface.

    The article's set-up: one environment stepped one action at a time.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        import gymnasium as gym

        self.env = gym.make("CartPole-v1")
        self.seed: int | None = int(rng.integers(2**31))  # the first reset seeds its RNG

    def reset(self, num_envs: int) -> np.ndarray:
        assert num_envs == 1, "the Gymnasium backend steps one environment"
        obs, _ = self.env.reset(seed=self.seed)
        self.seed = None
        return obs.reshape(1, OBS_DIM)

    def reset_where(self, ended: np.ndarray) -> np.ndarray:
        return self.reset(1)

    def widen(self, count: int) -> np.ndarray:
        raise AssertionError("the Gymnasium backend steps one environment")

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs, _, terminated, _, _ = self.env.step(int(action[0]))
        return obs.reshape(1, OBS_DIM), np.array([terminated])

    def close(self) -> None:
        self.env.close()


class NumpyEnvs(CartPoleBatch):
    def close(self) -> None:
        pass


Envs = NumpyEnvs | GymnasiumEnv


def make_envs(config: TrainConfig, rng: np.random.Generator) -> Envs:
    return GymnasiumEnv(rng) if config.backend == "gymnasium" else NumpyEnvs(rng)


# --- playing episodes ---------------------------------------------------------------


@dataclass
class Episode:
    obs: np.ndarray  # (T, 4) float32
    actions: np.ndarray  # (T,) bool, True = push right

    @property
    def length(self) -> int:
        return len(self.actions)


class Slots:
    """The running environments and the recent history of every slot (a ring of steps)."""

    def __init__(self, envs: Envs, rng: np.random.Generator, max_width: int, width: int) -> None:
        self.envs = envs
        self.rng = rng
        self.obs_ring = np.zeros((RING_STEPS, max_width, OBS_DIM), dtype=np.float32)
        self.action_ring = np.zeros((RING_STEPS, max_width), dtype=bool)
        self.start = np.zeros(max_width, dtype=np.int64)  # step at which each episode began
        self.step = 0  # steps of the loop so far
        self.env_steps = 0  # environment steps so far (width per loop step)
        self.width = width
        self.obs = envs.reset(width)

    def widen(self, width: int) -> None:
        if width > self.width:
            self.obs = self.envs.widen(width - self.width)
            self.start[self.width : width] = self.step
            self.width = width

    def episode(self, slot: int) -> Episode:
        rows = np.arange(self.start[slot], self.step) % RING_STEPS
        return Episode(self.obs_ring[rows, slot], self.action_ring[rows, slot])


def play(
    slots: Slots,
    params: Params,
    on_episode_end: Callable[[Episode, int], bool],
) -> None:
    """Step every slot until `on_episode_end(episode, env_steps)` returns True.

    CartPole pays +1 per step survived, so an episode's return is its length.
    """
    params32 = {k: v.astype(np.float32) for k, v in params.items()}  # as on the device
    width, envs, rng = slots.width, slots.envs, slots.rng
    obs_ring, action_ring, start = slots.obs_ring, slots.action_ring, slots.start
    obs, step, env_steps = slots.obs, slots.step, slots.env_steps
    oldest = int(start[:width].min())
    uniforms = rng.random((UNIFORM_BLOCK, width), dtype=np.float32)  # action = u < p
    drawn = 0  # rows of `uniforms` used
    stop = False
    while not stop:
        row = step % RING_STEPS
        obs_ring[row, :width] = obs
        prob, _ = forward(params32, obs_ring[row, :width])
        if drawn == UNIFORM_BLOCK:
            uniforms, drawn = rng.random((UNIFORM_BLOCK, width), dtype=np.float32), 0
        action = action_ring[row, :width]
        np.less(uniforms[drawn], prob, out=action)
        drawn += 1
        obs, ended = envs.step(action)
        step += 1
        env_steps += width
        if step - oldest >= MAX_EPISODE_STEPS:  # CartPole-v1's time limit
            ended = ended | (step - start[:width] >= MAX_EPISODE_STEPS)
        if not np.count_nonzero(ended):  # faster than ended.any() on a small array
            continue
        slots.step = step
        for slot in np.flatnonzero(ended).tolist():
            stop = on_episode_end(slots.episode(slot), env_steps) or stop
        obs = envs.reset_where(ended)
        start[:width][ended] = step
        oldest = int(start[:width].min())
    slots.obs, slots.step, slots.env_steps = obs, step, env_steps


# --- the update --------------------------------------------------------------------


def policy_gradient(params: Params, episodes: list[Episode], config: TrainConfig) -> Params:
    """The REINFORCE gradient of a batch: advantages times d log pi, summed over all steps."""
    lengths = np.array([episode.length for episode in episodes])
    alive = np.arange(lengths.max())[:, None] < lengths[None, :]  # (T, B) episodes side by side
    returns = survival_returns(lengths, config.gamma)  # = discounted_returns(alive, gamma)
    advantages = batch_advantages(returns, alive, config.baseline)
    obs = np.concatenate([episode.obs for episode in episodes]).astype(np.float64)
    actions = np.concatenate([episode.actions for episode in episodes])
    prob, hidden = forward(params, obs)
    dlogit = advantages * (actions - prob)  # d log pi(a|obs) / d logit = a - p
    return backward(params, obs, hidden, dlogit)


def progress(config: TrainConfig, mean_return: float) -> float:
    """How far the last batch's mean return is towards the target, in [0, 1]."""
    return min(max(mean_return / solve_target(config), 0.0), 1.0)


def learning_rate(config: TrainConfig, mean_return: float) -> float:
    """Linear from lr to lr_final with progress: big steps while the policy is poor, small ones
    once it balances, where a big step mostly knocks a good policy off its plateau."""
    return config.lr + (config.lr_final - config.lr) * progress(config, mean_return)


def batch_size(config: TrainConfig, mean_return: float) -> int:
    """Geometric from batch to batch_final with progress: small batches give many updates per
    episode while learning; once episodes are long, more slots cost the step loop about the same
    per step as few, and the larger batch steadies the gradient."""
    ratio = config.batch_final / config.batch
    return int(round(config.batch * ratio ** progress(config, mean_return)))


# --- the run ------------------------------------------------------------------------


def train(
    config: TrainConfig,
    state: TrainState | None = None,
    on_batch: Callable[[TrainState], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    extra_updates: int | None = None,
) -> TrainState:
    """Train until the trailing window reaches the target or max_episodes have been played.

    With `extra_updates`, ignore the target and stop after that many more updates instead
    (the polishing of a solved run whose greedy policy is not yet good enough).

    Continues `state` when given (resume): weights, optimiser, RNG and history carry on; the
    environments start fresh episodes, and finished episodes not yet learnt from (less than a
    batch) stay in the history but are not learnt from. On KeyboardInterrupt the state holds
    every finished episode and the last update; the exception propagates so that the caller
    can save it.
    """
    state = state or new_state(config)
    polishing = extra_updates is not None
    last_update = state.updates + (extra_updates or 0)
    if not polishing and state.solved_at is not None and not is_solved(config, state.returns):
        state.solved_at = None  # resumed with a higher target
    envs = make_envs(config, state.rng)
    steps_offset = state.env_steps[-1] if state.env_steps else 0
    if state.started is None:  # a new run, or resumed in this process: carry on from wall_s
        state.started = clock() - (state.wall_s[-1] if state.wall_s else 0.0)
    slots = Slots(envs, state.rng, config.num_envs, _width(config, state))
    batch: list[Episode] = []

    def on_episode_end(episode: Episode, env_steps: int) -> bool:
        if state.episodes >= config.max_episodes or (not polishing and state.solved_at):
            return True  # another episode ending at the same step as the last one: not counted
        state.returns.append(float(episode.length))
        state.env_steps.append(steps_offset + env_steps)
        state.wall_s.append(clock() - state.started)
        batch.append(episode)
        if not polishing and is_solved(config, state.returns):
            state.solved_at = state.episodes
            return True
        return state.episodes >= config.max_episodes or len(batch) >= _batch(config, state)

    def running() -> bool:
        more = state.updates < last_update if polishing else state.solved_at is None
        return more and state.episodes < config.max_episodes

    try:
        while running():
            play(slots, state.params, on_episode_end)
            if len(batch) >= _batch(config, state) and (polishing or state.solved_at is None):
                _update(config, state, batch)
                batch.clear()
                slots.widen(_width(config, state))
                if on_batch is not None:
                    on_batch(state)
    except KeyboardInterrupt:
        state.trim()
        raise
    finally:
        envs.close()
    return state


def _batch(config: TrainConfig, state: TrainState) -> int:
    return batch_size(config, state.last_mean_return)


def _width(config: TrainConfig, state: TrainState) -> int:
    return min(config.num_envs, _batch(config, state))


def _update(config: TrainConfig, state: TrainState, batch: list[Episode]) -> None:
    grads = policy_gradient(state.params, batch, config)
    lr = learning_rate(config, state.last_mean_return)
    params, cache = rmsprop_step(
        state.params, grads, state.cache, lr, config.rms_decay, config.rms_eps
    )
    # one assignment: an interrupt leaves the old or the new weights with their optimiser state
    state.params, state.cache, state.updates, state.last_mean_return = (
        params,
        cache,
        state.updates + 1,
        float(np.mean([episode.length for episode in batch])),
    )
    state.recent = [*state.recent[-(RECENT_POLICIES - 1) :], params]


def is_solved(config: TrainConfig, returns: list[float], threshold: float | None = None) -> bool:
    """The mean of the last target_window returns reaches the target (`solve_target`)."""
    window = config.target_window
    target = solve_target(config, threshold)
    return len(returns) >= window and math.fsum(returns[-window:]) / window >= target
