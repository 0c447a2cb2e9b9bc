"""Parity: every exported artifact must compute the same probabilities as `runtime.policy`.

The reference is the NumPy forward pass in float64 on the float32 weights and observations.
The artifacts compute in float32, so they may differ by rounding only:
ONNX (onnxruntime and onnx.reference) by at most 1e-6, the C header by at most 1e-5, and the
C action must agree wherever the probability is not within 1e-5 of 0.5.

A format-2 graph (`check_parity` with a spec) is held to `runtime.policy.distribution` and
`greedy_action` in float64, output by output: its distribution (prob, probs or mean) and a
gaussian action within 1e-6 (absolute, relative above magnitude 1: a mean of 1e30 rounds to
float32 by far more than 1e-6), and a discrete action equal on every observation whose
decision is clear by more than 1e-6 (see `decided_rows`).

A format-2 header sums in float (its default): each of its outputs (the distribution and the
action) is held to float rounding of the sums instead, `c_tolerance_v2(spec)` times
1 + the sum of the magnitudes of every term (`term_magnitudes`), the textbook bound on the
rounding error of a dot product; the actions must agree wherever the reference's decision is
not within that bound.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.constants import (
    HEAD_BERNOULLI,
    HEAD_CATEGORICAL,
    HEAD_GAUSSIAN,
    KEY_B1,
    KEY_B2,
    KEY_OBS_MEAN,
    KEY_W1,
    KEY_W2,
    OBS_DIM,
)
from runtime.policy import (
    Params,
    PolicySpec,
    action_probability,
    distribution,
    forward_pass,
    greedy_action,
    normalise,
)

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-6
C_TOLERANCE = 1e-5
ACTION_MARGIN = 1e-5  # actions are compared only where |p - 0.5| exceeds this
PARITY_SEED = 20240917  # fixed: the same observations at every export
RANDOM_OBSERVATIONS = 10_000
# CartPole-v1 state ranges: the termination bounds for position (m) and angle (rad), and the
# range velocities actually reach (m/s, rad/s); observations go somewhat beyond each.
STATE_LIMITS = np.array([4.8, 4.0, 0.42, 4.0])
# Any other observation size has no known ranges: +-10 (a normaliser's clip, in raw units for
# a policy without one), and the same ten times wider, edge cases and huge magnitudes beside.
OTHER_LIMIT = 10.0
FLOAT32_UNIT_ROUNDOFF = 2.0**-24  # u: a float32 operation's relative rounding error is <= u
GCC_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
GCC_TIMEOUT_SECONDS = 120
FLOAT_ACCUMULATOR = "POLICY_ACCUMULATOR=float"  # the header's variant for cores without double
# Format 2's ONNX parity (`check_parity` with a spec)
ONNX_ACTION_MARGIN = 1e-6  # discrete actions compared where the decision is clearer than this
EDGE_PATTERNS = 16  # sign patterns and single axes per magnitude in the edge observations
# multiply-adds per evaluator: a policy beyond it (obs_dim x hidden over 40,000) is checked on
# fewer random observations, at least MIN_OBSERVATIONS, so that the check stays about a second
PARITY_WORK = 4e8
MIN_OBSERVATIONS = 1000
NORMALISED_RANGE = 4.0  # most observations lie within this many obs_std of obs_mean
WIDE_RANGE = 40.0  # the rest spread this wide: far beyond the normaliser's clip at 10
EVALUATORS = ("onnxruntime", "onnx.reference")

HARNESS_C = """\
#include <stdio.h>
#include "policy.h"

#ifndef POLICY_ACTION_DIM /* a format-1 header: one probability */
#define POLICY_ACTION_DIM 1
#endif

/* obs.bin: float32 rows of POLICY_OBS_DIM -> out.bin, per row: the distribution (float32 x
 * POLICY_ACTION_DIM: p, the probabilities or the mean), then the action (int32, or float32 x
 * POLICY_ACTION_DIM for a gaussian head) */
