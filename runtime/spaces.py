"""What a plant observes and takes, and whether a policy fits it.

A plant declares `obs_dim` (the length of its observations) and its action space:
`action_kind` "discrete" with `action_dim` = n actions (the plant takes an int in 0..n-1), or
"continuous" with `action_dim` = k (a float32 vector of k values) and `action_low` /
`action_high` (k bounds each, -inf / inf for an unbounded one). A plant that declares none of
the action attributes is CartPole's: two discrete actions.

A policy fits a plant when it observes `obs_dim` values and its head makes the plant's
actions: bernoulli for 2 discrete actions, categorical with action_dim n for n discrete
actions, gaussian with action_dim k for k continuous ones, its clip range within the plant's
bounds (compared in float32, as the policy clips: a policy never asks for an action the plant
refuses; a narrower range is fine).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.constants import (
    ACTION_CONTINUOUS,
    ACTION_DISCRETE,
    ACTION_KINDS,
    CARTPOLE_ACTIONS,
    HEAD_BERNOULLI,
    HEAD_GAUSSIAN,
    OBS_DIM,
)
from runtime.policy import Policy, PolicyError, PolicySpec

MAX_PLANT_OBS_DIM = 1_000_000  # a plant's observation length (a policy's own limit is lower)
MAX_PLANT_ACTIONS = 1_000_000


class SpaceMismatch(PolicyError):
    """The policy does not fit the plant: its message says which size or bound differs."""


def _size(name: str, value: Any, limit: int) -> int:
    try:
        size = operator.index(value)  # int, or NumPy's integers
    except TypeError:
        size = None
    if size is None or isinstance(value, bool) or not 1 <= size <= limit:
        raise ValueError(f"{name} = {value!r}, expected an integer in 1..{limit}")
    return size


def _bounds(name: str, value: Any, size: int) -> tuple[float, ...]:
    """`size` numbers, NaN refused (-inf and inf allowed: an unbounded action)."""
    try:
        values = tuple(float(bound) for bound in np.asarray(value, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        values = ()
    if len(values) != size or any(math.isnan(bound) for bound in values):
        raise ValueError(f"{name} = {value!r}, expected {size} numbers (not NaN)")
    return values


@dataclass(frozen=True)
class PlantSpace:
    """A plant's observation length and action space, checked where built (ValueError)."""

    obs_dim: int = OBS_DIM
    action_kind: str = ACTION_DISCRETE
    action_dim: int = CARTPOLE_ACTIONS
    action_low: tuple[float, ...] | None = None  # continuous only
    action_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "obs_dim", _size("obs_dim", self.obs_dim, MAX_PLANT_OBS_DIM))
        if self.action_kind not in ACTION_KINDS:
            raise ValueError(
                f"action_kind = {self.action_kind!r}, expected one of {', '.join(ACTION_KINDS)}"
            )
        dim = _size("action_dim", self.action_dim, MAX_PLANT_ACTIONS)
        object.__setattr__(self, "action_dim", dim)
        if self.action_kind == ACTION_DISCRETE:
            if self.action_low is not None or self.action_high is not None:
                raise ValueError("action_low and action_high are for continuous actions only")
            return
        low = self.action_low if self.action_low is not None else (-math.inf,) * dim
        high = self.action_high if self.action_high is not None else (math.inf,) * dim
        low, high = _bounds("action_low", low, dim), _bounds("action_high", high, dim)
        for index, (below, above) in enumerate(zip(low, high, strict=True)):
            if not below < above:
                raise ValueError(
                    f"action_low[{index}] = {below!r} is not below action_high[{index}] = {above!r}"
                )
        object.__setattr__(self, "action_low", low)
        object.__setattr__(self, "action_high", high)

    @property
    def continuous(self) -> bool:
        return self.action_kind == ACTION_CONTINUOUS

    def describe(self) -> str:
        """`obs 4, 2 discrete actions` / `obs 3, 1 continuous action in [-2, 2]`."""
        if not self.continuous:
            return f"obs {self.obs_dim}, {self.action_dim} discrete actions"
        plural = "s" if self.action_dim > 1 else ""
        ranges = ", ".join(
            f"[{a:g}, {b:g}]" for a, b in zip(self.action_low, self.action_high, strict=True)
        )
        return f"obs {self.obs_dim}, {self.action_dim} continuous action{plural} in {ranges}"

    def to_json(self) -> dict[str, Any]:
        """The fields a status or telemetry message carries (no bounds: they may be inf)."""
        return {
            "obs_dim": self.obs_dim,
            "action_kind": self.action_kind,
            "action_dim": self.action_dim,
        }


