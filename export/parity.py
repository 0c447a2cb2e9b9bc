"""Parity: every exported artifact must compute the same probabilities as `runtime.policy`.

The reference is the NumPy forward pass in float64 on the float32 weights and observations.
The artifacts compute in float32, so they may differ by rounding only:
ONNX (onnxruntime and onnx.reference) by at most 1e-6, the C header by at most 1e-5, and the
C action must agree wherever the probability is not within 1e-5 of 0.5.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.constants import OBS_DIM
from runtime.policy import Params, action_probability

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-6
C_TOLERANCE = 1e-5
ACTION_MARGIN = 1e-5  # actions are compared only where |p - 0.5| exceeds this
PARITY_SEED = 20240917  # fixed: the same observations at every export
RANDOM_OBSERVATIONS = 10_000
# CartPole-v1 state ranges: the termination bounds for position (m) and angle (rad), and the
# range velocities actually reach (m/s, rad/s); observations go somewhat beyond each.
STATE_LIMITS = np.array([4.8, 4.0, 0.42, 4.0])
GCC_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
GCC_TIMEOUT_SECONDS = 120
FLOAT_ACCUMULATOR = "POLICY_ACCUMULATOR=float"  # the header's variant for cores without double

HARNESS_C = """\
#include <stdio.h>
#include "policy.h"

/* obs.bin: float32 rows of 4 -> prob.bin: float32 probability, int32 action per row */
int main(int argc, char **argv)
{
    FILE *in, *out;
    float obs[POLICY_OBS_DIM];
    if (argc != 3) {
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        return 2;
    }
    while (fread(obs, sizeof(float), POLICY_OBS_DIM, in) == POLICY_OBS_DIM) {
        float prob = policy_prob(obs);
        int action = policy_action(obs);
        if (fwrite(&prob, sizeof prob, 1, out) != 1 || fwrite(&action, sizeof action, 1, out) != 1) {
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

    def failures(self) -> list[str]:
        """One phrase per artifact over its tolerance; empty when all agree."""
        problems = []
        for name, error, limit in (
            ("onnxruntime", self.onnxruntime, ONNX_TOLERANCE),
            ("onnx.reference", self.reference, ONNX_TOLERANCE),
            ("C header", self.c, C_TOLERANCE),
        ):
            if error is not None and not error <= limit:  # `not <=` also catches NaN
                problems.append(f"{name} max error {error:.3g} > {limit:g}")
        if self.c_action_mismatches:
            problems.append(f"C header picks a different action on {self.c_action_mismatches}")
        return problems

    def as_dict(self) -> dict:
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


def parity_observations(count: int = RANDOM_OBSERVATIONS, seed: int = PARITY_SEED) -> np.ndarray:
    """Fixed float32 observations (N, 4): CartPole ranges, wider ranges and edge cases."""
    rng = np.random.default_rng(seed)
    in_range = rng.uniform(-1.0, 1.0, (count * 8 // 10, OBS_DIM)) * STATE_LIMITS
    wide = rng.standard_normal((count - len(in_range), OBS_DIM)) * STATE_LIMITS * 10.0
    return np.concatenate([in_range, wide, edge_observations()]).astype(np.float32)


def edge_observations() -> np.ndarray:
    """Zeros, tiny and huge magnitudes, single axes and sign patterns."""
    rows = [np.zeros(OBS_DIM), np.full(OBS_DIM, -0.0)]
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * OBS_DIM)).reshape(OBS_DIM, -1).T  # 16 rows
    for magnitude in (1e-38, 1e-6, 1.0, 1e3, 1e6, 1e12, 1e20, 1e30):
        rows += list(signs * magnitude)
        rows += list(np.eye(OBS_DIM) * magnitude) + list(np.eye(OBS_DIM) * -magnitude)
    return np.array(rows)


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


def gcc_path() -> str | None:
    return shutil.which("gcc")


def c_probabilities(
    header: str, obs: np.ndarray, gcc: str, defines: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Compile a harness around the header with gcc, run it: (probabilities, actions).

    `defines`: extra macros, e.g. ("POLICY_ACCUMULATOR=float",) for the float variant.
    """
    with tempfile.TemporaryDirectory(prefix="reinforce-edge-parity-") as tmp:
        work = Path(tmp)
        (work / "policy.h").write_text(header)
        (work / "harness.c").write_text(HARNESS_C)
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
        out = np.fromfile(work / "out.bin", dtype=[("prob", "<f4"), ("action", "<i4")])
    if len(out) != len(obs):
        raise RuntimeError(f"the C harness wrote {len(out)} results for {len(obs)} observations")
    return out["prob"].astype(np.float64), out["action"]


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
) -> ParityReport:
    """Measure each given artifact against the reference; `gcc=None` skips the C check."""
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
