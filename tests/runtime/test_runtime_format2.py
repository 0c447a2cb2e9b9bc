"""The device runtime and format 2: every head, activation, bias and normaliser on the fused
NumPy path (equal to `runtime.policy.greedy_action`), onnxruntime's format-2 interface, the
plants' action spaces, and a policy that does not fit its plant refused in one line."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import (
    FOLD_LIMIT,
    BackendError,
    fused_action,
    make_active,
    naive_action,
    runs_format_1_maths,
)
from runtime.cli import main
from runtime.policy import (
    PolicySpec,
    distribution,
    greedy_action,
    init_params,
    make_meta,
    meta_to_json,
    parse_policy,
    policy_bytes,
    save_policy,
    signed_message,
)
from runtime.spaces import PlantSpace, SpaceMismatch, check_fits, space_for
from runtime.updates import UpdateRejected, UpdateRules, validate_update
from tests.ota_support import weights
from tests.runtime.conftest import balancing_params

CREATED = "2026-01-01T00:00:00+00:00"
ROOT = Path(__file__).resolve().parents[2]
HEADS = ("bernoulli", "categorical", "gaussian")


def random_policy(
    rng: np.random.Generator,
    head: str,
    activation: str = "relu",
    biases: bool = True,
    normaliser: bool = True,
    *,
    obs_dim: int | None = None,
    hidden: int | None = None,
    actions: int | None = None,
    mean_scale: float = 3.0,
    version: int = 6,
    key=None,
):
    """A parsed format-2 policy of random sizes with random (not zero) biases and normaliser."""
    obs_dim = obs_dim or int(rng.integers(1, 17))
    hidden = hidden or int(rng.integers(1, 129))
    if head == "bernoulli":
        actions = 1
    actions = actions or int(rng.integers(2, 7))
    bounds = {}
    if head == "gaussian":
        bounds = {
            "action_low": tuple(-0.2 - rng.random(actions)),
            "action_high": tuple(0.2 + rng.random(actions)),
        }
    spec = PolicySpec(hidden, obs_dim, activation, head, actions, **bounds)
    params = init_params(hidden, rng, spec=spec, biases=biases, normaliser=normaliser)
    for name in ("b1", "b2"):
        if name in params:
            params[name] = rng.standard_normal(params[name].shape) * 0.5
    if normaliser:
        params["obs_mean"] = rng.standard_normal(obs_dim) * mean_scale
        params["obs_std"] = np.exp(rng.standard_normal(obs_dim))
    meta = make_meta(spec=spec, version=version, created=CREATED)
    signature = None
    if key is not None:
        signature = key.sign(signed_message(meta_to_json(meta), params, 2))
    return parse_policy(policy_bytes(params, meta, signature))


def observations(rng: np.random.Generator, policy, count: int = 300) -> np.ndarray:
    """Around the normaliser's mean, a good share beyond its +-10 std clip."""
    mean = policy.params.get("obs_mean", np.zeros(policy.spec.obs_dim))
    std = policy.params.get("obs_std", np.ones(policy.spec.obs_dim))
    noise = (
        rng.standard_normal((count, policy.spec.obs_dim)) * rng.choice([0.5, 4, 15], count)[:, None]
    )
    return (mean + noise * std).astype(np.float32)


def assert_same_actions(policy, decide, obs: np.ndarray) -> None:
    """Equal to greedy_action wherever the reference is not within float32 rounding of a tie."""
    spec = policy.spec
    expected = greedy_action(policy.params, obs, spec)
    got = [decide(row) for row in obs]
    if spec.head == "gaussian":
        assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in got)
        np.testing.assert_allclose(np.array(got), expected, rtol=1e-5, atol=1e-5)
        return
    assert all(type(a) is int for a in got)
    reference = distribution(
        {k: v.astype(np.float64) for k, v in policy.params.items()}, obs.astype(np.float64), spec
    )
    for action, best, probabilities in zip(got, expected, reference, strict=True):
        if action != best:  # only a near tie may differ (sums rounded in another order)
            if spec.head == "bernoulli":
                assert abs(probabilities - 0.5) < 1e-5
            else:
                assert abs(probabilities[action] - probabilities[best]) < 1e-5


