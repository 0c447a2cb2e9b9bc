"""Per-decision latency of the policy's backends side by side, and policy.h's size on Cortex-M.

    .venv/bin/python bench/export.py [--hidden 32] [--rounds 7] [--only latency|cortex-m]
    .venv/bin/python bench/export.py --only latency --head gaussian [--obs-dim 8] [--action-dim 2]

Latency: the NumPy forward pass (`runtime.policy.action_probability`, what the device runs
by default), onnxruntime `InferenceSession.run` on the exported policy.onnx, and the exported
policy.h compiled with gcc -O2 in a small timing harness. Each is timed for one observation
per call and for a batch of 1024; the rounds interleave the candidates so that load from other
work on the machine hits them alike. Prints the median microseconds per decision and ratios.

With --head, a format-2 policy of that head (with biases and a normaliser): NumPy is then
`runtime.policy.greedy_action` and `distribution` (the graph's two outputs), and there is no
C candidate (the latency harness is format 1's).

Cortex-M: policy.h for a few heads and sizes, cross-compiled with arm-none-eabi-gcc -Os for a
Cortex-M4F (hard float, single-precision FPU) and a Cortex-M0+ (no FPU) as a whole program
(newlib-nano, a tiny main calling policy_action on a volatile observation, unused sections
dropped) and as the object alone; prints flash and RAM from arm-none-eabi-size. Skipped with
a note when arm-none-eabi-gcc is not installed.
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


CORTEX_M_TARGETS = {
    "Cortex-M4F": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "Cortex-M0+": ("-mcpu=cortex-m0plus", "-mthumb"),
}
ARM_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Os")
# a whole program as embedded projects link one: newlib-nano, no OS, unused sections dropped
ARM_LINK_FLAGS = (
    "--specs=nano.specs",
    "--specs=nosys.specs",
    "-ffunction-sections",
    "-fdata-sections",
    "-Wl,--gc-sections",
)
FLOAT_SUMS = "POLICY_ACCUMULATOR=float"
SIZE_CASES = [  # (label, spec (None: format 1, 4 -> 32 -> 1), macros)
    ("4->32->1 bernoulli, format 1 (double sums)", None, ()),
    ("4->32->1 bernoulli, format 1, float sums", None, (FLOAT_SUMS,)),
    ("4->32->2 categorical", PolicySpec(hidden=32, head="categorical", action_dim=2), ()),
    (
        "4->32->2 categorical, tanh",
        PolicySpec(hidden=32, head="categorical", action_dim=2, activation="tanh"),
        (),
    ),
    (
        "3->32->1 gaussian",
        PolicySpec(hidden=32, obs_dim=3, head="gaussian", action_low=(-2.0,), action_high=(2.0,)),
        (),
    ),
    (
        "8->64->4 categorical",
        PolicySpec(hidden=64, obs_dim=8, head="categorical", action_dim=4),
        (),
    ),
]

SIZE_MAIN_C = """\
#include "policy.h"

volatile float policy_observation[POLICY_OBS_DIM];
#ifdef POLICY_HEAD_GAUSSIAN
volatile float policy_result[POLICY_ACTION_DIM];
#else
volatile int policy_result;
#endif

