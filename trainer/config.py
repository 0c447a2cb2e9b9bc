"""The training configuration: one frozen dataclass, a help string per field, two presets.

`env` is any registered Gymnasium id (or Gymnasium's `module:EnvName-v0`, which imports the
user's module first). CartPole-v1 with the format-1 policy (relu, no biases, no normaliser,
RMSProp) trains on the flow of trainer/train.py: the NumPy fast path, or with backend
gymnasium and one environment the article's set-up. Everything else trains on
trainer/gym_train.py's generic flow over `gymnasium.make_vec`, or for Acrobot-v1 (backend auto
or numpy) over trainer/acrobot.py's NumPy vector env, Gymnasium's bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from runtime.constants import ACTIVATIONS, ENV_ID, MAX_HIDDEN

BACKENDS = ("auto", "numpy", "gymnasium")
OLD_ENV_BACKENDS = ("numpy", "gymnasium")  # config.json's `env` before any env id was allowed
BASELINES = ("time", "batch")
OPTIMIZERS = ("rmsprop", "adam")
PRESETS = ("default", "seed")
MAX_LR = 1.0  # RMSProp's step is about lr per weight: larger only diverges
MAX_RETURN = 500.0  # CartPole-v1's time limit: the most an episode can return
CARTPOLE_THRESHOLD = 475.0  # CartPole-v1's spec.reward_threshold, here without gymnasium
MAX_ENV_ID = 256  # characters of an env id (Gymnasium's ids are a few dozen)
# envs with a NumPy vector env of the generic flow, Gymnasium's bit for bit (trainer/acrobot.py)
NUMPY_VECTOR_ENVS = ("Acrobot-v1",)


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
            " (a solved run can need hundreds of episodes of polishing: Acrobot-v1 769 on"
            " bench/train.py's seed 7)"
        },
    )
    hidden: int = field(
        default=32,
        metadata={"help": "hidden units H of the obs_dim -> H -> outputs policy"},
    )
    lr: float = field(
        default=0.02,
        metadata={"help": "learning rate at the start (other envs than CartPole-v1: throughout)"},
    )
    lr_final: float = field(
        default=0.01,
        metadata={
            "help": "learning rate once the batch's mean return reaches the target (linear in"
            " between; equal to --lr for a constant rate; CartPole-v1's flow only)"
        },
    )
    batch: int = field(
        default=4,
        metadata={
            "help": "episodes per policy update at the start (other envs than CartPole-v1:"
            " throughout)"
        },
    )
    batch_final: int = field(
        default=16,
        metadata={
            "help": "episodes per update once the batch's mean return reaches the target"
            " (geometric in between; equal to --batch for a constant size; CartPole-v1's flow"
            " only)"
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
        default=ENV_ID,
        metadata={
            "help": "Gymnasium environment id, or module:EnvName-v0 to import a module that"
            " registers it; Box observations (1-D), Discrete(n) or Box(k) actions"
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "numpy: this package's vectorised environments, Gymnasium's dynamics bit"
            " for bit: CartPole-v1 (relu, no biases, no normaliser, rmsprop) and Acrobot-v1;"
            " gymnasium: Gymnasium's environments (CartPole-v1 with --num-envs 1:"
            " gymnasium.make, the article's set-up; else gymnasium.make_vec); auto: numpy"
            " where it applies, else gymnasium",
            "choices": BACKENDS,
        },
    )
    activation: str = field(
        default="relu",
        metadata={"help": "hidden-layer activation", "choices": ACTIVATIONS},
    )
    biases: bool = field(
        default=False, metadata={"help": "add the biases b1 and b2 to the policy (true/false)"}
    )
    normaliser: bool = field(
        default=False,
        metadata={
            "help": "normalise observations by running mean/std, updated after every update"
            " and frozen into the saved policy (true/false)"
        },
    )
    optimizer: str = field(
        default="rmsprop",
        metadata={
            "help": "rmsprop (--rms-decay, --rms-eps) or adam (betas 0.9, 0.999, eps 1e-8)",
            "choices": OPTIMIZERS,
        },
    )
    target_return: float | None = field(
        default=None,
        metadata={
            "help": "solved when the mean return of the last --target-window episodes reaches"
            " this; default the env's spec.reward_threshold (CartPole-v1: 475), required for"
            " an env without one"
        },
    )
    target_window: int = field(default=100, metadata={"help": "episodes in the trailing window"})
    eval_episodes: int = field(
        default=100,
        metadata={
            "help": "greedy evaluation episodes on the Gymnasium env after training (0: skip)"
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
        if self.target_return is not None and self.env == ENV_ID:
            # CartPole-v1 pays 1 to 500 per episode: 0 divided the schedules by zero, a higher
            # target can never be reached
            _check_float(self, "target_return", 0.0, MAX_RETURN, high_inclusive=True)
        elif self.target_return is not None:  # other envs' returns can be negative (Acrobot)
            _check_float(self, "target_return", -math.inf, math.inf)
        for name, allowed in (
            ("baseline", BASELINES),
            ("backend", BACKENDS),
            ("activation", ACTIVATIONS),
            ("optimizer", OPTIMIZERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        for name in ("biases", "normaliser"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        env = self.env
        if not isinstance(env, str) or not 0 < len(env) <= MAX_ENV_ID or not env.isprintable():
            raise ValueError(
                f"env must be a Gymnasium id of 1..{MAX_ENV_ID} printable characters, got {env!r}"
            )
        if self.backend == "numpy" and not (cartpole_flow(self) or numpy_vector_env(self)):
            raise ValueError(
                f"backend numpy is the NumPy CartPole-v1 (env {ENV_ID}, activation relu, biases"
                " and normaliser false, optimizer rmsprop) or the NumPy"
                f" {', '.join(NUMPY_VECTOR_ENVS)}, got env {env}, activation {self.activation},"
                f" biases {self.biases}, normaliser {self.normaliser}, optimizer"
                f" {self.optimizer}; use --backend gymnasium or auto"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_format_1(config: TrainConfig) -> bool:
    """The config trains format 1's policy: relu, no biases, no normaliser (and RMSProp, the
    CartPole flow's optimiser)."""
    plain = config.activation == "relu" and not config.biases and not config.normaliser
    return plain and config.optimizer == "rmsprop"