int main(int argc, char **argv)
{
    FILE *in, *out;
    float obs[POLICY_OBS_DIM];
    float dist[POLICY_ACTION_DIM];
    ACTION_DECLARATION;
    if (argc != 3) {
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        return 2;
    }
    while (fread(obs, sizeof(float), POLICY_OBS_DIM, in) == POLICY_OBS_DIM) {
        DISTRIBUTION_CALL;
        ACTION_CALL;
        if (fwrite(dist, sizeof dist[0], POLICY_ACTION_DIM, out) != POLICY_ACTION_DIM
            || fwrite(action, sizeof action[0], ACTION_SIZE, out) != ACTION_SIZE) {
            return 1;
        }
    }
    return fclose(out) == 0 && fclose(in) == 0 ? 0 : 1;
}
"""


@dataclass(frozen=True)
class ParityReport:
    """Max absolute errors against the float64 NumPy forward pass (None: not measured)."""

    observations: int
    onnxruntime: float | None = None
    reference: float | None = None
    c: float | None = None
    c_action_mismatches: int | None = None
    c_skipped: str | None = None
    # the header's `POLICY_ACCUMULATOR float` variant: measured and reported, not required
    c_float: float | None = None
    c_float_action_mismatches: int | None = None
    # format 2's graph, per evaluator (EVALUATORS): output name -> its worst error
    # ("NAME_max_error") or the discrete actions that differ ("action_mismatches")
    onnx_outputs: dict[str, dict[str, float | int]] | None = None
    onnx_actions_compared: int | None = None  # the observations a discrete action is held to
    # format 2: `c` is the error over 1 + the sum of |terms| (c_tolerance_v2), of the default
    # float sums the header ships with
    c_tolerance: float = C_TOLERANCE
    c_accumulator: str | None = None

    def failures(self) -> list[str]:
        """One phrase per artifact over its tolerance; empty when all agree."""
        problems = []
        for name, error, limit in (
            ("onnxruntime", self.onnxruntime, ONNX_TOLERANCE),
            ("onnx.reference", self.reference, ONNX_TOLERANCE),
            ("C header", self.c, self.c_tolerance),
        ):
            if error is not None and not error <= limit:  # `not <=` also catches NaN
                problems.append(f"{name} max error {error:.3g} > {limit:g}")
        if self.c_action_mismatches:
            problems.append(f"C header picks a different action on {self.c_action_mismatches}")
        for evaluator, errors in (self.onnx_outputs or {}).items():
            mismatches = errors.get("action_mismatches")
            if mismatches:
                problems.append(
                    f"{evaluator} picks a different action on {mismatches} of"
                    f" {self.onnx_actions_compared} observations"
                )
        return problems

    def as_dict(self) -> dict:
        if self.onnx_outputs is None and self.c_accumulator is None:
            return self._as_dict_format_1()
        # format 2: what format 1's manifest says, and more
        result = {
            **self._as_dict_format_1(),
            "reference": "runtime.policy.distribution and greedy_action in float64",
        }
        if self.onnx_outputs is not None:
            result.update(
                onnx_outputs=self.onnx_outputs,
                onnx_error="absolute, relative above magnitude 1",
                onnx_actions_compared=self.onnx_actions_compared,
                onnx_action_margin=ONNX_ACTION_MARGIN,
            )
        if self.c_accumulator is not None:  # the header's own (float) sums checked, scaled
            for key in ("c_max_abs_error", "c_float_accumulator_max_abs_error"):
                del result[key]
            del result["c_float_accumulator_action_mismatches"]
            result.update(
                c_accumulator=self.c_accumulator,
                c_max_scaled_error=self.c,
                c_error_scale="1 + sum of |terms| (|W2| (|W1| |x| + |b1|) + |b2|)",
                c_tolerance=self.c_tolerance,
            )
        return result

    def _as_dict_format_1(self) -> dict:
        return {
            "observations": self.observations,
            "reference": "runtime.policy.forward in float64",
            "onnxruntime_max_abs_error": self.onnxruntime,
            "onnx_reference_max_abs_error": self.reference,
            "onnx_tolerance": ONNX_TOLERANCE,
            "c_max_abs_error": self.c,
            "c_action_mismatches": self.c_action_mismatches,
            "c_tolerance": C_TOLERANCE,
            "c_skipped": self.c_skipped,
            "c_float_accumulator_max_abs_error": self.c_float,
            "c_float_accumulator_action_mismatches": self.c_float_action_mismatches,
        }

    def float_variant_notes(self) -> list[str]:
        """Where the unchecked float-accumulator variant falls short (a warning, not a failure)."""
        notes = []
        if self.c_float is not None and not self.c_float <= C_TOLERANCE:
            notes.append(f"max error {self.c_float:.3g} > {C_TOLERANCE:g}")
        if self.c_float_action_mismatches:
            notes.append(f"a different action on {self.c_float_action_mismatches}")
        return notes


def parity_observations(
    count: int = RANDOM_OBSERVATIONS, seed: int = PARITY_SEED, obs_dim: int = OBS_DIM
) -> np.ndarray:
    """Fixed float32 observations (N, obs_dim): CartPole ranges for obs_dim 4 (+-OTHER_LIMIT
    for any other), wider ranges and edge cases."""
    rng = np.random.default_rng(seed)
    limits = STATE_LIMITS if obs_dim == OBS_DIM else np.full(obs_dim, OTHER_LIMIT)
    in_range = rng.uniform(-1.0, 1.0, (count * 8 // 10, obs_dim)) * limits
    wide = rng.standard_normal((count - len(in_range), obs_dim)) * limits * 10.0
    return np.concatenate([in_range, wide, edge_observations(obs_dim)]).astype(np.float32)


def edge_observations(obs_dim: int = OBS_DIM) -> np.ndarray:
    """Zeros, tiny and huge magnitudes, single axes and sign patterns, (rows, obs_dim).

    Every sign pattern and axis while there are at most EDGE_PATTERNS of each (obs_dim 4: 16
    and 4, the rows format 1 has always used), else a fixed choice of that many.
    """
    rows = [np.zeros(obs_dim), np.full(obs_dim, -0.0)]
    signs, axes = _sign_patterns(obs_dim), np.eye(obs_dim)
    if obs_dim > EDGE_PATTERNS:
        axes = axes[np.linspace(0, obs_dim - 1, EDGE_PATTERNS).round().astype(int)]
    for magnitude in (1e-38, 1e-6, 1.0, 1e3, 1e6, 1e12, 1e20, 1e30):
        rows += list(signs * magnitude)
        rows += list(axes * magnitude) + list(axes * -magnitude)
    return np.array(rows)


def _sign_patterns(obs_dim: int) -> np.ndarray:
    """Every row of +-1 (2**obs_dim) while that is at most EDGE_PATTERNS, else all +1, all -1
    and fixed random patterns, EDGE_PATTERNS rows in all."""
    if 2**obs_dim <= EDGE_PATTERNS:
        return np.array(np.meshgrid(*[[-1.0, 1.0]] * obs_dim)).reshape(obs_dim, -1).T
    rng = np.random.default_rng(PARITY_SEED)
    random = rng.choice([-1.0, 1.0], (EDGE_PATTERNS - 2, obs_dim))
    return np.concatenate([np.ones((1, obs_dim)), -np.ones((1, obs_dim)), random])


def policy_observations(
    params: Params, spec: PolicySpec, count: int | None = None, seed: int = PARITY_SEED
) -> np.ndarray:
    """Fixed float32 observations (N, obs_dim) for a format-2 policy, whose environment's
    ranges the export does not know: around the normaliser's obs_mean in units of obs_std
    (or around 0 in units of 1 without one), 80% within NORMALISED_RANGE, 20% spread
    WIDE_RANGE wide (most beyond the clip at 10); the edge observations; and with a
    normaliser, rows just inside and outside its clip and at its mean. `count` random rows
    (None: RANDOM_OBSERVATIONS, fewer for a large policy, see PARITY_WORK).
    """
    obs_dim = spec.obs_dim
    count = parity_count(spec) if count is None else count
    has_normaliser = KEY_OBS_MEAN in params
    centre = np.asarray(params[KEY_OBS_MEAN], np.float64) if has_normaliser else np.zeros(obs_dim)
    scale = np.asarray(params["obs_std"], np.float64) if has_normaliser else np.ones(obs_dim)
    rng = np.random.default_rng(seed)
    near = rng.uniform(-NORMALISED_RANGE, NORMALISED_RANGE, (count * 8 // 10, obs_dim))
    wide = rng.standard_normal((count - len(near), obs_dim)) * WIDE_RANGE
    rows = [centre + scale * near, centre + scale * wide, edge_observations(obs_dim)]
    if has_normaliser:  # normalised 0, and +-10 (the clip) by 0.1% on either side
        signs = _sign_patterns(obs_dim)
        rows += [centre + scale * signs * size for size in (0.0, 9.99, 10.01)]
    finite = np.finfo(np.float32).max  # a huge obs_std could take a row beyond float32
    return np.clip(np.concatenate(rows), -finite, finite).astype(np.float32)


def parity_count(spec: PolicySpec) -> int:
    """Random observations for a format-2 policy: RANDOM_OBSERVATIONS, or as many as
    PARITY_WORK allows for a large one, at least MIN_OBSERVATIONS."""
    work = (spec.obs_dim + spec.action_dim) * spec.hidden  # multiply-adds per observation
    return int(max(MIN_OBSERVATIONS, min(RANDOM_OBSERVATIONS, PARITY_WORK // work)))


def reference_probabilities(params: Params, obs: np.ndarray) -> np.ndarray:
    """The float64 NumPy forward pass: the truth every artifact is held to."""
    params64 = {name: np.asarray(array, dtype=np.float64) for name, array in params.items()}
    return action_probability(params64, np.asarray(obs, dtype=np.float64))


def onnxruntime_probabilities(
    model: bytes, obs: np.ndarray, batch: int | None = None
) -> np.ndarray:
    """p(action 1) from onnxruntime, `batch` rows per run (None: all at once)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and polite on a shared machine
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    step = batch or max(len(obs), 1)
    chunks = [session.run(None, {"obs": obs[i : i + step]})[0] for i in range(0, len(obs), step)]
    return np.concatenate(chunks)[:, 0]