int main(void)
{
    float obs[POLICY_OBS_DIM];
    int j;
    for (j = 0; j < POLICY_OBS_DIM; ++j) {
        obs[j] = policy_observation[j];
    }
#ifdef POLICY_HEAD_GAUSSIAN
    {
        float action[POLICY_ACTION_DIM];
        policy_action(obs, action);
        for (j = 0; j < POLICY_ACTION_DIM; ++j) {
            policy_result[j] = action[j];
        }
    }
#else
    policy_result = policy_action(obs);
#endif
    return 0;
}
"""


def size_policy(spec: PolicySpec | None, seed: int = 0) -> Policy:
    """A policy to measure: format 1 (spec None), or format 2 with biases and a normaliser,
    every value random (zeros would let the compiler fold them away)."""
    rng = np.random.default_rng(seed)
    if spec is None:
        return parse_policy(policy_bytes(init_params(32, rng), make_meta(hidden=32, version=1)))
    params = init_params(spec.hidden, rng, spec=spec, biases=True, normaliser=True)
    for name in ("b1", "b2", "obs_mean"):
        params[name] = rng.standard_normal(params[name].shape)
    params["obs_std"] = np.exp(rng.standard_normal(spec.obs_dim))
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))


def arm_size(size_tool: str, path: Path) -> tuple[int, int, int]:
    """(text, data, bss) in bytes, as arm-none-eabi-size prints them (text holds .rodata)."""
    result = subprocess.run([size_tool, str(path)], capture_output=True, text=True, check=True)
    text, data, bss = (int(value) for value in result.stdout.splitlines()[-1].split()[:3])
    return text, data, bss


def cortex_m_sizes(work: Path, cases: list = SIZE_CASES, gcc: str | None = None) -> list[dict]:
    """One row per case and target: the whole program's text, data and bss, and the text of
    the object alone (main and the inlined policy with its weights). [] without the compiler."""
    gcc = gcc or shutil.which("arm-none-eabi-gcc")
    size_tool = shutil.which("arm-none-eabi-size")
    if gcc is None or size_tool is None:
        return []
    rows = []
    for index, (label, spec, macros) in enumerate(cases):
        case = work / f"case{index}"
        case.mkdir()
        (case / "policy.h").write_text(render_header(size_policy(spec), tool_version()))
        (case / "main.c").write_text(SIZE_MAIN_C)
        defines = [f"-D{macro}" for macro in macros]
        for target, cpu in CORTEX_M_TARGETS.items():
            elf, obj = case / f"{target}.elf", case / f"{target}.o"
            common = [gcc, *ARM_FLAGS, *cpu, *defines]
            subprocess.run(
                [*common, *ARM_LINK_FLAGS, "main.c", "-o", str(elf), "-lm"], cwd=case, check=True
            )
            subprocess.run([*common, "-c", "main.c", "-o", str(obj)], cwd=case, check=True)
            text, data, bss = arm_size(size_tool, elf)
            rows.append(
                {
                    "policy": label,
                    "target": target,
                    "text": text,
                    "data": data,
                    "bss": bss,
                    "object_text": arm_size(size_tool, obj)[0],
                }
            )
    return rows


def arm_gcc_version(gcc: str) -> str:
    result = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[0]


def bench_cortex_m() -> None:
    gcc = shutil.which("arm-none-eabi-gcc")
    print("== policy.h on Cortex-M (arm-none-eabi-gcc -Os, newlib-nano)")
    if gcc is None or shutil.which("arm-none-eabi-size") is None:
        print(
            "skipped: arm-none-eabi-gcc (and arm-none-eabi-size) not found; on Debian:"
            " apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = cortex_m_sizes(Path(tmp), gcc=gcc)
    print(f"{arm_gcc_version(gcc)}; whole program and object alone, bytes")
    print(
        f"{'policy':<44} {'target':<11} {'text':>6} {'data':>5} {'bss':>5}"
        f" {'flash':>6} {'RAM':>5} {'object text':>12}"
    )
    for row in rows:
        flash, ram = row["text"] + row["data"], row["data"] + row["bss"]
        print(
            f"{row['policy']:<44} {row['target']:<11} {row['text']:>6} {row['data']:>5}"
            f" {row['bss']:>5} {flash:>6} {ram:>5} {row['object_text']:>12}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32, help="hidden units (trainer default 32)")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per candidate")
    parser.add_argument("--calls", type=int, default=2000, help="single-observation calls a round")
    parser.add_argument("--head", choices=HEADS, help="a format-2 policy (default: format 1)")
    parser.add_argument("--obs-dim", type=int, default=8, help="format 2's observation size")
    parser.add_argument("--action-dim", type=int, help="format 2's n or k (default 3 or 2)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="tanh", help="format 2's")
    parser.add_argument(
        "--only", choices=("latency", "cortex-m"), help="run one section (default: both)"
    )
    args = parser.parse_args(argv)
    if args.only in (None, "latency"):
        bench_latency(args)
    if args.only in (None, "cortex-m"):
        bench_cortex_m()
    return 0


def bench_latency(args: argparse.Namespace) -> None:
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
    sys.exit(main())
