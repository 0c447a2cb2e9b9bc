"""The training configuration: one frozen dataclass, a help string per field, two presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from runtime.constants import MAX_HIDDEN

ENV_BACKENDS = ("numpy", "gymnasium")
BASELINES = ("time", "batch")
PRESETS = ("default", "seed")
MAX_LR = 1.0  # RMSProp's step is about lr per weight: larger only diverges
MAX_RETURN = 500.0  # CartPole-v1's time limit: the most an episode can return


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; `python -m trainer --help` is built from it."""

    seed: int = field(
        default=0, metadata={"help": "seed of every random draw (init, actions, resets)"}
    )
    max_episodes: int = field(
        default=5000,
        metadata={
            "help": "stop after this many episodes, polishing included, if not done before"
            " (a solved run can need 1,700 episodes of polishing: seed 110)"
        },
    )
    hidden: int = field(
        default=32, metadata={"help": "hidden ReLU units H of the 4 -> H -> 1 policy"}
    )
    lr: float = field(default=0.02, metadata={"help": "RMSProp learning rate at the start"})
    lr_final: float = field(
        default=0.005,
        metadata={
            "help": "learning rate once the batch's mean return reaches the target (linear in"
            " between; equal to --lr for a constant rate)"
        },
    )
    batch: int = field(default=8, metadata={"help": "episodes per policy update at the start"})
    batch_final: int = field(
        default=32,
        metadata={
            "help": "episodes per update once the batch's mean return reaches the target"
            " (geometric in between; equal to --batch for a constant size)"
        },
    )
    num_envs: int = field(
        default=32,
        metadata={
            "help": "most environments stepped in parallel (the loop runs min(this, batch) of them)"
        },
    )
    gamma: float = field(default=0.99, metadata={"help": "discount factor of the returns"})
    baseline: str = field(
        default="time",
        metadata={
            "help": "time: subtract the batch's mean return at each time step, divide by the"
            " std; batch: standardise the returns over the whole batch (the article)",
            "choices": BASELINES,
        },
    )
    rms_decay: float = field(
        default=0.99, metadata={"help": "RMSProp decay of the squared-gradient average"}
    )
    rms_eps: float = field(default=1e-5, metadata={"help": "RMSProp epsilon"})
    env: str = field(
        default="numpy",
        metadata={
            "help": "numpy: this package's vectorised CartPole (Gymnasium's dynamics bit for"
            " bit); gymnasium: Gymnasium's own gymnasium.make, one environment (--num-envs 1)",
            "choices": ENV_BACKENDS,
        },
    )
    target_return: float = field(
        default=475.0,
        metadata={
            "help": "solved when the mean return of the last --target-window episodes reaches this"
        },
    )
    target_window: int = field(default=100, metadata={"help": "episodes in the trailing window"})
    eval_episodes: int = field(
        default=100,
        metadata={
            "help": "greedy evaluation episodes on Gymnasium's CartPole-v1 after training (0: skip)"
        },
    )

    def __post_init__(self) -> None:
        _check_int(self, "seed", 0, 2**63 - 1)
        _check_int(self, "max_episodes", 1, 10**9)
        _check_int(self, "hidden", 1, MAX_HIDDEN)
        _check_int(self, "batch", 1, 10**6)
        _check_int(self, "batch_final", 1, 10**6)
        _check_int(self, "num_envs", 1, 10**5)
        _check_int(self, "target_window", 1, 10**6)
        _check_int(self, "eval_episodes", 0, 10**6)
        # RMSProp moves a weight by up to lr / sqrt(1 - rms_decay) per update: a rate above
        # MAX_LR only overflows the float32 weights (--lr 1e308 ended in a traceback)
        _check_float(self, "lr", 0.0, MAX_LR, high_inclusive=True)
        _check_float(self, "lr_final", 0.0, MAX_LR, high_inclusive=True)
        _check_float(self, "rms_eps", 0.0, math.inf)
        _check_float(self, "gamma", 0.0, 1.0, high_inclusive=True)
        _check_float(self, "rms_decay", 0.0, 1.0)
        # CartPole-v1 pays 1 to 500 per episode: 0 divided the schedules by zero, a higher
        # target can never be reached
        _check_float(self, "target_return", 0.0, MAX_RETURN, high_inclusive=True)
        if self.baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}"
            )
        if self.env == "gymnasium" and self.num_envs != 1:
            raise ValueError(
                f"env gymnasium steps one environment (num_envs 1), got num_envs {self.num_envs};"
                " the numpy env is Gymnasium's vectorised dynamics bit for bit"
            )
        if self.env not in ENV_BACKENDS:
            raise ValueError(f"env must be one of {', '.join(ENV_BACKENDS)}, got {self.env!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(config: TrainConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_float(
    config: TrainConfig, name: str, low: float, high: float, high_inclusive: bool = False
) -> None:
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low < value and (value <= high if high_inclusive else value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be a number in ({low}, {high}{bracket}, got {value!r}")


# The article's configuration, exactly: H=100, lr 1e-3 constant, batch of 5 episodes played one
# after another on one Gymnasium environment stepped one action at a time, returns standardised
# over the batch, gamma 0.99. RMSProp (decay 0.99, eps 1e-5) and the Xavier-style
# initialisation are shared with the default.
SEED_PRESET = {
    "hidden": 100,
    "lr": 1e-3,
    "lr_final": 1e-3,
    "batch": 5,
    "batch_final": 5,
    "num_envs": 1,
    "gamma": 0.99,
    "baseline": "batch",
    "env": "gymnasium",
    "max_episodes": 10000,
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset with `overrides` applied (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    values = dict(SEED_PRESET) if name == "seed" else {}
    for start, final in (("lr", "lr_final"), ("batch", "batch_final")):
        if name == "seed" and overrides.get(start) is not None and overrides.get(final) is None:
            values[final] = overrides[start]  # the article's rate and batch are constant
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A config from config.json; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    return TrainConfig(**values)
