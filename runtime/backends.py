"""Backends: the decision function p(action 1 | obs) of a policy for ONE observation at a time.

- `numpy` (default): the fused single-observation path. The same maths as
  `runtime.policy.forward`, written for the per-call overhead that dominates at this size:
  weights laid out once, the hidden buffer preallocated, `out=` ufuncs, and the sigmoid of the
  scalar output with `math.exp` instead of an array expression.
- `onnxruntime`: runs `policy.onnx` found beside the `policy.npz` with one intra-op thread;
  imported only when chosen. Its answers are checked against the npz weights at load time, so
  an ONNX file that does not belong to the (possibly signed) npz is refused.

A decision function keeps its own buffers: call it from one thread (the control loop).
Both run format 1's network only: a policy with another head or activation, biases or a
normaliser (format 2) is refused by `make_active` (`check_runnable`) until they learn it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from runtime.constants import (
    HEAD_BERNOULLI,
    KEY_B1,
    KEY_B2,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_W1,
    KEY_W2,
    ONNX_FILE,
    ONNX_PROB_OUTPUT,
)
from runtime.policy import Params, Policy, action_probability
from runtime.slot import ActivePolicy

if TYPE_CHECKING:  # pathlib is imported where a path is used: start-up time (docs/performance.md)
    from pathlib import Path

F32 = np.float32
ONNX_CHECK_TOLERANCE = 1e-4  # float32 kernels may differ in the last bits, never by more


class BackendError(ValueError):
    """A backend cannot run this policy (missing file or package, mismatching model)."""


def fused_decision(params: Params) -> Callable[[np.ndarray], float]:
    """p(action 1) for one observation: sigmoid(W2 . relu(W1 obs)), allocation-free.

    A closure rather than a class: its weights, buffer and functions are cell variables, read
    without the attribute lookups of `self`. The hidden buffer is exposed as `.hidden`.
    """
    # obs @ W1.T is dot(obs, w1t) with w1t C-contiguous (obs_dim, hidden)
    w1t = np.ascontiguousarray(np.asarray(params[KEY_W1], dtype=F32).T)
    # -z = (-W2) . h as a (1, hidden) matrix times h into a preallocated (1,) array: the sign
    # folded into the weights leaves p = 1 / (1 + exp(-z)) one expression with no branch
    negated_w2_row = -np.ascontiguousarray(params[KEY_W2], dtype=F32).reshape(1, -1)
    negated_logit = np.empty(1, dtype=F32)
    # read back as a Python float through a memoryview made once: no NumPy scalar to create
    negated_logit_value = memoryview(negated_logit)
    hidden = np.empty(negated_w2_row.shape[1], dtype=F32)
    # relu on the float32 bits read as int32: IEEE 754 orders the non-negative floats as their
    # bit patterns, and every negative float (sign bit set) is a negative int, so
    # max(bits, 0) is max(h, 0) bit for bit (-0 and -inf too; a NaN with its sign bit set
    # becomes 0). The integer loop is cheaper to select and to run and skips one check of the
    # floating-point status: 1-2% faster per decision than the float32 maximum
    # (docs/performance.md)
    hidden_bits = hidden.view(np.int32)
    # against an array of zeros into a tuple `out`: the ufunc converts no scalar and wraps no
    # output (15-30% faster than a scalar zero with out=hidden on NumPy 2.4 and 1.24)
    zeros, into_hidden_bits = np.zeros_like(hidden_bits), (hidden_bits,)
    maximum, exp, output_dot = np.maximum, math.exp, negated_w2_row.dot

    def probability(obs: np.ndarray) -> float:
        try:
            obs.dot(w1t, hidden)  # h = W1 obs, into the buffer (the method is the cheapest call)
        except (TypeError, ValueError, AttributeError):  # not a float32 array: convert once
            np.asarray(obs, dtype=F32).reshape(-1).dot(w1t, hidden)
        maximum(hidden_bits, zeros, out=into_hidden_bits)  # h = relu(h)
        output_dot(hidden, negated_logit)  # -z = -(W2 . h)
        try:
            return 1.0 / (1.0 + exp(negated_logit_value[0]))  # p = sigmoid(z)
        except OverflowError:  # -z > 709: p is 0 to double precision
            return 0.0

    probability.hidden = hidden  # type: ignore[attr-defined]
    return probability


def naive_decision(params: Params) -> Callable[[np.ndarray], float]:
    """The reference expression (`runtime.policy.action_probability`), for tests and the bench."""
    return lambda obs: float(action_probability(params, obs))


class OnnxDecision:
    """p(action 1) from `policy.onnx` through onnxruntime's `run()`, one intra-op thread."""

    def __init__(self, onnx_path: str | Path, policy: Policy) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise BackendError(
                "the onnxruntime backend needs onnxruntime: pip install onnxruntime"
            ) from None
        from pathlib import Path

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise BackendError(f"{onnx_path}: no such file (the onnxruntime backend needs it)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = onnxruntime.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise BackendError(f"{onnx_path}: onnxruntime cannot load it: {first_line}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        names = [output.name for output in self.session.get_outputs()]
        # the exporter's format-2 graph has `action` first and p(action 1) as `prob`
        self.output_names = [ONNX_PROB_OUTPUT if ONNX_PROB_OUTPUT in names else names[0]]
        obs_dim = policy.params[KEY_W1].shape[1]
        rank = len(model_input.shape or [None, obs_dim])
        self.buffer = np.zeros((1, obs_dim) if rank == 2 else (obs_dim,), dtype=F32)
        self.feed = {self.input_name: self.buffer}
        self._check_against(policy, onnx_path)

    def __call__(self, obs: np.ndarray) -> float:
        self.buffer.reshape(-1)[:] = obs
        output = self.session.run(self.output_names, self.feed)[0]
        flat = output.reshape(-1)
        return float(flat[-1])  # one unit p(1), or two units (p(0), p(1))

    def _check_against(self, policy: Policy, onnx_path: Path) -> None:
        obs = np.random.default_rng(0).standard_normal((8, self.buffer.size)).astype(F32)
        try:
            got = np.array([self(row) for row in obs])
        except Exception as error:  # a model with other inputs or outputs
            raise BackendError(f"{onnx_path}: cannot run it on one observation: {error}") from None
        expected = action_probability(policy.params, obs.astype(np.float64))
        if not np.allclose(got, expected, atol=ONNX_CHECK_TOLERANCE, rtol=0):
            raise BackendError(
                f"{onnx_path} does not compute the policy in the npz beside it"
                f" (max difference {np.max(np.abs(got - expected)):.3g}); export both again"
            )


def onnx_path_for(policy_path: str | Path) -> Path:
    """`NAME.onnx` beside `NAME.npz` if present, else `policy.onnx` in the same directory."""
    from pathlib import Path

    policy_path = Path(policy_path)
    same_stem = policy_path.with_suffix(".onnx")
    return same_stem if same_stem.is_file() else policy_path.parent / ONNX_FILE


def check_runnable(policy: Policy) -> None:
    """BackendError unless the decision functions compute this policy: bernoulli, relu, no
    biases, no normaliser (every format-1 policy, and format-2 ones that are format 1's maths)."""
    spec = policy.spec
    extras = [key for key in (KEY_B1, KEY_B2, KEY_OBS_MEAN, KEY_OBS_STD) if key in policy.params]
    if spec.head == HEAD_BERNOULLI and spec.activation == "relu" and not extras:
        return
    with_extras = f", with {', '.join(extras)}" if extras else ""
    raise BackendError(
        f"policy version {policy.version} (format {policy.format_version}, head {spec.head},"
        f" activation {spec.activation}{with_extras}) cannot run on this device runtime yet:"
        " it runs bernoulli policies with relu and no biases or normaliser"
    )


def make_active(
    policy: Policy, backend_name: str = "numpy", policy_path: str | Path | None = None
) -> ActivePolicy:
    """A policy with its ready decision function, for the loop's `PolicySlot`.

    `onnxruntime` loads the ONNX file beside `policy_path` (see `onnx_path_for`). A policy
    neither backend computes is a BackendError (`check_runnable`): exit 2 at start, a
    rejected update over MQTT.
    """
    check_runnable(policy)
    if backend_name == "numpy":
        return ActivePolicy(policy, fused_decision(policy.params))
    if backend_name == "onnxruntime":
        if policy_path is None:
            raise BackendError(
                "the onnxruntime backend needs the policy's path to find policy.onnx"
            )
        return ActivePolicy(policy, OnnxDecision(onnx_path_for(policy_path), policy))
    raise BackendError(f"unknown backend {backend_name!r}; choose numpy or onnxruntime")
