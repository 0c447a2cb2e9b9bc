"""The runtime's configuration: one frozen dataclass, built from flags, environment, file, defaults.

Precedence, highest first: command-line flags > `REINFORCE_EDGE_<KEY>` environment variables >
the TOML file given by `--config` (top-level keys named like the fields) > the defaults below.
Every field carries its help string, its parser for text values (environment variables) and
its allowed values; `RuntimeConfig.__post_init__` checks them all, so a config that exists is
valid, and every error names the key, where the value came from and what is allowed.

To add a field (the MQTT agent does): declare it with `setting(...)` and, if it needs a check,
add a line to `_checks`; the environment variable, the file key and the error messages follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.constants import (
    DEFAULT_MAX_POLICY_BYTES,
    DEFAULT_PROBATION_EPISODES,
    DEFAULT_TELEMETRY_INTERVAL_S,
    DEFAULT_TOPIC_PREFIX,
    DEFAULT_WARM_UP_US,
    DEVICE_ID_PATTERN,
    DEVICE_ID_RULE,
    ENV_ID,
    ENV_MQTT_PASSWORD,
    ENV_PREFIX,
    MAX_WARM_UP_US,
    TOPIC_PREFIX_PATTERN,
    TOPIC_PREFIX_RULE,
)

PLANTS = ("sim", "stdio", "gym")
PLANT_REFERENCE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
BACKENDS = ("numpy", "onnxruntime")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_HZ = 10_000.0  # a Python loop cannot keep a faster period honest
MIN_HZ = 0.001  # one decision per 1000 s; slower periods overflow the nanosecond schedule
MAX_DURATION_S = 1e9  # about 31 years, so that the end fits a nanosecond integer
MAX_POLICY_BYTES_LIMIT = 64 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the key and what is allowed."""


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


def parse_optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none") else float(text)


def parse_optional_str(text: str) -> str | None:
    return text or None


def setting(default: Any, help: str, parse: Callable[[str], Any] = str) -> Any:
    """A config field: its default, its help line and how to read it from text."""
    return field(default=default, metadata={"help": help, "parse": parse})


