"""Benchmark: training to solve Gymnasium envs; CartPole-v1's default against the article's preset.

    .venv/bin/python bench/train.py                  # every env: CartPole-v1, Acrobot-v1,
                                                     # InvertedPendulum-v5; 5 seeds each
    .venv/bin/python bench/train.py --env CartPole-v1 --seeds 20 --preset-seeds 3
    .venv/bin/python bench/train.py --env Acrobot-v1,InvertedPendulum-v5 --seeds 10
    .venv/bin/python bench/train.py --env CartPole-v1 --variant const16:batch=16,batch_final=16

For each env and seed: episodes to solve (trailing-100 mean >= the env's reward_threshold),
environment steps and wall seconds until then (training only: no imports, no saving), and an
independent greedy evaluation of the policy as saved (the float32 policy.npz bytes, read back
with parse_policy) on 100 episodes of Gymnasium's own env (`gymnasium.make(env_id)`, one
episode per seed 10000..10099), computed here and not with the trainer's evaluation code.
Then medians per configuration, and on CartPole-v1 the ratios against the preset.

Each env has one benchmark configuration (`ENV_CONFIGS`; CartPole-v1 also runs the preset).
Where stable-baselines3 is importable (the `peers` extra), SB3's PPO with
rl-baselines3-zoo's tuned hyperparameters (`ZOO_PPO`) runs on each env too (--peer-seeds,
--no-peers) until its trailing-100 mean reaches the threshold, and the ratios ours/theirs of
the median episodes, steps and wall seconds are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe as machine  # noqa: E402
from runtime.policy import make_meta, parse_policy, policy_bytes  # noqa: E402
from trainer.config import TrainConfig, cartpole_flow, preset  # noqa: E402

EVAL_EPISODES = 100
EVAL_FIRST_SEED = 10_000
CARTPOLE = "CartPole-v1"
DEFAULT_ENVS = (CARTPOLE, "Acrobot-v1", "InvertedPendulum-v5")
# the normalised observation's clip, as policy format 2 defines it (docs/runtime.md)
FORMAT_OBS_CLIP = 10.0

# One benchmark configuration per env beyond CartPole-v1 (whose default is the trainer's
# default): the best of short tuning runs, docs/performance.md "Training on other environments".
ENV_CONFIGS: dict[str, dict[str, Any]] = {
    "Acrobot-v1": {
        "activation": "tanh",
        "biases": True,
        "normaliser": True,
        "optimizer": "rmsprop",
        "lr": 0.02,
        "batch": 16,
        "num_envs": 16,  # 8: 307 and 447 episodes for seeds 0 and 1, 16: 293 and 391
        "max_episodes": 2000,
    },
    "InvertedPendulum-v5": {
        "activation": "tanh",
        "biases": True,
        "normaliser": True,
        # seeds 0-4: Adam at 0.01 median 117k steps and 4.5 s to solve; RMSProp at 0.02 166k
        # and 6.6 s; Adam at 0.02 142k; RMSProp at 0.03 229k
        "optimizer": "adam",
        "lr": 0.01,
        "batch": 8,
        "num_envs": 8,
        "gamma": 0.95,  # 0.99: 416k steps to solve seed 0, 0.95: 131k
        "max_episodes": 5000,
    },
}

# rl-baselines3-zoo's hyperparams/ppo.yml, tuned entries (InvertedPendulum: the zoo's v3/v4
# entry, the same env one version earlier); "lin_x" is a rate decaying linearly from x to 0
ZOO_PPO: dict[str, dict[str, Any]] = {
    CARTPOLE: {
        "n_envs": 8,
        "n_timesteps": 100_000,
        "normalize": False,
        "kwargs": {
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": "lin_0.001",
            "clip_range": "lin_0.2",
        },
    },
    "Acrobot-v1": {
        "n_envs": 16,
        "n_timesteps": 1_000_000,
        "normalize": True,
        "kwargs": {
            "n_steps": 256,
            "gae_lambda": 0.94,
            "gamma": 0.99,
            "n_epochs": 4,
            "ent_coef": 0.0,
        },
    },
    "InvertedPendulum-v5": {
        "n_envs": 1,
        "n_timesteps": 1_000_000,
        "normalize": True,
        "kwargs": {
            "n_steps": 32,
            "batch_size": 64,
            "gamma": 0.999,
            "learning_rate": 0.000222425,
            "ent_coef": 1.37976e-07,
            "clip_range": 0.4,
            "n_epochs": 5,
            "gae_lambda": 0.9,
            "max_grad_norm": 0.3,
            "vf_coef": 0.19816,
        },
    },
}


@dataclass(frozen=True)
class Result:
    name: str
    seed: int
    solved: bool
    episodes: int
    env_steps: int
    wall_s: float
    eval_mean: float
    eval_min: float
    polish: int  # episodes trained after solving until the greedy policy reached the target
    env: str = CARTPOLE
    threshold: float = 475.0

    @property
    def eval_reached(self) -> bool:
        return self.eval_mean >= self.threshold


# --- the independent evaluation -------------------------------------------------------


def greedy(params: dict[str, np.ndarray], spec: Any, obs: np.ndarray) -> Any:
    """The greedy action of a parsed policy, computed here from its arrays (not the runtime's
    forward pass): bernoulli p > 0.5, categorical argmax, gaussian the mean clipped to the
    bounds."""
    x = np.asarray(obs, dtype=np.float64)
    if "obs_mean" in params:
        x = np.clip((x - params["obs_mean"]) / params["obs_std"], -FORMAT_OBS_CLIP, FORMAT_OBS_CLIP)
    pre = params["W1"].astype(np.float64) @ x + params.get("b1", 0.0)
    hidden = np.tanh(pre) if spec.activation == "tanh" else np.maximum(pre, 0.0)
    w2 = params["W2"].astype(np.float64)
    out = w2 @ hidden + params.get("b2", 0.0)
    if spec.head == "bernoulli":
        logit = float(np.ravel(out)[0])
        return int(1.0 / (1.0 + np.exp(-logit)) > 0.5)
    if spec.head == "categorical":
        return int(np.argmax(out))
    low, high = np.array(spec.action_low), np.array(spec.action_high)
    return np.clip(out, low, high).astype(np.float32)


def independent_eval(data: bytes, env_id: str, episodes: int = EVAL_EPISODES) -> list[float]:
    """Greedy returns of the policy in `data` (policy.npz bytes) on gymnasium.make(env_id),
    one episode per seed EVAL_FIRST_SEED.."""
    import gymnasium as gym

    policy = parse_policy(data)
    env = gym.make(env_id)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=EVAL_FIRST_SEED + episode)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(
                    greedy(policy.params, policy.spec, obs)
                )
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


# --- our runs -----------------------------------------------------------------------


def env_config(env_id: str, seed: int, **overrides: Any) -> TrainConfig:
    """The benchmark configuration of `env_id` (CartPole-v1: the default)."""
    values = {**ENV_CONFIGS.get(env_id, {}), **overrides}
    return preset("default", env=env_id, seed=seed, eval_episodes=0, **values)


def run(name: str, config: TrainConfig, eval_episodes: int = EVAL_EPISODES) -> Result:
    """Train, save the policy as the CLI does (bytes), evaluate those bytes independently."""
    if cartpole_flow(config):
        return _run_cartpole(name, config, eval_episodes)
    from trainer.cli import finish_env
    from trainer.gym_train import inspect_env, new_env_state, train_env

    info = inspect_env(config)
    state = train_env(config, new_env_state(config, info))
    solved = state.solved_at, state.episodes, state.env_steps[-1], state.wall_s[-1]
    # the policy the CLI saves: the newest candidate whose greedy lower bound passes the
    # screen and a confirmation, polished by further updates while none does; format 2
    policy, _ = finish_env(config, state)
    data = policy_bytes(policy, make_meta(spec=state.spec, env_id=config.env, version=1))
    returns = independent_eval(data, config.env, eval_episodes)
    return _result(name, config, state, solved, returns, info.threshold)


def _run_cartpole(name: str, config: TrainConfig, eval_episodes: int) -> Result:
    from trainer.cli import finish
    from trainer.config import CARTPOLE_THRESHOLD
    from trainer.train import train

    state = train(config)
    solved = state.solved_at, state.episodes, state.env_steps[-1], state.wall_s[-1]
    # the policy the CLI saves, chosen and polished as for any env (trainer.cli._polish)
    policy, _ = finish(config, state)
    data = policy_bytes(policy, make_meta(hidden=int(policy["W1"].shape[0]), version=1))
    returns = independent_eval(data, config.env, eval_episodes)
    return _result(name, config, state, solved, returns, CARTPOLE_THRESHOLD)


def _result(
    name: str, config: TrainConfig, state: Any, solved: tuple, returns: list, threshold: float
) -> Result:
    """`solved`: (solved_at, episodes, env steps, wall s) when training stopped, before any
    polishing (whose episodes are counted apart)."""
    solved_at, episodes, steps, wall = solved
    return Result(
        name=name,
        seed=config.seed,
        solved=solved_at is not None,
        episodes=solved_at or episodes,
        env_steps=steps,
        wall_s=wall,
        polish=state.episodes - (solved_at or episodes),
        eval_mean=float(np.mean(returns)),
        eval_min=float(np.min(returns)),
        env=config.env,
        threshold=float(threshold),
    )


# --- SB3's PPO ------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerResult:
    env: str
    seed: int
    solved: bool
    episodes: int
    env_steps: int
    wall_s: float


def sb3_available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def run_sb3(env_id: str, seed: int, threshold: float, max_steps: int | None = None) -> PeerResult:
    """SB3 PPO with the zoo's hyperparameters until the trailing-100 mean of its training
    episodes (Monitor's raw returns) reaches `threshold`, or the zoo's n_timesteps (at most
    `max_steps`)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    zoo = ZOO_PPO[env_id]

    def rate(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("lin_"):
            start = float(value[4:])
            return lambda progress: progress * start  # progress_remaining 1 -> 0
        return value

    kwargs = {key: rate(value) for key, value in zoo["kwargs"].items()}
    envs = make_vec_env(env_id, n_envs=zoo["n_envs"], seed=seed)
    if zoo["normalize"]:
        envs = VecNormalize(envs)

    class UntilSolved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: list[float] = []
            self.started = 0.0
            self.solved_at: tuple[int, int, float] | None = None

        def _on_training_start(self) -> None:
            self.started = time.perf_counter()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    window = self.returns[-100:]
                    if len(window) == 100 and sum(window) / 100 >= threshold:
                        wall = time.perf_counter() - self.started
                        self.solved_at = (len(self.returns), self.num_timesteps, wall)
                        return False
            return True

    callback = UntilSolved()
    model = PPO("MlpPolicy", envs, seed=seed, verbose=0, device="cpu", **kwargs)
    budget = min(zoo["n_timesteps"], max_steps or zoo["n_timesteps"])
    model.learn(total_timesteps=budget, callback=callback)
    envs.close()
    if callback.solved_at is None:
        wall = time.perf_counter() - callback.started
        return PeerResult(env_id, seed, False, len(callback.returns), model.num_timesteps, wall)
    episodes, steps, wall = callback.solved_at
    return PeerResult(env_id, seed, True, episodes, steps, wall)


# --- the report -----------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition(":")
    values: dict = {}
    for item in filter(None, assignments.split(",")):
        key, _, raw = item.partition("=")
        field = TrainConfig.__dataclass_fields__[key]
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        values[key] = {"int": int, "float": float}.get(kind, str)(raw)
    return name, values


def summarise(results: list[Result], reference: list[Result] | None) -> str:
    solved = [r for r in results if r.solved]
    episodes = [r.episodes for r in solved]
    walls = [r.wall_s for r in solved]
    line = (
        f"{results[0].name:>10} | {len(solved)}/{len(results)} solved"
        f" | episodes median {_median(episodes)} (max {max(episodes, default=0)})"
        f" | env steps median {_median([r.env_steps for r in solved])}"
        f" | wall median {_median(walls, '.3f')} s (max {max(walls, default=0):.3f})"
        f" | greedy eval mean of means {np.mean([r.eval_mean for r in results]):.1f},"
        f" worst run {min(r.eval_mean for r in results):.1f}"
        f" | eval >= {results[0].threshold:g}: {sum(r.eval_reached for r in results)}/{len(results)}"
    )
    if reference and solved:
        ref_solved = [r for r in reference if r.solved] or reference
        ratio_episodes = statistics.median(episodes) / statistics.median(
            [r.episodes for r in ref_solved]
        )
        speedup = statistics.median([r.wall_s for r in ref_solved]) / statistics.median(walls)
        line += f"\n{'':>10} | ratio to preset: episodes x{ratio_episodes:.3f}, wall-time speed-up {speedup:.0f}x"
    return line


def peer_ratios(ours: list[Result], theirs: list[PeerResult]) -> str:
    """Medians of SB3's solved runs and the ratios ours/theirs of the medians."""
    mine = [r for r in ours if r.solved]
    peer = [r for r in theirs if r.solved]
    line = (
        f"{'sb3 ppo':>10} | {len(peer)}/{len(theirs)} solved"
        f" | episodes median {_median([r.episodes for r in peer])}"
        f" | env steps median {_median([r.env_steps for r in peer])}"
        f" | wall median {_median([r.wall_s for r in peer], '.3f')} s"
    )
    if mine and peer:
        ratios = [
            statistics.median([getattr(r, key) for r in mine])
            / statistics.median([getattr(r, key) for r in peer])
            for key in ("episodes", "env_steps", "wall_s")
        ]
        line += (
            f"\n{'':>10} | ours/SB3 PPO: episodes x{ratios[0]:.3f}, env steps x{ratios[1]:.3f},"
            f" wall x{ratios[2]:.3f}"
        )
    return line


def _median(values: list, spec: str = "g") -> str:
    return format(statistics.median(values), spec) if values else "-"


def env_ids(texts: list[str]) -> list[str]:
    """--env values (repeatable, or comma lists) in order, each once; default DEFAULT_ENVS."""
    ids: list[str] = []
    for text in texts:
        ids += [
            item.strip() for item in text.split(",") if item.strip() and item.strip() not in ids
        ]
    return ids or list(DEFAULT_ENVS)


def mujoco_note(env_id: str) -> str | None:
    """Why a MuJoCo env cannot run here (one line), or None."""
    import gymnasium as gym

    try:
        gym.make(env_id).close()
    except Exception as error:  # noqa: BLE001 (a missing mujoco fails in several ways)
        return f"{env_id}: skipped, it cannot be made here ({type(error).__name__}: {error}); pip install 'reinforce-edge[mujoco]'"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="ID[,ID...]",
        help=f"env ids, repeatable or comma lists (default {','.join(DEFAULT_ENVS)})",
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per env (default 5)")
    parser.add_argument(
        "--preset-seeds", type=int, default=3, help="CartPole-v1 seed-preset seeds (default 3)"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="also run CartPole-v1's default with these config changes (repeatable)",
    )
    parser.add_argument(
        "--peer-seeds",
        type=int,
        default=1,
        help="SB3 PPO seeds per env where importable (default 1)",
    )
    parser.add_argument(
        "--peer-max-steps",
        type=int,
        default=None,
        help="SB3 PPO's step budget at most this (default the zoo's n_timesteps)",
    )
    parser.add_argument("--no-peers", action="store_true", help="do not run SB3's PPO")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    peers = not args.no_peers and args.peer_seeds > 0 and sb3_available()
    if not args.no_peers and not peers:
        print(
            "SB3 PPO: not run (stable-baselines3 is not importable: pip install 'reinforce-edge[peers]')"
        )
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for env_id in env_ids(args.env):
        note = mujoco_note(env_id) if env_id not in (CARTPOLE, "Acrobot-v1") else None
        if note:
            print(note)
            continue
        print(f"\n== {env_id} ==")
        header = f"{'config':>10} {'seed':>5} {'solved':>6} {'episodes':>8} {'env steps':>10} {'wall s':>8} {'eval mean':>9} {'eval min':>8} {'polish':>6}"
        print(header)
        plans = [("default", s, env_config(env_id, s)) for s in seeds]
        if env_id == CARTPOLE:
            for text in args.variant:
                name, values = parse_variant(text)
                plans += [(name, s, env_config(env_id, s, **values)) for s in seeds]
            preset_seeds = range(args.first_seed, args.first_seed + args.preset_seeds)
            plans += [("seed", s, preset("seed", seed=s, eval_episodes=0)) for s in preset_seeds]
        groups: dict[str, list[Result]] = {}
        for name, _, config in plans:
            result = run(name, config)
            groups.setdefault(name, []).append(result)
            print(
                f"{name:>10} {result.seed:>5} {str(result.solved):>6} {result.episodes:>8}"
                f" {result.env_steps:>10} {result.wall_s:>8.3f} {result.eval_mean:>9.1f}"
                f" {result.eval_min:>8.0f} {result.polish:>6}",
                flush=True,
            )
        peer_results: list[PeerResult] = []
        if peers:
            threshold = groups["default"][0].threshold
            for seed in range(args.first_seed, args.first_seed + args.peer_seeds):
                peer = run_sb3(env_id, seed, threshold, args.peer_max_steps)
                peer_results.append(peer)
                print(
                    f"{'sb3 ppo':>10} {seed:>5} {str(peer.solved):>6} {peer.episodes:>8}"
                    f" {peer.env_steps:>10} {peer.wall_s:>8.3f}",
                    flush=True,
                )
        print()
        reference = groups.get("seed")
        for name, results in groups.items():
            print(summarise(results, reference if name != "seed" else None))
        if peer_results:
            print(peer_ratios(groups["default"], peer_results))
    print(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
