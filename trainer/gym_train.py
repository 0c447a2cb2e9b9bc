"""The generic flow: REINFORCE on any Gymnasium environment through `gymnasium.make_vec`.

CartPole-v1's format-1 config keeps trainer/train.py (the NumPy fast path and its numbers);
every other config trains here. The policy is format 2 (runtime/policy.py), its spec chosen
from the spaces (`spec_from_spaces`):

    Box observations, 1-D, 1..MAX_OBS_DIM values (Dict, Tuple, images ndim > 1: refused)
    Discrete(2) -> bernoulli: one logit, as CartPole's policy (the device's fast path runs
        it when it has no biases or normaliser); Discrete(n), n >= 3 -> categorical
    Box(k) actions -> gaussian, mean W2 h + b2 and a state-independent log_std; the bounds
        must be finite (infinite ones are refused: they cannot be clipped to, and format 2's
        action_low/high are finite float32); the env gets the sampled action clipped to the
        bounds, the gradient uses the sampled, unclipped one (its log-probability is the one
        the policy gave)
    MultiDiscrete, MultiBinary, Text, Discrete with start != 0: refused

Episodes: `width` = min(num_envs, batch) environments of make_vec (the env's own vector entry
point where it has one, else sync; Acrobot-v1 on backend auto or numpy: trainer/acrobot.py,
the same bits), stepped in lock-step by one batched forward pass.
Gymnasium 1.x autoresets: in NEXT_STEP mode (the default) the step after an episode's end
only resets that environment (its action is ignored, reward 0): it is not a transition and
is never learnt from; in SAME_STEP mode the step returns the next episode's first
observation at once. Rewards are the env's, per step. An episode ends at termination or
truncation (the env's TimeLimit); its discounted returns are sums of the rewards up to there,
without bootstrapping: a truncated episode's returns end where it was cut (Monte-Carlo
returns of the episode as played). An env with no time limit that never terminates never
ends an episode. Every `batch` finished episodes one update (RMSProp or Adam, constant
--lr and --batch: the CartPole schedules assume returns in 0..500); episodes still running
carry on under the new weights.

With --normaliser, the running mean/std of the observations (parallel Welford) is updated
from each batch's observations after its update, so that an update's gradient uses the
normaliser its actions were sampled with; obs_mean/obs_std in the params are always those
statistics, and the saved policy carries them frozen.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from runtime.constants import (
    HEAD_BERNOULLI,
    HEAD_CATEGORICAL,
    HEAD_GAUSSIAN,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_W2,
    MAX_ACTION_DIM,
    MAX_OBS_DIM,
)
from runtime.policy import (
    FLOAT32_MAX,
    Params,
    PolicySpec,
    forward_pass,
    gaussian_std,
    init_params,
    sigmoid,
    softmax,
)
from trainer.config import TrainConfig, numpy_vector_env, solve_target
from trainer.reinforce import (
    adam_step,
    batch_advantages,
    discounted_returns,
    log_likelihood_gradient,
    new_obs_stats,
    obs_std,
    rmsprop_step,
    update_obs_stats,
    zeros_like_params,
)
from trainer.train import RECENT_POLICIES, TrainState, is_solved

log = logging.getLogger(__name__)

# W2 starts this much smaller than Xavier's N(0, 1/H): a near-uniform first policy (the last
# layer's weights 100x smaller, Andrychowicz et al. 2021, "What matters in on-policy RL").
# Measured on Acrobot-v1 (Adam, lr 0.01, seed 1): at full scale the first policy favours one
# torque, every episode times out at -500, all returns are equal and the time baseline's
# advantages are 0, so it never learns in 3,000 episodes; at 0.01 it explores and solves at 544.
OUTPUT_INIT_SCALE = 0.01


@dataclass(frozen=True)
class EnvInfo:
    """What the trainer needs to know of an env before training: checked, one line if not."""

    env_id: str
    spec: PolicySpec
    threshold: float | None  # spec.reward_threshold
    max_episode_steps: int | None


# --- the env and its spaces --------------------------------------------------------


def find_env_spec(env_id: str) -> Any:
    """Gymnasium's EnvSpec of `env_id`; `module:EnvName-v0` imports `module` first (its
    import registers the env: Gymnasium's convention for custom environments). ValueError
    names the id and what is wrong."""
    import gymnasium as gym

    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 (any failure of a user's module is one line)
            raise ValueError(f"env {env_id}: cannot import module {module!r}: {error}") from None
    try:
        return gym.spec(name)
    except gym.error.Error as error:
        raise ValueError(f"env {env_id}: not a registered Gymnasium env ({error})") from None


class EnvProbe(NamedTuple):
    """What one made (and closed) env says of itself."""

    env_spec: Any  # Gymnasium's EnvSpec
    observation_space: Any
    action_space: Any
    render_modes: list[str]


def probe_env(env_id: str) -> EnvProbe:
    """Make one env of `env_id` (`find_env_spec`) to read its spaces and render modes, with
    Gymnasium's env-checker warnings silenced. ValueError names the id and what is wrong."""
    import warnings

    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env_spec = find_env_spec(env_id)
        try:
            env = gym.make(env_spec)
        except Exception as error:  # noqa: BLE001 (a user's env may fail any way)
            raise ValueError(f"env {env_id}: cannot be made: {error}") from None
        try:
            modes = list(env.metadata.get("render_modes") or [])
            return EnvProbe(env_spec, env.observation_space, env.action_space, modes)
        finally:
            env.close()


