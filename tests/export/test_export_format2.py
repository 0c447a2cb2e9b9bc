"""Export of a format-2 policy: signed and verified like format 1; its ONNX graph and C header
in full: test_export_onnx_format2.py and test_export_c_format2.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from runtime.policy import PolicySpec, init_params, load_policy, make_meta, save_policy

CREATED = "2026-01-01T00:00:00+00:00"
SPEC = PolicySpec(hidden=8, obs_dim=6, head="categorical", action_dim=3, activation="tanh")


@pytest.fixture
def format_2_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    params = init_params(8, np.random.default_rng(1), spec=SPEC, biases=True, normaliser=True)
    save_policy(run / "policy.npz", params, make_meta(spec=SPEC, version=4, created=CREATED))
    return run


def test_sign_then_verify_a_format_2_policy(format_2_run: Path, keys, capsys) -> None:
    private, public = keys
    assert main([str(format_2_run), "--sign", str(private), "--version", "9"]) == 0
    exported = format_2_run / "dist" / "policy.npz"
    policy = load_policy(exported)
    assert policy.format_version == 2 and policy.spec == SPEC and policy.version == 9
    assert policy.signature is not None
    capsys.readouterr()
    assert main(["verify", str(exported), "--public-key", str(public)]) == 0
    assert capsys.readouterr().out.startswith(f"VALID: {exported}")


def test_an_altered_signed_format_2_policy_fails_verify(format_2_run: Path, keys, capsys) -> None:
    private, public = keys
    assert main([str(format_2_run), "--sign", str(private)]) == 0
    exported = format_2_run / "dist" / "policy.npz"
    policy = load_policy(exported)
    params = {name: array.copy() for name, array in policy.params.items()}
    params["b2"][0] += 1.0
    save_policy(exported, params, policy.meta, policy.signature)
    capsys.readouterr()
    assert main(["verify", str(exported), "--public-key", str(public)]) == 1
    assert "signature does not match" in capsys.readouterr().out


def test_all_of_a_format_2_policy_writes_every_artifact(format_2_run: Path, capsys) -> None:
    assert main([str(format_2_run), "--all"]) == 0
    out = format_2_run / "dist"
    assert {"policy.onnx", "policy.h", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert "cannot be exported" not in capsys.readouterr().err