CASES = list(itertools.product(HEADS, ("relu", "tanh"), (False, True), (False, True)))


@pytest.mark.parametrize(("head", "activation", "biases", "normaliser"), CASES)
def test_the_fused_action_is_the_greedy_action(head, activation, biases, normaliser) -> None:
    rng = np.random.default_rng(abs(hash((head, activation, biases, normaliser))) % 2**32)
    for _ in range(8):  # random sizes: obs 1..16, hidden 1..128, 2..6 actions
        policy = random_policy(rng, head, activation, biases, normaliser)
        assert_same_actions(policy, fused_action(policy), observations(rng, policy))


@pytest.mark.parametrize("seed", range(4))
def test_a_one_dimensional_gaussian_is_the_greedy_action(seed: int) -> None:
    rng = np.random.default_rng(seed)
    activation, normaliser = ("relu", "tanh")[seed % 2], seed < 2
    for _ in range(8):  # InvertedPendulum's shape: one mean, compared with its bounds in Python
        policy = random_policy(rng, "gaussian", activation, True, normaliser, actions=1)
        assert_same_actions(policy, fused_action(policy), observations(rng, policy))


@pytest.mark.parametrize("head", HEADS)
def test_a_normaliser_far_from_zero_subtracts_the_mean_first(head: str) -> None:
    rng = np.random.default_rng(5)
    policy = random_policy(rng, head, obs_dim=5, hidden=32, mean_scale=FOLD_LIMIT * 50)
    assert assert_same_actions(policy, fused_action(policy), observations(rng, policy)) is None


def test_categorical_ties_give_the_lowest_index_and_gaussian_results_are_new_arrays() -> None:
    spec = PolicySpec(2, 2, head="categorical", action_dim=3)
    params = {"W1": np.eye(2, dtype=np.float32), "W2": np.zeros((3, 2), np.float32)}
    policy = parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))
    assert fused_action(policy)(np.ones(2, np.float32)) == 0  # all logits equal
    gaussian = random_policy(np.random.default_rng(1), "gaussian", actions=2)
    decide = fused_action(gaussian)
    first = decide(np.zeros(gaussian.spec.obs_dim, np.float32))
    second = decide(np.full(gaussian.spec.obs_dim, 1e6, np.float32))
    assert first is not second and first.shape == (2,)
    low, high = np.float32(gaussian.spec.action_low), np.float32(gaussian.spec.action_high)
    assert np.all((low <= second) & (second <= high))


def crafted_policy(spec: PolicySpec, **arrays: np.ndarray):
    """A parsed policy of these float32 arrays (W1, W2 and any of b1, b2, obs_mean, obs_std)."""
    params = {name: np.asarray(value, np.float32) for name, value in arrays.items()}
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=1, created=CREATED)))


@pytest.mark.parametrize("normaliser", [True, False])
def test_an_observation_one_float_beyond_its_clip_is_clipped(normaliser: bool) -> None:
    """Units that turn on only beyond the clip at +-10 (mean 0, std 1): 1e6 * x - 1e7 is about
    0.95 one float32 step beyond 10, where the clipped observation gives exactly 0. With the
    normaliser every such observation must act as at the bound (0); without it they act 1."""
    arrays = {"W1": [[1e6, 0], [0, -1e6]], "b1": [-1e7, -1e7], "W2": [1, 1], "b2": [-0.5]}
    if normaliser:
        arrays |= {"obs_mean": [0, 0], "obs_std": [1, 1]}
    policy = crafted_policy(PolicySpec(2, 2), **arrays)
    decide = fused_action(policy)
    beyond_high, beyond_low = (
        np.nextafter(np.float32(10), np.float32(np.inf)),
        -np.nextafter(np.float32(10), np.float32(np.inf)),
    )
    beyond = [[beyond_high, 0], [0, beyond_low], [beyond_high, beyond_low], [1e30, -1e30]]
    inside = [[10, -10], [np.nextafter(np.float32(10), np.float32(0)), 0], [0, 0]]
    for obs in np.array(beyond + inside, np.float32):
        assert decide(obs) == greedy_action(policy.params, obs, policy.spec)
    assert [decide(obs) for obs in np.array(beyond, np.float32)] == [int(not normaliser)] * 4
    assert [decide(obs) for obs in np.array(inside, np.float32)] == [0, 0, 0]