def inspect_env(config: TrainConfig) -> EnvInfo:
    """Check config.env: registered, spaces the policy can serve, a solving target; makes one
    env to read its spaces. ValueError with one line naming what is refused."""
    probe = probe_env(config.env)
    spec = spec_from_spaces(
        probe.observation_space, probe.action_space, config.hidden, config.activation
    )
    threshold = probe.env_spec.reward_threshold
    solve_target(config, threshold)  # --target-return required without a threshold
    return EnvInfo(config.env, spec, threshold, probe.env_spec.max_episode_steps)


def spec_from_spaces(
    observation_space: Any, action_space: Any, hidden: int, activation: str
) -> PolicySpec:
    """The format-2 policy for these spaces (module docstring); ValueError names a space the
    policy cannot serve."""
    from gymnasium import spaces

    obs = observation_space
    if not isinstance(obs, spaces.Box):
        raise ValueError(f"observation space {obs} is not supported: only a Box vector is")
    if len(obs.shape) != 1:
        raise ValueError(
            f"observation space {obs} has shape {obs.shape}: only 1-D Box observations"
            " (images and other arrays are not supported)"
        )
    if not 1 <= obs.shape[0] <= MAX_OBS_DIM:
        raise ValueError(
            f"observation space {obs} has {obs.shape[0]} values: at most {MAX_OBS_DIM}"
        )
    obs_dim, act = obs.shape[0], action_space
    common = {"hidden": hidden, "obs_dim": obs_dim, "activation": activation}
    if isinstance(act, spaces.Discrete):
        if int(act.start) != 0 or not 2 <= int(act.n) <= MAX_ACTION_DIM:
            raise ValueError(
                f"action space {act} is not supported: Discrete(n) starting at 0 with"
                f" n in 2..{MAX_ACTION_DIM}"
            )
        if int(act.n) == 2:
            return PolicySpec(**common, head=HEAD_BERNOULLI, action_dim=1)
        return PolicySpec(**common, head=HEAD_CATEGORICAL, action_dim=int(act.n))
    if isinstance(act, spaces.Box):
        if len(act.shape) != 1 or not 1 <= act.shape[0] <= MAX_ACTION_DIM:
            raise ValueError(
                f"action space {act} is not supported: a Box(k) of 1..{MAX_ACTION_DIM} values"
            )
        low, high = act.low.astype(np.float64), act.high.astype(np.float64)
        if not (np.all(np.abs(low) <= FLOAT32_MAX) and np.all(np.abs(high) <= FLOAT32_MAX)):
            raise ValueError(
                f"action space {act} has infinite bounds: the gaussian head clips its actions"
                " to finite bounds (wrap the env with gymnasium.wrappers.ClipAction or"
                " RescaleAction)"
            )
        return PolicySpec(
            **common,
            head=HEAD_GAUSSIAN,
            action_dim=act.shape[0],
            action_low=tuple(low.tolist()),
            action_high=tuple(high.tolist()),
        )
    raise ValueError(f"action space {act} is not supported: only Discrete(n) or Box(k) actions")


# --- the state -----------------------------------------------------------------------


def new_env_state(config: TrainConfig, info: EnvInfo) -> TrainState:
    rng = np.random.default_rng(config.seed)
    params = init_params(
        config.hidden, rng, spec=info.spec, biases=config.biases, normaliser=config.normaliser
    )
    params[KEY_W2] = params[KEY_W2] * OUTPUT_INIT_SCALE
    cache = zeros_like_params(params)
    return TrainState(
        params=params,
        cache=cache,
        rng=rng,
        spec=info.spec,
        threshold=info.threshold,
        moment=zeros_like_params(params) if config.optimizer == "adam" else {},
        obs_stats=new_obs_stats(info.spec.obs_dim) if config.normaliser else None,
    )


