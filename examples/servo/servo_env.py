"""A DC-motor position servo as a Gymnasium environment: the template for your own controller.

Importing this module registers `ServoPosition-v0` (continuous voltage, a gaussian head) and
`ServoPositionDiscrete-v0` (three voltages: full reverse, off, full forward; a categorical
head), so the trainer can take it as `--env servo_env:ServoPosition-v0` with this folder on
the Python path. The physics (the textbook armature-controlled DC motor,
its constants with their units) is in servo_model.py, which the device runtime's plant
(servo_plant.py) and the stdio bridge (servo_bridge.py) step too.

Observation (float32, 3 values): position error (rad, target minus shaft angle), shaft angular
velocity (rad/s), and the previous command (fraction of the supply voltage, -1..1).
Action: the command, a fraction of the supply voltage in [-1, 1] (or 0/1/2 for -1/0/+1 in the
discrete variant). Reward per step: -(|error| + 0.05 * command^2), so holding the target with
little effort scores near 0. An episode is 200 steps (4 s); it is truncated then, never
terminated (a servo does not fall over).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import servo_model as model
from servo_model import EPISODE_STEPS, TARGET_RANGE


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
            self.action_space = gym.spaces.Discrete(len(model.DISCRETE_COMMANDS))
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.state = model.start(0.0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = model.start(self.np_random.uniform(-TARGET_RANGE, TARGET_RANGE))
        return model.observation(self.state), {}

    def step(self, action):
        self.state = model.advance(self.state, model.command_of(action, self.discrete))
        reward = model.reward(self.state)
        return model.observation(self.state), reward, False, model.truncated(self.state), {}


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
