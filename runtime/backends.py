"""Backends: the decision function of a policy for ONE observation at a time.

- `numpy` (default): fused single-observation paths, the same maths as `runtime.policy`
  written for the per-call overhead that dominates at this size: weights laid out once,
  buffers preallocated, `out=` ufuncs. Format 1's maths (bernoulli, relu, no biases, no
  normaliser: every format-1 policy) is `fused_decision`, p(action 1) with `math.exp`; every
  other policy is `fused_action`, which returns the greedy action itself (an int, or the
  gaussian mean clipped to its bounds as a new float32 (k,) array).
- `onnxruntime`: runs `policy.onnx` found beside the `policy.npz` with one intra-op thread;
  imported only when chosen. Its answers are checked against the npz weights at load time, so
  an ONNX file that does not belong to the (possibly signed) npz is refused.

A decision function keeps its own buffers: call it from one thread (the control loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    ONNX_ACTION_OUTPUT,
    ONNX_DISTRIBUTION_OUTPUTS,
    ONNX_FILE,
)
from runtime.policy import (
    Params,
    Policy,
    PolicySpec,
    action_probability,
    distribution,
    greedy_action,
)
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


# The clip ufunc itself, one call of three operands: `np.clip` is a Python wrapper around it that
# costs more than the clip at these sizes (np._core on NumPy 2, np.core on 1.x)
CLIP = (getattr(np, "_core", None) or np.core).umath.clip
# The normaliser is folded into the first layer (below) when no observation mean is more than
# this many standard deviations from 0: W1 / std then meets observations of at most about
# (this + 10) standard deviations, and the float32 dot loses at most ~this x 6e-8 relative
# (6e-5 at 1e3). Beyond it the mean is subtracted first, one ufunc more.
FOLD_LIMIT = 1e3


def fused_action(policy: Policy) -> Callable[[np.ndarray], Any]:
    """The greedy action of any policy for one observation, allocation-free but for the
    gaussian's result: an int for bernoulli (1 when the logit > 0) and categorical (the
    argmax), the mean clipped to action_low..action_high as a new float32 (k,) array.

    The layers, with x the observation in a preallocated (obs_dim + 1,) buffer whose last
    value is 1, so that b1 is the last row of the transposed W1 (one dot, no add):

        normaliser: clip((obs - mean) / std, -10, 10) = (clip(obs, mean - 10 std, mean + 10 std)
                    - mean) / std, so x = clip(obs, low, high), W1 / std and b1 - (W1 / std) mean
                    (a larger |mean| / std: x = clip(obs - mean, +-10 std), see FOLD_LIMIT)
        no normaliser: x = obs, a copy into the buffer

    then h = act(x . W1t) and the outputs W2 . [h, 1], b2 the last column of W2; the bernoulli
    head and categorical with 2 actions have one output, whose sign is the action.

    With relu (and no shifted mean) the clip is no call of its own: x = obs, a copy, and the
    first layer also computes the range units obs_j - high_j and low_j - obs_j
    (`_with_range_units`), which the relu leaves at 0 except where an observation lies beyond
    its clip; the last output is their sum, 0 exactly when the clip changes nothing.
    Otherwise x is clipped and the layers run again: twice the time, for the rare observation
    beyond 10 standard deviations. Each head has its own function, this fast path inline in
    each (a call costs more than the branches it would save; docs/performance.md).
    """
    net = _fused_layers(policy)
    spec, outputs = policy.spec, len(net.output) - net.fast
    discrete = spec.head != HEAD_GAUSSIAN
    if net.fast and discrete and outputs == 1:
        action = _by_sign(net)
    elif net.fast and discrete and outputs == 3:
        action = _argmax_of_three(net)
    elif net.fast and not discrete and outputs <= 2:
        action = _few_means(net, spec)
    else:
        action = _any_head(net, spec)
    action.hidden = net.hidden  # type: ignore[attr-defined]
    return action


class _Layers:
    """One policy's fused layers: weights laid out once, the buffers they fill. (A plain class:
    a NamedTuple took about 1 ms to define in a fresh interpreter, start-up time.)"""

    __slots__ = ("fast", "front", "run", "output", "hidden")

    def __init__(
        self, fast: bool, front: tuple, run: Callable, output: np.ndarray, hidden: np.ndarray
    ) -> None:
        self.fast = fast  # relu, no shifted mean: the layers from a copy of obs, `front`, inline
        self.front = front  # what the fast path calls, in its order (see `_fused_layers`)
        self.run = run  # the layers of any obs, the clip first (if any)
        self.output = output  # the outputs, then (fast) the range units' sum
        self.hidden = hidden  # the hidden units' buffer


def _fused_layers(policy: Policy) -> _Layers:
    spec, params = policy.spec, policy.params
    mode, low_in, high_in, shift, w1t = _first_layer(params, spec)
    relu = spec.activation == "relu"
    fast = relu and mode != "shifted"
    if fast and mode == "clip":
        w1t = _with_range_units(w1t, low_in, high_in)
    x = np.ones(spec.obs_dim + 1, dtype=F32)  # x[-1] = 1 multiplies b1
    x_view = x[: spec.obs_dim]
    into_x = (x_view,)
    layer = np.ones(w1t.shape[1] + 1, dtype=F32)  # layer[-1] = 1 multiplies b2
    units = layer[:-1]  # the hidden units, then the range units (if any)
    bits = units.view(np.int32)  # relu on the bits, as in `fused_decision`
    zeros, into_units, into_bits = np.zeros_like(bits), (units,), (bits,)
    w2 = _output_weights(params, spec, w1t.shape[1] - spec.hidden, fast)
    output = np.empty(w2.shape[0], dtype=F32)
    maximum, tanh, subtract, clip = np.maximum, np.tanh, np.subtract, CLIP
    first_dot, output_dot = x.dot, w2.dot
    copied, clipped = mode == "copy", mode == "clip"

    def run(obs: np.ndarray) -> None:
        if copied:
            x_view[...] = obs
        elif clipped:
            clip(obs, low_in, high_in, out=into_x)
        else:  # shifted: the mean subtracted first
            subtract(obs, shift, out=into_x)
            clip(x_view, low_in, high_in, out=into_x)
        first_dot(w1t, units)
        if relu:
            maximum(bits, zeros, out=into_bits)
        else:
            tanh(units, out=into_units)
        output_dot(layer, output)

    front = (x_view, first_dot, w1t, units, maximum, bits, zeros, into_bits, output_dot, layer)
    return _Layers(fast, front + (output,), run, output, layer[: spec.hidden])


def _by_sign(net: _Layers) -> Callable[[np.ndarray], int]:
    """Bernoulli, and categorical with 2 actions: 1 when the one output is > 0."""
    run, values = net.run, memoryview(net.output)  # read as Python floats
    x_view, first_dot, w1t, units, maximum, bits, zeros, into_bits, output_dot, layer, output = (
        net.front
    )

    def action(obs: np.ndarray) -> int:
        x_view[...] = obs
        first_dot(w1t, units)
        maximum(bits, zeros, out=into_bits)
        output_dot(layer, output)
        if values[-1]:  # an observation beyond its clip: the layers again, clipped
            run(obs)
        return 1 if values[0] > 0.0 else 0

    return action


def _argmax_of_three(net: _Layers) -> Callable[[np.ndarray], int]:
    """Categorical with 3 actions (Acrobot's): np.argmax in Python, the lowest index among
    ties, the first NaN."""
    run, values = net.run, memoryview(net.output)
    x_view, first_dot, w1t, units, maximum, bits, zeros, into_bits, output_dot, layer, output = (
        net.front
    )

    def action(obs: np.ndarray) -> int:
        x_view[...] = obs
        first_dot(w1t, units)
        maximum(bits, zeros, out=into_bits)
        output_dot(layer, output)
        if values[-1]:  # an observation beyond its clip: the layers again, clipped
            run(obs)
        a, b, c = values[0], values[1], values[2]  # cheaper than unpacking the memoryview
        if b <= a or a != a:
            return 0 if c <= a or a != a else 2
        return 1 if c <= b or b != b else 2

    return action


def _few_means(net: _Layers, spec: PolicySpec) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian with k = 1 or 2: the means clipped in place in Python (a NaN stays, as in
    np.clip) and copied, cheaper than the clip's new array; k = 1 clips its one mean twice."""
    run, values = net.run, memoryview(net.output)
    x_view, first_dot, w1t, units, maximum, bits, zeros, into_bits, output_dot, layer, output = (
        net.front
    )
    copy = net.output[: spec.action_dim].copy
    last, (low0, high0, low1, high1) = spec.action_dim - 1, _python_bounds(spec)

    def action(obs: np.ndarray) -> np.ndarray:
        x_view[...] = obs
        first_dot(w1t, units)
        maximum(bits, zeros, out=into_bits)
        output_dot(layer, output)
        if values[-1]:  # an observation beyond its clip: the layers again, clipped
            run(obs)
        mean_0, mean_last = values[0], values[last]
        if mean_0 < low0:
            values[0] = low0
        elif mean_0 > high0:
            values[0] = high0
        if mean_last < low1:
            values[last] = low1
        elif mean_last > high1:
            values[last] = high1
        return copy()  # a new array each time: the plant may keep it

    return action


def _any_head(net: _Layers, spec: PolicySpec) -> Callable[[np.ndarray], Any]:
    """Every other policy: tanh or a shifted mean (the layers with the clip first), and on the
    fast path categorical with 4 or more actions or gaussian with 3 or more means."""
    fast, run, values = net.fast, net.run, memoryview(net.output)
    x_view, first_dot, w1t, units, maximum, bits, zeros, into_bits, output_dot, layer, output = (
        net.front
    )
    outputs = output[: len(output) - fast]  # the logits, or the means
    logit_values = memoryview(outputs)
    argmax, clip, (low, high) = outputs.argmax, CLIP, _action_bounds(spec)
    gaussian, by_sign = spec.head == HEAD_GAUSSIAN, len(outputs) == 1

    def action(obs: np.ndarray) -> Any:
        if fast:
            x_view[...] = obs
            first_dot(w1t, units)
            maximum(bits, zeros, out=into_bits)
            output_dot(layer, output)
            if values[-1]:  # an observation beyond its clip: the layers again, clipped
                run(obs)
        else:
            run(obs)
        if gaussian:
            return clip(outputs, low, high)  # a new array: the plant may keep it
        if by_sign:
            return 1 if logit_values[0] > 0.0 else 0
        return int(argmax())  # the lowest index among ties, the first NaN

    return action


def _with_range_units(w1t: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """W1t (obs_dim + 1, hidden) and 2 * obs_dim more columns: x_j - high_j, low_j - x_j.

    Each column holds one weight +-1 and a bound in the bias row, the rest 0. With a finite
    observation (every plant checks) the dot adds zeros to two exact products, so that any
    BLAS gives fl(x_j - high_j), correctly rounded: positive exactly when x_j > high_j, since
    a difference of float32 values is 0 only between equal ones (subnormals kept). After the
    relu a range unit is positive exactly where the clip changes x, and their sum, of values
    >= 0, is 0 exactly when each is (an infinite bound gives -inf: never beyond it).
    """
    eye = np.eye(len(low), dtype=F32)
    above = np.vstack([eye, -high[None, :]])
    below = np.vstack([-eye, low[None, :]])
    return np.ascontiguousarray(np.hstack([w1t, above, below]), dtype=F32)


def _first_layer(params: Params, spec: PolicySpec) -> tuple:
    """(mode, clip low, clip high, shift, W1 transposed with the bias as its last row)."""
    w1 = np.asarray(params[KEY_W1], dtype=np.float64)
    b1 = np.asarray(params.get(KEY_B1, np.zeros(spec.hidden)), dtype=np.float64)
    mean, std = params.get(KEY_OBS_MEAN), params.get(KEY_OBS_STD)
    shift = low = high = None
    if mean is None:
        mode = "copy"
    else:
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        w1 = w1 / std  # column j scaled by 1 / std[j]
        if np.max(np.abs(mean) / std) <= FOLD_LIMIT:
            mode, low, high = "clip", mean - OBS_CLIP * std, mean + OBS_CLIP * std
            b1 = b1 - w1 @ mean
        else:
            mode, shift, low, high = "shifted", mean.astype(F32), -OBS_CLIP * std, OBS_CLIP * std
        with np.errstate(over="ignore"):  # a bound beyond float32 clips nothing: inf
            low, high = low.astype(F32), high.astype(F32)
    w1t = np.ascontiguousarray(np.vstack([w1.T, b1[None, :]]), dtype=F32)
    return mode, low, high, shift, w1t


def _output_weights(params: Params, spec: PolicySpec, range_units: int, check: bool) -> np.ndarray:
    """The output layer (outputs, hidden + range units + 1), C-contiguous, b2 (or zeros) its last
    column, to multiply the layer buffer (`w2.dot(layer)` is the cheaper gemv). Bernoulli: one
    output, the logit; categorical with 2 actions: one output too, logit 1 - logit 0, whose
    sign is the argmax (0 on a tie, as np.argmax). The range units weigh 0 in every output;
    `check` adds the last output, their sum (0 with no range units)."""
    w2 = np.asarray(params[KEY_W2], dtype=np.float64).reshape(-1, spec.hidden)
    b2 = np.asarray(params.get(KEY_B2, np.zeros(w2.shape[0])), dtype=np.float64)
    if spec.head == HEAD_CATEGORICAL and spec.action_dim == 2:
        w2, b2 = w2[1:] - w2[:1], b2[1:] - b2[:1]
    outputs = len(b2)
    layer = np.zeros((outputs + check, spec.hidden + range_units + 1))
    layer[:outputs, : spec.hidden] = w2
    layer[:outputs, -1] = b2
    if check:
        layer[outputs, spec.hidden : spec.hidden + range_units] = 1.0
    return np.ascontiguousarray(layer, dtype=F32)


def _python_bounds(spec: PolicySpec) -> tuple[float, float, float, float]:
    """A gaussian head's first two (low, high) pairs as Python floats of their float32 values,
    compared with the float32 means exactly as the clip compares them; k = 1 gives its pair
    twice; any other head NaN (unused)."""
    if spec.head != HEAD_GAUSSIAN:
        return (math.nan,) * 4
    low, high = _action_bounds(spec)
    second = min(1, spec.action_dim - 1)
    return float(low[0]), float(high[0]), float(low[second]), float(high[second])


def _action_bounds(spec: PolicySpec) -> tuple[np.ndarray | None, np.ndarray | None]:
    if spec.head != HEAD_GAUSSIAN:
        return None, None
    return np.asarray(spec.action_low, dtype=F32), np.asarray(spec.action_high, dtype=F32)


def naive_action(policy: Policy) -> Callable[[np.ndarray], Any]:
    """The reference expression (`runtime.policy.greedy_action`), for tests and the bench."""
    params, spec = policy.params, policy.spec
    return lambda obs: greedy_action(params, np.asarray(obs, dtype=F32), spec)


class OnnxDecision:
    """A decision from `policy.onnx` through onnxruntime's `run()`, one intra-op thread.

    Format 1's graph (one output, p(action 1)): calling it gives p(action 1). Format 2's (input
    `obs` float32 (N, obs_dim), outputs `action`, int64 (N,) or float32 (N, k) clipped, and the
    head's `prob` / `probs` / `mean`): `action(obs)` gives the greedy action, an int or a
    float32 (k,) array. `gives_actions` says which.
    """

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
        outputs = [output.name for output in self.session.get_outputs()]
        self.gives_actions = ONNX_ACTION_OUTPUT in outputs
        self.output_names = [ONNX_ACTION_OUTPUT] if self.gives_actions else [outputs[0]]
        self.discrete = policy.spec.head != HEAD_GAUSSIAN
        obs_dim = policy.params[KEY_W1].shape[1]
        rank = len(model_input.shape or [None, obs_dim])
        self.buffer = np.zeros((1, obs_dim) if rank == 2 else (obs_dim,), dtype=F32)
        self.feed = {self.input_name: self.buffer}
        if self.gives_actions:
            self._check_actions_against(policy, onnx_path, outputs)
        elif not runs_format_1_maths(policy):
            raise BackendError(
                f"{onnx_path} is format 1's graph (p(action 1), no {ONNX_ACTION_OUTPUT} output), but"
                f" the policy beside it has a {policy.spec.head} head, activation"
                f" {policy.spec.activation}, biases or a normaliser; export both again"
            )
        else:
            self._check_against(policy, onnx_path)

    def __call__(self, obs: np.ndarray) -> float:
        self.buffer.reshape(-1)[:] = obs
        output = self.session.run(self.output_names, self.feed)[0]
        flat = output.reshape(-1)
        return float(flat[-1])  # one unit p(1), or two units (p(0), p(1))

    def action(self, obs: np.ndarray) -> Any:
        """The greedy action of format 2's graph: an int, or a float32 (k,) array."""
        self.buffer.reshape(-1)[:] = obs
        action = self.session.run(self.output_names, self.feed)[0]
        return int(action.reshape(-1)[0]) if self.discrete else action.reshape(-1)

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

    def _check_actions_against(self, policy: Policy, onnx_path: Path, outputs: list) -> None:
        """Its head's output and its actions, on 8 observations, against the npz."""
        spec = policy.spec
        name = ONNX_DISTRIBUTION_OUTPUTS[spec.head]
        if name not in outputs:
            raise BackendError(
                f"{onnx_path} has outputs {', '.join(outputs)}; a {spec.head} policy's graph"
                f" has {ONNX_ACTION_OUTPUT} and {name}"
            )
        obs = np.random.default_rng(0).standard_normal((8, self.buffer.size)).astype(F32)
        try:
            got = np.array(
                [self.session.run([name], {self.input_name: row[None]})[0][0] for row in obs]
            )
            actions = [self.action(row) for row in obs]
        except Exception as error:  # a model with other inputs or outputs
            raise BackendError(f"{onnx_path}: cannot run it on one observation: {error}") from None
        params = {key: value.astype(np.float64) for key, value in policy.params.items()}
        expected = distribution(params, obs.astype(np.float64), spec)
        if got.size == expected.size:  # bernoulli's prob is a (N, 1) column, as format 1's
            got = got.reshape(expected.shape)
        reference = greedy_action(params, obs.astype(np.float64), spec)
        if spec.head == HEAD_GAUSSIAN:
            agree = np.allclose(np.array(actions), reference, atol=ONNX_CHECK_TOLERANCE, rtol=0)
        else:  # an action may differ only where the reference is within the tolerance of a tie
            agree = all(
                action == best or _near_tie(probabilities, action, best, spec)
                for action, best, probabilities in zip(actions, reference, expected, strict=True)
            )
        close = got.shape == expected.shape and np.allclose(
            got, expected, atol=ONNX_CHECK_TOLERANCE, rtol=0
        )
        if not close:
            difference = (
                f"max difference {np.max(np.abs(got - expected)):.3g}"
                if got.shape == expected.shape
                else f"shape {got.shape}, expected {expected.shape}"
            )
            raise BackendError(
                f"{onnx_path} does not compute the policy in the npz beside it ({name}"
                f" {difference}); export both again"
            )
        if not agree:
            raise BackendError(
                f"{onnx_path}: its {ONNX_ACTION_OUTPUT} output is not the greedy action of the policy"
                " in the npz beside it; export both again"
            )


def _near_tie(probabilities: np.ndarray, action: int, best: int, spec: PolicySpec) -> bool:
    if spec.head == HEAD_BERNOULLI:
        return abs(float(probabilities) - 0.5) < ONNX_CHECK_TOLERANCE
    return abs(float(probabilities[action] - probabilities[best])) < ONNX_CHECK_TOLERANCE


def onnx_path_for(policy_path: str | Path) -> Path:
    """`NAME.onnx` beside `NAME.npz` if present, else `policy.onnx` in the same directory."""
    from pathlib import Path

    policy_path = Path(policy_path)
    same_stem = policy_path.with_suffix(".onnx")
    return same_stem if same_stem.is_file() else policy_path.parent / ONNX_FILE


def runs_format_1_maths(policy: Policy) -> bool:
    """Bernoulli, relu, no biases, no normaliser: every format-1 policy, and format-2 ones
    with the same maths, which run on `fused_decision` (p(action 1), thresholded by the loop)."""
    spec = policy.spec
    extras = any(key in policy.params for key in (KEY_B1, KEY_B2, KEY_OBS_MEAN, KEY_OBS_STD))
    return spec.head == HEAD_BERNOULLI and spec.activation == "relu" and not extras


def make_active(
    policy: Policy, backend_name: str = "numpy", policy_path: str | Path | None = None
) -> ActivePolicy:
    """A policy with its ready decision function, for the loop's `PolicySlot`.

    `numpy`: `fused_decision` for format 1's maths, `fused_action` for every other policy.
    `onnxruntime` loads the ONNX file beside `policy_path` (see `onnx_path_for`).
    """
    if backend_name == "numpy":
        if runs_format_1_maths(policy):
            return ActivePolicy(policy, fused_decision(policy.params))
        return ActivePolicy(policy, None, fused_action(policy))
    if backend_name == "onnxruntime":
        if policy_path is None:
            raise BackendError(
                "the onnxruntime backend needs the policy's path to find policy.onnx"
            )
        decision = OnnxDecision(onnx_path_for(policy_path), policy)
        if decision.gives_actions:
            return ActivePolicy(policy, None, decision.action)
        return ActivePolicy(policy, decision)
    raise BackendError(f"unknown backend {backend_name!r}; choose numpy or onnxruntime")
