"""Validation of an over-the-air policy and the health check that may undo it.

Every payload is untrusted until `validate_update` returns, cheapest check first:
size, zip structure, arrays, shapes and dtypes, finite values, meta and the plant's obs_dim
(all in `runtime.policy.parse_policy`), then the Ed25519 signature, then whether it fits the
running plant's action space (`runtime.spaces.check_fits`), then the version:
refused when it was rolled back here, refused when not newer than the running one or older
than the highest ever accepted (anti-rollback; the highest itself may be restored when a damaged
current.npz lost it), and a quiet no-op when it is exactly the policy already running.

`HealthMonitor` watches the episodes after an update; if the mean return of the first
`probation` clean episodes falls below the threshold it asks for a rollback. Its `verdict`
says where that check stands (the status's `probation`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from runtime.constants import (
    DEFAULT_MAX_POLICY_BYTES,
    OBS_DIM,
    PROBATION_FAILED,
    PROBATION_PASSED,
    PROBATION_PENDING,
    PROBATION_SKIPPED,
    RECENT_RETURNS,
)
from runtime.policy import Policy, PolicyError, parse_policy
from runtime.spaces import PlantSpace, SpaceMismatch, check_fits

logger = logging.getLogger(__name__)


MAX_REASON_CHARS = 300  # a reason quotes payload fields: keep the status and the log line short


def one_line(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """`reason` on one line (control characters as spaces), cut to `limit` characters."""
    text = "".join(" " if not char.isprintable() else char for char in reason)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UpdateRejected(Exception):
    """The payload must not be applied; `reason` is one line for the status and the log."""

    def __init__(self, reason: str, version: int | None = None) -> None:
        reason = one_line(reason)
        super().__init__(reason)
        self.reason = reason
        self.version = version  # the payload's meta version when it parsed that far


class Stale(UpdateRejected):
    """An old or refused version: rejected, and not worth a status when merely retained."""


class AlreadyRunning(Exception):
    """The payload is the policy running now (a retained or repeated publish): do nothing."""


@dataclass(frozen=True)
class UpdateRules:
    """What a device accepts: payload size, the plant's space, who must have signed it.
    `space` None is CartPole's two actions with `obs_dim`; given, its obs_dim is the one."""

    obs_dim: int = OBS_DIM
    max_bytes: int = DEFAULT_MAX_POLICY_BYTES
    public_key: Any = None  # Ed25519 public key; None only with allow_unsigned
    allow_unsigned: bool = False
    space: PlantSpace | None = None

    def __post_init__(self) -> None:
        if self.space is None:
            object.__setattr__(self, "space", PlantSpace(obs_dim=self.obs_dim))
        object.__setattr__(self, "obs_dim", self.space.obs_dim)
        if self.max_bytes < 1:
            raise ValueError(f"max payload bytes must be positive, got {self.max_bytes}")
        if self.public_key is None and not self.allow_unsigned:
            raise ValueError("a public key is required unless unsigned updates are allowed")


def validate_update(
    data: bytes,
    rules: UpdateRules,
    *,
    current: Policy,
    highest_version: int,
    refused: Collection[int],
) -> Policy:
    """The validated policy, or UpdateRejected / AlreadyRunning."""
    try:
        policy = parse_policy(data, max_bytes=rules.max_bytes, obs_dim=rules.obs_dim)
    except PolicyError as error:
        raise UpdateRejected(str(error)) from None
    except Exception as error:  # noqa: BLE001 - untrusted bytes: whatever the parser trips on
        # (a lone UTF-16 surrogate in meta raised UnicodeEncodeError) is a rejection, not a crash
        raise UpdateRejected(
            f"not a readable policy.npz: {type(error).__name__}: {error}"
        ) from None
    if rules.public_key is not None:
        from runtime.signing import verify_policy

        try:
            verify_policy(policy, rules.public_key)
        except PolicyError as error:
            raise UpdateRejected(f"signature check failed: {error}", policy.version) from None
    else:
        logger.warning(
            "accepting an update without checking its signature (--insecure-allow-unsigned)"
        )
    try:
        check_fits(policy, rules.space)
    except SpaceMismatch as error:
        raise UpdateRejected(str(error), policy.version) from None
    return _check_version(policy, current, highest_version, refused)


def _check_version(
    policy: Policy, current: Policy, highest_version: int, refused: Collection[int]
) -> Policy:
    version = policy.version
    if version == current.version:
        if policy.sha256 == current.sha256:
            raise AlreadyRunning()
        raise UpdateRejected(
            f"version {version} is already running with different content"
            f" (sha256 {current.sha256[:12]}..., got {policy.sha256[:12]}...)",
            version,
        )
    if version in refused:
        raise Stale(f"version {version} was rolled back on this device and is refused", version)
    # Equal to the highest ever accepted yet newer than what runs: that version was lost here
    # (a damaged current.npz, the fallback to previous.npz) and is being restored, not replayed
    # from the past; a version rolled back here was refused above.
    if version <= current.version or version < highest_version:
        newest = max(highest_version, current.version)
        raise Stale(
            f"version {version} is not newer than version {newest} (anti-rollback)", version
        )
    return policy


