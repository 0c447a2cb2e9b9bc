"""The gym plant: any Gymnasium id with vector observations and Discrete(n) or Box(k) actions;
gymnasium imported only for it (format 2's envs: test_runtime_format2.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runtime.cli import main


def test_gym_plant_runs_cartpole(policy_path: Path, capsys) -> None:
    pytest.importorskip("gymnasium")
    args = ["--policy", str(policy_path), "--plant", "gym", "--env", "CartPole-v1"]
    assert main([*args, "--hz", "0", "--episodes", "2", "--seed", "3", "--json"], environ={}) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["return"] for line in lines[:2]] == [500.0, 500.0]


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        ("NoSuchEnv-v0", "cannot make Gymnasium environment 'NoSuchEnv-v0'"),
        ("Blackjack-v1", "Blackjack-v1 has observation space Tuple("),
        ("Acrobot-v1", "W1 has shape (8, 4), expected (hidden, 6)"),  # format 1 observes 4
    ],
)
def test_gym_plant_refuses_unusable_environments(policy_path, capsys, env_id, message) -> None:
    pytest.importorskip("gymnasium")
    args = ["--policy", str(policy_path), "--plant", "gym", "--env", env_id, "--episodes", "1"]
    assert main(args, environ={}) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_gym_plant_without_gymnasium(policy_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    assert main(["--policy", str(policy_path), "--plant", "gym", "--episodes", "1"], {}) == 2
    assert "the gym plant needs gymnasium" in capsys.readouterr().err


def test_onnxruntime_backend_without_onnxruntime(policy_path: Path, capsys, monkeypatch) -> None:
    (policy_path.parent / "policy.onnx").write_bytes(b"unused")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    args = ["--policy", str(policy_path), "--backend", "onnxruntime", "--episodes", "1"]
    assert main(args, environ={}) == 2
    assert "needs onnxruntime: pip install onnxruntime" in capsys.readouterr().err
