"""Plants: what the policy controls. Anything with `reset(seed) -> obs` and
`step(action) -> (obs, reward, done)` is a plant; three ship with the runtime:

- `sim`: CartPole-v1 in NumPy, step for step the same as Gymnasium's (same constants,
  Euler integration, thresholds, 500-step truncation and reset distribution for a seed);
- `stdio`: a line protocol on stdin/stdout for a real plant behind a bridge (see `StdioPlant`);
  its sizes are the policy's;
- `gym`: any Gymnasium environment with vector observations and Discrete(n) or Box(k) actions
  (imports gymnasium only then);
- `module:Class`: your own plant class (see `load_custom_plant` and docs/runtime.md, "Your own plant").
"""

from __future__ import annotations

import importlib
import logging
import math
import numbers
import operator
import os
import re
import select
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np

from runtime.constants import (
    ACTION_CONTINUOUS,
    ACTION_DISCRETE,
    CARTPOLE_ACTIONS,
    ENV_ID,
    OBS_DIM,
)
from runtime.rng import Generator
from runtime.spaces import MAX_PLANT_OBS_DIM, PlantSpace, space_of

log = logging.getLogger(__name__)


class PlantError(RuntimeError):
    """The plant cannot be built or used (message says why)."""


class PlantFailed(RuntimeError):
    """A user's plant raised inside reset() or step() (a driver error): exit 1, its name said."""


class PlantClosed(Exception):
    """The plant has ended (its bridge closed the stream, or a stop was requested)."""


