"""The servo as a device-runtime plant: `python -m runtime --plant servo_plant:ServoPlant`.

The same motor as servo_env.py (both step servo_model.py), without gymnasium, which a board
does not have: NumPy and the standard library only. A plant is a class the runtime builds with
no arguments, declaring what it observes and takes (docs/runtime.md, "Your own plant" and
"Action spaces") and stepping with `reset(seed) -> obs` and `step(action) -> (obs, reward,
done)`. On a real servo, `reset` would home the shaft and read the encoder, `step` would set
the PWM duty and read the encoder again one period later; here the model stands in for both.

For a given seed and actions the observations and rewards are bit for bit those of
`gym.make("servo_env:ServoPosition-v0")` (tests/runtime/test_runtime_example.py): the target
is drawn as Gymnasium's `np_random` draws it (`np.random.default_rng(seed)`, which
`runtime.rng` computes without importing numpy.random: 14-19 ms less at every start).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import servo_model as model

from runtime.rng import Generator


class ServoPlant:
    """ServoPosition-v0: the command is a float32 (1,) array, a fraction of the supply voltage
    in [-1, 1] (a gaussian policy's clipped mean)."""

    obs_dim = model.OBS_DIM
    action_kind, action_dim = "continuous", 1
    action_low, action_high = (model.COMMAND_LOW,), (model.COMMAND_HIGH,)
    discrete = False

    def __init__(self) -> None:
        self.rng = Generator()  # re-seeded by reset(seed), as Env.reset(seed=...) does
        self.state = model.start(0.0)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = Generator(seed)
        target = self.rng.uniform(-model.TARGET_RANGE, model.TARGET_RANGE, 1)[0]  # rad
        self.state = model.start(target)
        return model.observation(self.state)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool]:
        self.state = model.advance(self.state, model.command_of(action, self.discrete))
        return model.observation(self.state), model.reward(self.state), model.truncated(self.state)


class ServoDiscretePlant(ServoPlant):
    """ServoPositionDiscrete-v0: action 0, 1 or 2 is full reverse, off or full forward (a
    categorical policy's argmax)."""

    action_kind, action_dim = "discrete", len(model.DISCRETE_COMMANDS)
    action_low = action_high = None
    discrete = True
