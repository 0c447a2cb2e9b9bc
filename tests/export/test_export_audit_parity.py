"""Audit of issue 3 (parity): a compiler that fails silently is reported as such."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from export.parity import check_parity
from runtime.policy import init_params


def test_a_silent_compiler_failure_says_so(tmp_path: Path) -> None:
    """The message ended in '(exit 1): ' with nothing after it."""
    fake_gcc = tmp_path / "gcc"
    fake_gcc.write_text("#!/bin/sh\nexit 1\n")
    fake_gcc.chmod(fake_gcc.stat().st_mode | stat.S_IXUSR)
    params = init_params(2, np.random.default_rng(3))
    with pytest.raises(
        RuntimeError, match=r"gcc failed to compile policy.h \(exit 1\) with no output$"
    ):
        check_parity(params, header="/* */", obs=np.zeros((1, 4), np.float32), gcc=str(fake_gcc))
