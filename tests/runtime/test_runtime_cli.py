"""`python -m runtime` end to end: balancing, output formats, exit codes, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.policy import init_params, make_meta, save_policy

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("gymnasium", "onnx", "onnxruntime", "matplotlib", "pygame", "tqdm")
BLOCK_HEAVY = f"""
import sys
for name in {HEAVY!r}:
    sys.modules[name] = None  # importing any of them now raises ImportError
from runtime.cli import main
code = main(sys.argv[1:])
loaded = [name for name in {HEAVY!r} if sys.modules.get(name) is not None]
assert not loaded, loaded
sys.exit(code)
"""


def run_blocked(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REINFORCE_EDGE_")}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_policy_the_trainer_made_balances_to_500_without_heavy_modules(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")  # the trainer's final greedy check and its plot need them
    pytest.importorskip("matplotlib")
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "-m", "trainer", "--seed", "3", "--out", str(run_dir), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trained.returncode == 0, trained.stderr
    policy = run_dir / "policy.npz"
    done = run_blocked("--policy", str(policy), "--episodes", "5", "--seed", "11", "--hz", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("return 500 in 500 steps") == 5, done.stdout


def test_balances_to_500_without_heavy_modules(policy_path: Path) -> None:
    done = run_blocked("--policy", str(policy_path), "--episodes", "3", "--hz", "0", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    episodes, summary = lines[:-1], lines[-1]
    assert [e["return"] for e in episodes] == [500.0, 500.0, 500.0]
    assert [e["episode"] for e in episodes] == [1, 2, 3]
    for episode in episodes:
        assert {
            "episode",
            "return",
            "steps",
            "decision_us_p50",
            "decision_us_p99",
            "overruns",
        } <= set(episode)
        assert (
            episode["steps"] == 500 and episode["decision_us_p99"] >= episode["decision_us_p50"] > 0
        )
    assert summary["type"] == "summary" and summary["episodes"] == 3
    assert summary["decisions"] == 1500 and summary["mean_return"] == 500.0
    assert "unsigned" in done.stderr


def test_stdio_plant_imports_nothing_heavy(policy_path: Path) -> None:
    done = run_blocked("--policy", str(policy_path), "--plant", "stdio", "--json")
    assert done.returncode == 0, done.stderr  # stdin is empty: the plant closes at once
    assert '"stopped_by": "plant closed"' in done.stderr and done.stdout == "reset\n"


def test_help_imports_nothing_heavy() -> None:
    done = run_blocked("--help")
    assert done.returncode == 0, done.stderr
    assert "--policy" in done.stdout and "--plant" in done.stdout


def test_readable_lines(policy_path: Path, capsys) -> None:
    assert main(["--policy", str(policy_path), "--episodes", "2", "--hz", "0"], environ={}) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("episode 1: return 500 in 500 steps, decision p50 ")
    assert out[-1].startswith("done (episodes): 2 episodes, mean return 500, 1000 decisions")


def test_the_seed_fixes_the_episodes(tmp_path: Path, capsys) -> None:
    path = tmp_path / "weak.npz"
    save_policy(path, init_params(8, np.random.default_rng(0)), make_meta(hidden=8, version=1))

    def returns(seed: int) -> list[float]:
        args = ["--policy", str(path), "--episodes", "5", "--hz", "0", "--json"]
        assert main([*args, "--seed", str(seed)], environ={}) == 0
        return [json.loads(line)["return"] for line in capsys.readouterr().out.splitlines()[:-1]]

    first = returns(11)
    assert returns(11) == first and returns(12) != first


def test_duration_bounds_the_run(policy_path: Path, capsys) -> None:
    code = main(["--policy", str(policy_path), "--duration", "0.2", "--hz", "100", "--json"], {})
    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["stopped_by"] == "duration" and summary["episodes"] == 0
    assert 1 <= summary["decisions"] <= 20  # 20 slots; a loaded machine skips some (overruns)
    assert summary["decisions"] + summary["overruns"] >= 2 and summary["duration_s"] < 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hz", "-1"], "hz = -1.0 is not allowed: expected a number in 0..10000 (0: as fast"),
        (["--hz", "1e-300"], "hz = 1e-300 is not allowed"),
        (["--duration", "1e300"], "duration = 1e+300 is not allowed"),
        (["--episodes", "0"], "episodes = 0 is not allowed"),
        (["--duration", "-2"], "duration = -2.0 is not allowed"),
        (["--hz", "fast"], "argument --hz: hz = 'fast' is not allowed: expected a number in 0.."),
        (["--plant", "robot"], "plant = 'robot' is not allowed: expected one of sim, stdio, gym"),
        (["--backend", "torch"], "argument --backend: invalid choice"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_one_line_exit_2(policy_path: Path, capsys, args, message) -> None:
    assert main(["--policy", str(policy_path), *args], environ={}) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_policy_is_a_usage_error(capsys) -> None:
    assert main(["--episodes", "1"], environ={}) == 2
    assert "no policy given" in capsys.readouterr().err


def test_a_closed_report_reader_stops_the_reports_not_the_run(policy_path: Path) -> None:
    """`python -m runtime ... | head -1`: no traceback per episode, no exit 1."""
    script = (
        "import sys; from runtime.cli import main;"
        f" sys.exit(main(['--policy', {str(policy_path)!r}, '--hz', '0', '--episodes', '20']))"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first report
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=write_end,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ) as child:
        os.close(write_end)
        err = child.stderr.read().decode()
        code = child.wait(timeout=60)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert err.count("closed its end") == 1
