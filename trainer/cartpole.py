"""CartPole-v1 for N environments at once in plain NumPy, with Gymnasium's exact dynamics.

The equations, constants, Euler integrator, float64 state, float32 observations, reset
distribution and termination test are those of gymnasium/envs/classic_control/cartpole.py
(Barto, Sutton & Anderson 1983; Florian 2007 for the corrected equations). tests/trainer
checks step by step that the trajectories equal Gymnasium's. What it drops is the wrapper
machinery (spaces checks, autoreset, info dicts, per-call allocations), which is what makes it
several times faster for the trainer's step loop. The 500-step time limit is the caller's.
"""

from __future__ import annotations

import math

import numpy as np

GRAVITY = 9.8  # m/s^2
CART_MASS = 1.0  # kg
POLE_MASS = 0.1  # kg
TOTAL_MASS = CART_MASS + POLE_MASS  # kg
POLE_HALF_LENGTH = 0.5  # m, half the pole's length
POLE_MASS_LENGTH = POLE_MASS * POLE_HALF_LENGTH  # kg m
FORCE = 10.0  # N, pushed left (action 0) or right (action 1)
TAU = 0.02  # s between state updates
X_LIMIT = 2.4  # m from the centre: the cart leaves the track
THETA_LIMIT = 12 * 2 * math.pi / 360  # rad (12 degrees): the pole has fallen
RESET_BOUND = 0.05  # every state variable starts uniform in [-0.05, 0.05]
MAX_EPISODE_STEPS = 500  # CartPole-v1's time limit


class CartPoleBatch:
    """Independent cart-poles; `state` is (4, N): x (m), x_dot (m/s), theta (rad), theta_dot.

    The arithmetic is Gymnasium's, operation for operation, so the float64 states are equal
    bit for bit; only the bookkeeping is leaner (in-place Euler updates, one lookup for the
    force, one comparison for both limits).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.state = np.zeros((4, 0))

    def reset(self, num_envs: int) -> np.ndarray:
        """Start `num_envs` environments afresh; returns the observations (N, 4), a view."""
        self.state = self._initial_states(num_envs)
        return self.state.T

    def reset_where(self, ended: np.ndarray) -> np.ndarray:
        """Start the environments where `ended` (N,) is True afresh; returns all observations."""
        self.state[:, ended] = self._initial_states(int(np.count_nonzero(ended)))
        return self.state.T

    def widen(self, count: int) -> np.ndarray:
        """Add `count` fresh environments after the existing ones; returns all observations."""
        self.state = np.concatenate([self.state, self._initial_states(count)], axis=1)
        return self.state.T

    def _initial_states(self, count: int) -> np.ndarray:
        return self.rng.uniform(-RESET_BOUND, RESET_BOUND, size=(4, count))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply actions (N,) bool (True = push right) for one time step of TAU seconds.

        Returns the observations (N, 4) float64 (a view of the state; Gymnasium hands out
        the same values cast to float32) and `terminated` (N,) bool. Environments keep
        integrating after they terminate; the caller masks them.
        """
        x, x_dot, theta, theta_dot = self.state
        force = _FORCES[action.view(np.uint8)]
        cos_theta = np.cos(theta)
        sin_theta = np.sin(theta)
        temp = (force + _POLE_MASS_LENGTH * np.square(theta_dot) * sin_theta) / _TOTAL_MASS
        theta_acc = (_GRAVITY * sin_theta - cos_theta * temp) / (
            _POLE_HALF_LENGTH * (_FOUR_THIRDS - _POLE_MASS * np.square(cos_theta) / _TOTAL_MASS)
        )
        x_acc = temp - _POLE_MASS_LENGTH * theta_acc * cos_theta / _TOTAL_MASS
        # Euler: positions advance with the old velocities, then velocities with accelerations
        x += _TAU * x_dot
        x_dot += _TAU * x_acc
        theta += _TAU * theta_dot
        theta_dot += _TAU * theta_acc
        return self.state.T, (np.abs(x) > _X_LIMIT) | (np.abs(theta) > _THETA_LIMIT)


# The constants as 0-d float64 arrays: the same values (so the same bits out), but NumPy
# multiplies an array by them faster than by Python floats, and the step loop is all overhead.
_FORCES = np.array([-FORCE, FORCE])  # indexed by the action
_GRAVITY, _TOTAL_MASS, _POLE_MASS, _POLE_HALF_LENGTH, _POLE_MASS_LENGTH, _TAU = (
    np.array(value)
    for value in (GRAVITY, TOTAL_MASS, POLE_MASS, POLE_HALF_LENGTH, POLE_MASS_LENGTH, TAU)
)
_FOUR_THIRDS = np.array(4.0 / 3.0)
_X_LIMIT, _THETA_LIMIT = np.array(X_LIMIT), np.array(THETA_LIMIT)