# --- playing episodes ---------------------------------------------------------------


@dataclass
class Episode:
    obs: np.ndarray  # (T, obs_dim) float64
    actions: np.ndarray  # (T,) int64, or (T, k) float64 gaussian samples (unclipped)
    rewards: np.ndarray  # (T,) float64

    @property
    def length(self) -> int:
        return len(self.rewards)

    @property
    def total(self) -> float:
        return math.fsum(self.rewards.tolist())


@dataclass
class Slots:
    """The vector env, its current observations and every running episode's steps so far."""

    envs: Any
    width: int
    obs: np.ndarray
    next_step: bool  # NEXT_STEP autoreset: the step after an end only resets
    resetting: np.ndarray  # (width,) bool: this env's next step is its autoreset step
    steps: list[list[tuple[np.ndarray, Any, float]]] = field(default_factory=list)
    env_steps: int = 0


def make_vector_env(config: TrainConfig, width: int) -> Any:
    """`width` environments of config.env: this package's NumPy vector env where it has one
    (trainer/acrobot.py, make_vec's sync env bit for bit), else gymnasium.make_vec."""
    if numpy_vector_env(config):
        from trainer.acrobot import AcrobotVectorEnv

        return AcrobotVectorEnv(width)
    import gymnasium as gym

    # vectorization_mode None: the env's vector entry point where it has one, else sync
    return gym.make_vec(config.env, num_envs=width)


def open_slots(config: TrainConfig, width: int, rng: np.random.Generator) -> Slots:
    from gymnasium.vector import AutoresetMode

    envs = make_vector_env(config, width)
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        envs.close()
        raise ValueError(f"env {config.env}: autoreset mode {mode} is not supported")
    obs, _ = envs.reset(seed=int(rng.integers(2**31)))
    return Slots(
        envs=envs,
        width=width,
        obs=np.asarray(obs, dtype=np.float64),
        next_step=mode == AutoresetMode.NEXT_STEP,
        resetting=np.zeros(width, dtype=bool),
        steps=[[] for _ in range(width)],
    )


