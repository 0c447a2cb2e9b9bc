"""Backends: the fused NumPy path equals the reference forward pass; onnxruntime matches both."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import BackendError, fused_decision, make_active, naive_decision
from runtime.cli import main
from runtime.policy import (
    PolicySpec,
    greedy_action,
    init_params,
    load_policy,
    make_meta,
    parse_policy,
    policy_bytes,
)


@pytest.mark.parametrize("hidden", [1, 2, 64, 128, 200])
def test_fused_numpy_equals_the_reference(hidden: int) -> None:
    rng = np.random.default_rng(hidden)
    params = {k: v.astype(np.float32) for k, v in init_params(hidden, rng).items()}
    fused, naive = fused_decision(params), naive_decision(params)
    observations = rng.standard_normal((2000, 4)).astype(np.float32) * [1, 2, 0.2, 2]
    fused_p = np.array([fused(obs) for obs in observations])
    naive_p = np.array([naive(obs) for obs in observations])
    exact = 1 / (
        1
        + np.exp(
            -np.maximum(observations.astype(np.float64) @ params["W1"].T.astype(np.float64), 0)
            @ params["W2"]
        )
    )
    np.testing.assert_allclose(fused_p, exact, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused_p, naive_p, rtol=0, atol=1e-6)
    assert all(isinstance(p, float) for p in fused_p[:5].tolist())


def test_fused_numpy_extremes_and_other_input_types() -> None:
    params = {"W1": np.eye(4, dtype=np.float32) * 1e4, "W2": np.ones(4, dtype=np.float32)}
    fused = fused_decision(params)
    assert fused(np.array([1e4, 0, 0, 0], np.float32)) == 1.0
    assert fused(np.array([-1e4, 0, 0, 0], np.float32)) == 0.5  # relu cuts negative units
    params["W2"] = -params["W2"]
    assert fused_decision(params)(np.array([1e4, 0, 0, 0], np.float32)) == 0.0  # exp overflows
    assert fused_decision(params)(np.array([1e-3, 0, 0, 0], np.float32)) == pytest.approx(
        1 / (1 + np.exp(10)), rel=1e-6
    )  # a small p keeps its relative precision
    assert math.isnan(fused(np.array([np.nan, 0, 0, 0], np.float32)))  # the loop acts 0 on NaN
    assert fused([0.001, 0.0, 0.0, 0.0]) == pytest.approx(1 / (1 + np.exp(-10)))
    assert fused(np.array([0.001, 0, 0, 0], np.float64)) == pytest.approx(1 / (1 + np.exp(-10)))


def test_the_relu_on_the_bits_is_relu_bit_for_bit() -> None:
    """The ReLU runs on the float32 bits read as int32: every negative value, -inf included,
    becomes +0; every positive value, +inf included, stays as it is."""
    rng = np.random.default_rng(7)
    params = init_params(64, rng)
    fused = fused_decision(params)
    w1t = np.ascontiguousarray(params["W1"].astype(np.float32).T)
    observations = np.concatenate(
        [
            rng.standard_normal((300, 4)) * 10.0 ** rng.integers(-3, 4, (300, 1)),
            np.zeros((1, 4)),
            np.full((1, 4), 3e38),  # hidden units overflow to +inf and -inf
            np.full((1, 4), -3e38),
        ]
    ).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # the extreme rows overflow on purpose
        for obs in observations:
            fused(obs)
            hidden = obs.dot(w1t)
            assert fused.hidden.tobytes() == np.where(hidden > 0, hidden, np.float32(0)).tobytes()
        extremes = observations[-1].dot(w1t)  # the last row reaches both infinities
    assert (extremes == np.inf).any() and (extremes == -np.inf).any()


def test_the_decision_buffer_is_reused() -> None:
    fused = fused_decision(init_params(16, np.random.default_rng(0)))
    buffer = fused.hidden
    fused(np.ones(4, np.float32))
    assert fused.hidden is buffer


def test_unknown_backend() -> None:
    policy = parse_policy(
        policy_bytes(init_params(4, np.random.default_rng(0)), make_meta(hidden=4, version=1))
    )
    with pytest.raises(BackendError, match="unknown backend 'torch'"):
        make_active(policy, "torch")
    with pytest.raises(BackendError, match="needs the policy's path"):
        make_active(policy, "onnxruntime")


# --- onnxruntime ------------------------------------------------------------------------


def write_onnx(path: Path, w1: np.ndarray, w2: np.ndarray) -> None:
    """The exporter's graph for these weights, written beside the npz as a device keeps it."""
    pytest.importorskip("onnx")
    from export.onnx_graph import build_onnx

    policy = parse_policy(policy_bytes({"W1": w1, "W2": w2}, make_meta(hidden=w1.shape[0])))
    path.write_bytes(build_onnx(policy, "test"))


