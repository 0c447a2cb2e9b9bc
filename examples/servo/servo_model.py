"""The servo's physics, pure and shared: the Gymnasium environment (servo_env.py), the device
runtime's plant (servo_plant.py) and the simulated motor controller of the stdio bridge
(servo_bridge.py) all step the motor with these functions, so the three cannot drift apart.

NumPy and the standard library only (a board has no gymnasium). The physics is the textbook
armature-controlled DC motor with a light load (Franklin, Powell & Emami-Naeini, "Feedback
Control of Dynamic Systems", the DC motor example), integrated with semi-implicit Euler; the
inductance is neglected (its time constant, about 1 ms, is far below the 20 ms control period).
Every value is a Python float (float64), computed in one fixed order, so the same commands
give bit-identical trajectories wherever the model runs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

SUPPLY_VOLTS = 12.0  # V
TORQUE_CONSTANT = 0.05  # N m / A (= back-EMF constant in V s / rad)
RESISTANCE = 2.0  # ohm, armature
INERTIA = 2.0e-4  # kg m^2, rotor and load
DAMPING = 1.0e-4  # N m s / rad, viscous friction
DT = 0.02  # s, control period (50 Hz)
EPISODE_STEPS = 200  # 4 s
TARGET_RANGE = math.pi / 2  # rad: targets uniform in +-90 degrees
EFFORT_WEIGHT = 0.05  # reward per unit of command squared
OBS_DIM = 3  # position error (rad), shaft speed (rad/s), previous command
DISCRETE_COMMANDS = (-1.0, 0.0, 1.0)  # the discrete variant's actions 0, 1, 2
COMMAND_LOW, COMMAND_HIGH = -1.0, 1.0  # fraction of the supply voltage


class ServoState(NamedTuple):
    """Where the motor is: shaft angle (rad), speed (rad/s), the target (rad), the last
    command (fraction of the supply) and the steps taken in this episode."""

    angle: float
    speed: float
    target: float
    command: float
    steps: int


def start(target: float) -> ServoState:
    """The motor at rest at angle 0, to be turned to `target` (rad)."""
    return ServoState(0.0, 0.0, float(target), 0.0, 0)


def command_of(action: Any, discrete: bool) -> float:
    """An action as the command: a discrete index 0, 1, 2 -> -1, 0, +1; a continuous one (any
    array-like holding one number) clipped to [-1, 1]."""
    if discrete:
        index = int(action)
        if not 0 <= index < len(DISCRETE_COMMANDS):
            raise ValueError(f"action = {action!r}, expected 0, 1 or 2")
        return DISCRETE_COMMANDS[index]
    value = np.asarray(action, dtype=np.float64).reshape(-1)[0]
    return float(np.clip(value, COMMAND_LOW, COMMAND_HIGH))


def advance(state: ServoState, command: float) -> ServoState:
    """One control period with `command` held (semi-implicit Euler: speed first, then angle)."""
    current = (command * SUPPLY_VOLTS - TORQUE_CONSTANT * state.speed) / RESISTANCE  # A
    torque = TORQUE_CONSTANT * current - DAMPING * state.speed  # N m
    speed = state.speed + DT * torque / INERTIA
    angle = state.angle + DT * speed
    return ServoState(angle, speed, state.target, command, state.steps + 1)


def reward(state: ServoState) -> float:
    """-(|error| + 0.05 command^2): holding the target with little effort scores near 0."""
    error = state.target - state.angle
    return -(abs(error) + EFFORT_WEIGHT * state.command * state.command)


def observation(state: ServoState) -> np.ndarray:
    """float32 (3,): position error (rad), shaft speed (rad/s), previous command."""
    return np.array([state.target - state.angle, state.speed, state.command], dtype=np.float32)


def truncated(state: ServoState) -> bool:
    """The episode ends after EPISODE_STEPS periods (never earlier: a servo does not fall)."""
    return state.steps >= EPISODE_STEPS