def space_of(plant: Any, name: str = "the plant") -> PlantSpace:
    """The space `plant` declares (attributes obs_dim, action_kind, action_dim, action_low,
    action_high; the action ones default to CartPole's two discrete actions). A bad
    declaration is a ValueError naming `name` and the attribute."""
    kind = getattr(plant, "action_kind", ACTION_DISCRETE)
    try:
        return PlantSpace(
            obs_dim=getattr(plant, "obs_dim", None),
            action_kind=kind,
            action_dim=getattr(plant, "action_dim", CARTPOLE_ACTIONS),
            action_low=getattr(plant, "action_low", None),
            action_high=getattr(plant, "action_high", None),
        )
    except ValueError as error:
        raise ValueError(f"{name} declares {error}") from None


def space_for(spec: PolicySpec) -> PlantSpace:
    """The plant a policy with `spec` is made for (the stdio plant takes the policy's)."""
    if spec.head == HEAD_GAUSSIAN:
        return PlantSpace(
            spec.obs_dim, ACTION_CONTINUOUS, spec.action_dim, spec.action_low, spec.action_high
        )
    actions = CARTPOLE_ACTIONS if spec.head == HEAD_BERNOULLI else spec.action_dim
    return PlantSpace(spec.obs_dim, ACTION_DISCRETE, actions)


def mismatch(spec: PolicySpec, space: PlantSpace) -> str | None:
    """Why a policy with `spec` does not fit a plant with `space` (one clause), else None."""
    if spec.obs_dim != space.obs_dim:
        return f"it observes {spec.obs_dim} values, the plant gives {space.obs_dim}"
    if spec.head == HEAD_GAUSSIAN:
        if not space.continuous:
            return (
                f"its gaussian head makes {spec.action_dim} continuous action(s), the plant"
                f" takes one of {space.action_dim} discrete actions"
            )
        if spec.action_dim != space.action_dim:
            return (
                f"it makes {spec.action_dim} continuous action(s), the plant takes"
                f" {space.action_dim}"
            )
        return _bounds_mismatch(spec, space)
    actions = CARTPOLE_ACTIONS if spec.head == HEAD_BERNOULLI else spec.action_dim
    if space.continuous:
        return (
            f"its {spec.head} head chooses one of {actions} discrete actions, the plant takes"
            f" {space.action_dim} continuous action(s)"
        )
    if actions != space.action_dim:
        return (
            f"its {spec.head} head chooses one of {actions} actions, the plant takes one of"
            f" {space.action_dim}"
        )
    return None


def _bounds_mismatch(spec: PolicySpec, space: PlantSpace) -> str | None:
    """The policy clips its mean to float32 bounds: they must lie within the plant's."""
    with np.errstate(over="ignore"):  # a plant bound beyond float32 is unbounded for float32
        plant_low = np.float32(np.asarray(space.action_low, dtype=np.float64))
        plant_high = np.float32(np.asarray(space.action_high, dtype=np.float64))
    policy_low, policy_high = np.float32(spec.action_low), np.float32(spec.action_high)
    for index in range(spec.action_dim):
        if policy_low[index] < plant_low[index]:
            return (
                f"its action_low[{index}] = {spec.action_low[index]:g} is below the plant's"
                f" {space.action_low[index]:g}"
            )
        if policy_high[index] > plant_high[index]:
            return (
                f"its action_high[{index}] = {spec.action_high[index]:g} is above the plant's"
                f" {space.action_high[index]:g}"
            )
    return None


def check_fits(policy: Policy, space: PlantSpace) -> None:
    """SpaceMismatch, one line, unless `policy` fits a plant with `space`."""
    reason = mismatch(policy.spec, space)
    if reason is not None:
        raise SpaceMismatch(
            f"policy version {policy.version} does not match the plant ({space.describe()}):"
            f" {reason}"
        )
