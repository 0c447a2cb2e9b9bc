"""Each artifact computes what runtime.policy.forward computes: ONNX (onnxruntime and the
reference evaluator), the C header compiled with gcc, and the bytes are reproducible."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.c_header import c_float
from export.cli import main
from export.onnx_graph import build_onnx
from export.parity import (
    C_TOLERANCE,
    GCC_FLAGS,
    ONNX_TOLERANCE,
    c_probabilities,
    onnx_reference_probabilities,
    onnxruntime_probabilities,
    parity_observations,
    reference_probabilities,
)
from runtime.policy import load_policy, parse_policy, policy_bytes
from tests.export.conftest import needs_gcc


@pytest.fixture
def exported(run_dir: Path) -> Path:
    assert main([str(run_dir), "--all"]) == 0
    return run_dir / "dist"


def test_exports_every_artifact_and_a_manifest(exported: Path, run_dir: Path, capsys) -> None:
    names = sorted(path.name for path in exported.iterdir())
    assert names == ["manifest.json", "policy.h", "policy.npz", "policy.onnx"]
    manifest = json.loads((exported / "manifest.json").read_text())
    source = load_policy(run_dir / "policy.npz")
    assert manifest["policy_version"] == 7 and manifest["hidden"] == 8
    assert manifest["tool_version"] and manifest["signed"] is False
    for entry in manifest["artifacts"]:
        data = (exported / entry["file"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    parity = manifest["parity"]
    assert parity["observations"] >= 10_000
    assert parity["onnxruntime_max_abs_error"] <= ONNX_TOLERANCE
    assert parity["onnx_reference_max_abs_error"] <= ONNX_TOLERANCE
    if shutil.which("gcc"):
        assert parity["c_max_abs_error"] <= C_TOLERANCE and parity["c_action_mismatches"] == 0
    # unsigned, same version: the exported policy.npz is the source's bytes
    assert load_policy(exported / "policy.npz").sha256 == source.sha256


def test_parity_observations_are_fixed_and_cover_the_ranges() -> None:
    obs = parity_observations()
    assert obs.dtype == np.float32 and obs.shape[1] == 4 and len(obs) >= 10_000
    np.testing.assert_array_equal(obs, parity_observations())
    assert np.any(np.all(obs == 0, axis=1))  # zeros
    assert np.max(np.abs(obs)) >= 1e30  # very large magnitudes
    assert np.all(np.isfinite(obs))
    in_range = np.all(np.abs(obs) <= [4.8, 4.0, 0.42, 4.0], axis=1)
    assert in_range.sum() >= 5_000  # most inside the CartPole state ranges


def test_onnx_model_passes_the_full_checker_and_has_the_contract(exported: Path) -> None:
    model = onnx.load(exported / "policy.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (obs,), (prob,) = model.graph.input, model.graph.output
    assert obs.name == "obs" and prob.name == "prob"
    for value, width in ((obs, 4), (prob, 1)):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        batch, size = value.type.tensor_type.shape.dim
        assert batch.dim_param and not batch.HasField("dim_value")  # symbolic batch
        assert size.dim_value == width
        assert value.doc_string
    ops = [node.op_type for node in model.graph.node if node.op_type != "Cast"]
    assert ops == ["MatMul", "Relu", "MatMul", "Sigmoid"]
    policy = load_policy(exported / "policy.npz")
    props = {entry.key: entry.value for entry in model.metadata_props}
    assert props["version"] == "7" and props["sha256"] == policy.sha256
    assert model.producer_name and model.model_version == 7


@pytest.mark.parametrize("batch", [1, 4096])
def test_onnxruntime_matches_the_forward_pass(exported: Path, batch: int) -> None:
    params = load_policy(exported / "policy.npz").params
    obs = parity_observations()
    if batch == 1:
        obs = obs[::10]  # one run per observation: a sample keeps the test fast
    probs = onnxruntime_probabilities((exported / "policy.onnx").read_bytes(), obs, batch=batch)
    assert probs.shape == (len(obs),)
    assert np.max(np.abs(probs - reference_probabilities(params, obs))) <= ONNX_TOLERANCE


def test_onnx_reference_evaluator_matches_the_forward_pass(exported: Path) -> None:
    params = load_policy(exported / "policy.npz").params
    obs = parity_observations()
    probs = onnx_reference_probabilities((exported / "policy.onnx").read_bytes(), obs)
    assert np.max(np.abs(probs - reference_probabilities(params, obs))) <= ONNX_TOLERANCE


@needs_gcc
def test_c_header_matches_the_forward_pass_and_actions(exported: Path) -> None:
    params = load_policy(exported / "policy.npz").params
    obs = parity_observations()
    truth = reference_probabilities(params, obs)
    probs, actions = c_probabilities((exported / "policy.h").read_text(), obs, "gcc")
    assert np.max(np.abs(probs - truth)) <= C_TOLERANCE
    decided = np.abs(truth - 0.5) > 1e-5
    np.testing.assert_array_equal(actions[decided], truth[decided] > 0.5)
    assert np.all((probs >= 0) & (probs <= 1))  # huge magnitudes saturate, never NaN


@needs_gcc
@pytest.mark.parametrize(
    "body",
    [
        "int main(void) { float o[4] = {0}; return policy_action(o); }",
        "int main(void) { const float o[4] = {1, 2, 3, 4}; return policy_prob(o) > 2.0f; }",
        "int main(void) { return 0; }",  # included, nothing used: still no warning
    ],
)
def test_c_header_compiles_cleanly_with_strict_flags(exported: Path, tmp_path: Path, body) -> None:
    shutil.copy(exported / "policy.h", tmp_path / "policy.h")
    (tmp_path / "use.c").write_text(f'#include "policy.h"\n{body}\n')
    command = ["gcc", *GCC_FLAGS, "-pedantic", "-o", str(tmp_path / "use"), "use.c", "-lm"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_c_header_floats_round_trip_exactly(exported: Path) -> None:
    header = (exported / "policy.h").read_text()
    policy = load_policy(exported / "policy.npz")
    assert "policy.npz sha256: " + policy.sha256 in header
    assert "policy version: 7" in header
    assert "float policy_prob(const float obs[POLICY_OBS_DIM])" in header
    assert "int policy_action(const float obs[POLICY_OBS_DIM])" in header
    for value in [*policy.params["W1"].ravel(), *policy.params["W2"]]:
        assert c_float(value) in header
    for value in np.float32([1.0, -0.0, 3e-45, 3.4028235e38, 0.1, 1e-5, 123456789.0]):
        literal = c_float(value)
        assert literal.endswith("f") and any(char in literal for char in ".e")
        assert np.float32(float(literal[:-1])) == value


def test_same_run_and_version_give_identical_bytes(tmp_path: Path, keys, make_run) -> None:
    key, _ = keys
    first = make_run(tmp_path / "first", hidden=16, seed=3)
    second = make_run(tmp_path / "second", hidden=16, seed=3)
    for run in (first, second):
        assert main([str(run), "--all", "--version", "42", "--sign", str(key)]) == 0
    for name in ("policy.npz", "policy.onnx", "policy.h"):
        assert (first / "dist" / name).read_bytes() == (second / "dist" / name).read_bytes()
    before = (first / "dist" / "policy.onnx").read_bytes()
    assert main([str(first), "--all", "--version", "42", "--sign", str(key)]) == 0
    assert (first / "dist" / "policy.onnx").read_bytes() == before


def test_policy_file_as_source_and_explicit_out(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "artifacts"
    assert main([str(run_dir / "policy.npz"), "--onnx", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "policy.npz", "policy.onnx"]


def test_export_without_flags_writes_only_the_policy_and_removes_stale_ones(
    exported: Path, run_dir: Path, capsys
) -> None:
    capsys.readouterr()
    assert main([str(run_dir)]) == 0
    assert sorted(p.name for p in exported.iterdir()) == ["manifest.json", "policy.npz"]
    assert "removed" in capsys.readouterr().err


def test_the_float32_comparison_graph_is_valid_too(run_dir: Path) -> None:
    policy = load_policy(run_dir / "policy.npz")
    model = onnx.load_from_string(build_onnx(policy, "test", compute="float"))
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node] == ["MatMul", "Relu", "MatMul", "Sigmoid"]
    probs = onnxruntime_probabilities(model.SerializeToString(), parity_observations()[:8000])
    truth = reference_probabilities(policy.params, parity_observations()[:8000])
    assert np.max(np.abs(probs - truth)) <= 1e-5  # float32 rounding: close, not 1e-6
    with pytest.raises(ValueError, match="compute"):
        build_onnx(policy, "test", compute="half")


def test_the_format_1_graph_bytes_are_pinned() -> None:
    """Format 2's graphs came with a rewrite of build_onnx; format 1's bytes must not move.
    The sha256 values were computed with the builder before format 2 (commit 988ede1)."""
    from tests.runtime.test_policy_format1_pin import fixed_policy

    params, meta = fixed_policy()
    policy = parse_policy(policy_bytes(params, meta))
    for compute, size, digest in (
        ("double", 1400, "b748c404524518f96c81195e09c6c1dafef933909d345aab5b6bebff7052dc5f"),
        ("float", 1128, "68e1badf4ca7d63438426c9e3d18f37ce5347c49cd73d73270fb3ce5719ff106"),
    ):
        model = build_onnx(policy, "pin", compute)
        assert (len(model), hashlib.sha256(model).hexdigest()) == (size, digest), compute
