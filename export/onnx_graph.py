"""The policy as an ONNX graph, built node by node with `onnx.helper` (no training framework).

Format 1 (its bytes as they always were):

    obs [batch, 4] float32 -Cast-> double -MatMul W1T-> [batch, hidden] -Relu-> -MatMul W2->
    [batch, 1] -Sigmoid-> -Cast-> prob float32

W1T is W1 transposed (4, hidden) and W2 a column (hidden, 1), so the graph is the same
`sigmoid(W2 . relu(W1 obs))` as `runtime.policy.forward`, one row per observation.

Format 2 (`runtime.policy.forward_pass`, `distribution` and `greedy_action` in one graph):

    obs [batch, obs_dim] float32 -Cast-> double [-Sub obs_mean -Div obs_std -Clip -10, 10]
    -MatMul W1T [-Add b1] -Relu|Tanh -MatMul W2T [-Add b2] -> the head's output, then
    bernoulli:   -Sigmoid -> prob [batch, 1];     -Greater 0.5 -Squeeze -Cast -> action int64 [batch]
    categorical: -Softmax -> probs [batch, n];    -ArgMax -> action int64 [batch]
    gaussian:    mean [batch, k] (unclipped);     -Max action_low -Min action_high -> action [batch, k]

with the float outputs cast back to float32 at the end; outputs in the order action, then the
distribution (`onnx_interface` describes them; docs/export.md, ONNX).

The float32 weights are widened exactly to double and the graph computes in double: in
float32 the rounding of the sums alone reaches 1e-6 in the probability for larger trained
weights, while the float64 graph stays within the float32 rounding of its output (~6e-8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.constants import (
    HEAD_BERNOULLI,
    HEAD_CATEGORICAL,
    HEAD_GAUSSIAN,
    KEY_B1,
    KEY_B2,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_W1,
    KEY_W2,
    OBS_CLIP,
    OBS_DIM,
    ONNX_ACTION_OUTPUT,
    ONNX_DISTRIBUTION_OUTPUTS,
    ONNX_INPUT,
    ONNX_PROB_OUTPUT,
)
from runtime.policy import Policy, PolicySpec

OPSET = 17  # Sigmoid, Relu and MatMul are unchanged since opset 13-14; 17 is widely supported
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes load the file
PRODUCER = "reinforce-edge export"
INPUT_NAME = ONNX_INPUT
OUTPUT_NAME = ONNX_PROB_OUTPUT  # format 1's one output
ACTION_NAME = ONNX_ACTION_OUTPUT  # format 2's first output
DISTRIBUTIONS = ONNX_DISTRIBUTION_OUTPUTS
BATCH = "batch"  # the symbolic batch dimension
COMPUTES = ("double", "float")


def build_onnx(policy: Policy, tool_version: str, compute: str = "double") -> bytes:
    """The serialized model for `policy` (format 1 or 2); raises ValueError if the full
    checker refuses it.

    `compute="float"` builds the plain float32 graph (no Cast nodes), for comparison only: its
    rounding can exceed the export's 1e-6 parity bound for larger weights.
    """
    import onnx

    if compute not in COMPUTES:
        raise ValueError(f"compute must be 'double' or 'float', got {compute!r}")
    if policy.format_version == 1:
        model = _format_1_model(policy, tool_version, compute)
    else:
        model = _format_2_model(policy, tool_version, compute)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValueError(f"the ONNX checker refused the model: {error}") from None
    return model.SerializeToString(deterministic=True)


def _format_1_model(policy: Policy, tool_version: str, compute: str) -> Any:
    """Format 1's model, node for node and byte for byte as it was before format 2."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = np.asarray(policy.params[KEY_W1], dtype=np.float32)
    w2 = np.asarray(policy.params[KEY_W2], dtype=np.float32)
    obs = helper.make_tensor_value_info(
        INPUT_NAME,
        TensorProto.FLOAT,
        [BATCH, OBS_DIM],
        doc_string="CartPole observations: cart position (m), cart velocity (m/s), "
        "pole angle (rad), pole angular velocity (rad/s)",
    )
    prob = helper.make_tensor_value_info(
        OUTPUT_NAME,
        TensorProto.FLOAT,
        [BATCH, 1],
        doc_string="probability of action 1 (push the cart right); act 1 when prob > 0.5",
    )
    dtype = np.float64 if compute == "double" else np.float32
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(w1.T, dtype=dtype), name="W1T"),
        numpy_helper.from_array(w2.astype(dtype).reshape(-1, 1), name="W2"),
    ]
    initializers[0].doc_string = f"W1 transposed: (4, hidden), the float32 weights as {compute}"
    initializers[1].doc_string = f"W2 as a column: (hidden, 1), the float32 weights as {compute}"
    first, last = (
        ("obs_double", "prob_double") if compute == "double" else (INPUT_NAME, OUTPUT_NAME)
    )
    nodes = [
        helper.make_node("MatMul", [first, "W1T"], ["preactivation"], name="hidden_matmul"),
        helper.make_node("Relu", ["preactivation"], ["hidden"], name="hidden_relu"),
        helper.make_node("MatMul", ["hidden", "W2"], ["logit"], name="output_matmul"),
        helper.make_node("Sigmoid", ["logit"], [last], name="output_sigmoid"),
    ]
    if compute == "double":
        nodes.insert(
            0,
            helper.make_node("Cast", [INPUT_NAME], [first], to=TensorProto.DOUBLE, name="obs_cast"),
        )
        nodes.append(
            helper.make_node("Cast", [last], [OUTPUT_NAME], to=TensorProto.FLOAT, name="prob_cast")
        )
    graph = helper.make_graph(
        nodes,
        "reinforce_edge_policy",
        [obs],
        [prob],
        initializer=initializers,
        doc_string="prob = sigmoid(W2 . relu(W1 obs)), no biases",
    )
    model = _model(
        graph,
        tool_version,
        f"reinforce-edge policy version {policy.version}, hidden {policy.hidden}, "
        f"from policy.npz sha256 {policy.sha256}",
    )
    if policy.version <= np.iinfo(np.int64).max:
        model.model_version = policy.version
    helper.set_model_props(model, _properties(policy))
    return model


