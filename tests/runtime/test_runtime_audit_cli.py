"""Audit regressions for `python -m runtime`'s command line, configuration and reports."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runtime.cli import build_config, main, run


def test_a_run_without_decisions_reports_dashes_not_none(policy_path: Path, capsys) -> None:
    # found by the audit: "decision p50 None us p99 None us" when the bridge closed at once
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
    # found by the audit: these said only "invalid int value" or "is not a valid number"
    assert main(["--policy", str(policy_path), *args], environ=environ) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    source = next(iter(environ), None)
    assert f"(from {source})" in err if source else "argument --" in err


def test_numpy_warnings_are_one_log_line(policy_path: Path) -> None:
    # found by the audit: an observation near float32's limit (the stdio protocol allows it)
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
    # found by the audit: "policy.npz: refused: public key k.pub: ..." blamed the policy for a
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
    # found by the audit: REINFORCE_EDGE_EPISODE=1 (a typo) was ignored silently: the run
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
    # found by the audit: TOML can hold a NUL byte; open() then raised ValueError (exit 1)
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
    # found by the audit: --env Acrobot-v1 with the default sim plant ran CartPole silently
    args = ["--policy", str(policy_path), "--hz", "0", "--episodes", "1"]
    assert main([*args, "--env", "Acrobot-v1"], environ={}) == 0
    assert "env 'Acrobot-v1' is ignored: it names the environment of --plant gym" in caplog.text
    caplog.clear()
    assert main([*args, "--env", "CartPole-v1"], environ={}) == 0
    assert "is ignored" not in caplog.text


def test_a_full_disk_under_the_reports_stops_the_reports_not_the_run(policy_path: Path) -> None:
    # found by the audit: `> /dev/full` logged a traceback per episode and ended in exit 1
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
    # found by the audit: with stdout closed (`>&-`) even the sim plant failed with
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