class RefusePassword(argparse.Action):
    """`--password` is refused without echoing its value (argparse would otherwise take it as an
    abbreviation of --password-file and print the password in 'cannot read' errors)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(
            f"{option_string} is not accepted: a password on the command line shows in the"
            f" process list; use {ENV_MQTT_PASSWORD} or --password-file"
        )


@dataclass(frozen=True, eq=False)  # no ==: one generated method fewer at each start
class RuntimeConfig:
    """Everything `python -m runtime` needs; valid by construction (see `_checks`)."""

    policy: str | None = setting(None, "policy.npz to run", parse_optional_str)
    plant: str = setting(
        "sim", f"what the policy controls: {', '.join(PLANTS)}, or module:Class (your own)"
    )
    env: str = setting(ENV_ID, "Gymnasium environment id for --plant gym")
    hz: float = setting(50.0, "decisions per second; 0 runs as fast as possible", float)
    episodes: int | None = setting(None, "stop after this many episodes", parse_optional_int)
    duration: float | None = setting(None, "stop after this many seconds", parse_optional_float)
    warm_up_us: float = setting(
        DEFAULT_WARM_UP_US, "microseconds before each deadline spent on a throwaway decision"
        " (warms the caches) and spinning; 0 sleeps until the deadline", float,
    )  # fmt: skip
    backend: str = setting("numpy", f"forward-pass implementation: {', '.join(BACKENDS)}")
    public_key: str | None = setting(
        None, "Ed25519 public key (PEM or 32 raw bytes) the policy must be signed with",
        parse_optional_str,
    )  # fmt: skip
    trusted_keys_dir: str | None = setting(
        None, "directory of Ed25519 public keys (*.pub, *.pem) trusted with --public-key; a"
        " signed keys message replaces them (docs/ota.md, Key rotation)", parse_optional_str,
    )  # fmt: skip
    seed: int | None = setting(None, "seed of the plant's reset distribution", parse_optional_int)
    json: bool = setting(False, "print one JSON object per episode and a summary", parse_bool)
    max_policy_bytes: int = setting(
        DEFAULT_MAX_POLICY_BYTES, "largest policy file accepted, in bytes", int
    )
    log_level: str = setting("info", f"logging level: {', '.join(LOG_LEVELS)}")
    # --- MQTT agent: over-the-air updates and telemetry (runtime/agent.py) ---
    broker: str | None = setting(
        None, "MQTT broker URL mqtt://HOST[:PORT] or mqtts://HOST[:PORT]; enables updates",
        parse_optional_str,
    )  # fmt: skip
    device_id: str | None = setting(
        None,
        "this device's id in the MQTT topics (default: the host name's first label)",
        parse_optional_str,
    )
    topic_prefix: str = setting(DEFAULT_TOPIC_PREFIX, "MQTT topic prefix")
    state_dir: str | None = setting(
        None, "where updates persist (default /var/lib/reinforce-edge when writable, else"
        " ~/.local/state/reinforce-edge)", parse_optional_str,
    )  # fmt: skip
    telemetry_interval: float = setting(
        DEFAULT_TELEMETRY_INTERVAL_S, "seconds between telemetry messages", float
    )
    ca_file: str | None = setting(None, "CA bundle (PEM) for mqtts://", parse_optional_str)
    cert: str | None = setting(None, "client certificate (PEM) for mqtts://", parse_optional_str)
    key: str | None = setting(None, "client private key (PEM) for mqtts://", parse_optional_str)
    username: str | None = setting(None, "broker user name", parse_optional_str)
    password_file: str | None = setting(
        None, f"file with the broker password ({ENV_PREFIX}MQTT_PASSWORD wins)", parse_optional_str
    )
    probation_episodes: int = setting(
        DEFAULT_PROBATION_EPISODES, "episodes watched after an update before it is kept", int
    )
    rollback_below: float | None = setting(
        None, "roll an update back when its probation mean return is below this"
        " (default: half the previous policy's recent mean)", parse_optional_float,
    )  # fmt: skip
    insecure_allow_unsigned: bool = setting(
        False, "accept updates without a valid signature (warns on every update)", parse_bool
    )

    def __post_init__(self) -> None:
        for name, ok, allowed in _checks(self):
            if not ok:
                raise ConfigError(
                    f"{name} = {getattr(self, name)!r} is not allowed: expected {allowed}"
                )


def is_plant_reference(value: Any) -> bool:
    """`package.module:Class`: a user's plant class, imported by `runtime.plants.make_plant`."""
    return isinstance(value, str) and re.fullmatch(PLANT_REFERENCE, value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checks(c: RuntimeConfig) -> list[tuple[str, bool, str]]:
    """(key, is it valid, what is allowed) for every field."""
    return [
        ("policy", _optional_str(c.policy), "a file path"),
        (
            "plant",
            c.plant in PLANTS or is_plant_reference(c.plant),
            f"one of {', '.join(PLANTS)}, or module:Class for your own plant",
        ),
        ("env", _text(c.env), "a Gymnasium environment id"),
        (
            "hz",
            _is_number(c.hz) and (c.hz == 0 or MIN_HZ <= c.hz <= MAX_HZ),
            f"a number in 0..{MAX_HZ:g} (0: as fast as possible, else at least {MIN_HZ:g})",
        ),
        (
            "episodes",
            c.episodes is None or (_is_int(c.episodes) and c.episodes >= 1),
            "an integer >= 1 (or unset: no limit)",
        ),
        (
            "duration",
            c.duration is None or (_is_number(c.duration) and 0 < c.duration <= MAX_DURATION_S),
            f"a number of seconds > 0 and <= {MAX_DURATION_S:g} (or unset: no limit)",
        ),
        (
            "warm_up_us",
            _is_number(c.warm_up_us) and 0 <= c.warm_up_us <= MAX_WARM_UP_US,
            f"a number of microseconds in 0..{MAX_WARM_UP_US:g} (0: no warm-up)",
        ),
        ("backend", c.backend in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        ("public_key", _optional_str(c.public_key), "a file path"),
        ("trusted_keys_dir", _optional_str(c.trusted_keys_dir), "a directory path"),
        (
            "seed",
            c.seed is None or (_is_int(c.seed) and 0 <= c.seed < 2**63),
            "an integer in 0..2**63-1 (or unset: random)",
        ),
        ("json", isinstance(c.json, bool), "true or false"),
        (
            "max_policy_bytes",
            _is_int(c.max_policy_bytes) and 1 <= c.max_policy_bytes <= MAX_POLICY_BYTES_LIMIT,
            f"an integer in 1..{MAX_POLICY_BYTES_LIMIT}",
        ),
        ("log_level", c.log_level in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
        *_mqtt_checks(c),
    ]


def _optional_str(value: Any) -> bool:
    return value is None or _text(value)


def _text(value: Any) -> bool:
    """A non-empty string the OS can take as a path or a name (a NUL byte, possible in TOML,
    made open() raise ValueError: exit 1 instead of this error)."""
    return isinstance(value, str) and value != "" and "\0" not in value


def _broker_url_ok(url: Any) -> bool:
    from runtime.mqtt import parse_broker_url

    try:
        parse_broker_url(url)
    except (ValueError, TypeError):
        return False
    return True


def _mqtt_checks(c: RuntimeConfig) -> list[tuple[str, bool, str]]:
    import re

    return [
        (
            "broker",
            c.broker is None or (isinstance(c.broker, str) and _broker_url_ok(c.broker)),
            "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (PORT 1..65535), no user name or password",
        ),
        (
            "device_id",
            c.device_id is None
            or (isinstance(c.device_id, str) and re.fullmatch(DEVICE_ID_PATTERN, c.device_id)),
            DEVICE_ID_RULE,
        ),
        (
            "topic_prefix",
            isinstance(c.topic_prefix, str) and re.fullmatch(TOPIC_PREFIX_PATTERN, c.topic_prefix),
            f"topic {TOPIC_PREFIX_RULE}",
        ),
        ("state_dir", _optional_str(c.state_dir), "a directory path"),
        (
            "telemetry_interval",
            _is_number(c.telemetry_interval) and 0.05 <= c.telemetry_interval <= 86400,
            "a number of seconds in 0.05..86400",
        ),
        ("ca_file", _optional_str(c.ca_file), "a file path"),
        ("cert", _optional_str(c.cert), "a file path"),
        ("key", _optional_str(c.key), "a file path"),
        ("username", _optional_str(c.username), "a user name"),
        ("password_file", _optional_str(c.password_file), "a file path"),
        (
            "probation_episodes",
            _is_int(c.probation_episodes) and 1 <= c.probation_episodes <= 10_000,
            "an integer in 1..10000",
        ),
        (
            "rollback_below",
            c.rollback_below is None or _is_number(c.rollback_below),
            "a finite number (or unset: half the previous policy's recent mean)",
        ),
        ("insecure_allow_unsigned", isinstance(c.insecure_allow_unsigned, bool), "true or false"),
        (
            "public_key",
            c.broker is None
            or c.public_key is not None
            or c.trusted_keys_dir is not None
            or c.insecure_allow_unsigned is True,
            "an Ed25519 public key file when a broker is used (or --trusted-keys-dir, or"
            " --insecure-allow-unsigned)",
        ),
    ]


# --- building one from its sources ------------------------------------------------


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RuntimeConfig)]


def env_name(key: str) -> str:
    """The environment variable of a key: `hz` -> `REINFORCE_EDGE_HZ`."""
    return ENV_PREFIX + key.upper()


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The values set by `REINFORCE_EDGE_<KEY>` variables (other variables are ignored)."""
    values = {}
    for spec in dataclasses.fields(RuntimeConfig):
        name = env_name(spec.name)
        if name in environ:
            text = environ[name]
            try:
                values[spec.name] = spec.metadata["parse"](text)
            except ValueError:
                raise ConfigError(
                    f"{spec.name} = {text!r} is not allowed: expected {allowed(spec.name)}"
                    f" (from {name})"
                ) from None
    return values


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """`REINFORCE_EDGE_*` variables that set nothing (a typo such as REINFORCE_EDGE_EPISODE)."""
    known = {env_name(name) for name in field_names()} | {ENV_MQTT_PASSWORD}
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def allowed(key: str) -> str:
    """What a key accepts, as its error message says it (for values that do not even parse)."""
    for name, _, text in _checks(RuntimeConfig()):
        if name == key:
            return text
    raise KeyError(key)


def _toml_loads(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 uses the backport
        import tomli as tomllib
    return tomllib.loads(text)


def from_file(path: str | os.PathLike) -> dict[str, Any]:
    """The values of a TOML file; keys may use `-` or `_`; unknown keys are an error."""
    from pathlib import Path  # only with --config: pathlib costs a plain start ~7 ms on NumPy 2

    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/zero never ends
        raise ConfigError(f"config file {path}: not a regular file (a device or a pipe)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path}: cannot read: {error}") from None
    try:
        data = _toml_loads(text)
    except ValueError as error:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"config file {path}: not valid TOML: {error}") from None
    known = set(field_names())
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in values:
            raise ConfigError(f"config file {path}: key {key!r} given twice (- and _ spellings)")
        if name not in known:
            raise ConfigError(
                f"config file {path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        values[name] = value
    return values


def build_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike | None = None,
) -> RuntimeConfig:
    """Merge defaults < file < environment < flags (only flags actually given) and validate."""
    layers = [
        ("file", from_file(config_file) if config_file else {}),
        ("environment", from_environment(os.environ if environ is None else environ)),
        ("flags", {k: v for k, v in (flags or {}).items() if v is not None}),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))
    try:
        return RuntimeConfig(**values)
    except ConfigError as error:
        key = str(error).split(" ", 1)[0]
        where = {"file": f"config file {config_file}", "environment": env_name(key)}.get(
            sources.get(key, ""), "--" + key.replace("_", "-")
        )
        raise ConfigError(f"{error} (from {where})") from None
    except TypeError as error:  # an unknown key reached the constructor
        raise ConfigError(str(error)) from None
