"""Per-decision latency of the policy's backends, side by side in one run.

    .venv/bin/python bench/export.py [--hidden 32] [--rounds 7]
    .venv/bin/python bench/export.py --head gaussian [--obs-dim 8] [--action-dim 2]

Candidates: the NumPy forward pass (`runtime.policy.action_probability`, what the device runs
by default), onnxruntime `InferenceSession.run` on the exported policy.onnx, and the exported
policy.h compiled with gcc -O2 in a small timing harness. Each is timed for one observation
per call and for a batch of 1024; the rounds interleave the candidates so that load from other
work on the machine hits them alike. Prints the median microseconds per decision and ratios.

With --head, a format-2 policy of that head (with biases and a normaliser): NumPy is then
`runtime.policy.greedy_action` and `distribution` (the graph's two outputs), and there is no
C candidate (the header is format 1's only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Run as `python bench/export.py`, this file's directory comes first on sys.path and its
# name would shadow the `export` package: drop that entry before importing the project.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for bench.machine

import numpy as np  # noqa: E402

from bench.machine import describe as machine  # noqa: E402
from export.build import tool_version  # noqa: E402
from export.c_header import render_header  # noqa: E402
from export.onnx_graph import build_onnx  # noqa: E402
from export.parity import GCC_FLAGS, parity_observations, policy_observations  # noqa: E402
from runtime.constants import ACTIVATIONS, HEAD_GAUSSIAN, HEADS  # noqa: E402
from runtime.policy import (  # noqa: E402
    Policy,
    PolicySpec,
    action_probability,
    distribution,
    greedy_action,
    init_params,
    make_meta,
    parse_policy,
    policy_bytes,
)

BATCH = 1024

HARNESS_C = """\
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policy.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* argv: obs.bin (1024 x 4 float32), calls per measurement -> "single_ns batch_ns" per call */
int main(int argc, char **argv)
{
    static float obs[1024][4];
    volatile float sink = 0.0f;
    long calls, i;
    double start, single, batch;
    FILE *in;
    if (argc != 3 || (in = fopen(argv[1], "rb")) == NULL) {
        return 2;
    }
    if (fread(obs, sizeof obs, 1, in) != 1) {
        return 2;
    }
    fclose(in);
    calls = atol(argv[2]);
    start = now_ns();
    for (i = 0; i < calls; ++i) {
        sink += policy_prob(obs[0]);
    }
    single = (now_ns() - start) / (double)calls;
    start = now_ns();
    for (i = 0; i < calls; ++i) {
        sink += policy_prob(obs[i & 1023]);
    }
    batch = (now_ns() - start) / (double)calls;
    printf("%.3f %.3f\\n", single, batch);
    return sink > 1e30f;
}
"""


def per_call_seconds(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def format_2_policy(args: argparse.Namespace) -> Policy:
    """A random format-2 policy with biases and a normaliser, as --head and the sizes say."""
    rng = np.random.default_rng(0)
    action_dim = args.action_dim or {"bernoulli": 1, "categorical": 3}.get(args.head, 2)
    bounds = {}
    if args.head == HEAD_GAUSSIAN:
        bounds = {"action_low": [-1.0] * action_dim, "action_high": [1.0] * action_dim}
    spec = PolicySpec(args.hidden, args.obs_dim, args.activation, args.head, action_dim, **bounds)
    params = init_params(args.hidden, rng, spec=spec, biases=True, normaliser=True)
    params["b1"] = rng.normal(0.0, 0.5, args.hidden)
    params["obs_std"] = rng.uniform(0.5, 2.0, args.obs_dim)
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))


def numpy_decision(policy: Policy) -> Callable[[np.ndarray], object]:
    """What NumPy computes for one decision: format 1's p, format 2's action and distribution
    (the graph's outputs)."""
    if policy.format_version == 1:
        return partial(action_probability, policy.params)
    spec = policy.spec
    return lambda obs: (
        greedy_action(policy.params, obs, spec),
        distribution(policy.params, obs, spec),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32, help="hidden units (trainer default 32)")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per candidate")
    parser.add_argument("--calls", type=int, default=2000, help="single-observation calls a round")
    parser.add_argument("--head", choices=HEADS, help="a format-2 policy (default: format 1)")
    parser.add_argument("--obs-dim", type=int, default=8, help="format 2's observation size")
    parser.add_argument("--action-dim", type=int, help="format 2's n or k (default 3 or 2)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="tanh", help="format 2's")
    args = parser.parse_args()

    import onnxruntime

    if args.head is None:
        params = init_params(args.hidden, np.random.default_rng(0))
        policy = parse_policy(policy_bytes(params, make_meta(hidden=args.hidden, version=1)))
        obs = parity_observations()[:BATCH]
    else:
        policy = format_2_policy(args)
        obs = policy_observations(policy.params, policy.spec, count=BATCH)[:BATCH]
    params = policy.params  # float32, as the device loads them
    decide = numpy_decision(policy)
    single = obs[0]

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a board's control loop runs on one core
    sessions = {
        name: onnxruntime.InferenceSession(
            build_onnx(policy, tool_version(), compute), options, providers=["CPUExecutionProvider"]
        )
        for name, compute in (
            ("onnxruntime run", "double"),  # policy.onnx as exported
            ("onnxruntime, float32 graph", "float"),  # for comparison only
        )
    }

    # (name, batch label) -> (one call, calls per round, decisions per call)
    batch_calls = max(args.calls // 100, 5)
    candidates: dict[tuple[str, str], tuple[Callable[[], object], int, int]] = {
        ("numpy forward", "1"): (partial(decide, single), args.calls, 1),
        ("numpy forward", str(BATCH)): (partial(decide, obs), batch_calls, BATCH),
    }
    for name, session in sessions.items():
        run_single = partial(session.run, None, {"obs": obs[:1]})
        run_batch = partial(session.run, None, {"obs": obs})
        candidates[(name, "1")] = (run_single, args.calls, 1)
        candidates[(name, str(BATCH))] = (run_batch, batch_calls, BATCH)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in candidates}
    gcc = shutil.which("gcc")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        harness = None
        if gcc and policy.format_version == 1:  # no header for format 2 yet
            (work / "policy.h").write_text(render_header(policy, tool_version()))
            (work / "bench.c").write_text(HARNESS_C)
            obs.astype("<f4").tofile(work / "obs.bin")
            harness = work / "bench"
            subprocess.run(
                [gcc, *GCC_FLAGS, "-o", str(harness), str(work / "bench.c"), "-lm"], check=True
            )
            samples[("C policy_prob (gcc -O2)", "1")] = []
            samples[("C policy_prob (gcc -O2)", f"{BATCH} (loop)")] = []
        for _ in range(args.rounds):
            for key, (function, calls, decisions) in candidates.items():
                function()  # warm
                samples[key].append(per_call_seconds(function, calls) / decisions)
            if harness is not None:
                result = subprocess.run(
                    [str(harness), str(work / "obs.bin"), str(args.calls * 50)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                single_ns, batch_ns = (float(x) for x in result.stdout.split())
                samples[("C policy_prob (gcc -O2)", "1")].append(single_ns * 1e-9)
                samples[("C policy_prob (gcc -O2)", f"{BATCH} (loop)")].append(batch_ns * 1e-9)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    numpy_single = medians[("numpy forward", "1")]
    spec = policy.spec
    what = f"hidden {args.hidden}"
    if policy.format_version != 1:
        what = (
            f"format 2 {spec.head} {spec.activation}, obs_dim {spec.obs_dim}, {what},"
            f" action_dim {spec.action_dim}, biases and normaliser"
        )
    print(f"{what}, {args.rounds} rounds, median per decision; {machine()}")
    print(
        f"{'backend':<28} {'batch':>11} {'us/decision':>12} {'vs numpy single':>16}"
        f" {'vs numpy same batch':>20}"
    )
    for (name, batch), seconds in medians.items():
        numpy_same = medians[("numpy forward", batch.split()[0])]
        print(
            f"{name:<28} {batch:>11} {seconds * 1e6:>12.3f} {seconds / numpy_single:>15.3g}x"
            f" {seconds / numpy_same:>19.3g}x"
        )


if __name__ == "__main__":
    main()
