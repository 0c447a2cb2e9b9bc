"""policy.onnx of a format-2 policy: one graph with the normaliser, hidden layer, head and
greedy action inside, its documented interface per head, and every output equal to
runtime.policy's distribution and greedy_action (onnxruntime, any batch size, and a
Gymnasium episode driven by the graph as a user would)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from export import parity
from export.build import main, tool_version
from export.cli import main as cli_main
from export.onnx_graph import build_onnx, onnx_interface
from export.parity import (
    ONNX_TOLERANCE,
    decided_rows,
    onnx_reference_outputs,
    onnxruntime_outputs,
    policy_observations,
    reference_outputs,
)
from runtime.constants import OBS_CLIP
from runtime.policy import (
    PolicySpec,
    greedy_action,
    init_params,
    load_policy,
    make_meta,
    parse_policy,
    policy_bytes,
    save_policy,
)

CREATED = "2026-01-01T00:00:00+00:00"
HEADS = ("bernoulli", "categorical", "gaussian")
CASES = list(itertools.product(HEADS, ("relu", "tanh"), (False, True), (False, True)))
OUTPUTS = {"bernoulli": "prob", "categorical": "probs", "gaussian": "mean"}


def random_spec(rng: np.random.Generator, head: str, activation: str, **sizes: int) -> PolicySpec:
    """obs_dim 1-16, hidden 1-64, categorical n 2-6, gaussian k 1-4 with random bounds."""
    obs_dim = sizes.get("obs_dim", int(rng.integers(1, 17)))
    hidden = sizes.get("hidden", int(rng.integers(1, 65)))
    action_dim = {"bernoulli": 1, "categorical": int(rng.integers(2, 7))}.get(
        head, int(rng.integers(1, 5))
    )
    action_dim = sizes.get("action_dim", action_dim)
    bounds = {}
    if head == "gaussian":  # about half the means fall outside, so the clip is exercised
        low = -rng.uniform(0.2, 1.5, action_dim)
        bounds = {"action_low": list(low), "action_high": list(low + rng.uniform(0.4, 3.0))}
    return PolicySpec(hidden, obs_dim, activation, head, action_dim, **bounds)


def random_params(
    rng: np.random.Generator, spec: PolicySpec, biases: bool, normaliser: bool
) -> dict[str, np.ndarray]:
    """init_params' weights with non-zero biases, a non-identity normaliser and log_std."""
    params = init_params(spec.hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for name in ("b1", "b2", "log_std"):
        if name in params:
            params[name] = rng.normal(0.0, 0.5, params[name].shape)
    if normaliser:
        params["obs_mean"] = rng.normal(0.0, 3.0, spec.obs_dim)
        params["obs_std"] = rng.uniform(0.05, 5.0, spec.obs_dim)
    return {name: array.astype(np.float32) for name, array in params.items()}


def make_policy(seed: int, head: str, activation: str, biases: bool, normaliser: bool, **sizes):
    rng = np.random.default_rng(seed)
    spec = random_spec(rng, head, activation, **sizes)
    params = random_params(rng, spec, biases, normaliser)
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=3, created=CREATED)))


def session(model: bytes) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def assert_outputs_match(got: dict, truth: dict, spec: PolicySpec) -> None:
    """Float outputs within the ONNX tolerance (relative above 1); a discrete action equal
    wherever the decision is clear (decided_rows), and those must be nearly every row."""
    decided = decided_rows(truth, spec)
    assert decided.mean() > 0.9
    for name, expected in truth.items():
        value, discrete = got[name], name == "action" and spec.head != "gaussian"
        assert value.shape == expected.shape, name
        assert value.dtype == (np.int64 if discrete else np.float32), name
        if discrete:
            np.testing.assert_array_equal(value[decided], expected[decided])
        else:
            error = np.abs(value.astype(np.float64) - expected) / np.maximum(1, np.abs(expected))
            assert np.max(error) <= ONNX_TOLERANCE, (name, np.max(error))


