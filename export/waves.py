"""The plan of a staged rollout (`export/rollout.py`), the rule that judges a device by its
status, and the state file that lets a rollout continue.

Pure functions and plain data: nothing here talks to a broker. The state is JSON, written
atomically (`runtime.policy.atomic_write`) and checked field by field when read back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.push import UsageError
from runtime.constants import (
    DEVICE_ID_PATTERN,
    PROBATION_FAILED,
    PROBATION_PASSED,
    PROBATION_SKIPPED,
)
from runtime.policy import atomic_write

logger = logging.getLogger(__name__)

STATE_FORMAT = "reinforce-edge/rollout-state"
STATE_FORMAT_VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024
MAX_DEVICES_FILE_BYTES = 16 * 1024 * 1024
SUCCEEDED, FAILED = "succeeded", "failed"
DONE_PROBATION = (PROBATION_PASSED, PROBATION_SKIPPED)


# --- the plan: waves, threshold and devices (pure) -------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the rollout does; validated where it is built, fixed for the life of its state."""

    devices: tuple[str, ...]  # sorted, unique
    waves: tuple[float, ...]  # cumulative percentages, increasing, the last exactly 100
    abort_above: float  # percent of a wave's results that may fail
    min_devices: int = 5
    wave_timeout: float = 300.0

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("no devices to roll out to")
        if list(self.devices) != sorted(set(self.devices)):
            raise ValueError("the devices must be sorted and unique")
        check_waves(self.waves)
        if not 0 <= self.abort_above < 100:
            raise ValueError(f"--abort-above must be in 0%..99.9%, got {self.abort_above:g}%")
        if self.min_devices < 1:
            raise ValueError(f"--min-devices must be at least 1, got {self.min_devices}")
        if not 0 < self.wave_timeout <= 7 * 86400:
            raise ValueError(f"--wave-timeout must be in (0, 604800] s, got {self.wave_timeout}")

    def members(self) -> list[list[str]]:
        """The devices of each wave (a wave may be empty for a small fleet)."""
        bounds = [0, *cumulative_counts(self.waves, len(self.devices))]
        return [list(self.devices[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": list(self.devices),
            "waves": list(self.waves),
            "abort_above": self.abort_above,
            "min_devices": self.min_devices,
            "wave_timeout": self.wave_timeout,
        }


def check_waves(waves: Sequence[float]) -> None:
    shown = ",".join(f"{w:g}%" for w in waves)
    if not waves:
        raise ValueError("--waves is empty: give cumulative percentages such as 5%,25%,100%")
    if any(not 0 < w <= 100 for w in waves):
        raise ValueError(f"--waves {shown}: each percentage must be in (0, 100]")
    if any(b <= a for a, b in zip(waves, waves[1:], strict=False)):
        raise ValueError(
            f"--waves {shown}: the percentages are cumulative and must increase"
            " (5%,25%,100%: 5%, then up to 25%, then everyone)"
        )
    if waves[-1] != 100:
        raise ValueError(
            f"--waves {shown}: the last wave must be 100% (the percentages are cumulative:"
            " 5%,25%,100% ends with everyone)"
        )


def parse_percent(text: str, flag: str) -> float:
    """'10%' or '10' -> 10.0; ValueError naming `flag` otherwise."""
    digits = text.strip().removesuffix("%").strip()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", digits):
        raise ValueError(f"{flag} {text!r}: expected a percentage such as 10%")
    return float(digits)


def parse_waves(text: str) -> tuple[float, ...]:
    waves = tuple(parse_percent(part, "--waves") for part in text.split(","))
    check_waves(waves)
    return waves


def cumulative_counts(waves: Sequence[float], total: int) -> list[int]:
    """How many devices have been sent to once each wave is out: ceil(percent of total)."""
    return [min(total, math.ceil(round(w * total / 100, 9))) for w in waves]


def read_device_file(path: Path) -> list[str]:
    """Device ids, one a line (# starts a comment), sorted; duplicates collapsed with a note."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UsageError(f"--devices {path}: not a regular file")
        if size > MAX_DEVICES_FILE_BYTES:
            raise UsageError(f"--devices {path}: {size} bytes, too large for a list of ids")
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--devices {path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--devices {path}: not UTF-8 text") from None
    devices: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        device = line.split("#", 1)[0].strip()
        if device and not re.fullmatch(DEVICE_ID_PATTERN, device):
            raise UsageError(
                f"--devices {path}:{number}: {device!r} is not a device id (1-64 letters,"
                " digits, _ . : -, starting with a letter or digit; one id a line)"
            )
        if device:
            devices.append(device)
    unique = sorted(set(devices))
    if len(unique) < len(devices):
        logger.warning(
            "note: --devices %s lists %d ids more than once; each device gets one push",
            path,
            len(devices) - len(unique),
        )
    return unique


def refuse_unknown(devices: Sequence[str], known: dict[str, dict[str, Any]]) -> None:
    """One line naming the devices no retained status has ever been seen from."""
    unknown = [d for d in devices if d not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise UsageError(
            f"{len(unknown)} of the {len(devices)} devices have no status on the broker"
            f" (unknown or misspelt?): {shown}"
        )


# --- what a status says about a device (pure) -------------------------------------------------


def judge(
    body: dict[str, Any] | None, sha256: str, version: int, sent: bool
) -> tuple[str, str] | None:
    """(succeeded|failed, reason) when this status settles the device, else None (pending).

    Before a device was sent the file, only "already running it" settles it; afterwards its
    health check passing (or skipped), a rejection or a rollback of this very file does."""
    if body is None:
        return None
    probation = body.get("probation") if isinstance(body.get("probation"), dict) else None
    mine = probation is not None and probation.get("version") == version
    if body.get("policy_sha256") == sha256:
        if mine and probation.get("state") in DONE_PROBATION:
            skipped = probation.get("state") == PROBATION_SKIPPED
            return SUCCEEDED, "health check skipped (nothing to judge by)" if skipped else ""
        if not sent and not mine:
            return SUCCEEDED, "already running this version"
        return None
    if not sent:
        return None
    last = body.get("last_update") or {}
    if last.get("sha256") == sha256 and last.get("result") in ("rejected", "rolled_back"):
        return FAILED, f"{last.get('result')}: {last.get('reason') or '-'}"
    if mine and probation.get("state") == PROBATION_FAILED:
        return FAILED, "rolled_back: its health check failed"
    return None


def crossed(failed: int, results: int, size: int, plan: Plan) -> bool:
    """More than `abort_above` percent of the wave's results failed, with enough results."""
    if results < min(plan.min_devices, size) or results == 0:
        return False
    return failed * 100 > plan.abort_above * results


# --- the state file -----------------------------------------------------------------------------


class StateNotSaved(Exception):
    """The state file could not be written: one line, exit 1."""


@dataclass
class Undo:
    """The previous policy re-signed at a newer version, and who got it."""

    sha256: str
    version: int
    targets: list[str]
    sent: list[str] = field(default_factory=list)
    results: dict[str, dict[str, str]] = field(default_factory=dict)
    waited: float = 0.0
    done: bool = False


@dataclass
class State:
    """Everything a rollout has done so far (mutable; `save` writes it atomically)."""

    policy_sha256: str
    policy_version: int
    plan: Plan
    wave: int = 0  # the wave being sent or waited for
    waited: float = 0.0  # connected seconds waited in that wave
    sent: dict[str, int] = field(default_factory=dict)  # device -> wave
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> result
    phase: str = "rolling"  # rolling / completed / aborted
    abort: dict[str, Any] | None = None
    undo: Undo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_FORMAT_VERSION,
            "policy_sha256": self.policy_sha256,
            "policy_version": self.policy_version,
            **self.plan.to_json(),
            "wave": self.wave,
            "waited": round(self.waited, 3),
            "phase": self.phase,
            "sent": self.sent,
            "results": self.results,
            "abort": self.abort,
            "undo": None if self.undo is None else self.undo.__dict__,
        }

    def save(self, path: Path) -> None:
        """Atomically; StateNotSaved (the rollout stops: it sends nothing it cannot record)."""
        try:
            atomic_write(path, json.dumps(self.to_json(), indent=1, sort_keys=True).encode())
        except OSError as error:
            raise StateNotSaved(
                f"--state {path}: cannot write: {error.strerror or error}; stopped, nothing"
                " more is sent (the last saved state continues the rollout)"
            ) from None


def load_state(path: Path) -> State:
    """The state at `path`; UsageError (one line) when it is not one this tool wrote."""
    try:
        if not path.is_file():
            raise UsageError(f"--state {path}: not a regular file")
        if path.stat().st_size > MAX_STATE_BYTES:
            raise UsageError(f"--state {path}: too large for a rollout state")
        body = json.loads(path.read_bytes())
    except OSError as error:
        raise UsageError(f"--state {path}: cannot read: {error.strerror or error}") from None
    except (ValueError, RecursionError):
        raise UsageError(
            f"--state {path}: not valid JSON (damaged?); move it away to start over"
        ) from None
    try:
        return _state_from(body)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UsageError(
            f"--state {path}: not a rollout state ({error}); move it away to start over"
        ) from None


def _state_from(body: dict[str, Any]) -> State:
    if body.get("format") != STATE_FORMAT or body.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"format is not {STATE_FORMAT} version {STATE_FORMAT_VERSION}")
    plan = Plan(
        devices=tuple(str(d) for d in body["devices"]),
        waves=tuple(float(w) for w in body["waves"]),
        abort_above=float(body["abort_above"]),
        min_devices=int(body["min_devices"]),
        wave_timeout=float(body["wave_timeout"]),
    )
    undo = body.get("undo")
    state = State(
        policy_sha256=str(body["policy_sha256"]),
        policy_version=int(body["policy_version"]),
        plan=plan,
        wave=int(body["wave"]),
        waited=float(body["waited"]),
        sent={str(d): int(w) for d, w in body["sent"].items()},
        results={str(d): dict(r) for d, r in body["results"].items()},
        phase=str(body["phase"]),
        abort=body.get("abort"),
        undo=None if undo is None else Undo(**undo),
    )
    if state.phase not in ("rolling", "completed", "aborted"):
        raise ValueError(f"unknown phase {state.phase!r}")
    if not 0 <= state.wave < len(plan.waves) or not set(state.sent) <= set(plan.devices):
        raise ValueError("its wave or devices do not match its plan")
    return state


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `path`.lock: two rollouts on one state file would send twice."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 - held for the whole rollout
    except OSError as error:
        raise UsageError(f"--state {path}: cannot lock: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"--state {path}: another rollout is running with this state file"
            ) from None
        yield