def test_a_clip_bound_beyond_float32_clips_nothing() -> None:
    """std 4e37: mean +- 10 std overflows float32 to +-inf, a range unit that is never on."""
    rng = np.random.default_rng(3)
    policy = random_policy(rng, "categorical", obs_dim=3, hidden=16, actions=3)
    scale = np.array([4e37, 1.0, 4e37])
    policy = crafted_policy(policy.spec, **dict(policy.params, obs_std=scale))
    obs = (policy.params["obs_mean"] + rng.standard_normal((300, 3)) * scale).astype(np.float32)
    with np.errstate(over="ignore"):
        bounds = np.float32(policy.params["obs_mean"] + np.array([[-10.0], [10.0]]) * scale)
    assert np.isinf(bounds[:, [0, 2]]).all() and np.isfinite(bounds[:, 1]).all()
    decide = fused_action(policy)
    with np.errstate(over="raise", invalid="raise"):  # no inf - inf inside the layers
        assert_same_actions(policy, decide, obs)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_three_actions_take_np_argmax_of_every_tie(activation: str) -> None:
    spec = PolicySpec(2, 2, activation, head="categorical", action_dim=3)
    for logits in itertools.product((-1.0, 0.0, 1.0), repeat=3):
        policy = crafted_policy(
            spec, W1=np.eye(2), W2=np.zeros((3, 2)), b2=logits, obs_mean=[0, 0], obs_std=[1, 1]
        )
        assert fused_action(policy)(np.ones(2, np.float32)) == int(np.argmax(logits)), logits


@pytest.mark.parametrize("actions", [1, 2, 3])
def test_gaussian_means_at_and_beyond_their_bounds_are_clipped(actions: int) -> None:
    low, high = np.linspace(-1, -0.5, actions), np.linspace(0.5, 1, actions)
    spec = PolicySpec(2, 2, head="gaussian", action_dim=actions, action_low=tuple(low),
                      action_high=tuple(high))  # fmt: skip
    log_std = np.zeros(actions)
    means = [low, high, low - 1, high + 1, (low + high) / 2, np.nextafter(high, 2), low * 0]
    for mean in means:
        for order in (1, -1):  # the first mean inside its bounds and the last beyond, or back
            b2 = np.where(np.arange(actions) % 2 == 0, mean, mean[::order])
            policy = crafted_policy(spec, W1=np.eye(2), W2=np.zeros((actions, 2)), b2=b2,
                                    log_std=log_std)  # fmt: skip
            decide = fused_action(policy)
            first, second = decide(np.ones(2, np.float32)), decide(np.ones(2, np.float32))
            expected = np.clip(b2.astype(np.float32), np.float32(low), np.float32(high))
            assert first.dtype == np.float32 and first.shape == (actions,)
            assert np.array_equal(first, expected) and first is not second


def test_naive_action_and_lists_of_floats() -> None:
    rng = np.random.default_rng(2)
    policy = random_policy(rng, "categorical", obs_dim=4)
    obs = observations(rng, policy, 50)
    assert_same_actions(policy, naive_action(policy), obs)
    decide = fused_action(policy)
    assert [decide(row.tolist()) for row in obs] == [decide(row) for row in obs]


