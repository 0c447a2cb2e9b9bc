"""Greedy evaluation on Gymnasium's own environments, and an animated GIF of one episode.

Greedy: for CartPole-v1's format-1 policy push right exactly when p(right) > 0.5; for format
2 runtime.policy.greedy_action (p > 0.5, the argmax, the clipped mean). Gymnasium is imported
here, inside the functions, so importing the trainer's maths stays light.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from runtime.constants import ENV_ID
from runtime.policy import Params, PolicySpec, action_probability
from runtime.policy import greedy_action as policy_greedy_action
from trainer.cartpole import MAX_EPISODE_STEPS, CartPoleBatch

log = logging.getLogger(__name__)

EVAL_CHUNK = 100  # environments per vectorised evaluation batch
GIF_FRAME_STEP = 2  # keep every 2nd rendered frame: 25 fps of the 50 fps simulation
GIF_SCALE = 0.5  # of Gymnasium's 600x400 frames
DEFAULT_RENDER_FPS = 30  # an env whose metadata has no render_fps
FRESH_EPISODES = 100  # `lower_bound`: the evaluation a saved policy should pass (as eval's)


@dataclass(frozen=True)
class EvalResult:
    returns: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def min(self) -> float:
        return float(np.min(self.returns))

    @property
    def max(self) -> float:
        return float(np.max(self.returns))


def greedy_action(params: Params, obs: np.ndarray) -> np.ndarray:
    return action_probability(params, obs) > 0.5


def evaluate(params: Params, episodes: int, seed: int) -> EvalResult:
    """Mean/min/max return of `episodes` greedy episodes on Gymnasium's CartPole-v1.

    Episodes run in chunks of up to EVAL_CHUNK environments of Gymnasium's vectorised
    CartPole (`make_vec`, vector_entry_point); the chunk of episodes first.. is reset with
    seed + first, so the episodes depend only on `seed`. Only each environment's first episode
    counts (the autoreset step and anything after it are ignored).
    """
    import gymnasium as gym

    return _first_episodes(
        lambda n: gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point"),
        lambda obs: greedy_action(params, obs).astype(np.int64),
        episodes,
        seed,
    )


def _first_episodes(
    make_envs: Callable[[int], Any], act: Callable[[np.ndarray], Any], episodes: int, seed: int
) -> EvalResult:
    """The returns of the first episode of each environment, in chunks of up to EVAL_CHUNK
    vectorised environments, the chunk of episodes first.. reset with seed + first (the
    autoreset step and anything after it are ignored).

    A vector env seeds its environment i from seed + i (SyncVectorEnv, trainer/acrobot.py):
    chunk k reset with seed + k, as it was, replayed all but one of chunk k - 1's episodes.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    returns: list[float] = []
    for first in range(0, episodes, EVAL_CHUNK):
        n = min(EVAL_CHUNK, episodes - first)
        envs = make_envs(n)
        try:
            obs, _ = envs.reset(seed=seed + first)
            total = np.zeros(n)
            running = np.ones(n, dtype=bool)
            while running.any():
                obs, reward, terminated, truncated, _ = envs.step(act(obs))
                total += reward * running
                running &= ~(terminated | truncated)
        finally:
            envs.close()
        returns += total.tolist()
    return EvalResult(tuple(returns))


def evaluate_numpy(params: Params, episodes: int, seed: int) -> EvalResult:
    """Like `evaluate`, on the trainer's NumPy CartPole (Gymnasium's dynamics bit for bit,
    float32 observations as Gymnasium hands them out), all episodes side by side: fast enough
    to compare several candidate policies after training."""
    env = CartPoleBatch(np.random.default_rng(seed))
    obs = env.reset(episodes)
    total = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    for _ in range(MAX_EPISODE_STEPS):
        obs, terminated = env.step(greedy_action(params, obs.astype(np.float32)))
        total += running
        running &= ~terminated
        if not running.any():
            break
    return EvalResult(tuple(total.tolist()))


def lower_bound(returns: Sequence[float], z: float, fresh: int = FRESH_EPISODES) -> float:
    """A pessimistic estimate of the greedy mean return over `fresh` new episodes, from the
    returns of n measured ones: their mean less z standard errors of the difference between
    the two means, z * std * sqrt(1/n + 1/fresh) (std with n - 1 degrees of freedom).

    It ranks and accepts candidate policies: a policy that scores well on most episodes but
    fails badly on a few (an Acrobot-v1 swing stuck until the time limit at -500) has a large
    std and pays for it, where its plain mean could pass on one set of episodes and miss the
    target on the next.
    """
    if len(returns) < 2:
        raise ValueError(f"a lower bound needs at least 2 returns, got {len(returns)}")
    values = np.asarray(returns, dtype=np.float64)
    spread = float(np.std(values, ddof=1)) * math.sqrt(1 / len(values) + 1 / fresh)
    return float(np.mean(values)) - z * spread


def evaluate_env(
    params: Params,
    spec: PolicySpec,
    env_id: str,
    episodes: int,
    seed: int,
    make_envs: Callable[[int], Any] | None = None,
) -> EvalResult:
    """`evaluate` for a format-2 policy on any env: chunks of up to EVAL_CHUNK environments of
    `gymnasium.make_vec` (its vector entry point where it has one, else sync), the chunk of
    episodes first.. reset with seed + first; only each environment's first episode counts.

    `make_envs(n)`: another maker of n environments of `env_id` with make_vec's seeding (the
    trainer's NumPy Acrobot-v1, the same episodes faster)."""
    import gymnasium as gym

    return _first_episodes(
        make_envs or (lambda n: gym.make_vec(env_id, num_envs=n)),
        lambda obs: policy_greedy_action(params, np.asarray(obs, dtype=np.float64), spec),
        episodes,
        seed,
    )


def record_gif(
    params: Params,
    path: str | os.PathLike | BinaryIO,
    seed: int,
    env_id: str = ENV_ID,
    spec: PolicySpec | None = None,
) -> float:
    """Render one greedy episode (render_mode="rgb_array") to an animated GIF; returns its return.

    `spec` None: CartPole-v1's format-1 policy; else a format-2 policy for `env_id`."""
    import gymnasium as gym
    from PIL import Image

    # off-screen rendering: no display, no sound device (else SDL complains on a headless box)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    env = gym.make(env_id, render_mode="rgb_array")
    fps = env.metadata.get("render_fps") or DEFAULT_RENDER_FPS
    frames = []
    total = 0.0
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(env.render())
        done = False
        while not done:
            if spec is None:
                action = int(greedy_action(params, obs))
            else:
                action = policy_greedy_action(params, np.asarray(obs, dtype=np.float64), spec)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
            frames.append(env.render())
    finally:
        env.close()
    images = [_shrink(Image.fromarray(frame)) for frame in frames[::GIF_FRAME_STEP]]
    duration_ms = int(1000 * GIF_FRAME_STEP / fps)  # CartPole: 50 fps, 0.02 s per step
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
        optimize=True,
    )
    return total


def _shrink(image):  # noqa: ANN001, ANN202 (PIL is imported lazily)
    width, height = image.size
    return image.resize((int(width * GIF_SCALE), int(height * GIF_SCALE)))