def _properties(policy: Policy) -> dict[str, str]:
    """The model's metadata properties; format 2 adds what its spec says."""
    properties = {
        "version": str(policy.version),  # the policy's meta.version
        "sha256": policy.sha256,  # of the policy.npz exported beside this model
        "hidden": str(policy.hidden),
        "env_id": str(policy.meta.get("env_id", "")),
        "signed": "true" if policy.signature is not None else "false",
    }
    if policy.format_version == 1:
        return properties
    spec = policy.spec
    _, outputs = onnx_interface(spec)
    return {
        **properties,
        "format_version": str(policy.format_version),
        "obs_dim": str(spec.obs_dim),
        "activation": spec.activation,
        "head": spec.head,
        "action_dim": str(spec.action_dim),
        "outputs": ",".join(output.name for output in outputs),
    }


# --- format 2 ----------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxTensor:
    """One input or output of the graph, as a user of policy.onnx sees it."""

    name: str
    dtype: str  # "float32" or "int64"
    shape: tuple[str | int, ...]  # BATCH is the symbolic batch dimension
    doc: str

    def describe(self) -> str:
        return f"{self.name} {self.dtype} [{', '.join(str(dim) for dim in self.shape)}]"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "doc": self.doc}


def onnx_interface(spec: PolicySpec | None) -> tuple[OnnxTensor, tuple[OnnxTensor, ...]]:
    """(input, outputs) of the graph `build_onnx` makes; `spec` None is format 1, whose one
    output `prob` stays as it always was. Format 2: `action` first, then the distribution."""
    if spec is None:
        obs = OnnxTensor(INPUT_NAME, "float32", (BATCH, OBS_DIM), "CartPole observations")
        prob = OnnxTensor(OUTPUT_NAME, "float32", (BATCH, 1), "p(action 1); act 1 when > 0.5")
        return obs, (prob,)
    obs = OnnxTensor(
        INPUT_NAME,
        "float32",
        (BATCH, spec.obs_dim),
        f"observations, {spec.obs_dim} per row, as the environment gives them (the graph"
        " normalises them when the policy has obs_mean and obs_std)",
    )
    distribution = DISTRIBUTIONS[spec.head]
    if spec.head == HEAD_BERNOULLI:
        action = OnnxTensor(ACTION_NAME, "int64", (BATCH,), "greedy action: 1 when prob > 0.5")
        dist = OnnxTensor(distribution, "float32", (BATCH, 1), "p(action 1)")
        return obs, (action, dist)
    size = spec.action_dim
    if spec.head == HEAD_CATEGORICAL:
        action_doc = "greedy action: the argmax of the probabilities, lowest index among ties"
        action = OnnxTensor(ACTION_NAME, "int64", (BATCH,), action_doc)
        dist = OnnxTensor(distribution, "float32", (BATCH, size), "action probabilities (softmax)")
        return obs, (action, dist)
    action_doc = "greedy action: the mean clipped to meta's action_low..action_high"
    action = OnnxTensor(ACTION_NAME, "float32", (BATCH, size), action_doc)
    mean_doc = "mean of the diagonal Gaussian, unclipped (its std exp(log_std) is not in the graph)"
    return obs, (action, OnnxTensor(distribution, "float32", (BATCH, size), mean_doc))