@dataclass(frozen=True)
class RollbackDecision:
    """Why the policy on probation must go: the figures go into the status and the log."""

    version: int
    mean_return: float
    episodes: int
    threshold: float
    baseline: float | None

    @property
    def reason(self) -> str:
        basis = (
            f"half of the previous policy's mean {self.baseline:.1f}"
            if self.baseline is not None
            else "--rollback-below"
        )
        return (
            f"mean return {self.mean_return:.1f} over {self.episodes} episodes is below"
            f" {self.threshold:.1f} ({basis})"
        )


@dataclass(frozen=True)
class Probation:
    """How a freshly applied version will be judged; `threshold` None: it will not be."""

    version: int
    previous_version: int
    threshold: float | None
    baseline: float | None  # the previous version's recent mean, when it set the threshold

    @property
    def skipped(self) -> str | None:
        """One line for the status and the log when there is no health check, else None."""
        if self.threshold is not None:
            return None
        return (
            f"health check skipped: no baseline (version {self.previous_version} finished no"
            f" whole episode in this process before version {self.version} arrived); set"
            " --rollback-below (rollback_below in the config file) to give every update a floor"
        )


@dataclass(frozen=True)
class Verdict:
    """Where the health check of `version` (the one applied last) stands: pending, passed,
    skipped (nothing to judge it by) or failed (rolled back); the status's `probation`."""

    version: int
    state: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state}


class HealthMonitor:
    """Episode returns per policy version, and the probation of a freshly applied one.

    An episode counts for a version only when that version was active both when the
    episode began (the previous episode ended, or the loop started: `starting_version`) and
    when it ended, so an episode that straddles a swap counts for nobody. Called from the
    control loop (`record`) and the update worker (`start_probation`, `cancel`); the lock is
    taken once per episode, never per decision.
    """

    def __init__(
        self,
        probation_episodes: int,
        rollback_below: float | None,
        starting_version: int | None = None,
    ) -> None:
        """`starting_version`: the policy the loop's first episode begins under (None:
        unknown, and the first episode counts for nobody)."""
        if probation_episodes < 1:
            raise ValueError(f"probation episodes must be >= 1, got {probation_episodes}")
        self.probation_episodes = probation_episodes
        self.rollback_below = rollback_below
        self._lock = threading.Lock()
        self._recent: dict[int, deque[float]] = {}
        self._last_version = starting_version  # active when the current episode began
        self._probation: Probation | None = None
        self._trial: list[float] = []
        self.verdict: Verdict | None = None  # of the version applied last; None before one

    def start_probation(self, version: int, previous_version: int) -> Probation:
        """Judge `version` by its next clean episodes against `previous_version`'s recent mean
        (or `rollback_below`); logs one warning when there is nothing to judge it by."""
        with self._lock:
            baseline_returns = self._recent.get(previous_version)
            baseline = sum(baseline_returns) / len(baseline_returns) if baseline_returns else None
            threshold = self.rollback_below
            if threshold is None and baseline is not None:
                threshold = 0.5 * baseline
            self._recent = {
                previous_version: self._recent.get(previous_version, deque(maxlen=RECENT_RETURNS))
            }
            probation = Probation(
                version,
                previous_version,
                threshold,
                baseline if self.rollback_below is None else None,
            )
            self._probation = probation if threshold is not None else None
            self._trial = []
            state = PROBATION_PENDING if threshold is not None else PROBATION_SKIPPED
            self.verdict = Verdict(version, state)
        if probation.skipped is not None:
            logger.warning("version %d: %s", version, probation.skipped)
        return probation

    def cancel(self) -> None:
        with self._lock:
            self._probation = None
            self._trial = []

    def record(self, version: int, episode_return: float) -> RollbackDecision | None:
        """Note one finished episode under `version`; a decision when probation fails."""
        with self._lock:
            clean = self._last_version == version
            self._last_version = version
            if not clean:
                return None
            recent = self._recent.setdefault(version, deque(maxlen=RECENT_RETURNS))
            recent.append(float(episode_return))
            if self._probation is None or self._probation.version != version:
                return None
            self._trial.append(float(episode_return))
            if len(self._trial) < self.probation_episodes:
                return None
            probation = self._probation
            threshold = probation.threshold
            assert threshold is not None  # only a judged version is on probation
            mean = sum(self._trial) / len(self._trial)
            self._probation, episodes, self._trial = None, len(self._trial), []
            passed = mean >= threshold
            self.verdict = Verdict(version, PROBATION_PASSED if passed else PROBATION_FAILED)
            if passed:
                return None
            return RollbackDecision(version, mean, episodes, threshold, probation.baseline)

    def mean_return(self, version: int) -> float | None:
        with self._lock:
            recent = self._recent.get(version)
            return sum(recent) / len(recent) if recent else None
