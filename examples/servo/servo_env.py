"""A DC-motor position servo as a Gymnasium environment: the template for your own controller.

Importing this module registers `ServoPosition-v0` (continuous voltage, a gaussian head) and
`ServoPositionDiscrete-v0` (three voltages: full reverse, off, full forward; a categorical
head), so the trainer can take it as `--env servo_env:ServoPosition-v0` with this folder on
the Python path. The physics is the textbook armature-controlled DC motor with a light load
(Franklin, Powell & Emami-Naeini, "Feedback Control of Dynamic Systems", the DC motor example),
integrated with semi-implicit Euler; the inductance is neglected (its time constant, about
1 ms, is far below the 20 ms control period).

Observation (float32, 3 values): position error (rad, target minus shaft angle), shaft angular
velocity (rad/s), and the previous command (fraction of the supply voltage, -1..1).
Action: the command, a fraction of the supply voltage in [-1, 1] (or 0/1/2 for -1/0/+1 in the
discrete variant). Reward per step: -(|error| + 0.05 * command^2), so holding the target with
little effort scores near 0. An episode is 200 steps (4 s); it is truncated then, never
terminated (a servo does not fall over).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

SUPPLY_VOLTS = 12.0  # V
TORQUE_CONSTANT = 0.05  # N m / A (= back-EMF constant in V s / rad)
RESISTANCE = 2.0  # ohm, armature
INERTIA = 2.0e-4  # kg m^2, rotor and load
DAMPING = 1.0e-4  # N m s / rad, viscous friction
DT = 0.02  # s, control period (50 Hz)
EPISODE_STEPS = 200
TARGET_RANGE = math.pi / 2  # rad: targets uniform in +-90 degrees
EFFORT_WEIGHT = 0.05


class ServoEnv(gym.Env):
    """Drive the shaft to a random target angle and hold it there."""

    metadata = {"render_modes": []}

    def __init__(self, discrete: bool = False) -> None:
        # the error is unbounded (the shaft can turn many times) and so is the speed (no-load
        # speed: SUPPLY_VOLTS / TORQUE_CONSTANT = 240 rad/s)
        high = np.array([np.inf, np.inf, 1.0], dtype=np.float32)
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)
        self.discrete = discrete
        if discrete:
            self.action_space = gym.spaces.Discrete(3)
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.angle = self.speed = self.target = self.command = 0.0
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.angle, self.speed, self.command, self.steps = 0.0, 0.0, 0.0, 0
        self.target = float(self.np_random.uniform(-TARGET_RANGE, TARGET_RANGE))
        return self._observation(), {}

    def step(self, action):
        if self.discrete:
            command = float(int(action) - 1)  # 0, 1, 2 -> -1, 0, +1
        else:
            command = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1))
        current = (command * SUPPLY_VOLTS - TORQUE_CONSTANT * self.speed) / RESISTANCE  # A
        torque = TORQUE_CONSTANT * current - DAMPING * self.speed  # N m
        self.speed += DT * torque / INERTIA  # semi-implicit Euler: speed first, then angle
        self.angle += DT * self.speed
        self.command, self.steps = command, self.steps + 1
        error = self.target - self.angle
        reward = -(abs(error) + EFFORT_WEIGHT * command * command)
        return self._observation(), reward, False, self.steps >= EPISODE_STEPS, {}

    def _observation(self) -> np.ndarray:
        return np.array([self.target - self.angle, self.speed, self.command], dtype=np.float32)


# solved at -15 (the policy explores while it learns; its greedy version scores better): a tuned PD controller scores about -0.5, holding the command at 0 about -140
gym.register(
    "ServoPosition-v0",
    entry_point=ServoEnv,
    max_episode_steps=EPISODE_STEPS,
    reward_threshold=-15.0,
)
gym.register(
    "ServoPositionDiscrete-v0",
    entry_point=ServoEnv,
    kwargs={"discrete": True},
    max_episode_steps=EPISODE_STEPS,
)