def onnx_reference_probabilities(model: bytes, obs: np.ndarray) -> np.ndarray:
    """p(action 1) from onnx.reference.ReferenceEvaluator (ONNX's own Python semantics)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load_from_string(model))
    with np.errstate(all="ignore"):  # its sigmoid evaluates exp(x) on both sides of 0
        return evaluator.run(None, {"obs": np.asarray(obs, dtype=np.float32)})[0][:, 0]


def reference_outputs(params: Params, spec: PolicySpec, obs: np.ndarray) -> dict[str, np.ndarray]:
    """A format-2 graph's outputs as the float64 NumPy functions compute them: `action`
    (greedy_action) and the distribution (a bernoulli p as a column (N, 1), as the graph's)."""
    from export.onnx_graph import ACTION_NAME, DISTRIBUTIONS

    params64 = {name: np.asarray(array, dtype=np.float64) for name, array in params.items()}
    obs64 = np.asarray(obs, dtype=np.float64)
    dist = distribution(params64, obs64, spec)
    if spec.head == HEAD_BERNOULLI:
        dist = dist[:, None]
    return {ACTION_NAME: greedy_action(params64, obs64, spec), DISTRIBUTIONS[spec.head]: dist}


def onnxruntime_outputs(
    model: bytes, obs: np.ndarray, batch: int | None = None
) -> dict[str, np.ndarray]:
    """Every output of the graph from onnxruntime, by name, `batch` rows per run (None: all)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and polite on a shared machine
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    obs = np.ascontiguousarray(obs, dtype=np.float32)
    step = batch or max(len(obs), 1)
    runs = [session.run(names, {"obs": obs[i : i + step]}) for i in range(0, len(obs), step)]
    return {name: np.concatenate([run[index] for run in runs]) for index, name in enumerate(names)}


def onnx_reference_outputs(model: bytes, obs: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the graph from onnx.reference.ReferenceEvaluator, by name."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    graph = onnx.load_from_string(model)
    names = [output.name for output in graph.graph.output]
    with np.errstate(all="ignore"):  # its sigmoid evaluates exp(x) on both sides of 0
        results = ReferenceEvaluator(graph).run(names, {"obs": np.asarray(obs, dtype=np.float32)})
    return dict(zip(names, results, strict=True))


def decided_rows(truth: dict[str, np.ndarray], spec: PolicySpec) -> np.ndarray:
    """The observations (bool, N) whose discrete action is clear: bernoulli p further than
    ONNX_ACTION_MARGIN from 0.5, categorical the two largest probabilities further apart.

    Nearer the boundary the graph may rightly decide otherwise: it computes the same sums in
    another order (and onnx.reference its sigmoid another way), so a p of 0.5 + 1e-17 in
    NumPy can be 0.5 there (and its action 0). The margin is far above that rounding (~1e-16,
    the graph computes in double) and at the ONNX tolerance: an action is only held to
    equality where the distribution, which is within 1e-6, decides it.
    """
    from export.onnx_graph import DISTRIBUTIONS

    dist = truth[DISTRIBUTIONS[spec.head]]
    if spec.head == HEAD_BERNOULLI:
        return np.abs(dist[:, 0] - 0.5) > ONNX_ACTION_MARGIN
    if spec.head == HEAD_CATEGORICAL:
        top_two = np.sort(dist, axis=1)[:, -2:]
        return top_two[:, 1] - top_two[:, 0] > ONNX_ACTION_MARGIN
    return np.ones(len(dist), dtype=bool)


def output_errors(
    got: dict[str, np.ndarray], truth: dict[str, np.ndarray], spec: PolicySpec, decided: np.ndarray
) -> dict[str, float | int]:
    """Each output's worst error against the reference ("NAME_max_error", absolute and relative
    above magnitude 1, NaN if any value is NaN) or, for a discrete action, the decided rows
    where it differs ("action_mismatches"). A missing output or a wrong shape or dtype is a
    ValueError: the graph is not the one documented."""
    errors: dict[str, float | int] = {}
    for name, expected in truth.items():
        value = got.get(name)
        if value is None or value.shape != expected.shape:
            shape = None if value is None else value.shape
            raise ValueError(
                f"the graph's output {name} has shape {shape}, expected {expected.shape}"
            )
        discrete = name == "action" and spec.head != HEAD_GAUSSIAN
        if discrete:
            if value.dtype != np.int64:
                raise ValueError(f"the graph's output action is {value.dtype}, expected int64")
            errors["action_mismatches"] = int(np.sum(value[decided] != expected[decided]))
        else:
            errors[f"{name}_max_error"] = _scaled_error(value, expected)
    return errors


def _scaled_error(got: np.ndarray, truth: np.ndarray) -> float:
    error = np.abs(np.asarray(got, dtype=np.float64) - truth) / np.maximum(1.0, np.abs(truth))
    return float("nan") if np.any(np.isnan(error)) else float(np.max(error, initial=0.0))


def onnx_parity_fields(
    params: Params, spec: PolicySpec, onnx_model: bytes, obs: np.ndarray
) -> dict:
    """ParityReport's fields for a format-2 graph: the per-output errors of onnxruntime and
    onnx.reference, and in `onnxruntime` and `reference` each one's worst float error."""
    truth = reference_outputs(params, spec, obs)
    decided = decided_rows(truth, spec)
    outputs = {
        "onnxruntime": output_errors(onnxruntime_outputs(onnx_model, obs), truth, spec, decided),
        "onnx.reference": output_errors(
            onnx_reference_outputs(onnx_model, obs), truth, spec, decided
        ),
    }
    worst = {
        evaluator: max(
            (e for key, e in errors.items() if key.endswith("_max_error")),
            key=lambda e: math.inf if math.isnan(e) else e,
        )
        for evaluator, errors in outputs.items()
    }
    return {
        "onnxruntime": worst["onnxruntime"],
        "reference": worst["onnx.reference"],
        "onnx_outputs": outputs,
        "onnx_actions_compared": int(np.sum(decided)),
    }


