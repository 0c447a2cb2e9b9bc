"""A user's plant that misbehaves, and Gymnasium ids that cannot be made.

Regressions: a custom plant's bad observation surfaced as NumPy's "shapes (3,) and (4,8)
not aligned" (exit 1), a NaN observation or reward ran on silently, an obs_dim of True or 0
blamed the policy, a driver error in step() did not say it came from the plant, a failing
close() lost the summary, and `--env module:Env` exited 1 with gymnasium's ModuleNotFoundError.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from runtime.cli import main

PLANT_MODULE = '''
import numpy as np


class Base:
    obs_dim = 4
    steps = 0

    def reset(self, seed=None):
        return np.zeros(4, np.float32)

    def step(self, action):
        self.steps += 1
        return np.zeros(4, np.float32), 1.0, self.steps % 3 == 0


class ShortObs(Base):
    def step(self, action):
        return np.zeros(3, np.float32), 1.0, False


class NoneObs(Base):
    def reset(self, seed=None):
        return None


class TextObs(Base):
    def reset(self, seed=None):
        return ["0", "0", "0", "0"]


class NanObs(Base):
    def step(self, action):
        return np.array([0.0, np.nan, 0.0, 0.0]), 1.0, False


class HugeObs(Base):
    def reset(self, seed=None):
        return [1e39, 0.0, 0.0, 0.0]


class TwoValues(Base):
    def step(self, action):
        return np.zeros(4), 1.0


class InfReward(Base):
    def step(self, action):
        return np.zeros(4), float("inf"), False


class TextReward(Base):
    def step(self, action):
        return np.zeros(4), "1", False


class ArrayDone(Base):
    def step(self, action):
        return np.zeros(4), 1.0, np.array([True, False])


class BoolDim(Base):
    obs_dim = True


class ZeroDim(Base):
    obs_dim = 0


class NumpyDim(Base):
    obs_dim = np.int64(4)


class Sequences(Base):
    """Lists, int arrays and a (1, 4) array are 4 numbers too; NumPy rewards are numbers."""

    def reset(self, seed=None):
        return [0, 0, 0, 0]

    def step(self, action):
        self.steps += 1
        return np.zeros((1, 4), np.int64), np.float32(0.5), np.bool_(self.steps % 2 == 0)


class BrokenDriver(Base):
    def step(self, action):
        if self.steps == 1:
            raise OSError(5, "I/O error on /dev/ttyAMA0")
        return super().step(action)


class StuckMotor(Base):
    def close(self):
        raise RuntimeError("motor does not stop")
'''


@pytest.fixture
def plants(tmp_path: Path, monkeypatch) -> str:
    name = f"user_plants_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLANT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def run(policy_path: Path, plant: str, *extra: str) -> int:
    args = ["--policy", str(policy_path), "--plant", plant, "--hz", "0", "--episodes", "2"]
    return main([*args, *extra], environ={})


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("ShortObs", "step() returned the observation array([0., 0., 0.], dtype=float32),"),
        ("NoneObs", "reset() returned the observation None, expected 4 numbers (obs_dim)"),
        ("TextObs", "reset() returned the observation ['0', '0', '0', '0'], expected 4 numbers"),
        ("NanObs", "expected finite numbers within float32's range"),
        ("HugeObs", "expected finite numbers within float32's range"),
        ("TwoValues", "expected (observation, reward, done)"),
        ("InfReward", "step() returned the reward inf, expected a finite number"),
        ("TextReward", "step() returned the reward '1', expected a finite number"),
        ("ArrayDone", "step() returned done = array([ True, False]), expected True or False"),
        ("BoolDim", "is not a plant: obs_dim = True, expected an integer in 1..1000000"),
        ("ZeroDim", "is not a plant: obs_dim = 0, expected an integer"),
    ],
)
def test_a_plant_breaking_the_protocol_is_one_line_naming_it_and_exit_2(
    policy_path, plants, capsys, cls, message
) -> None:
    assert run(policy_path, f"{plants}:{cls}") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and f"plant {plants}:{cls}" in errors[0], err
    assert message in errors[0] and "Traceback" not in err


def test_numbers_in_any_container_and_numpy_integers_are_accepted(policy_path, plants, capsys):
    assert run(policy_path, f"{plants}:Sequences", "--json") == 0
    assert run(policy_path, f"{plants}:NumpyDim", "--json") == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    returns = [line["return"] for line in out if line["type"] == "episode"]
    assert returns == [1.0, 1.0, 3.0, 3.0]


def test_a_driver_error_inside_step_names_the_plant_and_exits_1(policy_path, plants, capsys):
    assert run(policy_path, f"{plants}:BrokenDriver") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"python -m runtime: error: plant {plants}:BrokenDriver: step() failed:"
        " OSError: [Errno 5] I/O error on /dev/ttyAMA0"
    )


def test_a_failing_close_is_logged_after_a_full_run_and_exits_1(
    policy_path, plants, capsys, caplog
) -> None:
    assert run(policy_path, f"{plants}:StuckMotor", "--json") == 1
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["type"] == "summary" and summary["episodes"] == 2
    assert "close() failed: RuntimeError: motor does not stop" in caplog.text


def test_gym_ids_that_cannot_be_made_are_bad_input_in_one_line(policy_path, capsys) -> None:
    pytest.importorskip("gymnasium")
    for env in ("no_such_module_xyz:Env-v0", "CartPole-v99"):
        args = ["--policy", str(policy_path), "--plant", "gym", "--env", env]
        assert main([*args, "--episodes", "1"], environ={}) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"python -m runtime: error: cannot make Gymnasium environment {env!r}"
        )
        assert len(err.strip().splitlines()) == 1


def test_gymnasium_warnings_are_one_log_line_without_colour(policy_path, capsys, caplog) -> None:
    pytest.importorskip("gymnasium")
    args = ["--policy", str(policy_path), "--plant", "gym", "--env", "CartPole-v0"]
    assert main([*args, "--hz", "0", "--episodes", "1"], environ={}) == 0
    err = capsys.readouterr().err
    assert "\x1b[" not in err + caplog.text and "logger.deprecation(" not in err
    warned = [r.getMessage() for r in caplog.records if "out of date" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0]


def test_stdio_reads_decimal_numbers_only() -> None:
    # regression: float() took "1_0" as 10 and Arabic-Indic digits as numbers; a bridge
    # in C, JavaScript or on a microcontroller never means those
    import io

    from runtime.plants import StdioPlant

    lines = [
        "1_0 0 0 0",  # Python-only syntax
        "\u0661 0 0 0",  # an Arabic-Indic one
        "0x1 0 0 0",
        "Infinity 0 0 0",  # JavaScript's: read, then refused as non-finite
        "-1.5e-3 +.5 5. 1E+3 0.25",  # printf's forms, with a reward
    ]
    stdin = io.BytesIO("\n".join(lines).encode() + b"\n")
    plant = StdioPlant(stdin, io.BytesIO())
    obs = plant.reset()
    assert obs.tolist() == pytest.approx([-1.5e-3, 0.5, 5.0, 1000.0]) and plant.malformed == 4
    plant = StdioPlant(io.BytesIO(b"1 2 3 4\n5 6 7 8 0.25\n"), io.BytesIO())
    assert plant.reset().tolist() == [1.0, 2.0, 3.0, 4.0]
    obs, reward, done = plant.step(1)
    assert obs.tolist() == [5.0, 6.0, 7.0, 8.0] and reward == 0.25 and not done


def test_a_second_signal_inside_a_stuck_step_says_so(policy_path, plants, caplog) -> None:
    # regression: two SIGTERMs to a runtime whose plant hung in step() exited 130
    # without a word
    import os
    import signal

    module = __import__(plants)

    class Stuck(module.Base):
        def step(self, action):
            os.kill(os.getpid(), signal.SIGTERM)  # the service manager's stop...
            os.kill(os.getpid(), signal.SIGTERM)  # ...and the operator's second one
            return super().step(action)

    module.Stuck = Stuck
    assert run(policy_path, f"{plants}:Stuck") == 130
    assert "interrupted: stopped without finishing the current step" in caplog.text
