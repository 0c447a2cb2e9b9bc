"""Acrobot-v1 for N environments at once in plain NumPy, with Gymnasium's exact dynamics.

The constants, the 'book' equations of motion (`_dsdt`), the RK4 step of dt seconds, the angle
wrap, the velocity bounds, the float32 reset state and observations, the reward and the
termination test are those of gymnasium/envs/classic_control/acrobot.py (AcrobotEnv, Gymnasium
1.x; Sutton 1996, Sutton & Barto's book for the equations), torque_noise_max 0. Every
operation is Gymnasium's, in Gymnasium's order, elementwise on (N,) float64 arrays, so the
states are equal bit for bit (tests/trainer/test_trainer_acrobot.py). Two places where
vectorised NumPy would not give Gymnasium's bits:

- Gymnasium squares NumPy float64 scalars (`dtheta2**2`): NumPy computes that with the C
  library's pow(), which differs from x * x in the last bit for about 1 value in 1,000;
  `array**2` and np.square multiply, np.float_power calls pow() element by element (`square`).
- The reset state is float32 until the first step: its observation takes cos and sin in
  float32, each later one in float64 then cast to float32.

`AcrobotVectorEnv` is what `gymnasium.make_vec("Acrobot-v1", num_envs=N,
vectorization_mode="sync")` is to the trainer: the same reset seeding (environment i from
seed + i, Gymnasium's seeding), next-step autoreset, the TimeLimit's truncation at 500 steps,
the same arrays out; without the wrappers' per-env Python calls, which are most of a step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DT = 0.2  # s: one step integrates this long (AcrobotEnv.dt)
LINK_LENGTH_1 = 1.0  # m
LINK_MASS_1 = 1.0  # kg
LINK_MASS_2 = 1.0  # kg
LINK_COM_POS_1 = 0.5  # m: the centre of mass of link 1 from its joint
LINK_COM_POS_2 = 0.5  # m: the centre of mass of link 2 from its joint
LINK_MOI = 1.0  # kg m^2: the moment of inertia of either link
GRAVITY = 9.8  # m/s^2 (_dsdt's g)
MAX_VEL_1 = 4 * math.pi  # rad/s: the bound of link 1's angular velocity
MAX_VEL_2 = 9 * math.pi  # rad/s: the bound of link 2's (relative) angular velocity
AVAIL_TORQUE = (-1.0, 0.0, 1.0)  # N m on the joint between the links, indexed by the action
RESET_LOW, RESET_HIGH = -0.1, 0.1  # every state variable starts uniform in [low, high)
TARGET_HEIGHT = 1.0  # m above the pivot: the free end's height that ends an episode
MAX_EPISODE_STEPS = 500  # Acrobot-v1's TimeLimit
OBS_DIM = 6  # cos t1, sin t1, cos t2, sin t2, dt1, dt2

_TORQUES = np.array(AVAIL_TORQUE)


# --- the dynamics, on a (4, N) float64 state: theta1, theta2 (rad), dtheta1, dtheta2 (rad/s)


def square(x: np.ndarray) -> np.ndarray:
    """x**2 as Gymnasium gets it on a float64 scalar: pow(x, 2), not x * x (module docstring)."""
    return np.float_power(x, _TWO)


def derivatives(state: np.ndarray, torque: np.ndarray) -> np.ndarray:
    """d state / dt (4, N): AcrobotEnv._dsdt, 'book' dynamics, operation for operation (its
    constant factors folded as Python folds them there, below)."""
    theta1, theta2, dtheta1, dtheta2 = state
    cos2, sin2 = np.cos(theta2), np.sin(theta2)
    d1 = _D1_LINK_1 + _MASS_2 * (_D1_LENGTHS + _D1_COUPLING * cos2) + _INERTIA + _INERTIA
    d2 = _MASS_2 * (_D2_LENGTH + _D2_COUPLING * cos2) + _INERTIA
    phi2 = _PHI2_WEIGHT * np.cos(theta1 + theta2 - _HALF_PI)
    phi1 = (
        _PHI1_CENTRIFUGAL * square(dtheta2) * sin2
        - _PHI1_CORIOLIS * dtheta2 * dtheta1 * sin2
        + _PHI1_WEIGHT * np.cos(theta1 - _HALF_PI)
        + phi2
    )
    ddtheta2 = (torque + d2 / d1 * phi1 - _DD2_CENTRIFUGAL * square(dtheta1) * sin2 - phi2) / (
        _DD2_INERTIA - square(d2) / d1
    )
    rates = np.empty_like(state)  # faster than np.stack
    rates[:2] = state[2:]
    rates[2] = -(d2 * ddtheta2 + phi1) / d1
    rates[3] = ddtheta2
    return rates


# _dsdt's constant factors: Gymnasium's expressions, evaluated left to right as Python
# evaluates them there (so the same floats), as 0-d float64 arrays (NumPy multiplies an array
# by them faster than by Python floats, the same bits out: trainer/cartpole.py).
_M1, _M2, _L1 = LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1
_LC1, _LC2, _I, _G = LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, GRAVITY
_MASS_2 = np.array(_M2)  # m2
_INERTIA = np.array(_I)  # I1 and I2
_D1_LINK_1 = np.array(_M1 * _LC1**2)  # m1 * lc1**2
_D1_LENGTHS = np.array(_L1**2 + _LC2**2)  # l1**2 + lc2**2
_D1_COUPLING = np.array(2 * _L1 * _LC2)  # 2 * l1 * lc2, times cos(theta2)
_D2_LENGTH = np.array(_LC2**2)  # lc2**2
_D2_COUPLING = np.array(_L1 * _LC2)  # l1 * lc2, times cos(theta2)
_PHI2_WEIGHT = np.array(_M2 * _LC2 * _G)  # m2 * lc2 * g
_HALF_PI = np.array(math.pi / 2.0)  # pi / 2.0 and pi / 2
_PHI1_CENTRIFUGAL = np.array(-_M2 * _L1 * _LC2)  # -m2 * l1 * lc2, times dtheta2**2
_PHI1_CORIOLIS = np.array(2 * _M2 * _L1 * _LC2)  # 2 * m2 * l1 * lc2, times dtheta2 * dtheta1
_PHI1_WEIGHT = np.array((_M1 * _LC1 + _M2 * _L1) * _G)  # (m1 * lc1 + m2 * l1) * g
_DD2_CENTRIFUGAL = np.array(_M2 * _L1 * _LC2)  # m2 * l1 * lc2, times dtheta1**2
_DD2_INERTIA = np.array(_M2 * _LC2**2 + _I)  # m2 * lc2**2 + I2
_TWO = np.array(2.0)


def rk4(state: np.ndarray, torque: np.ndarray) -> np.ndarray:
    """One step of Gymnasium's `rk4` over t = [0, DT] (its dt = t[1] - t[0] = DT). Gymnasium
    carries the torque as a fifth state variable of derivative 0.0: it stays the same, so
    here it is an argument."""
    k1 = derivatives(state, torque)
    k2 = derivatives(state + _HALF_DT * k1, torque)
    k3 = derivatives(state + _HALF_DT * k2, torque)
    k4 = derivatives(state + _DT * k3, torque)
    return state + _SIXTH_DT * (k1 + _TWO * k2 + _TWO * k3 + k4)


# rk4's dt, dt2 = dt / 2.0 and dt / 6.0 (0-d arrays: as above)
_DT, _HALF_DT, _SIXTH_DT = np.array(DT), np.array(DT / 2.0), np.array(DT / 6.0)


def wrap(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Gymnasium's `wrap`: shift by high - low until low <= x <= high."""
    diff = high - low
    while np.count_nonzero(above := x > high):  # faster than np.any on a small array
        x = np.where(above, x - diff, x)
    while np.count_nonzero(below := x < low):
        x = np.where(below, x + diff, x)
    return x


