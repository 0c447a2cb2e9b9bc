"""The hand-over point between the MQTT thread and the control loop.

A validated policy reaches the loop by one reference assignment between two decisions: the
loop reads `slot.active` once per decision and uses that object for the whole decision, so
it never sees half of one policy and half of another (no torn weights, no lock on the hot path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.policy import Policy


@dataclass(frozen=True, eq=False)  # compared by identity, as the loop's swaps are
class ActivePolicy:
    """A policy and its ready-to-call decision function (p(action 1) for one observation)."""

    policy: Policy
    probability: Callable[[np.ndarray], float]


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