@runtime_checkable
class Plant(Protocol):
    """The interface the control loop drives; its space must match the policy
    (`runtime.spaces`): `obs_dim`, and optionally `action_kind` ("discrete", the default, or
    "continuous"), `action_dim` (n actions, default 2, or k floats) and, for continuous
    actions, `action_low` / `action_high` (k bounds each; default unbounded)."""

    obs_dim: int

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; return the first observation."""
        ...

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        """Apply `action` (an int in 0..n-1, or a float32 (k,) array) for one period; return
        (observation, reward, episode over)."""
        ...


# --- sim: CartPole-v1 ---------------------------------------------------------------

GRAVITY = 9.8  # m/s^2
MASS_CART = 1.0  # kg
MASS_POLE = 0.1  # kg
TOTAL_MASS = MASS_POLE + MASS_CART  # kg
HALF_POLE_LENGTH = 0.5  # m (Gymnasium's `length` is half the pole)
POLE_MASS_LENGTH = MASS_POLE * HALF_POLE_LENGTH  # kg m
FORCE = 10.0  # N, pushed left (action 0) or right (action 1)
TAU = 0.02  # s between state updates (Euler step)
THETA_THRESHOLD = 12 * 2 * math.pi / 360  # rad: the episode ends beyond +-12 degrees
X_THRESHOLD = 2.4  # m: the episode ends when the cart centre leaves +-2.4
MAX_STEPS = 500  # CartPole-v1's TimeLimit
RESET_LOW, RESET_HIGH = -0.05, 0.05  # each state component starts uniform in this range


class CartPoleSim:
    """Gymnasium's CartPole-v1 (`gym.make("CartPole-v1")`) without Gymnasium.

    The arithmetic is Gymnasium's, in the same order and on the same float64 scalars, so the
    float32 observations are bitwise identical for the same seed and actions. The reset RNG
    draws what `np.random.default_rng(seed)` draws (Gymnasium's `seeding.np_random`: PCG64 on a
    SeedSequence; `runtime.rng`, without importing numpy.random), re-seeded only when a seed is
    given, like `Env.reset(seed=...)`.
    """

    obs_dim = OBS_DIM
    action_kind, action_dim = ACTION_DISCRETE, CARTPOLE_ACTIONS  # push left (0), right (1)

    def __init__(self) -> None:
        self.rng = Generator()
        self.state = np.zeros(4)
        self.steps = 0
        self.terminated = False
        self.truncated = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = Generator(seed)
        self.state = np.array(self.rng.uniform(RESET_LOW, RESET_HIGH, 4), dtype=np.float64)
        self.steps = 0
        self.terminated = self.truncated = False
        return np.array(self.state, dtype=np.float32)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        x, x_dot, theta, theta_dot = self.state
        force = FORCE if action == 1 else -FORCE
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        # equations of motion: https://coneural.org/florian/papers/05_cart_pole.pdf
        temp = (force + POLE_MASS_LENGTH * np.square(theta_dot) * sintheta) / TOTAL_MASS
        thetaacc = (GRAVITY * sintheta - costheta * temp) / (
            HALF_POLE_LENGTH * (4.0 / 3.0 - MASS_POLE * np.square(costheta) / TOTAL_MASS)
        )
        xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS
        x = x + TAU * x_dot  # Euler: positions move with the old velocities
        x_dot = x_dot + TAU * xacc
        theta = theta + TAU * theta_dot
        theta_dot = theta_dot + TAU * thetaacc
        self.state = np.array((x, x_dot, theta, theta_dot), dtype=np.float64)
        self.steps += 1
        self.terminated = bool(
            x < -X_THRESHOLD
            or x > X_THRESHOLD
            or theta < -THETA_THRESHOLD
            or theta > THETA_THRESHOLD
        )
        self.truncated = self.steps >= MAX_STEPS
        return np.array(self.state, dtype=np.float32), 1.0, self.terminated or self.truncated


# --- stdio: a line protocol for a bridge -----------------------------------------------

MAX_LINE_BYTES = 4096
# a number as C's printf/strtod and every language writes it; nan and inf are read (to be
# refused as non-finite, with that message)
DECIMAL = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf(?:inity)?)", re.I
)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # observations are float32, as the sim's are


class StdioPlant:
    """A plant on the other side of two byte streams (stdin/stdout of the runtime).

    Protocol, one message per line (UTF-8, `\\n`-terminated, whitespace-separated fields):

    runtime -> bridge:  `reset`        start a new episode (the bridge may ignore it)
                        `2`            the action for the current observation: discrete, an
                                       integer 0..n-1 (CartPole: `0` or `1`); continuous, k
                                       floats `0.25 -1.5` ('%.9g': float32 round-trips)
    bridge -> runtime:  `x v theta w`  an observation: obs_dim finite floats (optionally one
                                       more: the reward of the last step, default 1)
                        `done [r]`     the episode is over (after an action; optionally the
                                       reward of that last step, default 1); the runtime
                                       answers `reset` and waits for the next observation
                        blank lines and lines starting with `#` are ignored

    The runtime answers every observation with exactly one action line. Any other line is
    malformed: it is reported on stderr, counted in `malformed`, and skipped (the runtime
    keeps waiting for a valid line). End of input ends the run (`PlantClosed`).
    """

    def __init__(
        self,
        infile: BinaryIO,
        outfile: BinaryIO,
        obs_dim: int = OBS_DIM,
        should_stop: Callable[[], bool] = lambda: False,
        poll_seconds: float = 0.1,
        space: PlantSpace | None = None,
    ) -> None:
        """`space` (the policy's, `runtime.spaces.space_for`) sets the sizes; without it,
        `obs_dim` floats and CartPole's two actions."""
        space = space or PlantSpace(obs_dim=obs_dim)
        self.obs_dim, self.action_kind, self.action_dim = (
            space.obs_dim,
            space.action_kind,
            space.action_dim,
        )
        self.action_low, self.action_high = space.action_low, space.action_high
        obs_dim = space.obs_dim
        # an action line per discrete action, made once; continuous ones are formatted
        self._action_lines = (
            None if space.continuous else [b"%d\n" % action for action in range(space.action_dim)]
        )
        self.infile = infile
        self.outfile = outfile
        self.should_stop = should_stop
        self.poll_seconds = poll_seconds
        self.malformed = 0
        self.line_number = 0
        self._buffer = b""
        self._eof = False
        self._last_obs = np.zeros(obs_dim, dtype=np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._write(b"reset\n")
        while True:
            obs, _ = self._next_message()
            if obs is not None:
                self._last_obs = obs
                return obs
            # a `done` before any observation closes nothing: keep waiting

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        self._write(self._action_line(action))
        obs, reward = self._next_message()
        if obs is None:  # `done`: the episode ended with this action
            return self._last_obs, reward, True
        self._last_obs = obs
        return obs, reward, False

    def _action_line(self, action: Any) -> bytes:
        if self._action_lines is not None:
            return self._action_lines[action]
        # '%.9g' of a float32 value reads back as that float32 (9 significant digits suffice)
        return " ".join(f"{value:.9g}" for value in np.asarray(action).tolist()).encode() + b"\n"

    # -- parsing ---------------------------------------------------------------------

    def _next_message(self) -> tuple[np.ndarray | None, float]:
        """(observation, reward), or (None, reward) for `done`."""
        while True:
            line = self._read_line()
            self.line_number += 1
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                return self._parse(text)
            except ValueError as error:
                self.malformed += 1
                log.error(
                    "stdio plant: line %d skipped: %s (malformed lines so far: %d)",
                    self.line_number,
                    error,
                    self.malformed,
                )

    def _parse(self, text: str) -> tuple[np.ndarray | None, float]:
        fields = text.split()
        if fields[0] == "done":
            return None, self._done_reward(text, fields)
        if len(fields) not in (self.obs_dim, self.obs_dim + 1):
            raise ValueError(
                f"expected {self.obs_dim} floats (and optionally a reward) or 'done',"
                f" got {len(fields)} fields: {_shorten(text)!r}"
            )
        if not all(DECIMAL.fullmatch(value) for value in fields):  # not Python's float()
            # syntax: it also takes "1_000", "infinity" and digits of every script
            raise ValueError(f"not a number in {_shorten(text)!r}")
        values = [float(value) for value in fields]
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"non-finite value in {_shorten(text)!r}")
        if any(abs(value) > FLOAT32_MAX for value in values):
            raise ValueError(f"value beyond the float32 range in {_shorten(text)!r}")
        reward = values[self.obs_dim] if len(values) > self.obs_dim else 1.0
        return np.array(values[: self.obs_dim], dtype=np.float32), reward

    # -- byte streams ----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.outfile.write(data)
            self.outfile.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise PlantClosed("the bridge closed its input") from None

    def _read_line(self) -> str:
        """One line, at most MAX_LINE_BYTES; longer lines are cut and reported as malformed."""
        while True:
            newline = self._buffer.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if newline >= 0:
                raw, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                return self._decode(raw)
            if len(self._buffer) > MAX_LINE_BYTES:
                self._skip_long_line()
                continue
            if self._eof:
                if self._buffer:
                    raw, self._buffer = self._buffer, b""
                    return self._decode(raw)
                raise PlantClosed("the bridge closed its output (end of input)")
            self._fill()

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "\ufffd" + raw.decode("utf-8", errors="replace")  # fails to parse, reported

    def _skip_long_line(self) -> None:
        self.line_number += 1
        self.malformed += 1
        log.error(
            "stdio plant: line %d skipped: longer than %d bytes", self.line_number, MAX_LINE_BYTES
        )
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                self._buffer = self._buffer[newline + 1 :]
                return
            self._buffer = b""
            if self._eof:
                return
            self._fill()

    def _fill(self) -> None:
        """Read what is available; wait in short polls so that a stop request is seen."""
        try:
            fd = self.infile.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:  # a file-like object without a descriptor (tests): read a line
            chunk = self.infile.readline(MAX_LINE_BYTES + 1)
        else:
            while True:
                if self.should_stop():
                    raise PlantClosed("stop requested")
                ready, _, _ = select.select([fd], [], [], self.poll_seconds)
                if ready:
                    break
            try:
                chunk = os.read(fd, 65536)
            except OSError as error:
                raise PlantClosed(f"cannot read from the bridge: {error}") from None
        if not chunk:
            self._eof = True
        self._buffer += chunk

    def _done_reward(self, text: str, fields: list[str]) -> float:
        """`done` (reward 1, CartPole's) or `done R`: the reward of the step that ended it."""
        if len(fields) == 1:
            return 1.0
        value = fields[1]
        if len(fields) > 2 or not DECIMAL.fullmatch(value):
            raise ValueError(f"expected 'done' or 'done REWARD', got {_shorten(text)!r}")
        reward = float(value)
        if not math.isfinite(reward) or abs(reward) > FLOAT32_MAX:
            raise ValueError(f"non-finite or out-of-range reward in {_shorten(text)!r}")
        return reward


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(message: Any) -> str:
    """A message as one line: terminal colour codes (gymnasium's) and line breaks removed."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(message))
    return " ".join(text.split())


# --- gym: any Gymnasium environment -----------------------------------------------------


class GymPlant:
    """A Gymnasium environment with vector observations (a 1-D Box) and Discrete(n) or 1-D
    Box(k) actions, its space read from the environment; gymnasium is imported only here.
    A discrete action i is the environment's `start + i`; a continuous one is passed as an
    array of the action space's dtype."""

    def __init__(self, env_id: str = ENV_ID) -> None:
        try:
            import gymnasium
        except ImportError:
            raise PlantError(
                "the gym plant needs gymnasium: pip install 'gymnasium[classic-control]'"
            ) from None
        import warnings

        with warnings.catch_warnings(record=True) as caught:  # one log line each, no colour
            warnings.simplefilter("always")
            try:
                self.env = gymnasium.make(env_id)
            except Exception as error:  # gymnasium.error.Error, or ModuleNotFoundError for
                # "module:Env" ids, or whatever an environment's constructor raises
                raise PlantError(
                    f"cannot make Gymnasium environment {env_id!r}: {_one_line(error)}"
                ) from None
            finally:
                for warning in caught:
                    log.warning("gymnasium: %s", _one_line(warning.message))
        try:
            self._read_spaces(env_id, gymnasium.spaces)
        except PlantError:
            self.env.close()
            raise

    def _read_spaces(self, env_id: str, spaces: Any) -> None:
        observations, actions = self.env.observation_space, self.env.action_space
        if not isinstance(observations, spaces.Box) or len(observations.shape) != 1:
            raise PlantError(
                f"{env_id} has observation space {observations}; the runtime needs a vector"
                " (a 1-D Box)"
            )
        self.obs_dim = int(observations.shape[0])
        self._start, self._dtype = 0, None
        if isinstance(actions, spaces.Discrete):
            self.action_kind, self.action_dim = ACTION_DISCRETE, int(actions.n)
            self._start = int(actions.start)
        elif isinstance(actions, spaces.Box) and len(actions.shape) == 1:
            self.action_kind, self.action_dim = ACTION_CONTINUOUS, int(actions.shape[0])
            self.action_low = tuple(float(bound) for bound in actions.low)
            self.action_high = tuple(float(bound) for bound in actions.high)
            self._dtype = actions.dtype
        else:
            raise PlantError(
                f"{env_id} has action space {actions}; the runtime drives Discrete(n) or a"
                " 1-D Box(k)"
            )

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        if self._dtype is None:
            action = self._start + int(action)
        else:
            action = np.asarray(action, dtype=self._dtype)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        return np.asarray(obs, dtype=np.float32), float(reward), bool(terminated or truncated)

    def close(self) -> None:
        self.env.close()


def make_plant(
    name: str,
    *,
    env_id: str = ENV_ID,
    stdin: Any = None,
    stdout: Any = None,
    should_stop: Callable[[], bool] = lambda: False,
    space: PlantSpace | None = None,
) -> Plant:
    """Build the plant named by the config (`sim`, `stdio` or `gym`); `space` is the stdio
    plant's (the policy's sizes)."""
    if name == "sim":
        return CartPoleSim()
    if name == "stdio":
        if stdin is None or stdout is None:
            closed = "input" if stdin is None else "output"
            raise PlantError(f"the stdio plant talks to its bridge on standard input and output,"
                             f" but standard {closed} is closed")  # fmt: skip
        return StdioPlant(stdin, stdout, should_stop=should_stop, space=space)
    if name == "gym":
        return GymPlant(env_id)
    if ":" in name:
        return load_custom_plant(name)
    raise PlantError(f"unknown plant {name!r}; choose sim, stdio, gym or module:Class")


def load_custom_plant(reference: str) -> Plant:
    """`module:Class` -> an instance of the user's plant (its constructor takes no arguments)."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever the user's module raises (SyntaxError)
        raise PlantError(
            f"plant {reference}: cannot import {module_name}: {type(error).__name__}: {error}"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise PlantError(f"plant {reference}: {module_name} has no class {attribute}")
    try:
        plant = factory()
    except Exception as error:  # a constructor needing arguments, a driver without its device
        raise PlantError(
            f"plant {reference}: {attribute}() failed: {type(error).__name__}: {error}"
        ) from None
    missing = [name for name in ("reset", "step") if not callable(getattr(plant, name, None))]
    if missing:
        raise PlantError(f"plant {reference} is not a plant: no {' or '.join(missing)} method")
    obs_dim = getattr(plant, "obs_dim", None)
    try:
        obs_dim = operator.index(obs_dim)  # int, or NumPy's integers
    except TypeError:
        obs_dim = None
    if obs_dim is None or isinstance(plant.obs_dim, bool) or not 1 <= obs_dim <= MAX_OBS_DIM:
        raise PlantError(
            f"plant {reference} is not a plant: obs_dim = {plant.obs_dim!r}, expected an integer"
            f" in 1..{MAX_OBS_DIM} (the length of its observations)"
        )
    try:
        space = space_of(plant, f"plant {reference}")
    except ValueError as error:
        raise PlantError(f"{error} (see docs/runtime.md, Your own plant)") from None
    return CheckedPlant(plant, reference, obs_dim, space)


MAX_OBS_DIM = MAX_PLANT_OBS_DIM


class CheckedPlant:
    """A user's plant, its answers checked, since the loop cannot trust them.

    An observation must hold `obs_dim` finite numbers within float32's range (any shape, any
    sequence), a reward a finite number, `done` a truth value: anything else is a `PlantError`
    naming the plant, the method and what came back (exit 2). Its space is what the plant
    declares (`runtime.spaces.space_of`: CartPole's two discrete actions unless it says
    otherwise); a continuous action handed to it must be `action_dim` finite floats. An exception raised inside the
    plant's own `reset`/`step` becomes a `PlantFailed` naming them (exit 1); `PlantClosed`
    (the plant ending the run) passes through.
    """

    def __init__(
        self, plant: Any, name: str, obs_dim: int, space: PlantSpace | None = None
    ) -> None:
        self.plant, self.name, self.obs_dim = plant, name, obs_dim
        space = space or PlantSpace(obs_dim=obs_dim)
        self.action_kind, self.action_dim = space.action_kind, space.action_dim
        self.action_low, self.action_high = space.action_low, space.action_high

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self._observation(self._call("reset", seed), "reset")

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        if self.action_kind == ACTION_CONTINUOUS:
            self._check_action(action)
        result = self._call("step", action)
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise PlantError(
                f"plant {self.name}: step() returned {_shorten(repr(result))},"
                " expected (observation, reward, done)"
            )
        obs, reward, done = result
        if not isinstance(reward, numbers.Real) or not math.isfinite(reward):
            raise PlantError(
                f"plant {self.name}: step() returned the reward {_shorten(repr(result[1]))},"
                " expected a finite number"
            )
        try:
            done = bool(done)
        except (TypeError, ValueError):  # an array of several truth values
            raise PlantError(
                f"plant {self.name}: step() returned done = {_shorten(repr(result[2]))},"
                " expected True or False"
            ) from None
        return self._observation(obs, "step"), float(reward), done

    def close(self) -> None:
        close = getattr(self.plant, "close", None)
        if callable(close):
            close()

    def _check_action(self, action: Any) -> None:
        """A continuous action is `action_dim` finite float32 values (the loop's are; this
        guards a plant driven by other code)."""
        values = np.asarray(action)
        if values.shape != (self.action_dim,) or not np.all(np.isfinite(values)):
            raise PlantError(
                f"plant {self.name}: step() was given the action {_shorten(repr(action))},"
                f" expected {self.action_dim} finite floats (action_dim)"
            )

    def _call(self, method: str, argument: Any) -> Any:
        try:
            return getattr(self.plant, method)(argument)
        except PlantClosed:
            raise
        except Exception as error:  # the user's driver failed: say whose code it was
            raise PlantFailed(
                f"plant {self.name}: {method}() failed: {type(error).__name__}: {error}"
            ) from error

    def _observation(self, obs: Any, method: str) -> np.ndarray:
        try:
            values = np.asarray(obs).reshape(-1)
        except (TypeError, ValueError):  # ragged sequences
            values = None
        if values is None or values.dtype.kind not in "biuf" or values.size != self.obs_dim:
            raise PlantError(
                f"plant {self.name}: {method}() returned the observation {_shorten(repr(obs))},"
                f" expected {self.obs_dim} numbers (obs_dim)"
            )
        if not np.all(np.abs(values) <= FLOAT32_MAX):  # NaN fails the comparison too
            raise PlantError(
                f"plant {self.name}: {method}() returned the observation {_shorten(repr(obs))}:"
                " expected finite numbers within float32's range"
            )
        return values.astype(np.float32)
