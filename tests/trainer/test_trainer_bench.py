"""bench/train.py's env path on a tiny budget: a run's result fields, the independent greedy
evaluator against runtime.policy.greedy_action on every head, --env parsing, and (with the
mujoco extra) InvertedPendulum-v5 trained through `python -m trainer` and evaluated here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bench.train import (
    DEFAULT_ENVS,
    ENV_CONFIGS,
    Result,
    env_config,
    env_ids,
    greedy,
    independent_eval,
    run,
)
from runtime.policy import PolicySpec, greedy_action, init_params, make_meta, parse_policy
from runtime.policy import policy_bytes as to_bytes
from trainer.cli import main

SPECS = {
    "bernoulli relu (format 1's)": (PolicySpec(hidden=8, obs_dim=4), False, False),
    "bernoulli tanh, biases, normaliser": (
        PolicySpec(hidden=8, obs_dim=4, activation="tanh"),
        True,
        True,
    ),
    "categorical tanh, biases, normaliser": (
        PolicySpec(hidden=16, obs_dim=6, activation="tanh", head="categorical", action_dim=3),
        True,
        True,
    ),
    "gaussian relu, biases": (
        PolicySpec(
            hidden=16,
            obs_dim=4,
            head="gaussian",
            action_dim=2,
            action_low=(-3.0, -0.5),
            action_high=(3.0, 1.0),
        ),
        True,
        False,
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_independent_greedy_agrees_with_the_runtime(name: str) -> None:
    spec, biases, normaliser = SPECS[name]
    rng = np.random.default_rng(3)
    params = init_params(spec.hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for key in ("b1", "b2"):
        if key in params:
            params[key] = rng.standard_normal(params[key].shape)
    if normaliser:
        params["obs_mean"] = rng.standard_normal(spec.obs_dim)
        params["obs_std"] = rng.uniform(0.05, 2.0, spec.obs_dim)  # large obs hit the +-10 clip
    params["W2"] = params["W2"] * 4.0  # gaussian means beyond the bounds: the clip matters
    meta = make_meta(spec=spec, env_id="Bench-v0", version=1)
    saved = parse_policy(to_bytes(params, meta))
    observations = rng.standard_normal((200, spec.obs_dim)) * 5.0
    actions = [greedy(saved.params, saved.spec, obs) for obs in observations]
    for obs, action in zip(observations, actions, strict=True):
        expected = greedy_action(saved.params, obs, saved.spec)
        if spec.head == "gaussian":
            assert action.dtype == np.float32 and action.shape == (spec.action_dim,)
            np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
        else:
            assert action == expected and isinstance(action, int)
    if spec.head == "gaussian":  # some actions clipped to each bound, else the test proves less
        stacked = np.array(actions)
        assert np.any(stacked == np.float32(spec.action_low)) and np.any(
            stacked == np.float32(spec.action_high)
        )
    else:  # both branches taken
        assert len(set(actions)) > 1


def test_acrobot_run_reports_every_field() -> None:
    config = env_config("Acrobot-v1", 0, max_episodes=16)
    assert (config.activation, config.biases, config.normaliser) == ("tanh", True, True)
    result = run("default", config, eval_episodes=5)
    assert isinstance(result, Result)
    assert (result.env, result.name, result.seed, result.threshold) == (
        "Acrobot-v1",
        "default",
        0,
        -100.0,
    )
    assert not result.solved and result.episodes == 16 and result.polish == 0
    assert 16 <= result.env_steps <= 16 * 500 + config.num_envs * 500 and result.wall_s > 0
    assert -500 <= result.eval_min <= result.eval_mean <= 0
    assert result.eval_reached is (result.eval_mean >= -100.0)


def test_env_ids_take_repeats_and_comma_lists() -> None:
    assert env_ids([]) == list(DEFAULT_ENVS)
    assert env_ids(["Acrobot-v1,CartPole-v1", " Acrobot-v1", "InvertedPendulum-v5"]) == [
        "Acrobot-v1",
        "CartPole-v1",
        "InvertedPendulum-v5",
    ]
    assert set(ENV_CONFIGS) == set(DEFAULT_ENVS) - {"CartPole-v1"}


@pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="no mujoco extra")
def test_inverted_pendulum_trains_through_the_cli_and_evaluates_here(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--env", "InvertedPendulum-v5", "--max-episodes", "8", "--activation", "tanh"]
    assert main([*flags, "--quiet", "--eval-episodes", "2", "--out", str(out)]) == 0
    data = (out / "policy.npz").read_bytes()
    policy = parse_policy(data)
    assert policy.spec.head == "gaussian" and policy.meta["env_id"] == "InvertedPendulum-v5"
    assert (policy.spec.action_low, policy.spec.action_high) == ((-3.0,), (3.0,))
    returns = independent_eval(data, "InvertedPendulum-v5", episodes=3)
    assert len(returns) == 3 and all(1 <= value <= 1000 for value in returns)
    obs = np.random.default_rng(0).standard_normal((20, 4))
    for row in obs:
        np.testing.assert_allclose(
            greedy(policy.params, policy.spec, row),
            greedy_action(policy.params, row, policy.spec),
            rtol=1e-5,
            atol=1e-6,
        )