class _Graph:
    """The nodes and initializers of a format-2 graph being built, computing in `dtype`."""

    def __init__(self, dtype: type) -> None:
        self.dtype = dtype
        self.nodes: list = []
        self.initializers: list = []

    @property
    def wide(self) -> bool:
        return self.dtype == np.float64

    def constant(self, name: str, value: Any, doc: str, dtype: type | None = None) -> str:
        from onnx import numpy_helper

        array = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.dtype))
        tensor = numpy_helper.from_array(array, name=name)
        tensor.doc_string = doc
        self.initializers.append(tensor)
        return name

    def weight(self, name: str, array: Any, doc: str) -> str:
        """Float32 values of the policy, widened exactly to the compute type."""
        kind = "double" if self.wide else "float"
        return self.constant(name, np.asarray(array, dtype=np.float32), f"{doc}, as {kind}")

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def float_output(self, name: str) -> str:
        """The name to compute output `name` under: with a `_double` suffix in the wide graph,
        whose `narrow` then casts it to the float32 output."""
        return f"{name}_double" if self.wide else name

    def narrow(self, name: str) -> None:
        from onnx import TensorProto

        if self.wide:
            self.node("Cast", [self.float_output(name)], name, to=TensorProto.FLOAT)


def _format_2_model(policy: Policy, tool_version: str, compute: str) -> Any:
    from onnx import TensorProto, helper

    spec = policy.spec
    graph = _Graph(np.float64 if compute == "double" else np.float32)
    x = INPUT_NAME
    if graph.wide:
        x = graph.node("Cast", [INPUT_NAME], "obs_double", to=TensorProto.DOUBLE)
    output = _hidden_and_output(graph, policy.params, spec, _normalised(graph, policy.params, x))
    _head(graph, spec, output)
    obs, outputs = onnx_interface(spec)
    graph_proto = helper.make_graph(
        graph.nodes,
        "reinforce_edge_policy",
        [_value_info(obs)],
        [_value_info(value) for value in outputs],
        initializer=graph.initializers,
        doc_string=_formula(policy),
    )
    model = _model(
        graph_proto,
        tool_version,
        f"reinforce-edge policy version {policy.version} (format 2, {spec.head} head,"
        f" {spec.activation}, obs_dim {spec.obs_dim}, hidden {spec.hidden}, action_dim"
        f" {spec.action_dim}), from policy.npz sha256 {policy.sha256}",
    )
    if policy.version <= np.iinfo(np.int64).max:
        model.model_version = policy.version
    helper.set_model_props(model, _properties(policy))
    return model


def _normalised(graph: _Graph, params: dict[str, np.ndarray], x: str) -> str:
    """clip((x - obs_mean) / obs_std, -10, 10), as `runtime.policy.normalise`; x without one."""
    if KEY_OBS_MEAN not in params:
        return x
    mean = graph.weight(KEY_OBS_MEAN, params[KEY_OBS_MEAN], "normaliser mean (obs_dim,)")
    std = graph.weight(KEY_OBS_STD, params[KEY_OBS_STD], "normaliser std (obs_dim,)")
    low = graph.constant("clip_low", -OBS_CLIP, "normalised observations are clipped to +-10")
    high = graph.constant("clip_high", OBS_CLIP, "normalised observations are clipped to +-10")
    centred = graph.node("Sub", [x, mean], "obs_centred")
    scaled = graph.node("Div", [centred, std], "obs_scaled")
    return graph.node("Clip", [scaled, low, high], "obs_normalised")


