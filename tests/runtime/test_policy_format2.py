"""Policy format 2: round trips for every head, the forward pass against a naive reference,
greedy actions, every validation error, and signatures over format 2."""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
import zipfile

import numpy as np
import pytest

from runtime.constants import MAX_ACTION_DIM, MAX_HIDDEN, MAX_OBS_DIM, SIGNATURE_DOMAIN_V2
from runtime.policy import (
    PolicyError,
    PolicySpec,
    action_probability,
    distribution,
    forward,
    forward_pass,
    gaussian_std,
    greedy_action,
    init_params,
    load_policy,
    make_meta,
    meta_to_json,
    normalise,
    parse_policy,
    policy_bytes,
    save_policy,
    signed_bytes,
    signed_bytes_v2,
    softmax,
)

CREATED = "2026-01-01T00:00:00+00:00"
HIDDEN, OBS = 6, 3


def spec_for(head: str, activation: str = "relu") -> PolicySpec:
    if head == "categorical":
        return PolicySpec(
            hidden=HIDDEN, obs_dim=OBS, activation=activation, head=head, action_dim=3
        )
    if head == "gaussian":
        return PolicySpec(
            hidden=HIDDEN,
            obs_dim=OBS,
            activation=activation,
            head=head,
            action_dim=2,
            action_low=(-1.0, -0.5),
            action_high=(1.0, 2.0),
        )
    return PolicySpec(hidden=HIDDEN, obs_dim=OBS, activation=activation)


