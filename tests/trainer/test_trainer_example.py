"""examples/servo, the docs' "bring your own controller": the environment behaves like the
motor it models, and `--env servo_env:...` trains, saves a format-2 policy and evaluates it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.policy import load_policy
from trainer.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "servo"


@pytest.fixture
def servo_env(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import servo_env

    return servo_env


def episode_return(env, controller, seed: int) -> float:
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(controller(obs))
        total, done = total + reward, terminated or truncated
    return total


def test_a_pd_controller_holds_the_target_and_doing_nothing_does_not(servo_env):
    import gymnasium as gym

    env = gym.make("ServoPosition-v0")
    pd = [
        episode_return(env, lambda o: np.clip([1.0 * o[0] - 0.02 * o[1]], -1, 1), s)
        for s in range(5)
    ]
    idle = [episode_return(env, lambda o: np.zeros(1), s) for s in range(5)]
    threshold = env.spec.reward_threshold
    assert np.mean(pd) > -2 > threshold > np.mean(idle), (pd, idle)
    discrete = gym.make("ServoPositionDiscrete-v0")
    assert discrete.action_space.n == 3 and discrete.spec.reward_threshold is None
    env.close()
    discrete.close()


@pytest.mark.parametrize(
    ("env_id", "head", "extra"),
    [
        ("servo_env:ServoPosition-v0", "gaussian", []),
        ("servo_env:ServoPositionDiscrete-v0", "categorical", ["--target-return", "-40"]),
    ],
)
def test_the_example_trains_and_evaluates(servo_env, tmp_path, capsys, env_id, head, extra):
    out = tmp_path / "run"
    flags = ["--activation", "tanh", "--biases", "true", "--normaliser", "true"]
    args = ["--env", env_id, *flags, *extra, "--max-episodes", "32", "--batch", "16"]
    assert main([*args, "--out", str(out), "--quiet", "--eval-episodes", "2"]) == 0
    policy = load_policy(out / "policy.npz")
    assert policy.format_version == 2 and policy.spec.head == head
    assert policy.spec.obs_dim == 3 and policy.meta["env_id"] == env_id
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "3"]) == 0
    assert "over 3 episodes of " + env_id in capsys.readouterr().out