def bound(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Gymnasium's `bound`: min(max(x, low), high)."""
    return np.minimum(np.maximum(x, low), high)


def next_state(state: np.ndarray, torque: np.ndarray) -> np.ndarray:
    """The state after one AcrobotEnv.step with these torques (N,) (N m)."""
    new = rk4(state, torque)
    new[0] = wrap(new[0], -math.pi, math.pi)
    new[1] = wrap(new[1], -math.pi, math.pi)
    new[2] = bound(new[2], -MAX_VEL_1, MAX_VEL_1)
    new[3] = bound(new[3], -MAX_VEL_2, MAX_VEL_2)
    return new


def observe(state: np.ndarray) -> np.ndarray:
    """The observations (N, 6) float32 of a (4, N) state, float64 or float32 (a reset one:
    its trigonometry in float32, as Gymnasium's)."""
    obs = np.empty((state.shape[1], OBS_DIM), dtype=np.float32)
    obs[:, 0:4:2] = np.cos(state[:2]).T  # cast to float32 as np.array(..., dtype=float32)
    obs[:, 1:4:2] = np.sin(state[:2]).T
    obs[:, 4:] = state[2:].T
    return obs


def terminal(state: np.ndarray) -> np.ndarray:
    """(N,) bool: the free end is above TARGET_HEIGHT (AcrobotEnv._terminal)."""
    theta1, theta2 = state[0], state[1]
    return -np.cos(theta1) - np.cos(theta2 + theta1) > TARGET_HEIGHT


# --- the vector env -------------------------------------------------------------------


class AcrobotVectorEnv:
    """N Acrobot-v1 environments with the Gymnasium 1.x VectorEnv API that
    gymnasium.make_vec("Acrobot-v1", num_envs=N, vectorization_mode="sync") has: reset(seed,
    options), step(actions) -> (obs, rewards, terminations, truncations, infos), close(),
    num_envs, the single and batched spaces, metadata["autoreset_mode"] NEXT_STEP.

    Each environment has its own Generator, seeded as Gymnasium seeds an env (reset(seed=s):
    environment i from s + i; None: from entropy once, then carried on). The step after an
    environment's end only resets it (reward 0, not terminated, not truncated).
    """

    def __init__(self, num_envs: int) -> None:
        from gymnasium import spaces
        from gymnasium.vector import AutoresetMode
        from gymnasium.vector.utils import batch_space

        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
        self.single_observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(len(AVAIL_TORQUE))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.closed = False
        self.rngs: list[np.random.Generator | None] = [None] * num_envs
        self.state = np.zeros((4, num_envs))
        self.elapsed = np.zeros(num_envs, dtype=np.int64)  # steps of each running episode
        self.autoreset = np.zeros(num_envs, dtype=bool)  # its next step only resets it

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every environment afresh: SyncVectorEnv.reset (options "low"/"high" as
        AcrobotEnv's reset bounds; its partial "reset_mask" is not implemented)."""
        if options is not None and "reset_mask" in options:
            raise NotImplementedError("AcrobotVectorEnv resets every environment: no reset_mask")
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} environments")
        bounds = _reset_bounds(options)
        fresh = np.empty((4, self.num_envs), dtype=np.float32)
        for index, one_seed in enumerate(seeds):
            fresh[:, index] = self._initial_state(index, one_seed, bounds)
        self.state = fresh.astype(np.float64)
        self.elapsed[:] = 0
        self.autoreset[:] = False
        return observe(fresh), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every environment by its action (0, 1, 2: torque -1, 0, +1 N m), or reset the
        ones that ended on the last step."""
        state = next_state(self.state, _TORQUES[np.asarray(actions)])
        obs = observe(state)
        terminated = terminal(state)
        rewards = np.where(terminated, 0.0, -1.0)
        self.elapsed += 1
        truncated = self.elapsed >= MAX_EPISODE_STEPS
        resetting = self.autoreset
        if np.count_nonzero(resetting):
            fresh = np.empty((4, self.num_envs), dtype=np.float32)
            for index in np.flatnonzero(resetting).tolist():
                fresh[:, index] = self._initial_state(index, None, (RESET_LOW, RESET_HIGH))
            state[:, resetting] = fresh[:, resetting]
            obs[resetting] = observe(fresh[:, resetting])
            rewards[resetting] = 0.0
            terminated[resetting] = False
            truncated[resetting] = False
            self.elapsed[resetting] = 0
        self.state = state
        self.autoreset = terminated | truncated
        return obs, rewards, terminated, truncated, {}

    def _initial_state(
        self, index: int, seed: int | None, bounds: tuple[float, float]
    ) -> np.ndarray:
        """Environment `index`'s reset state (4,) float32 from its Generator (AcrobotEnv.reset:
        reseeded when `seed` is given, from entropy on first use)."""
        from gymnasium.utils import seeding

        if seed is not None or self.rngs[index] is None:
            self.rngs[index], _ = seeding.np_random(seed)
        rng = self.rngs[index]
        assert rng is not None
        low, high = bounds
        return rng.uniform(low=low, high=high, size=(4,)).astype(np.float32)

    def close(self) -> None:
        self.closed = True


def _reset_bounds(options: dict | None) -> tuple[float, float]:
    """AcrobotEnv.reset's bounds: options "low" and "high", default RESET_LOW, RESET_HIGH."""
    from gymnasium.envs.classic_control import utils

    low, high = utils.maybe_parse_reset_bounds(options, RESET_LOW, RESET_HIGH)
    return low, high