def sample(
    params: Params, spec: PolicySpec, obs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(actions to learn from, actions for the env) for a batch of observations (N, obs_dim)."""
    output = forward_pass(params, obs, spec)[1]
    if spec.head == HEAD_BERNOULLI:
        action = (rng.random(len(obs)) < sigmoid(output)).astype(np.int64)
        return action, action
    if spec.head == HEAD_CATEGORICAL:
        # inverse CDF: the first action whose cumulative probability exceeds u
        cumulative = np.cumsum(softmax(output), axis=1)
        u = rng.random((len(obs), 1))
        action = np.minimum((cumulative < u).sum(axis=1), spec.action_dim - 1).astype(np.int64)
        return action, action
    action = output + gaussian_std(params) * rng.standard_normal(output.shape)
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    return action, np.clip(action, low, high).astype(np.float32)


def play(
    slots: Slots,
    params: Params,
    spec: PolicySpec,
    rng: np.random.Generator,
    on_episode_end: Callable[[Episode, int], bool],
) -> None:
    """Step every env until `on_episode_end(episode, env_steps)` returns True."""
    stop = False
    while not stop:
        learnt, action = sample(params, spec, slots.obs, rng)
        obs, reward, terminated, truncated, _ = slots.envs.step(action)
        slots.env_steps += slots.width
        recorded = ~slots.resetting  # an autoreset step is no transition of any episode
        for slot in np.flatnonzero(recorded).tolist():
            slots.steps[slot].append((slots.obs[slot], learnt[slot], float(reward[slot])))
        ended = (np.asarray(terminated) | np.asarray(truncated)) & recorded
        for slot in np.flatnonzero(ended).tolist():
            steps, slots.steps[slot] = slots.steps[slot], []
            episode = Episode(
                np.array([step[0] for step in steps]),
                np.array([step[1] for step in steps]),
                np.array([step[2] for step in steps], dtype=np.float64),
            )
            stop = on_episode_end(episode, slots.env_steps) or stop
        slots.resetting = ended if slots.next_step else np.zeros_like(ended)
        slots.obs = np.asarray(obs, dtype=np.float64)


# --- the update --------------------------------------------------------------------


def policy_gradient(
    params: Params, spec: PolicySpec, episodes: list[Episode], config: TrainConfig
) -> Params:
    """The REINFORCE gradient of a batch: advantages of the discounted per-step rewards."""
    lengths = np.array([episode.length for episode in episodes])
    alive = np.arange(lengths.max())[:, None] < lengths[None, :]  # (T, B) episodes side by side
    rewards = np.zeros(alive.shape)
    for column, episode in enumerate(episodes):
        rewards[: episode.length, column] = episode.rewards
    returns = discounted_returns(rewards, config.gamma)  # 0 reward after the end: no leak
    advantages = batch_advantages(returns, alive, config.baseline)
    obs = np.concatenate([episode.obs for episode in episodes])
    actions = np.concatenate([episode.actions for episode in episodes])
    return log_likelihood_gradient(params, spec, obs, actions, advantages)


def update(config: TrainConfig, state: TrainState, batch: list[Episode]) -> None:
    """One optimiser step on the batch, then the normaliser takes in its observations."""
    grads = policy_gradient(state.params, state.spec, batch, config)
    moment = state.moment
    if config.optimizer == "adam":
        params, moment, cache = adam_step(
            state.params, grads, state.moment, state.cache, state.updates + 1, config.lr
        )
    else:
        params, cache = rmsprop_step(
            state.params, grads, state.cache, config.lr, config.rms_decay, config.rms_eps
        )
    stats = state.obs_stats
    if stats is not None:
        stats = update_obs_stats(stats, np.concatenate([episode.obs for episode in batch]))
        params = {**params, KEY_OBS_MEAN: stats.mean.copy(), KEY_OBS_STD: obs_std(stats)}
    mean_return = float(np.mean([episode.total for episode in batch]))
    # one assignment: an interrupt leaves the old or the new weights with their optimiser state
    state.params, state.cache, state.moment, state.obs_stats, state.updates = (
        params,
        cache,
        moment,
        stats,
        state.updates + 1,
    )
    state.last_mean_return = mean_return  # drives nothing here: kept for the checkpoint
    state.recent = [*state.recent[-(RECENT_POLICIES - 1) :], params]


# --- the run ------------------------------------------------------------------------


def train_env(
    config: TrainConfig,
    state: TrainState,
    on_batch: Callable[[TrainState], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    extra_updates: int | None = None,
) -> TrainState:
    """Train until the trailing window reaches the target or max_episodes have been played.

    With `extra_updates`, ignore the target and stop after that many more updates instead
    (the polishing of a solved run whose greedy policy is not yet good enough).

    `state` from `new_env_state` or a checkpoint (resume: the envs start fresh episodes).
    On KeyboardInterrupt the state holds every finished episode and the last update; the
    exception propagates so that the caller can save it.
    """
    threshold = state.threshold
    polishing = extra_updates is not None
    last_update = state.updates + (extra_updates or 0)
    if (
        not polishing
        and state.solved_at is not None
        and not is_solved(config, state.returns, threshold)
    ):
        state.solved_at = None  # resumed with a higher target
    steps_offset = state.env_steps[-1] if state.env_steps else 0
    if state.started is None:
        state.started = clock() - (state.wall_s[-1] if state.wall_s else 0.0)
    batch: list[Episode] = []

    def on_episode_end(episode: Episode, env_steps: int) -> bool:
        if state.episodes >= config.max_episodes or (not polishing and state.solved_at):
            return True  # another episode ending at the same step as the last one: not counted
        state.returns.append(episode.total)
        state.env_steps.append(steps_offset + env_steps)
        state.wall_s.append(clock() - state.started)
        batch.append(episode)
        if not polishing and is_solved(config, state.returns, threshold):
            state.solved_at = state.episodes
            return True
        return state.episodes >= config.max_episodes or len(batch) >= config.batch

    def more() -> bool:
        if state.episodes >= config.max_episodes:
            return False
        return state.updates < last_update if polishing else state.solved_at is None

    if not more():
        return state
    slots = open_slots(config, min(config.num_envs, config.batch), state.rng)
    try:
        while more():
            play(slots, state.params, state.spec, state.rng, on_episode_end)
            if len(batch) >= config.batch and (polishing or state.solved_at is None):
                update(config, state, batch)
                batch.clear()
                if on_batch is not None:
                    on_batch(state)
    except KeyboardInterrupt:
        state.trim()
        raise
    finally:
        slots.envs.close()
    return state
