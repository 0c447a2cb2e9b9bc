"""RuntimeConfig: flags > environment > file > defaults, and every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cli import main
from runtime.config import ConfigError, RuntimeConfig, build_config, env_name, field_names


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = build_config({}, environ={})
    assert (config.plant, config.hz, config.backend, config.json) == ("sim", 50.0, "numpy", False)
    assert config.episodes is None and config.duration is None and config.public_key is None


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'hz = 10\nepisodes = 3\nbackend = "onnxruntime"\nduration = 9.5\n')
    environ = {"REINFORCE_EDGE_HZ": "20", "REINFORCE_EDGE_EPISODES": "4", "OTHER": "x"}
    config = build_config({"hz": 30.0}, environ=environ, config_file=path)
    assert config.hz == 30.0  # flag
    assert config.episodes == 4  # environment
    assert config.backend == "onnxruntime" and config.duration == 9.5  # file
    assert config.plant == "sim"  # default
    config = build_config({}, environ=environ, config_file=path)
    assert config.hz == 20.0


def test_every_key_has_an_environment_variable_and_a_file_key(tmp_path: Path) -> None:
    assert env_name("public_key") == "REINFORCE_EDGE_PUBLIC_KEY"
    path = write(tmp_path, 'public-key = "pub.pem"\njson = true\nseed = 5\nlog_level = "debug"\n')
    config = build_config({}, environ={"REINFORCE_EDGE_JSON": "false"}, config_file=path)
    assert (config.public_key, config.json, config.seed, config.log_level) == (
        "pub.pem",
        False,
        5,
        "debug",
    )
    assert "policy" in field_names() and "max_policy_bytes" in field_names()


def test_frozen() -> None:
    config = RuntimeConfig()
    with pytest.raises(AttributeError):
        config.hz = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hz": -1}, "hz = -1 is not allowed: expected a number in 0..10000"),
        ({"hz": 20000}, "hz = 20000 is not allowed"),
        ({"hz": float("nan")}, "hz = nan is not allowed"),
        ({"hz": True}, "hz = True is not allowed"),
        ({"hz": 1e-300}, "hz = 1e-300 is not allowed: expected a number in 0..10000 (0: as"),
        ({"duration": 1e300}, "duration = 1e+300 is not allowed: expected a number of seconds"),
        ({"episodes": 0}, "episodes = 0 is not allowed: expected an integer >= 1"),
        ({"warm_up_us": -1}, "warm_up_us = -1 is not allowed: expected a number of microseconds"),
        ({"warm_up_us": 1e6}, "warm_up_us = 1000000.0 is not allowed"),
        ({"episodes": 2.5}, "episodes = 2.5 is not allowed"),
        ({"duration": 0}, "duration = 0 is not allowed: expected a number of seconds > 0"),
        ({"plant": "robot"}, "plant = 'robot' is not allowed: expected one of sim, stdio, gym"),
        ({"backend": "torch"}, "backend = 'torch' is not allowed: expected one of numpy, onnx"),
        ({"seed": -1}, "seed = -1 is not allowed"),
        (
            {"max_policy_bytes": 0},
            "max_policy_bytes = 0 is not allowed: expected an integer in 1..",
        ),
        ({"json": "yes"}, "json = 'yes' is not allowed: expected true or false"),
        ({"policy": ""}, "policy = '' is not allowed: expected a file path"),
        ({"public_key": ""}, "public_key = '' is not allowed: expected a file path"),
    ],
)
def test_bad_values_name_the_key_and_the_range(values, message) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        RuntimeConfig(**values)
    assert message in str(error.value)


def test_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "hz = -5\n")
    with pytest.raises(ConfigError, match=rf"hz = -5 is not allowed.*\(from config file {path}\)"):
        build_config({}, environ={}, config_file=path)
    with pytest.raises(ConfigError, match=r"\(from REINFORCE_EDGE_EPISODES\)"):
        build_config({}, environ={"REINFORCE_EDGE_EPISODES": "-3"})
    with pytest.raises(
        ConfigError, match=r"episodes = 'many' is not allowed: .* \(from REINFORCE_EDGE_EPISODES\)"
    ):
        build_config({}, environ={"REINFORCE_EDGE_EPISODES": "many"})
    with pytest.raises(
        ConfigError,
        match=r"json = 'maybe' is not allowed: expected true or false \(from REINFORCE_EDGE_JSON\)",
    ):
        build_config({}, environ={"REINFORCE_EDGE_JSON": "maybe"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hz = ", "not valid TOML"),
        ("speed = 3\n", "unknown key 'speed'"),
        ('hz = "fast"\n', "hz = 'fast' is not allowed"),
        ('policy = ""\n', "policy = '' is not allowed"),
        ('log_level = "error"\nlog-level = "debug"\n', "key 'log-level' given twice"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({}, environ={}, config_file=write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        build_config({}, environ={}, config_file=tmp_path / "absent.toml")


def test_cli_reads_all_three_sources(tmp_path: Path, policy_path: Path, capsys) -> None:
    path = write(tmp_path, f'policy = "{policy_path}"\nhz = 0\nepisodes = 5\njson = true\n')
    environ = {env_name("episodes"): "2"}
    assert main(["--config", str(path), "--episodes", "1"], environ=environ) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # one episode + the summary
    assert main(["--config", str(path)], environ=environ) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--hz", "-3"], {}, "hz = -3.0 is not allowed: expected a number in 0..10000 (0: as"),
        ([], {"REINFORCE_EDGE_HZ": "x"}, "hz = 'x' is not allowed: expected a number in 0..10000"),
        ([], {"REINFORCE_EDGE_PLANT": "x"}, "plant = 'x' is not allowed: expected one of sim"),
        (["--warm-up-us", "-5"], {}, "warm_up_us = -5.0 is not allowed: expected a number of mic"),
    ],
)
def test_cli_bad_config_one_line_exit_2(policy_path, capsys, args, environ, message) -> None:
    assert main(["--policy", str(policy_path), *args], environ=environ) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
