"""The hand-over point between the MQTT thread and the control loop.

A validated policy reaches the loop by one reference assignment between two decisions: the
loop reads `slot.active` once per decision and uses that object for the whole decision, so
it never sees half of one policy and half of another (no torn weights, no lock on the hot path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.policy import Policy


@dataclass(frozen=True, eq=False)  # compared by identity, as the loop's swaps are
class ActivePolicy:
    """A policy and its ready-to-call decision function for one observation: `probability`,
    p(action 1), for format 1's maths (the loop acts 1 when it is > 0.5), or `action`, the
    greedy action itself (an int, or a float32 (k,) array) for every other policy."""

    policy: Policy
    probability: Callable[[np.ndarray], float] | None
    action: Callable[[np.ndarray], Any] | None = None

    def __post_init__(self) -> None:
        if (self.probability is None) == (self.action is None):
            raise ValueError("an active policy has either a probability or an action function")

    def decide(self, obs: np.ndarray) -> Any:
        """The greedy action (the loop inlines this; warm-up, tests and the bench call it)."""
        if self.action is not None:
            return self.action(obs)
        return 1 if self.probability(obs) > 0.5 else 0


class PolicySlot:
    """Holds the active policy; `swap` is the only writer, the loop the only hot reader."""

    def __init__(self, active: ActivePolicy) -> None:
        self.active = active
        self._writer = threading.Lock()  # serialises writers only; the loop never takes it

    def swap(self, new: ActivePolicy) -> ActivePolicy:
        """Install `new` for the next decision and return the one it replaces."""
        with self._writer:
            old, self.active = self.active, new
            return old
