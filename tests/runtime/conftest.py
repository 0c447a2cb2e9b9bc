"""Fixtures for the runtime's tests: a policy that balances CartPole, written to disk; a signing
key pair and a watcher of every device's status on the test broker (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.policy import make_meta, save_policy
from tests.ota_support import PREFIX, Watcher, new_key

# A linear controller push right when K . obs >= 0, expressed through ReLU pairs:
# rows +K and -K in W1 and +1/-1 in W2 give W2 . relu(W1 obs) = K . obs, so p = sigmoid(K . obs).
BALANCING_GAINS = np.array([0.5, 1.0, 10.0, 2.0], dtype=np.float32)  # x, x_dot, theta, theta_dot


def balancing_params(hidden: int = 8) -> dict[str, np.ndarray]:
    assert hidden % 2 == 0
    pairs = hidden // 2
    w1 = np.concatenate(
        [np.tile(BALANCING_GAINS, (pairs, 1)), np.tile(-BALANCING_GAINS, (pairs, 1))]
    )
    w2 = np.concatenate([np.ones(pairs), -np.ones(pairs)]) / pairs
    return {"W1": w1.astype(np.float32), "W2": w2.astype(np.float32)}


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    """A balancing, unsigned policy.npz (version 3, hidden 8)."""
    path = tmp_path / "policy.npz"
    save_policy(path, balancing_params(), make_meta(hidden=8, version=3))
    return path


@pytest.fixture
def keys(tmp_path: Path):
    """A signing key and its public key (test_agent_updates.py has its own, with a second key)."""
    return new_key(tmp_path)


@pytest.fixture
def watcher(broker):
    """Every device's status messages on the test broker."""
    watching = Watcher(broker.port, f"{PREFIX}/devices/+/status")
    yield watching
    watching.close()