def gcc_path() -> str | None:
    return shutil.which("gcc")


def c_probabilities(
    header: str, obs: np.ndarray, gcc: str, defines: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Compile a harness around the header with gcc, run it: (probabilities, actions).

    `defines`: extra macros, e.g. ("POLICY_ACCUMULATOR=float",) for the float variant.
    """
    return _c_outputs(header, HEAD_BERNOULLI, 1, obs, gcc, defines)


def c_outputs_v2(
    header: str, spec: PolicySpec, obs: np.ndarray, gcc: str, defines: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A format-2 header's (distribution, greedy action) for each observation, compiled with
    gcc: p (N,) and actions int (N,) for bernoulli, probabilities (N, n) and actions int (N,)
    for categorical, means and actions (N, k) float for gaussian."""
    return _c_outputs(header, spec.head, spec.action_dim, obs, gcc, defines)


def _c_outputs(
    header: str, head: str, width: int, obs: np.ndarray, gcc: str, defines: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    action = ("action", "<f4", (width,)) if head == HEAD_GAUSSIAN else ("action", "<i4")
    out = harness_records(
        header, harness(head), obs, gcc, defines, [("dist", "<f4", (width,)), action]
    )
    dist = out["dist"].astype(np.float64)
    return (dist[:, 0] if head == HEAD_BERNOULLI else dist), out["action"]


def harness(head: str) -> str:
    """HARNESS_C for the head: its distribution and action calls."""
    dist_call = {
        HEAD_BERNOULLI: "dist[0] = policy_prob(obs)",
        HEAD_CATEGORICAL: "policy_probs(obs, dist)",
        HEAD_GAUSSIAN: "policy_mean(obs, dist)",
    }[head]
    if head == HEAD_GAUSSIAN:
        action = ("float action[POLICY_ACTION_DIM]", "policy_action(obs, action)")
    else:
        action = ("int action[1]", "action[0] = policy_action(obs)")
    size = "POLICY_ACTION_DIM" if head == HEAD_GAUSSIAN else "1"
    return (
        HARNESS_C.replace("ACTION_DECLARATION", action[0])
        .replace("DISTRIBUTION_CALL", dist_call)
        .replace("ACTION_CALL", action[1])
        .replace("ACTION_SIZE", size)
    )


def harness_records(
    header: str, harness: str, obs: np.ndarray, gcc: str, defines: tuple[str, ...], record: list
) -> np.ndarray:
    """Compile `harness` around the header, run it on `obs`: one `record` per observation."""
    with tempfile.TemporaryDirectory(prefix="reinforce-edge-parity-") as tmp:
        work = Path(tmp)
        (work / "policy.h").write_text(header)
        (work / "harness.c").write_text(harness)
        np.ascontiguousarray(obs, dtype="<f4").tofile(work / "obs.bin")
        macros = [f"-D{define}" for define in defines]
        compile_cmd = [
            gcc,
            *GCC_FLAGS,
            *macros,
            "-o",
            str(work / "harness"),
            str(work / "harness.c"),
            "-lm",
        ]
        _run(compile_cmd, "gcc failed to compile policy.h")
        _run([str(work / "harness"), str(work / "obs.bin"), str(work / "out.bin")], "harness")
        out = np.fromfile(work / "out.bin", dtype=record)
    if len(out) != len(obs):
        raise RuntimeError(f"the C harness wrote {len(out)} results for {len(obs)} observations")
    return out


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=GCC_TIMEOUT_SECONDS)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        said = f": {' | '.join(detail[:3])}" if detail else " with no output"
        raise RuntimeError(f"{what} (exit {result.returncode}){said}")


def check_parity(
    params: Params,
    *,
    onnx_model: bytes | None = None,
    header: str | None = None,
    obs: np.ndarray | None = None,
    gcc: str | None = "auto",
    spec: PolicySpec | None = None,
) -> ParityReport:
    """Measure each given artifact against the reference; `gcc=None` skips the C check.

    `spec` None is format 1; with a spec (format 2) on `policy_observations` unless `obs` is
    given: the graph output by output (`onnx_parity_fields`), the header as it ships
    (`c_parity_v2`).
    """
    if spec is not None:
        return _check_parity_v2(params, spec, onnx_model, header, obs, gcc)
    obs = parity_observations() if obs is None else obs
    truth = reference_probabilities(params, obs)
    fields: dict = {"observations": len(obs)}
    if onnx_model is not None:
        fields["onnxruntime"] = _max_error(onnxruntime_probabilities(onnx_model, obs), truth)
        fields["reference"] = _max_error(onnx_reference_probabilities(onnx_model, obs), truth)
    if header is not None:
        compiler = gcc_path() if gcc == "auto" else gcc
        if compiler is None:
            fields["c_skipped"] = "gcc not found"
            log.warning("warning: gcc not found, the C header's parity check is skipped")
        else:
            decided = np.abs(truth - 0.5) > ACTION_MARGIN
            probs, actions = c_probabilities(header, obs, compiler)
            fields["c"] = _max_error(probs, truth)
            fields["c_action_mismatches"] = int(np.sum(actions[decided] != (truth[decided] > 0.5)))
            probs, actions = c_probabilities(header, obs, compiler, (FLOAT_ACCUMULATOR,))
            error = np.abs(probs - truth)
            fields["c_float"] = float(np.max(np.where(np.isnan(error), 1.0, error)))  # NaN: 1
            fields["c_float_action_mismatches"] = int(
                np.sum(actions[decided] != (truth[decided] > 0.5))
            )
    return ParityReport(**fields)


def _max_error(probs: np.ndarray, truth: np.ndarray) -> float:
    error = np.abs(np.asarray(probs, dtype=np.float64) - truth)
    return float("nan") if np.any(np.isnan(error)) else float(np.max(error))


def _check_parity_v2(
    params: Params,
    spec: PolicySpec,
    onnx_model: bytes | None,
    header: str | None,
    obs: np.ndarray | None,
    gcc: str | None,
) -> ParityReport:
    obs = policy_observations(params, spec) if obs is None else obs
    fields: dict[str, Any] = {"observations": len(obs)}
    if onnx_model is not None:
        fields.update(onnx_parity_fields(params, spec, onnx_model, obs))
    if header is not None:
        compiler = gcc_path() if gcc == "auto" else gcc
        if compiler is None:
            fields["c_skipped"] = "gcc not found"
            log.warning("warning: gcc not found, the C header's parity check is skipped")
            # the manifest still says what the header ships with
            fields.update(c_accumulator="float", c_tolerance=c_tolerance_v2(spec))
        else:
            fields.update(c_parity_v2(params, spec, header, obs, compiler))
    return ParityReport(**fields)


def c_tolerance_v2(spec: PolicySpec) -> float:
    """The relative error a format-2 header's float sums may make: the dot-product bound
    gamma_n ~ n u for each layer (n = obs_dim + 1 and hidden + 1 terms), with room for the
    normaliser, tanhf, expf and the softmax division (8 more), doubled for safety."""
    return 2.0 * (spec.hidden + spec.obs_dim + 8) * FLOAT32_UNIT_ROUNDOFF


def term_magnitudes(params: Params, obs: np.ndarray) -> np.ndarray:
    """Per observation, the largest over the outputs of |W2| (|W1| |x| + |b1|) + |b2|: the sum
    of the magnitudes of every term, which scales the rounding error of the sums (N,)."""
    params64 = {name: np.abs(np.asarray(array, dtype=np.float64)) for name, array in params.items()}
    x = np.abs(normalise(_float64(params), np.asarray(obs, dtype=np.float64)))
    hidden = x @ params64[KEY_W1].T + params64.get(KEY_B1, 0.0)
    w2 = params64[KEY_W2]
    output = hidden @ (w2[:, None] if w2.ndim == 1 else w2.T) + params64.get(KEY_B2, 0.0)
    return np.max(output, axis=-1)


def c_parity_v2(
    params: Params, spec: PolicySpec, header: str, obs: np.ndarray, gcc: str
) -> dict[str, Any]:
    """ParityReport fields for a format-2 header as it ships (float sums): the largest error
    of its distribution over 1 + term_magnitudes, and the actions that differ from
    `greedy_action` where the reference's decision is clear of the tolerance."""
    tolerance = c_tolerance_v2(spec)
    params64, obs64 = _float64(params), np.asarray(obs, dtype=np.float64)
    scale = 1.0 + term_magnitudes(params, obs64)
    truth = distribution(params64, obs64, spec)
    expected = greedy_action(params64, obs64, spec)
    dist, actions = c_outputs_v2(header, spec, obs, gcc)
    error = np.abs(dist - truth)
    if spec.head == HEAD_GAUSSIAN:
        wrong = np.abs(actions - expected) > tolerance * scale[:, None]
        mismatches = np.any(wrong | np.isnan(actions), axis=-1)
    else:
        clear = decision_margin(params64, obs64, spec) > tolerance * scale * 2.0
        mismatches = clear & (actions != expected)
    error = error if error.ndim == 1 else np.max(error, axis=-1)
    return {
        "c": _max_error(error / scale, np.zeros(len(error))),
        "c_action_mismatches": int(np.sum(mismatches)),
        "c_tolerance": tolerance,
        "c_accumulator": "float",
    }


def decision_margin(params: Params, obs: np.ndarray, spec: PolicySpec) -> np.ndarray:
    """How far the reference's discrete decision is from flipping, in logit units (N,):
    |logit| for bernoulli, the lead of the largest logit over the next for categorical."""
    output = forward_pass(params, obs, spec)[1]
    if spec.head == HEAD_BERNOULLI:
        return np.abs(output)
    top_two = np.sort(output, axis=-1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def _float64(params: Params) -> Params:
    return {name: np.asarray(array, dtype=np.float64) for name, array in params.items()}