def params_for(
    spec: PolicySpec, biases: bool = True, normaliser: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """init_params, then non-trivial biases, normaliser and log_std (zeros would hide bugs)."""
    rng = np.random.default_rng(seed)
    params = init_params(spec.hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for name in ("b1", "b2", "obs_mean", "log_std"):
        if name in params:
            params[name] = rng.standard_normal(params[name].shape) * 0.5
    if normaliser:
        params["obs_std"] = rng.uniform(0.5, 2.0, spec.obs_dim)
    return params


def policy_for(spec: PolicySpec, **options) -> tuple[dict[str, np.ndarray], dict]:
    return params_for(spec, **options), make_meta(spec=spec, version=5, created=CREATED)


# --- round trips -------------------------------------------------------------------

CASES = list(
    itertools.product(("bernoulli", "categorical", "gaussian"), ("relu", "tanh"), (1, 0), (1, 0))
)


@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_round_trip(tmp_path, head, activation, biases, normaliser) -> None:
    spec = spec_for(head, activation)
    params, meta = policy_for(spec, biases=bool(biases), normaliser=bool(normaliser))
    saved = save_policy(tmp_path / "policy.npz", params, meta)
    loaded = load_policy(tmp_path / "policy.npz")
    assert loaded.spec == spec and loaded.format_version == 2 and loaded.meta == meta
    assert loaded.sha256 == saved.sha256 and loaded.hidden == HIDDEN
    assert list(loaded.params) == [k for k in ("W1", "W2", "b1", "b2", "obs_mean", "obs_std",
                                               "log_std") if k in params]  # fmt: skip
    for name, array in params.items():
        assert loaded.params[name].dtype == np.float32
        np.testing.assert_array_equal(loaded.params[name], array.astype(np.float32))
    assert policy_bytes(loaded.params, loaded.meta) == (tmp_path / "policy.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "policy.npz") as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_format_1_params_load_with_the_format_1_spec(tmp_path) -> None:
    params = init_params(8, np.random.default_rng(0))
    policy = save_policy(tmp_path / "p.npz", params, make_meta(hidden=8, version=1))
    assert policy.format_version == 1 and policy.spec == PolicySpec(hidden=8)
    assert sorted(policy.params) == ["W1", "W2"]


def test_spec_bounds_become_float_tuples_and_meta_lists() -> None:
    spec = PolicySpec(hidden=2, head="gaussian", action_low=[-1], action_high=[3])
    assert spec.action_low == (-1.0,) and spec.action_high == (3.0,)
    meta = make_meta(spec=spec, version=1, created=CREATED)
    assert meta["action_low"] == [-1.0] and meta["format_version"] == 2
    assert "action_low" not in make_meta(spec=spec_for("categorical"), version=1)


def test_make_meta_and_init_params_refuse_a_disagreeing_hidden() -> None:
    with pytest.raises(ValueError, match="hidden 7 differs from the spec's 6"):
        make_meta(hidden=7, spec=spec_for("bernoulli"))
    with pytest.raises(ValueError, match="do not match the spec's"):
        init_params(7, np.random.default_rng(0), spec=spec_for("bernoulli"))
    with pytest.raises(ValueError, match="needs hidden"):
        make_meta()


def test_format_1_meta_with_format_2_params_is_refused() -> None:
    params = params_for(spec_for("bernoulli"), biases=True, normaliser=False)
    with pytest.raises(PolicyError, match="params hold b1, b2, which format 1 has not"):
        policy_bytes(params, make_meta(hidden=HIDDEN, version=1))


# --- the forward pass against a naive reference ------------------------------------


def reference(params, spec: PolicySpec, row) -> tuple[list[float], list[float]]:
    """(hidden, distribution parameters) for one observation, in plain Python loops."""
    x = [float(v) for v in row]
    if "obs_mean" in params:
        x = [
            min(max((x[i] - float(params["obs_mean"][i])) / float(params["obs_std"][i]), -10), 10)
            for i in range(len(x))
        ]
    act = math.tanh if spec.activation == "tanh" else (lambda z: max(z, 0.0))
    hidden = []
    for j in range(spec.hidden):
        z = sum(float(params["W1"][j][i]) * x[i] for i in range(len(x)))
        hidden.append(act(z + (float(params["b1"][j]) if "b1" in params else 0.0)))
    w2 = params["W2"].reshape(spec.action_dim, spec.hidden)
    outputs = [
        sum(float(w2[a][j]) * hidden[j] for j in range(spec.hidden))
        + (float(params["b2"][a]) if "b2" in params else 0.0)
        for a in range(spec.action_dim)
    ]
    if spec.head == "bernoulli":
        return hidden, [1.0 / (1.0 + math.exp(-outputs[0]))]
    if spec.head == "categorical":
        top = max(outputs)
        exps = [math.exp(o - top) for o in outputs]
        return hidden, [e / sum(exps) for e in exps]
    return hidden, outputs


@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_forward_matches_a_naive_reference(head, activation, biases, normaliser) -> None:
    spec = spec_for(head, activation)
    params = params_for(spec, biases=bool(biases), normaliser=bool(normaliser), seed=3)
    obs = np.random.default_rng(4).standard_normal((20, OBS)) * 3
    obs[0] = [50.0, -50.0, 0.0]  # beyond the normaliser's clip
    expected = [reference(params, spec, row) for row in obs]
    hidden, _ = forward_pass(params, obs, spec)
    dist = distribution(params, obs, spec)
    np.testing.assert_allclose(hidden, [h for h, _ in expected], rtol=1e-12, atol=1e-12)
    want = np.array([d for _, d in expected])
    np.testing.assert_allclose(dist, want[:, 0] if head == "bernoulli" else want, rtol=1e-12)
    single_hidden, _ = forward_pass(params, obs[1], spec)
    np.testing.assert_allclose(single_hidden, expected[1][0], rtol=1e-12, atol=1e-12)
    single = distribution(params, obs[1], spec)
    assert np.shape(single) == (() if head == "bernoulli" else (spec.action_dim,))
    np.testing.assert_allclose(single, want[1][0] if head == "bernoulli" else want[1], rtol=1e-12)


def test_the_legacy_forward_is_the_bernoulli_relu_pass_bit_for_bit() -> None:
    params = init_params(8, np.random.default_rng(0))
    obs = np.random.default_rng(1).standard_normal((30, 4))
    prob, hidden = forward(params, obs)
    assert np.array_equal(prob, distribution(params, obs))
    assert np.array_equal(hidden, forward_pass(params, obs)[0])
    assert np.array_equal(prob, action_probability(params, obs))
    assert forward(params, obs[0])[0].shape == ()


def test_normalise_clips_at_ten_and_is_the_identity_without_statistics() -> None:
    params = {"obs_mean": np.array([1.0, 0.0]), "obs_std": np.array([0.5, 2.0])}
    np.testing.assert_array_equal(normalise(params, np.array([100.0, 4.0])), [10.0, 2.0])
    np.testing.assert_array_equal(normalise(params, np.array([[-100.0, -4.0]])), [[-10.0, -2.0]])
    obs = np.ones(2)
    assert normalise({}, obs) is obs


def test_softmax_is_stable_at_huge_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp(-2e4) is 0: fine
        probs = softmax(np.array([[1e4, 1e4 - 1.0, -1e4], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[1], 1 / 3)
    assert probs[0, 2] == 0.0 and probs[0, 0] > probs[0, 1]


# --- greedy actions ----------------------------------------------------------------


def test_bernoulli_greedy_is_p_above_one_half() -> None:
    spec = spec_for("bernoulli")
    params = params_for(spec, seed=5)
    obs = np.random.default_rng(6).standard_normal((200, OBS)) * 3
    p = distribution(params, obs, spec)
    actions = greedy_action(params, obs, spec)
    assert actions.dtype == np.int64 and np.array_equal(actions, (p > 0.5).astype(int))
    assert 0 < actions.sum() < 200
    single = greedy_action(params, obs[0], spec)
    assert type(single) is int and single == int(p[0] > 0.5)
    half = {"W1": np.zeros((1, OBS)), "W2": np.zeros(1)}  # p = 0.5 exactly: action 0
    assert greedy_action(half, np.ones(OBS), spec_for("bernoulli")) == 0


def test_categorical_greedy_is_the_argmax() -> None:
    spec = spec_for("categorical", "tanh")
    params = params_for(spec, seed=12)  # a seed whose argmax takes each of the 3 actions
    obs = np.random.default_rng(8).standard_normal((200, OBS)) * 3
    probs = distribution(params, obs, spec)
    actions = greedy_action(params, obs, spec)
    assert actions.dtype == np.int64 and np.array_equal(actions, np.argmax(probs, axis=1))
    assert set(actions.tolist()) == {0, 1, 2}
    single = greedy_action(params, obs[3], spec)
    assert type(single) is int and single == int(np.argmax(probs[3]))


def test_gaussian_greedy_is_the_mean_clipped_to_the_bounds() -> None:
    spec = spec_for("gaussian")
    params = params_for(spec, seed=9)
    params["W2"] = params["W2"] * 20  # means well beyond the bounds on both sides
    obs = np.random.default_rng(10).standard_normal((300, OBS)) * 3
    mean = distribution(params, obs, spec)
    actions = greedy_action(params, obs, spec)
    assert actions.dtype == np.float32 and actions.shape == (300, 2)
    low, high = np.float32(spec.action_low), np.float32(spec.action_high)
    np.testing.assert_array_equal(actions, np.clip(mean, low, high).astype(np.float32))
    assert np.any(actions == low) and np.any(actions == high)
    assert np.any((actions > low) & (actions < high))
    single = greedy_action(params, obs[0], spec)
    assert single.dtype == np.float32 and single.shape == (2,)
    np.testing.assert_array_equal(single, actions[0])
    np.testing.assert_allclose(gaussian_std(params), np.exp(params["log_std"]))


# --- validation --------------------------------------------------------------------


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=False)
    return out.getvalue()


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rebuild(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def good(head: str = "gaussian") -> bytes:
    return policy_bytes(*policy_for(spec_for(head)))


def changed(base: str = "gaussian", drop: tuple[str, ...] = (), **arrays: np.ndarray) -> bytes:
    """The good policy of head `base` with entries replaced or added (`arrays`) or dropped."""
    entries = entries_of(good(base))
    for name in drop:
        del entries[f"{name}.npy"]
    for name, array in arrays.items():
        entries[f"{name}.npy"] = npy(array)
    return rebuild(entries)


def with_meta(base: str = "gaussian", drop: tuple[str, ...] = (), **fields) -> bytes:
    meta = make_meta(spec=spec_for(base), version=5, created=CREATED)
    meta.update(fields)
    for name in drop:
        del meta[name]
    return changed(base, meta=np.array(json.dumps(meta)))


def f32(*shape: int, value: float = 0.5) -> np.ndarray:
    return np.full(shape, value, np.float32)


def format_1_with(**arrays: np.ndarray) -> bytes:
    entries = entries_of(
        policy_bytes(init_params(4, np.random.default_rng(0)), make_meta(hidden=4))
    )
    entries.update({f"{name}.npy": npy(array) for name, array in arrays.items()})
    return rebuild(entries)


H, K = HIDDEN, 2  # the gaussian policy's sizes
BAD = {
    # shapes (W2 is (action_dim, hidden) for multi-output heads; the transpose is refused)
    "W1 shape": (lambda: changed(W1=f32(H, OBS + 1)), "W1 has shape (6, 4), expected (6, 3)"),
    "W2 transposed": (lambda: changed(W2=f32(H, K)), "W2 has shape (6, 2), expected (2, 6)"),
    "W2 vector for categorical": (
        lambda: changed("categorical", W2=f32(H)),
        "W2 has shape (6,), expected (3, 6)",
    ),
    "W2 matrix for bernoulli": (
        lambda: changed("bernoulli", W2=f32(1, H)),
        "W2 has shape (1, 6), expected (6,)",
    ),
    "b1 shape": (lambda: changed(b1=f32(H + 1)), "b1 has shape (7,), expected (6,)"),
    "b2 shape": (lambda: changed(b2=f32(K + 1)), "b2 has shape (3,), expected (2,)"),
    "bernoulli b2 shape": (
        lambda: changed("bernoulli", b2=f32(2)),
        "b2 has shape (2,), expected (1,)",
    ),
    "obs_mean shape": (lambda: changed(obs_mean=f32(OBS, 1)), "obs_mean has shape (3, 1)"),
    "obs_std shape": (lambda: changed(obs_std=f32(2)), "obs_std has shape (2,), expected (3,)"),
    "log_std shape": (lambda: changed(log_std=f32(3)), "log_std has shape (3,), expected (2,)"),
    "hidden mismatch": (lambda: with_meta(hidden=H + 1), "W1 has shape (6, 3), expected (7, 3)"),
    # dtypes
    "b1 float64": (lambda: changed(b1=np.zeros(H)), "b1 has dtype float64, expected float32"),
    "obs_std float16": (
        lambda: changed(obs_std=np.ones(OBS, np.float16)),
        "obs_std has dtype float16, expected float32",
    ),
    "log_std int": (lambda: changed(log_std=np.zeros(K, np.int32)), "log_std has dtype int32"),
    "W2 float64": (lambda: changed(W2=np.zeros((K, H))), "W2 has dtype float64"),
    # values
    "nan b2": (lambda: changed(b2=f32(K, value=np.nan)), "b2 holds non-finite values"),
    "inf obs_mean": (lambda: changed(obs_mean=f32(OBS, value=np.inf)), "obs_mean holds non-fin"),
    "nan log_std": (lambda: changed(log_std=f32(K, value=np.nan)), "log_std holds non-finite"),
    "nan obs_std": (lambda: changed(obs_std=f32(OBS, value=np.nan)), "obs_std holds non-finite"),
    "zero obs_std": (
        lambda: changed(obs_std=np.array([1.0, 0.0, 1.0], np.float32)),
        "obs_std[1] is 0.0; a standard deviation must be > 0",
    ),
    "negative obs_std": (
        lambda: changed(obs_std=np.array([-2.0, 1.0, 1.0], np.float32)),
        "obs_std[0] is -2.0; a standard deviation must be > 0",
    ),
    "low equals high": (
        lambda: with_meta(action_low=[-1.0, 2.0]),
        "meta.action_low[1] = 2.0 is not below action_high[1] = 2.0",
    ),
    "low above high": (
        lambda: with_meta(action_low=[5.0, -1.0]),
        "meta.action_low[0] = 5.0 is not below action_high[0] = 1.0",
    ),
    "low equals high in float32": (
        lambda: with_meta(action_low=[1.0, 0.0], action_high=[1.00000001, 1.0]),
        "meta.action_low[0] = 1.0 is not below action_high[0] = 1.00000001 (in float32)",
    ),
    "nan bound": (
        lambda: with_meta(action_high=[float("nan"), 1.0]),
        "meta.action_high[0] must be a finite float32 number, got nan",
    ),
    "inf bound": (
        lambda: with_meta(action_low=[float("-inf"), 0.0]),
        "meta.action_low[0] must be a finite float32 number, got -inf",
    ),
    "bound beyond float32": (
        lambda: with_meta(action_high=[1e39, 1.0]),
        "meta.action_high[0] must be a finite float32 number, got 1e+39",
    ),
    "bound a string": (
        lambda: with_meta(action_high=["1", 1.0]),
        "meta.action_high[0] must be a finite float32 number, got '1'",
    ),
    "bounds too short": (
        lambda: with_meta(action_low=[0.0]),
        "meta.action_low must be a list of 2 numbers for a gaussian head, got [0.0]",
    ),
    "bounds not a list": (
        lambda: with_meta(action_high=1.0),
        "meta.action_high must be a list of 2 numbers",
    ),
    "bounds on categorical": (
        lambda: with_meta("categorical", action_low=[0.0, 0.0, 0.0]),
        "meta.action_low is only for a gaussian head, not categorical",
    ),
    "gaussian without bounds": (
        lambda: with_meta(drop=("action_high",)),
        "meta is missing action_high",
    ),
    # sizes over limits
    "hidden over limit": (
        lambda: with_meta(hidden=MAX_HIDDEN + 1),
        f"meta.hidden must be an integer in 1..{MAX_HIDDEN}, got {MAX_HIDDEN + 1}",
    ),
    "obs_dim over limit": (
        lambda: with_meta(obs_dim=MAX_OBS_DIM + 1),
        f"meta.obs_dim must be an integer in 1..{MAX_OBS_DIM}, got {MAX_OBS_DIM + 1}",
    ),
    "categorical over limit": (
        lambda: with_meta("categorical", action_dim=MAX_ACTION_DIM + 1),
        f"meta.action_dim must be an integer in 2..{MAX_ACTION_DIM} for a categorical head",
    ),
    "gaussian over limit": (
        lambda: with_meta(action_dim=MAX_ACTION_DIM + 1),
        f"meta.action_dim must be an integer in 1..{MAX_ACTION_DIM} for a gaussian head",
    ),
    "categorical of one": (
        lambda: with_meta("categorical", action_dim=1),
        "meta.action_dim must be an integer in 2..256 for a categorical head, got 1",
    ),
    "bernoulli of two": (
        lambda: with_meta("bernoulli", action_dim=2),
        "meta.action_dim must be 1 for a bernoulli head, got 2",
    ),
    "gaussian of zero": (lambda: with_meta(action_dim=0), "meta.action_dim must be an integer"),
    # names and types in meta
    "unknown head": (
        lambda: with_meta("categorical", head="beta"),
        "meta.head is 'beta', expected one of bernoulli, categorical, gaussian",
    ),
    "unknown activation": (
        lambda: with_meta(activation="gelu"),
        "meta.activation is 'gelu', expected one of relu, tanh",
    ),
    "activation not a string": (lambda: with_meta(activation=1), "meta.activation is 1"),
    "hidden a string": (lambda: with_meta(hidden="6"), "meta.hidden must be an integer"),
    "hidden a bool": (lambda: with_meta("bernoulli", hidden=True), "got True"),
    "action_dim a float": (lambda: with_meta(action_dim=2.0), "meta.action_dim must be an in"),
    "unknown field": (lambda: with_meta(notes="hi"), "meta has unknown fields notes;"),
    "missing head": (lambda: with_meta(drop=("head",)), "meta is missing head"),
    "missing activation": (lambda: with_meta(drop=("activation",)), "meta is missing activation"),
    "wrong format": (lambda: with_meta(format="other"), "meta.format is 'other'"),
    "zero version": (lambda: with_meta(version=0), "meta.version must be a positive integer"),
    "bad created": (lambda: with_meta(created="soon"), "meta.created is not an ISO 8601"),
    "string seed": (lambda: with_meta(train_seed="1"), "meta.train_seed must be an integer"),
    "nan score": (lambda: with_meta(eval_mean_return=float("nan")), "meta.eval_mean_return"),
    "string solved": (lambda: with_meta(solved_episode="3"), "meta.solved_episode must be"),
    "inf target": (lambda: with_meta(target_return=float("inf")), "meta.target_return must be"),
    "env_id a number": (lambda: with_meta(env_id=3), "meta.env_id must be a string"),
    # the entry set
    "missing W2": (lambda: changed(drop=("W2",)), "archive entries"),
    "extra entry": (lambda: changed(extra=f32(2)), "archive entries"),
    "gaussian without log_std": (
        lambda: changed(drop=("log_std",)),
        "a gaussian head needs a log_std entry",
    ),
    "log_std for categorical": (
        lambda: changed("categorical", log_std=f32(3)),
        "log_std is only for a gaussian head, this policy's is categorical",
    ),
    "log_std for bernoulli": (
        lambda: changed("bernoulli", log_std=f32(1)),
        "log_std is only for a gaussian head, this policy's is bernoulli",
    ),
    "obs_mean without obs_std": (
        lambda: changed(drop=("obs_std",)),
        "obs_mean and obs_std come together or not at all: obs_std is missing",
    ),
    "obs_std without obs_mean": (
        lambda: changed(drop=("obs_mean",)),
        "obs_mean and obs_std come together or not at all: obs_mean is missing",
    ),
    "format 1 with b1": (
        lambda: format_1_with(b1=f32(4)),
        "optionally 'signature' in a format-1 policy (b1 only in format 2",
    ),
    "format 1 with normaliser and log_std": (
        lambda: format_1_with(obs_mean=f32(4), obs_std=f32(4), log_std=f32(1)),
        "(obs_mean, obs_std, log_std only in format 2",
    ),
    "format 3": (lambda: with_meta(format_version=3), "this runtime reads 1 and 2"),
    "format version a string": (lambda: with_meta(format_version="2"), "meta.format_version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_format_2_payload_is_refused_with_its_reason(case: str) -> None:
    build, reason = BAD[case]
    with pytest.raises(PolicyError) as raised:
        parse_policy(build())
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_good_payloads_of_the_table_parse() -> None:
    for head in ("bernoulli", "categorical", "gaussian"):
        assert parse_policy(good(head)).spec == spec_for(head)


def test_the_plants_obs_dim_is_checked() -> None:
    assert parse_policy(good(), obs_dim=OBS).spec.obs_dim == OBS
    with pytest.raises(PolicyError, match="meta.obs_dim is 3, the plant needs 4"):
        parse_policy(good(), obs_dim=4)


def test_spec_is_validated_where_built() -> None:
    with pytest.raises(PolicyError, match="head is 'beta', expected one of"):
        PolicySpec(hidden=4, head="beta")
    with pytest.raises(PolicyError, match="action_low must be a list of 1 numbers"):
        PolicySpec(hidden=4, head="gaussian")
    with pytest.raises(ValueError, match="hidden must be an integer in 1..4096, got 0"):
        PolicySpec(hidden=0)


# --- signatures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def signed(params, meta, key) -> bytes:
    from export.keys import sign_policy

    return policy_bytes(params, meta, sign_policy(key, meta_to_json(meta), params, 2))


def test_the_v2_signed_bytes_layout() -> None:
    params, meta = policy_for(spec_for("gaussian"), biases=False, normaliser=True)
    meta_json = meta_to_json(meta)
    expected = [SIGNATURE_DOMAIN_V2, struct.pack("<Q", len(meta_json)), meta_json.encode()]
    for name in ("W1", "W2", "obs_mean", "obs_std", "log_std"):  # the fixed order, those present
        array = np.asarray(params[name], "<f4")
        expected += [name.encode(), b"\x00", struct.pack("<I", array.ndim)]
        expected += [struct.pack("<Q", dim) for dim in array.shape] + [array.tobytes()]
    assert signed_bytes_v2(meta_json, params) == b"".join(expected)
    assert SIGNATURE_DOMAIN_V2 == b"reinforce-edge/policy-signature/v2\x00"


@pytest.mark.parametrize("head", ["bernoulli", "categorical", "gaussian"])
def test_a_signed_format_2_policy_verifies(private_key, head) -> None:
    from runtime.signing import verify_policy

    data = signed(*policy_for(spec_for(head)), private_key)
    verify_policy(parse_policy(data), private_key.public_key())


@pytest.mark.parametrize("name", ["W1", "W2", "b1", "b2", "obs_mean", "obs_std", "log_std"])
def test_tampering_with_any_array_is_refused(private_key, name) -> None:
    from runtime.signing import verify_policy

    params, meta = policy_for(spec_for("gaussian"))
    data = signed(params, meta, private_key)
    signature = parse_policy(data).signature
    tampered = {key: value.copy() for key, value in params.items()}
    tampered[name].flat[0] = tampered[name].flat[0] * 1.5 + 0.25  # finite, obs_std stays > 0
    policy = parse_policy(policy_bytes(tampered, meta, signature))  # a valid file, re-encoded
    with pytest.raises(PolicyError, match="signature does not match"):
        verify_policy(policy, private_key.public_key())


@pytest.mark.parametrize("dropped", [("b1",), ("b2",), ("obs_mean", "obs_std")])
def test_removing_optional_entries_is_refused(private_key, dropped) -> None:
    from runtime.signing import verify_policy

    params, meta = policy_for(spec_for("categorical"))
    signature = parse_policy(signed(params, meta, private_key)).signature
    fewer = {key: value for key, value in params.items() if key not in dropped}
    with pytest.raises(PolicyError, match="signature does not match"):
        verify_policy(parse_policy(policy_bytes(fewer, meta, signature)), private_key.public_key())


def test_a_v1_signature_never_verifies_a_v2_file(private_key) -> None:
    from runtime.signing import verify_policy

    params, meta = policy_for(spec_for("bernoulli"), biases=False, normaliser=False)
    meta_json = meta_to_json(meta)
    public = private_key.public_key()
    v1 = private_key.sign(signed_bytes(meta_json, params["W1"], params["W2"]))
    with pytest.raises(PolicyError, match="signature does not match"):
        verify_policy(parse_policy(policy_bytes(params, meta, v1)), public)
    # the v2 content under the v1 domain tag
    v2_body = signed_bytes_v2(meta_json, params)[len(SIGNATURE_DOMAIN_V2) :]
    from runtime.constants import SIGNATURE_DOMAIN

    spliced = private_key.sign(SIGNATURE_DOMAIN + v2_body)
    with pytest.raises(PolicyError, match="signature does not match"):
        verify_policy(parse_policy(policy_bytes(params, meta, spliced)), public)


def test_a_non_canonical_signed_format_2_file_is_refused(private_key) -> None:
    from runtime.signing import verify_policy

    data = signed(*policy_for(spec_for("gaussian")), private_key)
    entries = entries_of(data)
    reordered = rebuild(dict(reversed(list(entries.items()))))  # same content, other zip
    with pytest.raises(PolicyError, match="not the canonical encoding"):
        verify_policy(parse_policy(reordered), private_key.public_key())