def test_a_format_2_policy_with_format_1_maths_runs_like_format_1() -> None:
    params = balancing_params()
    v1 = parse_policy(policy_bytes(params, make_meta(hidden=8, version=1)))
    v2 = parse_policy(
        policy_bytes(params, make_meta(spec=PolicySpec(8), version=1, created=CREATED))
    )
    assert runs_format_1_maths(v2) and make_active(v2).action is None
    obs = np.array([0.01, -0.2, 0.03, 0.4], np.float32)
    assert make_active(v2).probability(obs) == make_active(v1).probability(obs)
    other = random_policy(np.random.default_rng(0), "bernoulli", biases=True)
    assert not runs_format_1_maths(other) and make_active(other).probability is None


# --- onnxruntime: format 2's interface ---------------------------------------------------


def onnx_model(policy) -> bytes:
    """Format 2's ONNX interface for `policy`, built here with onnx.helper (float32): input
    obs (N, obs_dim); outputs action (int64 (N,) / float32 (N, k) clipped) and prob / probs /
    mean."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    spec, params = policy.spec, policy.params
    nodes, inits = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    x = "obs"
    if "obs_mean" in params:
        nodes += [
            helper.make_node("Sub", [x, const("obs_mean", params["obs_mean"])], ["centred"]),
            helper.make_node("Div", ["centred", const("obs_std", params["obs_std"])], ["scaled"]),
            helper.make_node("Clip", ["scaled", const("lo", -10.0), const("hi", 10.0)], ["x"]),
        ]
        x = "x"
    nodes.append(helper.make_node("MatMul", [x, const("w1t", params["W1"].T)], ["pre"]))
    pre = "pre"
    if "b1" in params:
        nodes.append(helper.make_node("Add", [pre, const("b1", params["b1"])], ["pre_b"]))
        pre = "pre_b"
    nodes.append(helper.make_node(spec.activation.capitalize(), [pre], ["h"]))
    w2 = params["W2"].reshape(-1, spec.hidden)
    b2 = params.get("b2", np.zeros(w2.shape[0], np.float32))
    nodes.append(helper.make_node("Gemm", ["h", const("w2", w2), const("b2", b2)], ["z"], transB=1))
    int64 = TensorProto.INT64
    if spec.head == "bernoulli":
        nodes += [
            helper.make_node("Sigmoid", ["z"], ["p2"]),
            helper.make_node("Squeeze", ["p2", const("one", [1], np.int64)], ["prob"]),
            helper.make_node("Greater", ["prob", const("half", 0.5)], ["above"]),
            helper.make_node("Cast", ["above"], ["action"], to=int64),
        ]
        outputs = [("action", int64, ["N"]), ("prob", TensorProto.FLOAT, ["N"])]
    elif spec.head == "categorical":
        nodes += [
            helper.make_node("Softmax", ["z"], ["probs"], axis=1),
            helper.make_node("ArgMax", ["z"], ["action"], axis=1, keepdims=0),
        ]
        outputs = [("action", int64, ["N"]), ("probs", TensorProto.FLOAT, ["N", spec.action_dim])]
    else:
        low, high = const("low", spec.action_low), const("high", spec.action_high)
        nodes += [
            helper.make_node("Identity", ["z"], ["mean"]),
            helper.make_node("Max", ["z", low], ["above_low"]),
            helper.make_node("Min", ["above_low", high], ["action"]),
        ]
        k = spec.action_dim
        outputs = [("action", TensorProto.FLOAT, ["N", k]), ("mean", TensorProto.FLOAT, ["N", k])]
    graph = helper.make_graph(
        nodes,
        "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["N", spec.obs_dim])],
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("head", HEADS)
def test_onnxruntime_runs_format_2s_interface(head: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(11)
    policy = random_policy(rng, head, "tanh", obs_dim=6, hidden=24, actions=3)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    (tmp_path / "policy.onnx").write_bytes(onnx_model(policy))
    active = make_active(policy, "onnxruntime", path)
    assert active.probability is None
    assert_same_actions(policy, active.action, observations(rng, policy, 100))


def test_onnxruntime_refuses_a_format_2_model_of_another_policy(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(12)
    policy = random_policy(rng, "categorical", obs_dim=4, hidden=16, actions=3)
    other = random_policy(rng, "categorical", obs_dim=4, hidden=16, actions=3)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    (tmp_path / "policy.onnx").write_bytes(onnx_model(other))
    with pytest.raises(BackendError, match="does not compute the policy in the npz beside it"):
        make_active(policy, "onnxruntime", path)


def test_onnxruntime_refuses_format_1s_graph_beside_a_format_2_policy(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from export.onnx_graph import build_onnx

    params = weights()
    format_1 = parse_policy(policy_bytes(params, make_meta(hidden=8, version=1)))
    policy = random_policy(np.random.default_rng(3), "bernoulli", obs_dim=4, hidden=8)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    (tmp_path / "policy.onnx").write_bytes(build_onnx(format_1, "test"))
    with pytest.raises(BackendError, match="format 1's graph"):
        make_active(policy, "onnxruntime", path)


# --- plants' spaces and the refusal of a policy that does not fit -----------------------------


def test_what_each_head_needs_of_a_plant() -> None:
    rng = np.random.default_rng(4)
    categorical = random_policy(rng, "categorical", obs_dim=6, actions=3)
    gaussian = random_policy(rng, "gaussian", obs_dim=3, actions=1)
    bernoulli = random_policy(rng, "bernoulli", obs_dim=4)
    check_fits(bernoulli, PlantSpace())  # CartPole's: obs 4, 2 discrete actions
    check_fits(categorical, PlantSpace(6, "discrete", 3))
    check_fits(gaussian, space_for(gaussian.spec))
    check_fits(gaussian, PlantSpace(3, "continuous", 1))  # unbounded: any range fits
    wider = PlantSpace(3, "continuous", 1, (-50.0,), (50.0,))
    check_fits(gaussian, wider)
    refusals = [
        (
            categorical,
            PlantSpace(6, "discrete", 2),
            "chooses one of 3 actions, the plant takes one of 2",
        ),
        (categorical, PlantSpace(4, "discrete", 3), "it observes 6 values, the plant gives 4"),
        (bernoulli, PlantSpace(4, "continuous", 1), "takes 1 continuous action"),
        (gaussian, PlantSpace(3, "discrete", 2), "the plant takes one of 2 discrete actions"),
        (
            gaussian,
            PlantSpace(3, "continuous", 2),
            "it makes 1 continuous action(s), the plant takes 2",
        ),
        (gaussian, PlantSpace(3, "continuous", 1, (-0.1,), (9.0,)), "action_low[0]"),
        (gaussian, PlantSpace(3, "continuous", 1, (-9.0,), (0.1,)), "action_high[0]"),
    ]
    for policy, space, reason in refusals:
        with pytest.raises(SpaceMismatch) as raised:
            check_fits(policy, space)
        assert reason in str(raised.value) and "\n" not in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"action_kind": "analog"}, "action_kind = 'analog'"),
        ({"action_dim": 0}, "action_dim = 0"),
        ({"action_kind": "continuous", "action_dim": 2, "action_low": [0.0]}, "action_low"),
        (
            {
                "action_kind": "continuous",
                "action_dim": 1,
                "action_low": [1.0],
                "action_high": [0.0],
            },
            "is not below",
        ),  # fmt: skip
        ({"action_low": [0.0]}, "for continuous actions only"),
    ],
)
def test_a_custom_plant_with_a_bad_space_is_one_line(
    declared, message, tmp_path, capsys, monkeypatch
):
    body = "".join(f"    {name} = {value!r}\n" for name, value in declared.items())
    module = f"spaced_{len(tmp_path.name)}_{abs(hash(message))}"  # a new module each case
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\nclass Plant:\n    obs_dim = 4\n"
        + body
        + "    def reset(self, seed=None):\n        return np.zeros(4)\n"
        "    def step(self, action):\n        return np.zeros(4), 1.0, True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = tmp_path / "policy.npz"
    save_policy(policy, balancing_params(), make_meta(hidden=8, version=3))
    assert main(["--policy", str(policy), "--plant", f"{module}:Plant", "--episodes", "1"], {}) == 2
    err = capsys.readouterr().err
    assert message in err and f"plant {module}:Plant declares" in err, err
    assert len(err.splitlines()) == 1


CONTINUOUS_PLANT = """
import numpy as np
class Arm:
    obs_dim = 3
    action_kind, action_dim = "continuous", 2
    action_low, action_high = (-2.0, -2.0), (2.0, 2.0)
    def __init__(self):
        self.actions = []
    def reset(self, seed=None):
        self.steps = 0
        return np.zeros(3)
    def step(self, action):
        self.actions.append(action)
        self.steps += 1
        return np.full(3, 0.1 * self.steps), -float(np.sum(np.square(action))), self.steps >= 5
