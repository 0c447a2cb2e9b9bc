"""`python -m runtime` end to end: balancing, output formats, exit codes, no heavy imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import build_config, main, run
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


def test_a_run_without_decisions_reports_dashes_not_none(policy_path: Path, capsys) -> None:
    # regression: "decision p50 None us p99 None us" when the bridge closed at once
    config = build_config({"policy": str(policy_path), "plant": "stdio"}, {})
    assert run(config, stdin=io.BytesIO(b""), stdout=io.BytesIO()) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("done (plant closed): 0 episodes, mean return -, 0 decisions")
    assert "decision p50 - p99 -," in line and "None" not in line


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--episodes", "1.5"], {}, "episodes = '1.5' is not allowed: expected an integer >= 1"),
        (["--seed", "0x10"], {}, "seed = '0x10' is not allowed: expected an integer in 0..2**63-1"),
        (["--duration", "soon"], {}, "duration = 'soon' is not allowed: expected a number of sec"),
        (["--warm-up-us", "x"], {}, "warm_up_us = 'x' is not allowed: expected a number of micro"),
        (["--max-policy-bytes", "1k"], {}, "max_policy_bytes = '1k' is not allowed: expected an"),
        ([], {"REINFORCE_EDGE_SEED": "-"}, "seed = '-' is not allowed: expected an integer in 0.."),
        ([], {"REINFORCE_EDGE_EPISODES": "x"}, "episodes = 'x' is not allowed: expected an integ"),
        ([], {"REINFORCE_EDGE_DURATION": "1h"}, "duration = '1h' is not allowed: expected a numb"),
        ([], {"REINFORCE_EDGE_JSON": "maybe"}, "json = 'maybe' is not allowed: expected true or"),
        ([], {"REINFORCE_EDGE_HZ": ""}, "hz = '' is not allowed: expected a number in 0..10000"),
    ],
)
def test_a_value_that_does_not_parse_names_the_key_and_the_allowed_range(
    policy_path: Path, capsys, args, environ, message
) -> None:
    # regression: these said only "invalid int value" or "is not a valid number"
    assert main(["--policy", str(policy_path), *args], environ=environ) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    source = next(iter(environ), None)
    assert f"(from {source})" in err if source else "argument --" in err


def test_numpy_warnings_are_one_log_line(policy_path: Path) -> None:
    # regression: an observation near float32's limit (the stdio protocol allows it)
    # printed NumPy's RuntimeWarning as two raw lines on stderr, outside logging
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant", "stdio"],
        input=b"1e38 1e38 1e38 1e38\n3e38 -3e38 3e38 3e38\ndone\n",
        capture_output=True,
        cwd=root,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == b"reset\n1\n1\nreset\n"
    err = done.stderr.decode().splitlines()
    warned = [line for line in err if "RuntimeWarning" in line]
    # (NumPy 1.24 does not warn here at all)
    assert all("WARNING py.warnings: RuntimeWarning: overflow" in w for w in warned)
    assert not any(line.startswith(" ") for line in err)  # no source line under a warning


def test_a_bad_key_file_is_named_as_the_key_not_as_a_refused_policy(
    policy_path: Path, tmp_path: Path, capsys
) -> None:
    # regression: "policy.npz: refused: public key k.pub: ..." blamed the policy for a
    # key problem; a private key given as the public one said only "not a PEM ... key"; and
    # cryptography 38 named an RSA key "_RSAPublicKey"
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()
    )
    rsa_public = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    )
    cases = {
        "signing.key": (private, "this is a private key; give the public one (signing.pub)"),
        "rsa.pub": (rsa_public, "a RSAPublicKey, expected Ed25519"),
        "junk.pub": (b"junk", "not a PEM or raw 32-byte Ed25519 key"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        key = str(tmp_path / name)
        assert main(["--policy", str(policy_path), "--public-key", key], environ={}) == 2
        err = capsys.readouterr().err
        assert err == f"python -m runtime: error: public key {key}: {message}\n"


def test_an_unknown_reinforce_edge_variable_is_warned_about(policy_path: Path, caplog) -> None:
    # regression: REINFORCE_EDGE_EPISODE=1 (a typo) was ignored silently: the run
    # then had no bound at all
    environ = {
        "REINFORCE_EDGE_EPISODE": "1",
        "REINFORCE_EDGE_FLAVOUR": "x",
        "REINFORCE_EDGE_EPISODES": "1",
        "REINFORCE_EDGE_MQTT_PASSWORD": "secret",  # read by the MQTT agent
    }
    assert main(["--policy", str(policy_path), "--hz", "0"], environ=environ) == 0
    warnings = [r.getMessage() for r in caplog.records if "no such setting" in r.getMessage()]
    assert warnings == [
        "ignoring REINFORCE_EDGE_EPISODE: no such setting (did you mean REINFORCE_EDGE_EPISODES?)",
        "ignoring REINFORCE_EDGE_FLAVOUR: no such setting (REINFORCE_EDGE_ + an option's name)",
    ]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('policy = "a\\u0000b"', "policy = 'a\\x00b' is not allowed: expected a file path"),
        ('public_key = "k\\u0000"', "public_key = 'k\\x00' is not allowed: expected a file path"),
        ('env = "CartPole-v1\\u0000"', "env = 'CartPole-v1\\x00' is not allowed: expected a Gym"),
    ],
)
def test_a_nul_byte_in_a_path_from_toml_is_a_bad_value(
    tmp_path: Path, policy_path: Path, capsys, toml, message
) -> None:
    # regression: TOML can hold a NUL byte; open() then raised ValueError (exit 1)
    config = tmp_path / "runtime.toml"
    policy = "" if toml.startswith("policy") else f'policy = "{policy_path}"\n'
    config.write_text(f"{policy}{toml}\n")
    assert main(["--config", str(config)], environ={}) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_error_line_stays_one_line_for_a_file_name_with_a_newline(
    tmp_path: Path, capsys
) -> None:
    name = str(tmp_path / "a\nb.npz")
    assert main(["--policy", name], environ={}) == 2
    err = capsys.readouterr().err
    assert err == f"python -m runtime: error: {tmp_path}/a\\nb.npz: no such file\n"


def test_an_env_without_the_gym_plant_is_warned_about(policy_path: Path, caplog) -> None:
    # regression: --env Acrobot-v1 with the default sim plant ran CartPole silently
    args = ["--policy", str(policy_path), "--hz", "0", "--episodes", "1"]
    assert main([*args, "--env", "Acrobot-v1"], environ={}) == 0
    assert "env 'Acrobot-v1' is ignored: it names the environment of --plant gym" in caplog.text
    caplog.clear()
    assert main([*args, "--env", "CartPole-v1"], environ={}) == 0
    assert "is ignored" not in caplog.text


def test_a_full_disk_under_the_reports_stops_the_reports_not_the_run(policy_path: Path) -> None:
    # regression: `> /dev/full` logged a traceback per episode and ended in exit 1
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    args = ["--policy", str(policy_path), "--hz", "0", "--episodes", "3"]
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "runtime", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=root,
            timeout=60,
        )
    err = done.stderr.decode()
    assert done.returncode == 0 and "Traceback" not in err
    assert err.count("cannot write the reports ([Errno 28] No space left on device)") == 1


def test_closed_standard_streams(policy_path: Path) -> None:
    # regression: with stdout closed (`>&-`) even the sim plant failed with
    # "AttributeError: 'NoneType' object has no attribute 'buffer'" (exit 1)
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def start(fd: int, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--hz", "0", *extra],
            stderr=subprocess.PIPE,
            cwd=root,
            timeout=60,
            preexec_fn=lambda: os.close(fd),
        )

    done = start(1, "--episodes", "2")
    assert done.returncode == 0 and b"the report's stream is closed" in done.stderr
    for fd, name in ((0, "input"), (1, "output")):
        done = start(fd, "--plant", "stdio")
        assert done.returncode == 2
        assert done.stderr.decode().endswith(
            "python -m runtime: error: the stdio plant talks to its bridge on standard input"
            f" and output, but standard {name} is closed\n"
        )