@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_the_cli_exports_a_graph_equal_to_the_numpy_functions(
    tmp_path: Path, head: str, activation: str, biases: bool, normaliser: bool, capsys
) -> None:
    seed = CASES.index((head, activation, biases, normaliser))
    policy = make_policy(seed, head, activation, biases, normaliser)
    spec = policy.spec
    save_policy(tmp_path / "policy.npz", policy.params, policy.meta)
    assert main([str(tmp_path / "policy.npz"), "--onnx", "--out", str(tmp_path / "dist")]) == 0
    out = capsys.readouterr().out
    exported = load_policy(tmp_path / "dist" / "policy.npz")
    model = (tmp_path / "dist" / "policy.onnx").read_bytes()
    assert model == build_onnx(exported, tool_version())  # the CLI writes build_onnx's bytes
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)

    obs = policy_observations(exported.params, spec)
    truth = reference_outputs(exported.params, spec, obs)
    assert_outputs_match(onnxruntime_outputs(model, obs), truth, spec)
    sample = obs[:: max(1, len(obs) // 300)]  # one run per row: a sample keeps it quick
    assert_outputs_match(
        onnxruntime_outputs(model, sample, batch=1),
        reference_outputs(exported.params, spec, sample),
        spec,
    )

    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["head"] == head
    names = [output["name"] for output in manifest["onnx"]["outputs"]]
    assert names == ["action", OUTPUTS[head]]
    assert manifest["onnx"]["input"]["shape"] == ["batch", spec.obs_dim]
    report = manifest["parity"]
    assert report["observations"] == len(obs) and report["onnx_actions_compared"] > 0
    for evaluator in ("onnxruntime", "onnx.reference"):
        errors = report["onnx_outputs"][evaluator]
        assert errors.get("action_mismatches", 0) == 0
        assert all(v <= ONNX_TOLERANCE for k, v in errors.items() if k.endswith("_max_error"))
    assert f"policy.onnx: obs float32 [batch, {spec.obs_dim}] -> action" in out
    assert out.count("parity on ") == 2  # one line per evaluator


@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_build_onnx_has_the_documented_interface_and_batches(
    head: str, activation: str, biases: bool, normaliser: bool
) -> None:
    policy = make_policy(100 + CASES.index((head, activation, biases, normaliser)), head,
                         activation, biases, normaliser)  # fmt: skip
    spec = policy.spec
    model = build_onnx(policy, "test")
    graph = onnx.load_from_string(model).graph
    expected_input, expected_outputs = onnx_interface(spec)
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    for value, tensor in zip(
        [*graph.input, *graph.output], [expected_input, *expected_outputs], strict=True
    ):
        assert value.name == tensor.name and value.doc_string
        assert value.type.tensor_type.elem_type == elem[tensor.dtype]
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
        assert [dim.dim_value for dim in dims[1:]] == list(tensor.shape[1:])
    ops = {node.op_type for node in graph.node}
    assert ({"Sub", "Div", "Clip"} <= ops) == normaliser
    assert ("Add" in ops) == biases
    assert ("Tanh" if activation == "tanh" else "Relu") in ops

    rng = np.random.default_rng(7)
    obs = (policy.params.get("obs_mean", 0) + rng.normal(0, 2, (37, spec.obs_dim))).astype(
        np.float32
    )
    run = session(model)
    batch = dict(zip(["action", OUTPUTS[head]], run.run(None, {"obs": obs}), strict=True))
    truth = reference_outputs(policy.params, spec, obs)
    assert_outputs_match(batch, truth, spec)
    for row in range(len(obs)):  # N=1 gives the batch's rows, bit for bit
        single = run.run(None, {"obs": obs[row : row + 1]})
        for got, whole in zip(single, batch.values(), strict=True):
            np.testing.assert_array_equal(got[0], whole[row])
    reference = onnx_reference_outputs(model, obs)
    assert_outputs_match(reference, truth, spec)


def test_categorical_ties_go_to_the_lowest_index_as_numpy_argmax() -> None:
    spec = PolicySpec(hidden=3, obs_dim=2, head="categorical", action_dim=4)
    params = random_params(np.random.default_rng(0), spec, biases=True, normaliser=False)
    params["W2"][:] = 0.0
    params["b2"][:] = [1.0, 3.0, 3.0, -2.0]  # logits tie exactly between 1 and 2
    policy = parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))
    obs = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    action, probs = session(build_onnx(policy, "test")).run(None, {"obs": obs})
    np.testing.assert_array_equal(action, greedy_action(params, obs, spec))
    np.testing.assert_array_equal(action, [1] * 5)
    assert probs[0, 1] == probs[0, 2]


