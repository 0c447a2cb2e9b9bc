"""The policy as an ONNX graph, built node by node with `onnx.helper` (no training framework).

    obs [batch, 4] float32 -Cast-> double -MatMul W1T-> [batch, hidden] -Relu-> -MatMul W2->
    [batch, 1] -Sigmoid-> -Cast-> prob float32

W1T is W1 transposed (4, hidden) and W2 a column (hidden, 1), so the graph is the same
`sigmoid(W2 . relu(W1 obs))` as `runtime.policy.forward`, one row per observation.
The float32 weights are widened exactly to double and the graph computes in double: in
float32 the rounding of the sums alone reaches 1e-6 in the probability for larger trained
weights, while the float64 graph stays within the float32 rounding of its output (~6e-8).
"""

from __future__ import annotations

import numpy as np

from runtime.constants import KEY_W1, KEY_W2, OBS_DIM
from runtime.policy import Policy

OPSET = 17  # Sigmoid, Relu and MatMul are unchanged since opset 13-14; 17 is widely supported
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes load the file
PRODUCER = "reinforce-edge export"
INPUT_NAME = "obs"
OUTPUT_NAME = "prob"
BATCH = "batch"  # the symbolic batch dimension


def build_onnx(policy: Policy, tool_version: str, compute: str = "double") -> bytes:
    """The serialized model for `policy`; raises ValueError if the full checker refuses it.

    `compute="float"` builds the plain float32 graph (no Cast nodes), for comparison only: its
    rounding can exceed the export's 1e-6 parity bound for larger weights.
    """
    import onnx
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
    if compute not in ("double", "float"):
        raise ValueError(f"compute must be 'double' or 'float', got {compute!r}")
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
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version=tool_version,
        domain="reinforce-edge",
        doc_string=f"reinforce-edge policy version {policy.version}, hidden {policy.hidden}, "
        f"from policy.npz sha256 {policy.sha256}",
    )
    if policy.version <= np.iinfo(np.int64).max:
        model.model_version = policy.version
    helper.set_model_props(
        model,
        {
            "version": str(policy.version),  # the policy's meta.version
            "sha256": policy.sha256,  # of the policy.npz exported beside this model
            "hidden": str(policy.hidden),
            "env_id": str(policy.meta.get("env_id", "")),
            "signed": "true" if policy.signature is not None else "false",
        },
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValueError(f"the ONNX checker refused the model: {error}") from None
    return model.SerializeToString(deterministic=True)
