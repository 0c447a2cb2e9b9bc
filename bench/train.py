"""Benchmark: the default trainer against the article's configuration (--preset seed), one run.

    .venv/bin/python bench/train.py                  # 5 default seeds, 3 preset seeds
    .venv/bin/python bench/train.py --seeds 20       # the target claim: 20 default seeds
    .venv/bin/python bench/train.py --variant const16:batch=16,batch_final=16

For each seed: episodes to solve (trailing-100 mean >= 475), environment steps and wall seconds
until then (training only: no imports, no saving), and an independent greedy evaluation of the
policy as saved (float32 policy.npz bytes) on 100 episodes of Gymnasium's own CartPole-v1
(`gymnasium.make`, one episode per seed 10000..10099, not the trainer's evaluation code). Then
medians per configuration and the ratios against the preset.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe as machine  # noqa: E402
from runtime.policy import action_probability, make_meta, parse_policy, policy_bytes  # noqa: E402
from trainer.cli import finish  # noqa: E402
from trainer.config import TrainConfig, preset  # noqa: E402
from trainer.train import train  # noqa: E402

EVAL_EPISODES = 100
EVAL_FIRST_SEED = 10_000


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


def independent_eval(params: dict, episodes: int = EVAL_EPISODES) -> list[float]:
    """Greedy returns of the saved (float32) policy on gymnasium.make("CartPole-v1")."""
    import gymnasium as gym

    data = policy_bytes(params, make_meta(hidden=int(params["W1"].shape[0]), version=1))
    saved = parse_policy(data).params  # exactly what policy.npz holds
    env = gym.make("CartPole-v1")
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=EVAL_FIRST_SEED + episode)
        total, done = 0.0, False
        while not done:
            action = int(action_probability(saved, obs) > 0.5)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def run(name: str, config: TrainConfig) -> Result:
    state = train(config)
    solved_at, wall, steps = state.solved_at, state.wall_s[-1], state.env_steps[-1]
    # the policy the CLI saves: the best of the last few updates by a greedy evaluation,
    # polished by further updates if none reaches the target
    policy, _ = finish(config, state)
    returns = independent_eval(policy)
    return Result(
        name=name,
        seed=config.seed,
        solved=solved_at is not None,
        episodes=solved_at or state.episodes,
        env_steps=steps,
        wall_s=wall,
        polish=state.episodes - (solved_at or state.episodes),
        eval_mean=float(np.mean(returns)),
        eval_min=float(np.min(returns)),
    )


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
    )
    if reference:
        ref_solved = [r for r in reference if r.solved] or reference
        ratio_episodes = statistics.median(episodes) / statistics.median(
            [r.episodes for r in ref_solved]
        )
        speedup = statistics.median([r.wall_s for r in ref_solved]) / statistics.median(walls)
        line += f"\n{'':>10} | ratio to preset: episodes x{ratio_episodes:.3f}, wall-time speed-up {speedup:.0f}x"
    return line


def _median(values: list, spec: str = "g") -> str:
    return format(statistics.median(values), spec) if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="default-config seeds (default 5)")
    parser.add_argument("--preset-seeds", type=int, default=3, help="seed-preset seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="also run the default with these config changes (repeatable)",
    )
    args = parser.parse_args()

    print(f"machine: {machine()}")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    header = f"{'config':>10} {'seed':>5} {'solved':>6} {'episodes':>8} {'env steps':>10} {'wall s':>8} {'eval mean':>9} {'eval min':>8} {'polish':>6}"
    print(header)
    groups: dict[str, list[Result]] = {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    plans = [("default", seed, preset("default", seed=seed, eval_episodes=0)) for seed in seeds]
    for text in args.variant:
        name, values = parse_variant(text)
        plans += [(name, s, preset("default", seed=s, eval_episodes=0, **values)) for s in seeds]
    preset_seeds = range(args.first_seed, args.first_seed + args.preset_seeds)
    plans += [("seed", s, preset("seed", seed=s, eval_episodes=0)) for s in preset_seeds]
    for name, _, config in plans:
        result = run(name, config)
        groups.setdefault(name, []).append(result)
        print(
            f"{name:>10} {result.seed:>5} {str(result.solved):>6} {result.episodes:>8}"
            f" {result.env_steps:>10} {result.wall_s:>8.3f} {result.eval_mean:>9.1f}"
            f" {result.eval_min:>8.0f} {result.polish:>6}",
            flush=True,
        )
    print()
    reference = groups.get("seed")
    for name, results in groups.items():
        print(summarise(results, reference if name != "seed" else None))
    print(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
