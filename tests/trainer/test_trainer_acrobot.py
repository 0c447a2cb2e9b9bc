"""The NumPy Acrobot-v1 (trainer/acrobot.py) equals gymnasium.make_vec's sync Acrobot-v1 bit for
bit: resets, steps, terminations, autoresets and the truncation at 500 steps; and training on
it (--backend numpy, auto's choice) writes the same bytes as on Gymnasium's."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from trainer import acrobot
from trainer.acrobot import AcrobotVectorEnv
from trainer.cli import main
from trainer.config import TrainConfig, numpy_vector_env

PHASE_STEPS = 700  # random actions (mostly truncated at 500), then swinging (terminations)


def actions_for(step: int, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random torques in one phase; in the next, +1 N m while link 1 swings back (its velocity
    negative), else -1: it pumps energy in, episodes end in about a hundred steps; one
    action in ten random."""
    random = rng.integers(0, 3, len(obs))
    if (step // PHASE_STEPS) % 2 == 0:
        return random
    swing = np.where(obs[:, 4] < 0, 2, 0)
    return np.where(rng.random(len(obs)) < 0.1, random, swing)


def reference_and_mine(num_envs: int) -> tuple[object, AcrobotVectorEnv]:
    reference = gym.make_vec("Acrobot-v1", num_envs=num_envs, vectorization_mode="sync")
    return reference, AcrobotVectorEnv(num_envs)


def assert_same(theirs: tuple, mine: tuple) -> None:
    for their, my in zip(theirs, mine, strict=True):
        assert their.dtype == my.dtype and their.shape == my.shape
        assert np.array_equal(their, my)


@pytest.mark.parametrize("num_envs, seed", [(1, 0), (5, 3), (16, 11)])
def test_matches_gymnasium_sync_vector_env_bit_for_bit(num_envs: int, seed: int) -> None:
    reference, mine = reference_and_mine(num_envs)
    obs, _ = reference.reset(seed=seed)
    assert_same((obs,), (mine.reset(seed=seed)[0],))
    rng = np.random.default_rng(seed)
    ends = {"terminated": 0, "truncated": 0, "ended": 0, "autoreset": 0}
    for step in range(4 * PHASE_STEPS):
        action = actions_for(step, obs, rng)
        theirs = reference.step(action)
        ours = mine.step(action)
        assert_same(theirs[:4], ours[:4])
        assert ours[4] == {}
        obs = theirs[0]
        ends["terminated"] += int(theirs[2].sum())
        ends["truncated"] += int(theirs[3].sum())
        ends["ended"] += int(np.sum(theirs[2] | theirs[3]))
        ends["autoreset"] += int(np.sum(theirs[1] == 0) - theirs[2].sum())
    reference.close()
    # both ways of ending, and the autoreset steps after them, were compared
    assert ends["terminated"] >= 10 * num_envs and ends["truncated"] >= num_envs
    # every end but those of the last step (their autoreset step is still to come)
    assert ends["autoreset"] == ends["ended"] - int(mine.autoreset.sum())


def test_reset_seeds_lists_and_bounds_as_gymnasium() -> None:
    reference, mine = reference_and_mine(3)
    for kwargs in ({"seed": [5, 9, 2]}, {"seed": 1, "options": {"low": -0.3, "high": 0.2}}):
        assert_same((reference.reset(**kwargs)[0],), (mine.reset(**kwargs)[0],))
        action = np.array([0, 1, 2])
        assert_same(reference.step(action)[:4], mine.step(action)[:4])
    reference.close()
    with pytest.raises(ValueError, match="2 seeds for 3 environments"):
        mine.reset(seed=[1, 2])
    with pytest.raises(NotImplementedError, match="no reset_mask"):
        mine.reset(options={"reset_mask": np.ones(3, dtype=bool)})


def test_spaces_and_autoreset_mode_as_gymnasium() -> None:
    reference, mine = reference_and_mine(4)
    for name in ("single_observation_space", "single_action_space", "observation_space"):
        assert getattr(reference, name) == getattr(mine, name), name
    assert reference.action_space == mine.action_space and mine.num_envs == 4
    assert mine.metadata["autoreset_mode"] == reference.metadata["autoreset_mode"]
    reference.close()


def test_square_is_pow_as_on_a_float64_scalar() -> None:
    # Gymnasium squares np.float64 scalars, which NumPy computes with pow(): on glibc it
    # differs from x * x in the last bit for about 1 value in 1,000
    values = np.random.default_rng(0).uniform(-30.0, 30.0, 20_000)
    scalar = np.array([np.float64(value) ** 2 for value in values])
    assert np.array_equal(acrobot.square(values), scalar)


def test_auto_and_numpy_pick_it_gymnasium_forces_make_vec() -> None:
    assert numpy_vector_env(TrainConfig(env="Acrobot-v1"))
    assert numpy_vector_env(TrainConfig(env="Acrobot-v1", backend="numpy", activation="tanh"))
    assert not numpy_vector_env(TrainConfig(env="Acrobot-v1", backend="gymnasium"))
    assert not numpy_vector_env(TrainConfig(env="MountainCar-v0"))


def test_backend_numpy_and_gymnasium_train_the_same_bytes(tmp_path: Path) -> None:
    flags = ["--env", "Acrobot-v1", "--seed", "2", "--max-episodes", "24", "--batch", "8"]
    flags += ["--num-envs", "8", "--activation", "tanh", "--biases", "true"]
    flags += ["--normaliser", "true", "--quiet", "--eval-episodes", "0", "--reproducible"]
    for backend in ("numpy", "gymnasium"):
        assert main([*flags, "--backend", backend, "--out", str(tmp_path / backend)]) == 0
    for name in ("metrics.csv", "policy.npz"):
        numpy_bytes = (tmp_path / "numpy" / name).read_bytes()
        assert numpy_bytes == (tmp_path / "gymnasium" / name).read_bytes(), name
    assert len((tmp_path / "numpy" / "metrics.csv").read_text().splitlines()) == 25


@pytest.mark.parametrize(
    "flags",
    [
        ["--env", "MountainCar-v0"],
        ["--env", "CartPole-v1", "--activation", "tanh"],
    ],
)
def test_backend_numpy_without_a_numpy_env_is_one_line_exit_2(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*flags, "--backend", "numpy", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backend numpy is the NumPy CartPole-v1" in err, err
    assert "Acrobot-v1" in err and not out.exists()