"""


def test_a_custom_continuous_plant_runs_a_gaussian_policy(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "arm.py").write_text(CONTINUOUS_PLANT)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(8)
    policy = random_policy(rng, "gaussian", obs_dim=3, actions=2)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    args = ["--policy", str(path), "--plant", "arm:Arm", "--episodes", "2", "--hz", "0"]
    assert main(args, {}) == 0
    assert capsys.readouterr().out.startswith("episode 1: return -")
    from runtime.plants import load_custom_plant

    plant = load_custom_plant("arm:Arm")
    plant.reset()
    with pytest.raises(Exception, match="expected 2 finite floats"):
        plant.step(np.zeros(3, np.float32))
    # the policy of another plant: one line, exit 2
    other = random_policy(rng, "gaussian", obs_dim=3, actions=1)
    path.write_bytes(other.data)
    assert main(args, {}) == 2
    err = capsys.readouterr().err
    assert "does not match the plant (obs 3, 2 continuous actions in [-2, 2], [-2, 2])" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("head", "obs_dim", "reason"),
    [
        (
            "categorical",
            4,
            "its categorical head chooses one of 3 actions, the plant takes one of 2",
        ),
        ("gaussian", 4, "the plant takes one of 2 discrete actions"),
        ("bernoulli", 6, "meta.obs_dim is 6, the plant needs 4"),
    ],
)
def test_the_cli_refuses_a_policy_of_another_plant_in_one_line_exit_2(
    head, obs_dim, reason, tmp_path: Path, capsys
) -> None:
    policy = random_policy(np.random.default_rng(0), head, obs_dim=obs_dim, actions=3)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    assert main(["--policy", str(path), "--episodes", "1", "--hz", "0"], environ={}) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert reason in lines[0] and captured.out == ""


def test_the_cli_still_runs_a_format_2_bernoulli_relu_policy(tmp_path: Path, capsys) -> None:
    path = tmp_path / "policy.npz"
    save_policy(path, balancing_params(), make_meta(spec=PolicySpec(hidden=8), version=3))
    assert main(["--policy", str(path), "--episodes", "1", "--hz", "0"], environ={}) == 0
    assert capsys.readouterr().out.startswith("episode 1: return 500 in 500 steps")


@pytest.mark.parametrize(
    ("env_id", "head", "obs_dim", "actions"),
    [("Acrobot-v1", "categorical", 6, 3), ("Pendulum-v1", "gaussian", 3, 1)],
)
def test_the_gym_plant_runs_any_env_with_a_policy_of_its_space(
    env_id, head, obs_dim, actions, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("gymnasium")
    from runtime.plants import GymPlant
    from runtime.spaces import space_of

    plant = GymPlant(env_id)
    space = space_of(plant)
    plant.close()
    assert (space.obs_dim, space.action_kind, space.action_dim) == (
        obs_dim,
        "continuous" if head == "gaussian" else "discrete",
        actions,
    )
    policy = random_policy(np.random.default_rng(1), head, obs_dim=obs_dim, actions=actions)
    if head == "gaussian":
        assert space.action_low == (-2.0,) and space.action_high == (2.0,)
        policy = random_policy(np.random.default_rng(1), head, obs_dim=3, actions=1)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    args = ["--policy", str(path), "--plant", "gym", "--env", env_id, "--hz", "0"]
    assert main([*args, "--episodes", "1", "--seed", "0", "--json"], environ={}) == 0
    assert '"type": "summary"' in capsys.readouterr().out
    wrong = random_policy(np.random.default_rng(1), "bernoulli", obs_dim=obs_dim)
    path.write_bytes(wrong.data)
    assert main([*args, "--episodes", "1"], environ={}) == 2
    err = capsys.readouterr().err
    assert f"does not match the plant ({space.describe()})" in err and len(err.splitlines()) == 1


# --- stdio: the policy's sizes -----------------------------------------------------------------


def run_stdio(policy_path: Path, lines: list[str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "runtime", "--policy", str(policy_path), "--plant", "stdio"]
    return subprocess.run(
        [*argv, "--hz", "0", "--log-level", "error"],
        input="".join(line + "\n" for line in lines).encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("head", "obs_dim", "actions"), [("categorical", 6, 5), ("gaussian", 3, 2)]
)
def test_stdio_speaks_the_policys_sizes_end_to_end(head, obs_dim, actions, tmp_path) -> None:
    rng = np.random.default_rng(9)
    policy = random_policy(rng, head, obs_dim=obs_dim, actions=actions)
    path = tmp_path / "policy.npz"
    path.write_bytes(policy.data)
    obs = observations(rng, policy, 20)
    lines = [" ".join(repr(float(value)) for value in row) for row in obs]
    lines.insert(3, "1 2 3 4 5 6 7 8 9")  # the wrong size: reported, skipped
    finished = run_stdio(path, lines)
    assert finished.returncode == 0, finished.stderr
    answers = finished.stdout.decode().splitlines()
    assert answers[0] == "reset" and len(answers) == 21
    decide = fused_action(policy)
    for answer, row in zip(answers[1:], obs, strict=True):
        if head == "categorical":
            assert answer == str(decide(row))
        else:  # '%.9g': the float32 values read back exactly
            assert np.array(answer.split(), np.float32).tobytes() == decide(row).tobytes()
    err = finished.stderr.decode()
    assert f"expected {obs_dim} floats (and optionally a reward) or 'done', got 9 fields" in err


# --- OTA validation -------------------------------------------------------------------------


def test_validate_update_takes_a_matching_format_2_policy_and_names_a_mismatch() -> None:
    rng = np.random.default_rng(6)
    current = parse_policy(policy_bytes(weights(), make_meta(hidden=8, version=5)))
    space = PlantSpace(3, "continuous", 1, (-2.0,), (2.0,))
    rules = UpdateRules(allow_unsigned=True, space=space)
    assert rules.obs_dim == 3
    fitting = random_policy(rng, "gaussian", obs_dim=3, actions=1, version=6)
    kwargs = {"current": current, "highest_version": 5, "refused": ()}
    assert validate_update(fitting.data, rules, **kwargs).version == 6
    two_actions = random_policy(rng, "gaussian", obs_dim=3, actions=2, version=7)
    with pytest.raises(UpdateRejected, match="does not match the plant") as raised:
        validate_update(two_actions.data, rules, **kwargs)
    assert raised.value.version == 7 and "the plant takes 1" in raised.value.reason
    observing_more = random_policy(rng, "gaussian", obs_dim=4, actions=1, version=8)
    with pytest.raises(UpdateRejected, match="meta.obs_dim is 4, the plant needs 3"):
        validate_update(observing_more.data, rules, **kwargs)
    cartpole = UpdateRules(allow_unsigned=True)
    gaussian_4 = random_policy(rng, "gaussian", obs_dim=4, actions=1, version=9)
    with pytest.raises(UpdateRejected, match="the plant takes one of 2 discrete actions"):
        validate_update(gaussian_4.data, cartpole, **kwargs)