def _hidden_and_output(
    graph: _Graph, params: dict[str, np.ndarray], spec: PolicySpec, x: str
) -> str:
    """W2 act(W1 x + b1) + b2, before the head, (batch, outputs); as `forward_pass`."""
    w1t = graph.weight("W1T", params[KEY_W1].T, "W1 transposed: (obs_dim, hidden)")
    pre = graph.node("MatMul", [x, w1t], "preactivation")
    if KEY_B1 in params:
        pre = graph.node(
            "Add", [pre, graph.weight(KEY_B1, params[KEY_B1], "b1 (hidden,)")], "biased"
        )
    hidden = graph.node("Tanh" if spec.activation == "tanh" else "Relu", [pre], "hidden")
    w2 = params[KEY_W2]
    w2t = w2.reshape(-1, 1) if spec.head == HEAD_BERNOULLI else w2.T
    w2t = graph.weight("W2T", w2t, "W2 transposed: (hidden, outputs)")
    # a gaussian head's output is its mean, an output of the graph: computed under that name
    last = graph.float_output(DISTRIBUTIONS[spec.head]) if spec.head == HEAD_GAUSSIAN else "logits"
    if KEY_B2 not in params:
        return graph.node("MatMul", [hidden, w2t], last)
    output = graph.node("MatMul", [hidden, w2t], "output")
    return graph.node("Add", [output, graph.weight(KEY_B2, params[KEY_B2], "b2 (outputs,)")], last)


def _head(graph: _Graph, spec: PolicySpec, output: str) -> None:
    """The distribution and the greedy action from the head's output, as `distribution` and
    `greedy_action` compute them."""
    from onnx import TensorProto

    distribution = DISTRIBUTIONS[spec.head]
    if spec.head == HEAD_BERNOULLI:
        prob = graph.node("Sigmoid", [output], graph.float_output(distribution))
        half = graph.constant("half", 0.5, "greedy_action's threshold: action 1 when p > 0.5")
        above = graph.node("Greater", [prob, half], "above_half")
        column = graph.constant("column", [1], "prob's axis 1, of size 1", np.int64)
        row = graph.node("Squeeze", [above, column], "above_half_row")
        graph.node("Cast", [row], ACTION_NAME, to=TensorProto.INT64)
    elif spec.head == HEAD_CATEGORICAL:
        graph.node("Softmax", [output], graph.float_output(distribution), axis=-1)
        # the first index among equal maxima, as np.argmax (select_last_index 0)
        graph.node("ArgMax", [output], ACTION_NAME, axis=1, keepdims=0, select_last_index=0)
    else:  # np.clip(mean, low, high) is min(max(mean, low), high); Clip takes scalars only
        low = graph.weight("action_low", spec.action_low, "meta's action_low (action_dim,)")
        high = graph.weight("action_high", spec.action_high, "meta's action_high (action_dim,)")
        floor = graph.node("Max", [output, low], "action_above_low")
        graph.node("Min", [floor, high], graph.float_output(ACTION_NAME))
        graph.narrow(ACTION_NAME)
    graph.narrow(distribution)


def _value_info(tensor: OnnxTensor) -> Any:
    from onnx import TensorProto, helper

    elem = TensorProto.INT64 if tensor.dtype == "int64" else TensorProto.FLOAT
    return helper.make_tensor_value_info(tensor.name, elem, list(tensor.shape), tensor.doc)


def _formula(policy: Policy) -> str:
    """The graph's doc string: what it computes, in the terms of runtime/policy.py."""
    spec, params = policy.spec, policy.params
    x = "clip((obs - obs_mean) / obs_std, -10, 10)" if KEY_OBS_MEAN in params else "obs"
    hidden = f"{spec.activation}(W1 {x}{' + b1' if KEY_B1 in params else ''})"
    output = f"W2 {hidden}{' + b2' if KEY_B2 in params else ''}"
    if spec.head == HEAD_BERNOULLI:
        return f"prob = sigmoid({output}); action = prob > 0.5"
    if spec.head == HEAD_CATEGORICAL:
        return f"probs = softmax({output}); action = argmax(probs)"
    return f"mean = {output}; action = clip(mean, action_low, action_high)"


def _model(graph: Any, tool_version: str, doc_string: str) -> Any:
    """The model around a graph: opset, IR version, producer, domain (both formats alike)."""
    from onnx import helper

    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version=tool_version,
        domain="reinforce-edge",
        doc_string=doc_string,
    )
