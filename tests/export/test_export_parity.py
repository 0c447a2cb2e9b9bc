"""A compiler that fails silently is reported as such, and the
header's float-accumulator variant is measured at export."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from export.parity import C_TOLERANCE, check_parity
from runtime.policy import init_params, make_meta, policy_bytes
from tests.export.conftest import needs_gcc


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


@needs_gcc
def test_the_float_accumulator_variant_is_measured_and_reported(run_dir: Path, capsys) -> None:
    """The header offers POLICY_ACCUMULATOR float; export never measured it."""
    assert main([str(run_dir), "--c"]) == 0
    parity = json.loads((run_dir / "dist" / "manifest.json").read_text())["parity"]
    assert 0 <= parity["c_float_accumulator_max_abs_error"] <= C_TOLERANCE
    assert parity["c_float_accumulator_action_mismatches"] == 0
    captured = capsys.readouterr()
    assert "C float accumulator" in captured.out and "warning" not in captured.err


@needs_gcc
def test_a_float_variant_out_of_tolerance_is_a_warning_not_a_failure(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    huge = {"W1": np.full((3, 4), 1e19, np.float32), "W2": np.full(3, -1e19, np.float32)}
    (run / "policy.npz").write_bytes(policy_bytes(huge, make_meta(hidden=3, version=1)))
    assert main([str(run), "--c"]) == 0  # the default (double) header passes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "POLICY_ACCUMULATOR float (not the default)" in err, err
    parity = json.loads((run / "dist" / "manifest.json").read_text())["parity"]
    assert parity["c_float_accumulator_max_abs_error"] > C_TOLERANCE
    assert parity["c_max_abs_error"] <= C_TOLERANCE
