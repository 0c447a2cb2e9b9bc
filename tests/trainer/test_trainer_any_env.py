"""Any Gymnasium env: Acrobot-v1 (discrete), Pendulum-v1 (continuous, no threshold), a custom
`module:EnvName-v0` env, the spaces refused, resume, Ctrl-C and reproducibility, in-process."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.policy import load_policy
from tests.trainer.conftest import RUN_FILES
from trainer.cli import main
from trainer.config import TrainConfig, from_dict

QUIET = ["--quiet", "--eval-episodes", "2"]

# A module of custom environments, written to a temporary directory and imported by its
# `tinyenvs:` prefix, as Gymnasium's convention has it. TinyWalk-v0 steps a walker left or
# right: reward +1 right, -0.5 left, terminated at +3, truncated after 12 steps; obs[1] is the
# step index, so a test can see which steps an episode holds.
TINY_ENVS = """
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TinyWalk(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.observation_space = spaces.Box(-20.0, 20.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0, 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, self.t], dtype=np.float32)

    def step(self, action):
        self.x += 1 if action == 1 else -1
        self.t += 1
        reward = 1.0 if action == 1 else -0.5
        return self._obs(), reward, self.x >= 3, False, {}


class Spaces(TinyWalk):
    def __init__(self, observation_space, action_space, render_mode=None):
        self.observation_space, self.action_space = observation_space, action_space


