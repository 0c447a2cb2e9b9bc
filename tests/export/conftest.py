"""Fixtures for the export tests: a run directory with a fresh policy, and a key pair.

The trainer is not needed: a run directory is just a directory holding policy.npz.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from export.keys import generate_keypair
from runtime.policy import init_params, make_meta, save_policy

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
CREATED = "2026-01-01T00:00:00+00:00"  # fixed, so the files are the same at every run


def make_run(directory: Path, hidden: int = 8, seed: int = 0, version: int = 7) -> Path:
    """A run directory holding an unsigned policy.npz with random weights."""
    directory.mkdir(parents=True, exist_ok=True)
    params = init_params(hidden, np.random.default_rng(seed))
    save_policy(
        directory / "policy.npz",
        params,
        make_meta(hidden=hidden, version=version, train_seed=seed, created=CREATED),
    )
    return directory


@pytest.fixture(name="make_run")
def make_run_fixture():
    """The `make_run` function, for tests that need more than one run directory."""
    return make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(signing.key, signing.pub)."""
    return generate_keypair(tmp_path / "keys")