def cartpole_flow(config: TrainConfig) -> bool:
    """trainer/train.py's flow trains this config: CartPole-v1's format-1 policy on the NumPy
    fast path, or with backend gymnasium and one environment on gymnasium.make."""
    if config.env != ENV_ID or not is_format_1(config):
        return False
    return config.backend != "gymnasium" or config.num_envs == 1


def numpy_vector_env(config: TrainConfig) -> bool:
    """The generic flow (trainer/gym_train.py) steps this config's env on this package's NumPy
    vector env (NUMPY_VECTOR_ENVS, Gymnasium's bit for bit), not on gymnasium.make_vec."""
    return config.env in NUMPY_VECTOR_ENVS and config.backend != "gymnasium"


def solve_target(config: TrainConfig, threshold: float | None = None) -> float:
    """The mean return that counts as solved: --target-return, else the env's
    spec.reward_threshold (`threshold`; CartPole-v1's is known without gymnasium)."""
    if config.target_return is not None:
        return float(config.target_return)
    if config.env == ENV_ID:
        return CARTPOLE_THRESHOLD
    if threshold is None:
        raise ValueError(
            f"--target-return is required: env {config.env} has no spec.reward_threshold"
            " to call a run solved"
        )
    return float(threshold)


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
    "backend": "gymnasium",
    "max_episodes": 10000,
}


# The default on any env but CartPole-v1 (the generic flow; CartPole-v1's default stays the
# format-1 policy its numbers are for): tanh, biases and the observation normaliser; a constant
# batch of 8 on min(num_envs, batch) = 8 environments (CartPole-v1's schedule starts at 4).
# Measured (seeds 0-3 or 0-5): examples/servo 4/4 solved, 1,080-2,586 episodes (batch 16: 2 of
# 4 unsolved in 4,000); Acrobot-v1 6/6, median 356 (relu without biases or normaliser: 1,255
# on seed 3).
OTHER_ENV_DEFAULTS = {"activation": "tanh", "biases": True, "normaliser": True, "batch": 8}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset with `overrides` applied (None values are ignored). The default
    preset on an env other than CartPole-v1 starts from OTHER_ENV_DEFAULTS."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    values = {}
    if name == "seed":
        values = dict(SEED_PRESET)
    elif overrides.get("env") not in (None, ENV_ID):
        values = dict(OTHER_ENV_DEFAULTS)
    for start, final in (("lr", "lr_final"), ("batch", "batch_final")):
        if name == "seed" and overrides.get(start) is not None and overrides.get(final) is None:
            values[final] = overrides[start]  # the article's rate and batch are constant
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A config from config.json; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if values.get("env") in OLD_ENV_BACKENDS and "backend" not in values:
        # a run saved before `env` took any id: `env` was the backend, CartPole-v1 the env
        values = {**values, "env": ENV_ID, "backend": values["env"]}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    return TrainConfig(**values)
