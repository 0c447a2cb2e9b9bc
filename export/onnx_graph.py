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


def build_onnx(policy: Policy, tool_version: str) -> bytes:
    """The serialized model for `policy`; raises ValueError if the full checker refuses it."""
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
    initializers = [
        numpy_helper.from_array(np.ascontiguousarray(w1.T, dtype=np.float64), name="W1T"),
        numpy_helper.from_array(w2.astype(np.float64).reshape(-1, 1), name="W2"),
    ]
    initializers[0].doc_string = "W1 transposed: (4, hidden), the float32 weights as double"
    initializers[1].doc_string = "W2 as a column: (hidden, 1), the float32 weights as double"
    double = TensorProto.DOUBLE
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["obs_double"], name="obs_cast", to=double),
        helper.make_node("MatMul", ["obs_double", "W1T"], ["preactivation"], name="hidden_matmul"),
        helper.make_node("Relu", ["preactivation"], ["hidden"], name="hidden_relu"),
        helper.make_node("MatMul", ["hidden", "W2"], ["logit"], name="output_matmul"),
        helper.make_node("Sigmoid", ["logit"], ["prob_double"], name="output_sigmoid"),
        helper.make_node(
            "Cast", ["prob_double"], [OUTPUT_NAME], name="prob_cast", to=TensorProto.FLOAT
        ),
    ]
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
            "policy_version": str(policy.version),
            "policy_sha256": policy.sha256,
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