box = spaces.Box(-1.0, 1.0, (2,), np.float32)
gym.register("TinyWalk-v0", entry_point=TinyWalk, max_episode_steps=12, reward_threshold=2.5)
gym.register(
    "TinyDict-v0",
    entry_point=Spaces,
    kwargs={"observation_space": spaces.Dict({"a": box}), "action_space": spaces.Discrete(2)},
)
gym.register(
    "TinyImage-v0",
    entry_point=Spaces,
    kwargs={
        "observation_space": spaces.Box(0, 255, (8, 8, 3), np.uint8),
        "action_space": spaces.Discrete(2),
    },
)
gym.register(
    "TinyMulti-v0",
    entry_point=Spaces,
    kwargs={"observation_space": box, "action_space": spaces.MultiDiscrete([2, 3])},
)
gym.register(
    "TinyInfinite-v0",
    entry_point=Spaces,
    kwargs={
        "observation_space": box,
        "action_space": spaces.Box(-np.inf, np.inf, (1,), np.float32),
    },
)
"""


@pytest.fixture(scope="module", autouse=True)
def tinyenvs(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("modules")
    (directory / "tinyenvs.py").write_text(TINY_ENVS)
    sys.path.insert(0, str(directory))
    yield
    sys.path.remove(str(directory))
    sys.modules.pop("tinyenvs", None)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def returns_of(run: Path) -> list[float]:
    return [float(row[1]) for row in list(csv.reader((run / "metrics.csv").open()))[1:]]


def test_acrobot_trains_saves_format_2_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--env", "Acrobot-v1", "--max-episodes", "16", "--activation", "tanh"]
    assert (
        main([*flags, "--biases", "true", "--normaliser", "true", *QUIET, "--out", str(out)]) == 0
    )
    assert "not solved in 16 episodes" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == RUN_FILES
    returns = returns_of(out)
    assert len(returns) == 16 and all(-500 <= value < 0 for value in returns)  # -1 per step
    policy = load_policy(out / "policy.npz")
    assert policy.format_version == 2 and policy.spec.head == "categorical"
    assert (policy.spec.obs_dim, policy.spec.action_dim, policy.spec.activation) == (6, 3, "tanh")
    assert policy.meta["env_id"] == "Acrobot-v1" and policy.meta["target_return"] == -100.0
    assert {"b1", "b2", "obs_mean", "obs_std"} <= set(policy.params)
    assert np.any(policy.params["obs_mean"] != 0) and np.all(policy.params["obs_std"] > 0)
    assert Image.open(out / "curve.png").format == "PNG"
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    assert "of Acrobot-v1" in capsys.readouterr().out


def test_pendulum_needs_a_target_then_trains_a_gaussian(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--env", "Pendulum-v1", "--max-episodes", "8", *QUIET]
    assert main([*flags, "--out", str(out)]) == 2
    assert "--target-return is required: env Pendulum-v1 has no" in one_error_line(capsys)
    assert not out.exists()
    assert main([*flags, "--target-return", "-200", "--out", str(out)]) == 0
    policy = load_policy(out / "policy.npz")
    assert policy.spec.head == "gaussian" and policy.meta["target_return"] == -200.0
    assert (policy.spec.action_low, policy.spec.action_high) == ((-2.0,), (2.0,))
    assert "log_std" in policy.params and len(returns_of(out)) == 8
    gif = tmp_path / "pendulum.gif"
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "1", "--record", str(gif)]) == 0
    assert Image.open(gif).format == "GIF"


def test_a_custom_module_env_pays_its_own_rewards(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--env", "tinyenvs:TinyWalk-v0", "--max-episodes", "40", "--target-window", "10"]
    assert main([*flags, *QUIET, "--out", str(out)]) == 0
    returns = returns_of(out)
    # reward sums, not lengths: k right and j left steps pay k - j / 2 in at most 12 steps
    # (terminated at k - j = 3: 3 + j / 2 <= 5; truncated: down to -6 for 12 left steps)
    assert any(value != int(value) for value in returns)
    assert all(-6 <= value <= 5 for value in returns)
    policy = load_policy(out / "policy.npz")
    assert policy.spec.head == "bernoulli" and policy.meta["env_id"] == "tinyenvs:TinyWalk-v0"
    assert policy.meta["target_return"] == 2.5  # the env's reward_threshold
    assert main(["eval", str(out), "--episodes", "3"]) == 0


def test_autoreset_steps_are_never_learnt_from() -> None:
    from trainer.gym_train import inspect_env, new_env_state, open_slots, play

    config = TrainConfig(env="tinyenvs:TinyWalk-v0", num_envs=3, batch=3, eval_episodes=0)
    state = new_env_state(config, inspect_env(config))
    slots = open_slots(config, 3, state.rng)
    episodes = []

    def collect(episode, env_steps: int) -> bool:  # noqa: ANN001
        episodes.append(episode)
        return len(episodes) >= 12

    play(slots, state.params, state.spec, state.rng, collect)
    slots.envs.close()
    assert slots.next_step  # Gymnasium's default autoreset mode
    for episode in episodes:
        # every episode starts at the reset observation (t = 0) and counts its steps: the
        # autoreset step (reward 0, action ignored) is in none of them
        np.testing.assert_array_equal(episode.obs[:, 1], np.arange(episode.length))
        assert set(episode.rewards.tolist()) <= {1.0, -0.5}
        x = np.cumsum(np.where(episode.actions == 1, 1, -1))
        assert x[-1] >= 3 or episode.length == 12  # terminated at +3 or truncated at 12
        assert episode.length == 12 or np.all(x[:-1] < 3)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ("NoSuchEnv-v0", "env NoSuchEnv-v0: not a registered Gymnasium env"),
        ("nosuchmodule:Env-v0", "cannot import module 'nosuchmodule'"),
        ("tinyenvs:TinyDict-v0", "observation space Dict('a': Box"),
        ("tinyenvs:TinyImage-v0", "has shape (8, 8, 3): only 1-D Box observations"),
        ("tinyenvs:TinyMulti-v0", "action space MultiDiscrete([2 3]) is not supported"),
        ("tinyenvs:TinyInfinite-v0", "has infinite bounds"),
    ],
)
def test_envs_the_policy_cannot_serve_are_one_line_exit_2(
    env: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["--env", env, "--target-return", "1", *QUIET, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("trainer: error: ") and fragment in line, line
    assert not out.exists()


def test_same_seed_same_bytes_and_ctrl_c_resume(tmp_path: Path, interrupt_after) -> None:
    flags = ["--env", "Acrobot-v1", "--seed", "3", "--max-episodes", "32", "--quiet"]
    flags += ["--eval-episodes", "0", "--biases", "true", "--normaliser", "true"]
    flags += ["--optimizer", "adam", "--reproducible"]
    for name in ("a", "b"):
        assert main([*flags, "--out", str(tmp_path / name)]) == 0
    for name in ("metrics.csv", "policy.npz", "config.json", "curve.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    interrupt_after(16)
    part = tmp_path / "part"
    assert main([*flags, "--out", str(part)]) == 130
    interrupt_after(None)
    before = (part / "metrics.csv").read_text().splitlines()
    assert len(before) - 1 == 16
    with np.load(part / "checkpoint.npz") as checkpoint:
        assert {"moment_W1", "cache_b2", "obs_var", "obs_mean"} <= set(checkpoint.files)
    copy = tmp_path / "copy"
    shutil.copytree(part, copy)
    for run in (part, copy):
        assert main(["--resume", str(run), "--quiet", "--reproducible"]) == 0
    after = (part / "metrics.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) - 1 == 32
    assert (copy / "metrics.csv").read_bytes() == (part / "metrics.csv").read_bytes()
    assert (copy / "policy.npz").read_bytes() == (part / "policy.npz").read_bytes()


def test_resume_refuses_a_changed_optimizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--env", "Acrobot-v1", "--max-episodes", "8", "--quiet", "--eval-episodes", "0"]
    assert main([*flags, "--out", str(out)]) == 0
    assert main(["--resume", str(out), "--optimizer", "adam", "--quiet"]) == 2
    assert "--optimizer cannot change when resuming" in one_error_line(capsys)


def test_spaces_choose_the_head() -> None:
    from gymnasium import spaces

    from trainer.gym_train import spec_from_spaces

    box = spaces.Box(-1.0, 1.0, (5,))
    assert spec_from_spaces(box, spaces.Discrete(2), 8, "relu").head == "bernoulli"
    categorical = spec_from_spaces(box, spaces.Discrete(7), 8, "tanh")
    assert (categorical.head, categorical.action_dim, categorical.obs_dim) == ("categorical", 7, 5)
    gaussian = spec_from_spaces(box, spaces.Box(-3.0, 1.0, (2,)), 8, "relu")
    assert gaussian.head == "gaussian" and gaussian.action_low == (-3.0, -3.0)
    for action_space in (spaces.Discrete(3, start=1), spaces.MultiBinary(3), spaces.Discrete(1)):
        with pytest.raises(ValueError, match="is not supported"):
            spec_from_spaces(box, action_space, 8, "relu")
    with pytest.raises(ValueError, match="at most 1024"):
        spec_from_spaces(spaces.Box(-1.0, 1.0, (1025,)), spaces.Discrete(2), 8, "relu")


def test_an_old_config_maps_its_env_to_the_backend() -> None:
    old = TrainConfig().to_dict()
    for key in ("backend", "activation", "biases", "normaliser", "optimizer"):
        del old[key]
    for backend, num_envs in (("numpy", 32), ("gymnasium", 1)):
        config = from_dict({**old, "env": backend, "num_envs": num_envs, "target_return": 475.0})
        assert (config.env, config.backend) == ("CartPole-v1", backend)
    assert TrainConfig(env="Acrobot-v1", target_return=-100.0).target_return == -100.0
    with pytest.raises(ValueError, match=r"target_return must be a number in \(0.0, 500.0\]"):
        TrainConfig(target_return=-100.0)  # CartPole-v1 pays 1..500
    with pytest.raises(ValueError, match="backend numpy is the NumPy CartPole-v1"):
        TrainConfig(env="MountainCar-v0", backend="numpy")


def test_eval_refuses_an_env_that_does_not_render_or_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--env", "tinyenvs:TinyWalk-v0", "--max-episodes", "8", "--quiet"]
    assert main([*flags, "--eval-episodes", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    gif = tmp_path / "walk.gif"
    assert main(["eval", str(out), "--episodes", "1", "--record", str(gif)]) == 2
    assert "does not render rgb_array frames" in one_error_line(capsys)
    assert not gif.exists()
    # as in a process where the module is not importable (monkeypatch puts both back)
    monkeypatch.delitem(sys.modules, "tinyenvs")
    monkeypatch.setattr(
        sys, "path", [entry for entry in sys.path if not (Path(entry) / "tinyenvs.py").exists()]
    )
    assert main(["eval", str(out), "--episodes", "1"]) == 2
    assert "cannot import module 'tinyenvs'" in one_error_line(capsys)


def _solved_tiny_walk(**overrides) -> tuple:  # noqa: ANN003
    from trainer.config import preset
    from trainer.gym_train import inspect_env, new_env_state, train_env

    values = {"seed": 1, "target_window": 40, "max_episodes": 400, "eval_episodes": 0}
    config = preset("default", env="tinyenvs:TinyWalk-v0", **{**values, **overrides})
    state = train_env(config, new_env_state(config, inspect_env(config)))
    assert state.solved_at is not None
    return config, state


def _weights_key(params: dict) -> bytes:
    return b"".join(params[k].astype(np.float32).tobytes() for k in sorted(params))


def test_the_saved_policy_passes_greedy_episodes_of_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainer import evaluate
    from trainer.cli import BOUND_Z, CONFIRM_SEED_OFFSET, candidates, finish_env

    config, state = _solved_tiny_walk()
    assert len(candidates(state)) > 1  # the last few updates' weights
    real = evaluate.evaluate_env
    scored: list[tuple[bytes, int]] = []
    results: list = []

    def counted(params, spec, env_id, episodes, seed, make_envs=None):  # noqa: ANN001, ANN202
        scored.append((_weights_key(params), seed))
        results.append(real(params, spec, env_id, episodes, seed, make_envs))
        return results[-1]

    monkeypatch.setattr(evaluate, "evaluate_env", counted)
    policy, mean = finish_env(config, state)
    assert len(scored) == len(set(scored))  # never the same weights on the same seeds twice
    assert any(policy is p for p in candidates(state))
    confirmation = max(i for i, (key, _) in enumerate(scored) if key == _weights_key(policy))
    assert scored[confirmation][1] >= CONFIRM_SEED_OFFSET  # its last judgement confirmed it
    confirmed = [*results[confirmation].returns, min(state.returns)]
    # TinyWalk's reward_threshold 2.5: right, right, right pays 3
    assert mean == results[confirmation].mean and evaluate.lower_bound(confirmed, BOUND_Z) >= 2.5


def test_a_greedy_policy_below_the_target_is_polished(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import evaluate
    from trainer.cli import finish_env

    config, state = _solved_tiny_walk()
    solved_at, first_update = state.solved_at, state.updates

    def scripted(params, spec, env_id, episodes, seed, make_envs=None):  # noqa: ANN001, ANN202
        # below TinyWalk's 2.5 until three more updates were made, then above it
        good = state.updates >= first_update + 3 and params[KEY] is not None
        return evaluate.EvalResult((3.0 if good else 2.0,) * episodes)

    KEY = "W1"
    monkeypatch.setattr(evaluate, "evaluate_env", scripted)
    policy, mean = finish_env(config, state)
    assert state.updates == first_update + 3 and mean == 3.0
    assert state.solved_at == solved_at  # polishing episodes count apart from the solve

    # a policy that never gets there: polished until max_episodes, the best one kept
    config, state = _solved_tiny_walk(seed=2)
    budget = dataclasses.replace(config, max_episodes=state.episodes + 3 * config.batch)
    first_update = 10**9  # never good
    policy, mean = finish_env(budget, state)
    assert state.episodes == budget.max_episodes and mean == 2.0


def test_other_envs_default_to_tanh_biases_and_the_normaliser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trainer.config import preset

    assert (preset("default").activation, preset("default").biases) == ("relu", False)
    other = preset("default", env="Acrobot-v1")
    assert (other.activation, other.biases, other.normaliser) == ("tanh", True, True)
    plain = preset("default", env="Acrobot-v1", activation="relu", normaliser=False)
    assert (plain.activation, plain.biases, plain.normaliser) == ("relu", True, False)
    assert preset("seed", env="Acrobot-v1").activation == "relu"  # the article's preset as it is
    assert main(["--help"]) == 0
    assert "default: relu; on envs other than CartPole-v1: tanh" in " ".join(
        capsys.readouterr().out.split()
    )