def test_bernoulli_at_exactly_one_half_is_action_0_as_greedy_action() -> None:
    """p > 0.5 is action 1, so p = 0.5 (W2 = 0, no b2) is 0; a p just above is 1."""
    spec = PolicySpec(hidden=4, obs_dim=3)
    params = random_params(np.random.default_rng(0), spec, biases=False, normaliser=False)
    params["W2"][:] = 0.0
    obs = np.ones((2, 3), np.float32)
    policy = parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))
    action, prob = session(build_onnx(policy, "test")).run(None, {"obs": obs})
    assert prob.shape == (2, 1) and np.all(prob == 0.5)
    np.testing.assert_array_equal(action, greedy_action(params, obs, spec))
    np.testing.assert_array_equal(action, [0, 0])
    params["b2"] = np.float32([1e-3])
    policy = parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))
    action, _ = session(build_onnx(policy, "test")).run(None, {"obs": obs})
    np.testing.assert_array_equal(action, [1, 1])


def test_the_normaliser_clips_at_10_and_gaussian_actions_at_the_bounds() -> None:
    policy = make_policy(5, "gaussian", "tanh", biases=True, normaliser=True, obs_dim=3)
    params, spec = policy.params, policy.spec
    far = params["obs_mean"] + params["obs_std"] * np.array([[11.0, -12.0, 1e6], [10.0, -10.0, 0]])
    near = params["obs_mean"] + params["obs_std"] * np.array([[10.0, -10.0, 10.0]] * 2)
    run = session(build_onnx(policy, "test"))
    (_, mean_far), (_, mean_near) = (
        run.run(None, {"obs": o.astype(np.float32)}) for o in (far, near)
    )
    np.testing.assert_allclose(mean_far[0], mean_near[0], rtol=1e-6)  # beyond the clip: the same
    assert OBS_CLIP == 10.0
    obs = policy_observations(params, spec)
    action, mean = run.run(None, {"obs": obs})
    low, high = np.float32(spec.action_low), np.float32(spec.action_high)
    np.testing.assert_array_equal(action, np.clip(mean, low, high))
    assert (
        np.any(action == low)
        and np.any(action == high)
        and np.any((action > low) & (action < high))
    )


def test_parity_observations_have_the_policys_obs_dim_and_edges() -> None:
    policy = make_policy(3, "categorical", "relu", biases=True, normaliser=True, obs_dim=13)
    params, spec = policy.params, policy.spec
    obs = policy_observations(params, spec)
    assert obs.dtype == np.float32 and obs.shape[1] == 13 and len(obs) >= 10_000
    np.testing.assert_array_equal(obs, policy_observations(params, spec))
    assert np.all(np.isfinite(obs)) and np.any(np.all(obs == 0, axis=1))
    assert np.max(np.abs(obs)) >= 1e30
    normalised = (obs - params["obs_mean"]) / params["obs_std"]
    assert np.mean(np.any(np.abs(normalised) > OBS_CLIP, axis=1)) > 0.15  # the clip is hit
    assert np.mean(np.all(np.abs(normalised) <= 4.0, axis=1)) > 0.5  # most in range
    wide = make_policy(3, "gaussian", "relu", False, False, obs_dim=16, hidden=64).spec
    assert len(parity.policy_observations({}, wide, count=10)) < 1000  # count is honoured
    big = PolicySpec(hidden=4096, obs_dim=1024)
    assert parity.MIN_OBSERVATIONS <= parity.parity_count(big) < parity.RANDOM_OBSERVATIONS