def test_onnxruntime_backend_matches_numpy(policy_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    policy = load_policy(policy_path)
    write_onnx(policy_path.parent / "policy.onnx", policy.params["W1"], policy.params["W2"])
    active = make_active(policy, "onnxruntime", policy_path)
    fused = fused_decision(policy.params)
    for obs in np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32):
        assert active.probability(obs) == pytest.approx(fused(obs), abs=1e-6)
    args = [
        "--policy",
        str(policy_path),
        "--backend",
        "onnxruntime",
        "--hz",
        "0",
        "--episodes",
        "1",
    ]
    assert main(args, environ={}) == 0
    assert capsys.readouterr().out.startswith("episode 1: return 500")


def test_onnxruntime_refuses_a_model_of_another_policy(policy_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    policy = load_policy(policy_path)
    write_onnx(policy_path.parent / "policy.onnx", -policy.params["W1"], policy.params["W2"])
    args = ["--policy", str(policy_path), "--backend", "onnxruntime", "--episodes", "1"]
    assert main(args, environ={}) == 2
    assert "does not compute the policy in the npz beside it" in capsys.readouterr().err


def test_onnxruntime_without_a_model_file(policy_path: Path, capsys) -> None:
    args = ["--policy", str(policy_path), "--backend", "onnxruntime", "--episodes", "1"]
    assert main(args, environ={}) == 2
    err = capsys.readouterr().err
    assert ("policy.onnx: no such file" in err or "needs onnxruntime" in err) and len(
        err.splitlines()
    ) == 1


def test_onnxruntime_with_a_corrupt_model_file(policy_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    (policy_path.parent / "policy.onnx").write_bytes(b"not a model")
    args = ["--policy", str(policy_path), "--backend", "onnxruntime", "--episodes", "1"]
    assert main(args, environ={}) == 2
    err = capsys.readouterr().err
    assert "onnxruntime cannot load it" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "spec",
    [
        PolicySpec(hidden=8, obs_dim=4),
        PolicySpec(hidden=16, obs_dim=5, activation="tanh", head="categorical", action_dim=3),
        PolicySpec(
            hidden=12,
            obs_dim=3,
            head="gaussian",
            action_dim=2,
            action_low=(-1, -2),
            action_high=(1, 0.5),
        ),
    ],
    ids=lambda spec: spec.head,
)
def test_onnxruntime_backend_runs_the_exporters_format_2_graphs(
    tmp_path: Path, spec: PolicySpec
) -> None:
    """The real exporter's graph (action first, then prob/probs/mean) on the device: its
    actions are runtime.policy's greedy ones."""
    pytest.importorskip("onnxruntime")
    from export.onnx_graph import build_onnx

    rng = np.random.default_rng(4)
    params = init_params(spec.hidden, rng, spec=spec, biases=True, normaliser=True)
    params["b1"] = rng.standard_normal(spec.hidden)
    params["obs_mean"] = rng.standard_normal(spec.obs_dim)
    data = policy_bytes(params, make_meta(spec=spec, version=3))
    (tmp_path / "policy.npz").write_bytes(data)
    (tmp_path / "policy.onnx").write_bytes(build_onnx(parse_policy(data), "test"))
    policy = load_policy(tmp_path / "policy.npz")
    active = make_active(policy, "onnxruntime", tmp_path / "policy.npz")
    for obs in rng.standard_normal((50, spec.obs_dim)).astype(np.float32):
        expected = greedy_action(policy.params, obs.astype(np.float64), spec)
        np.testing.assert_allclose(active.action(obs), expected, atol=1e-6)