def test_a_format_2_parity_failure_exits_1_and_writes_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    policy = make_policy(9, "categorical", "tanh", biases=True, normaliser=True)
    save_policy(tmp_path / "policy.npz", policy.params, policy.meta)
    real = parity.reference_outputs

    def flipped(params, spec, obs):  # noqa: ANN001, ANN202
        truth = real(params, spec, obs)
        return {**truth, "action": (truth["action"] + 1) % spec.action_dim}

    monkeypatch.setattr(parity, "reference_outputs", flipped)
    assert cli_main([str(tmp_path / "policy.npz"), "--onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime picks a different action on" in err, err
    assert not (tmp_path / "dist").exists()


def test_the_float32_comparison_graph_of_format_2_is_valid_too() -> None:
    for head in HEADS:
        policy = make_policy(11, head, "tanh", biases=True, normaliser=True)
        model = build_onnx(policy, "test", compute="float")
        graph = onnx.load_from_string(model)
        onnx.checker.check_model(graph, full_check=True)
        casts = [node for node in graph.graph.node if node.op_type == "Cast"]
        assert len(casts) == (head == "bernoulli")  # only bernoulli's bool -> int64 action
        obs = policy_observations(policy.params, policy.spec)[:8000]
        got = onnxruntime_outputs(model, obs)
        truth = reference_outputs(policy.params, policy.spec, obs)
        name = OUTPUTS[head]
        error = np.abs(got[name] - truth[name]) / np.maximum(1, np.abs(truth[name]))
        assert np.max(error) <= 1e-5  # float32 rounding: close, not 1e-6


@pytest.mark.parametrize(
    ("env_id", "head"), [("Pendulum-v1", "gaussian"), ("Acrobot-v1", "categorical")]
)
def test_an_episode_driven_by_the_graph_takes_greedy_actions(
    tmp_path: Path, env_id: str, head: str
) -> None:
    """As a user would: export, load policy.onnx into an InferenceSession, feed each
    observation, step the environment with the `action` output."""
    gymnasium = pytest.importorskip("gymnasium")
    env = gymnasium.make(env_id)
    obs_dim = env.observation_space.shape[0]
    rng = np.random.default_rng(21)
    if head == "gaussian":
        space = env.action_space
        spec = PolicySpec(32, obs_dim, "tanh", head, space.shape[0],
                          list(space.low.astype(float)), list(space.high.astype(float)))  # fmt: skip
    else:
        spec = PolicySpec(32, obs_dim, "relu", head, int(env.action_space.n))
    params = random_params(rng, spec, biases=True, normaliser=True)
    params["obs_mean"] = np.zeros(obs_dim, np.float32)
    params["obs_std"] = np.ones(obs_dim, np.float32) * 0.5
    params["W2"] *= 4  # a confident policy: a gaussian mean often beyond the bounds
    save_policy(tmp_path / "policy.npz", params, make_meta(spec=spec, version=2, env_id=env_id))
    assert main([str(tmp_path / "policy.npz"), "--onnx"]) == 0
    exported = load_policy(tmp_path / "dist" / "policy.npz")
    params64 = {name: array.astype(np.float64) for name, array in exported.params.items()}
    user = onnxruntime.InferenceSession(
        str(tmp_path / "dist" / "policy.onnx"), providers=["CPUExecutionProvider"]
    )
    obs, _ = env.reset(seed=3)
    actions = []
    for _ in range(150):
        action = user.run(["action"], {"obs": obs.reshape(1, -1).astype(np.float32)})[0][0]
        expected = greedy_action(params64, obs.astype(np.float64), spec)
        if head == "gaussian":
            np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-6)
            step = action
        else:
            assert action == expected
            step = int(action)
        actions.append(step)
        obs, _, terminated, truncated, _ = env.step(step)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    if head == "gaussian":  # the graph clipped at a bound, and took values between them
        values, low, high = np.concatenate(actions), spec.action_low[0], spec.action_high[0]
        assert np.any((values == low) | (values == high)) and np.any(
            (low < values) & (values < high)
        )
    else:
        assert len(set(actions)) >= 2


@pytest.mark.parametrize("head", HEADS)
def test_a_nan_observation_gives_a_nan_distribution_not_a_confident_one(head: str) -> None:
    policy = make_policy(13, head, "relu", biases=True, normaliser=True, obs_dim=3)
    obs = np.array([[np.nan, 0.0, 0.0], [np.nan] * 3], np.float32)
    action, dist = session(build_onnx(policy, "test")).run(None, {"obs": obs})
    assert np.all(np.isnan(dist))
    if head == "gaussian":
        assert np.all(np.isnan(action))
    else:  # as greedy_action: NaN > 0.5 is False, np.argmax of NaNs is 0
        np.testing.assert_array_equal(action, greedy_action(policy.params, obs, policy.spec))
