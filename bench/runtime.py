"""Device runtime benchmark: decision latency, cold start, peak RSS, loop jitter, in one run.

    .venv/bin/python bench/runtime.py            # the full run (about 40 s)
    .venv/bin/python bench/runtime.py --quick    # a smoke run (a few seconds)
    .venv/bin/python bench/runtime.py --only latency   # one section (cold, latency, jitter)

On a VM whose speed changes within a minute (this one: docs/performance.md), `--only` runs a
section within one quiet spell; the candidates inside a section still share each round.

1. Cold start (first, while this process runs no thread of its own): from spawning the runtime
   with `--plant stdio` to reading its first action (median and quartiles of N runs), with its
   peak RSS (VmHWM, the kernel's ru_maxrss of that process), for the numpy and the onnxruntime
   backends. Measured as installed on a device (a copy of
   the package with its bytecode compiled, as pip leaves it: `python -S -m runtime` with it on
   PYTHONPATH, and the `reinforce-runtime` console script systemd runs, in a virtualenv with
   `site` on), and as installed here (an editable install adds a path hook to every start).
2. Decision latency for one observation at H = 64, 128, 200: the naive NumPy expression
   (`runtime.policy.action_probability`), the runtime's fused NumPy backend and onnxruntime's
   `run()` on the ONNX graph the exporter ships, interleaved round by round so that they share
   the machine's noise, on a list of 1-D float32 observations (what a plant hands the loop).
   Median: per-call time of batches of calls, each batch after a few untimed calls of the
   same candidate (so that no candidate pays for the one before it); p99: single calls timed
   with `perf_counter_ns`, minus the median cost of reading the clock twice. An empty callable
   in the same harness shows the harness's own share of every median, and the NumPy calls of
   the fused path timed alone (timeit) show the floor of any NumPy decision function.
3. Loop jitter: the control loop at 100 Hz on the sim for S seconds: how late each step wakes
   after its deadline (p50, p99, max) and the overruns.
4. Heads (`--only heads`): decision latency of the fused NumPy paths at obs 3-16 and hidden
   16-128, for format 1's bernoulli and format 2's bernoulli, categorical (3 actions) and
   gaussian (2 actions) relu heads with biases and one normaliser, by the method of section 2,
   each with its ratio to format 1's bernoulli at the same sizes, and PASS or FAIL against the
   target (1.3x). Observations as the normaliser describes them (mean + std * N(0, 1)), then
   each with one value beyond the normaliser's clip (the slow case, shown, no target).

NumPy runs with one BLAS thread here, as in the runtime (it sets OPENBLAS_NUM_THREADS=1): idle
OpenBLAS threads of this process can spin after a burst of work and compete, on a 2-core
machine, with every runtime it starts (one earlier run measured cold starts ~35 ms slower).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import timeit
from collections import deque
from pathlib import Path

ORIGINAL_ENV = dict(os.environ)  # what the runtimes started here inherit
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
if "numpy" not in sys.modules:  # one BLAS thread, as the runtime runs (module docstring)
    for name in BLAS_THREADS:
        os.environ.setdefault(name, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe as machine  # noqa: E402
from runtime.backends import fused_action, fused_decision, make_active, naive_decision  # noqa: E402
from runtime.loop import ControlLoop  # noqa: E402
from runtime.plants import CartPoleSim  # noqa: E402
from runtime.policy import (  # noqa: E402
    PolicySpec,
    init_params,
    load_policy,
    make_meta,
    parse_policy,
    policy_bytes,
    save_policy,
)
from runtime.slot import PolicySlot  # noqa: E402

SECTIONS = ("cold", "latency", "jitter", "heads")  # in the order they run
HEAD_SIZES = tuple((obs, hidden) for obs in (3, 8, 16) for hidden in (16, 64, 128))
HEAD_CANDIDATES = ("format 1 bernoulli", "bernoulli", "categorical", "gaussian")
HEAD_OBSERVATIONS = ("within the clip", "beyond the clip")  # the target is on the first
TARGET_HEAD_RATIO = 1.3
HIDDEN_SIZES = (64, 128, 200)
# untimed calls of a candidate before each of its timed batches: without them a candidate pays
# for what the previous one evicted (code, branch history), and of two identical fused
# candidates the second measured 3% faster than the first; with them, within 1%
WARM_UP_CALLS = 20
TARGET_FUSED_US = 1.5
TARGET_RATIO_ORT = 0.4
TARGET_COLD_MS = 150.0
TARGET_RSS_MB = 35.0
TARGET_LATE_P99_MS = 1.0


# --- the ONNX model ---------------------------------------------------------------------


def write_onnx(policy, path: Path) -> str:
    """The exporter's own graph, as a device receives it."""
    from export.onnx_graph import build_onnx

    path.write_bytes(build_onnx(policy, "bench"))
    return "export.onnx_graph (float64 inside)"


def make_policy(directory: Path, hidden: int, with_onnx: bool) -> tuple[Path, str]:
    path = directory / f"h{hidden}" / "policy.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    params = init_params(hidden, np.random.default_rng(hidden))
    save_policy(path, params, make_meta(hidden=hidden, version=1))
    graph = write_onnx(load_policy(path), path.parent / "policy.onnx") if with_onnx else "-"
    return path, graph


# --- 1. cold start and peak RSS -------------------------------------------------------------


DEVICE_PACKAGES: list[Path] = []  # where `install_like_a_device` put the compiled package
CONSOLE_SCRIPTS: list[Path] = []  # where `install_console_script` put `reinforce-runtime`
INSTALLS = {
    "device": "device: python -S -m runtime",
    "console script": "device: reinforce-runtime, venv",
    "editable": "editable (here): python -m",
}
# pip's console-script wrapper, as `pip install` writes it (no runpy, `site` on)
CONSOLE_SCRIPT = """#!{python}
import sys
from runtime.cli import main
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(main())
"""


def install_like_a_device(directory: Path) -> Path:
    """A copy of `runtime/` with its bytecode compiled, as `pip install` leaves it on a board.

    Run from this checkout, every start would compile the runtime's sources again (this
    environment sets PYTHONDONTWRITEBYTECODE): about 20-40 ms that a device never pays.
    """
    import compileall

    target = directory / "site"
    shutil.copytree(ROOT / "runtime", target / "runtime", ignore=shutil.ignore_patterns("__py*"))
    compileall.compile_dir(target / "runtime", quiet=1)
    DEVICE_PACKAGES[:] = [target]
    return target


def install_console_script(directory: Path) -> Path:
    """`reinforce-runtime` as deploy/install.sh leaves it and systemd starts it: a virtualenv
    (`site` on), the compiled package in its site-packages, NumPy found through a .pth line
    (on a board: the system's python3-numpy), and pip's wrapper script. Needs
    `install_like_a_device` first."""
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(
        subprocess.run([python, "-c", query], capture_output=True, text=True).stdout.strip()
    )
    shutil.copytree(DEVICE_PACKAGES[0] / "runtime", site / "runtime")
    (site / "numpy-here.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = venv / "bin" / "reinforce-runtime"
    script.write_text(CONSOLE_SCRIPT.format(python=python))
    script.chmod(0o755)
    CONSOLE_SCRIPTS[:] = [script]
    return script


def clean_environment() -> dict[str, str]:
    """This process's environment as it started, without the runtime's settings."""
    env = {k: v for k, v in ORIGINAL_ENV.items() if not k.startswith("REINFORCE_EDGE_")}
    for name in ("NOTIFY_SOCKET", "PYTHONPATH"):
        env.pop(name, None)
    return env


def device_environment() -> dict[str, str]:
    """The package (compiled, when installed so) and its dependencies on PYTHONPATH, without
    the editable-install hook."""
    package = DEVICE_PACKAGES[0] if DEVICE_PACKAGES else ROOT
    paths = [str(package), sysconfig.get_paths()["purelib"]]
    return {**clean_environment(), "PYTHONPATH": os.pathsep.join(paths)}


def start_command(install: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the runtime as `install` (a key of INSTALLS)."""
    if install == "device":
        return [sys.executable, "-S", "-m", "runtime"], device_environment()
    if install == "console script":
        return [str(CONSOLE_SCRIPTS[0])], clean_environment()
    return [sys.executable, "-m", "runtime"], {**clean_environment(), "PYTHONPATH": str(ROOT)}


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process. (Its getrusage ru_maxrss would not do: Linux carries the
    high-water mark across fork and exec, so a child of this big process reports ours.)"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def cold_start(policy: Path, backend: str, install: str = "device") -> tuple[float, float]:
    """(ms from spawn to the first action line, peak RSS MB of the runtime at that point)."""
    command, env = start_command(install)
    command += ["--policy", str(policy), "--plant", "stdio", "--backend", backend]
    command += ["--hz", "0", "--log-level", "error"]
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        child.stdin.write(b"0.01 0.02 0.03 0.04\n")  # waits in the pipe for the runtime's reset
        child.stdin.flush()
        while True:
            line = child.stdout.readline()
            if line in (b"0\n", b"1\n"):
                elapsed_ms = (time.perf_counter() - start) * 1000
                break
            if not line:
                raise RuntimeError(f"the runtime ended before its first action: {command}")
        rss = peak_rss_mb(child.pid)  # the runtime now waits for its next observation
        child.stdin.close()  # end of input: the runtime stops
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return elapsed_ms, rss


def baseline(code: str) -> tuple[float, float]:
    """(ms from spawn to exit, nan) of `python -S -c code`: the floor under any cold start."""
    env = {**device_environment(), "OPENBLAS_NUM_THREADS": "1"}  # as the runtime sets it
    start = time.perf_counter()
    subprocess.run([sys.executable, "-S", "-c", code], env=env, check=True)
    return (time.perf_counter() - start) * 1000, math.nan


def bench_cold_start(directory: Path, runs: int, with_ort: bool) -> list[dict]:
    """Every variant once per round, `runs` rounds, so that they share the machine's noise."""
    path, _ = make_policy(directory, 128, with_ort)
    install_like_a_device(directory)
    install_console_script(directory)
    variants = [
        ("python, nothing", "baseline (to exit)", lambda: baseline("pass")),
        ("python + import numpy", "baseline (to exit)", lambda: baseline("import numpy")),
    ]
    for install in INSTALLS:
        backends = ["numpy", "onnxruntime"] if with_ort and install != "console script" else []
        for backend in backends or ["numpy"]:
            variants.append(
                (backend, INSTALLS[install], lambda b=backend, i=install: cold_start(path, b, i))
            )
    for _, _, measure in variants:  # warm the page cache
        measure()
    samples: list[list[tuple[float, float]]] = [[] for _ in variants]
    for round_index in range(runs):
        order = list(enumerate(variants))
        for index, (_, _, measure) in order if round_index % 2 else order[::-1]:
            samples[index].append(measure())
    return [
        {
            "backend": backend,
            "install": install,
            "cold_start_ms": statistics.median(s[0] for s in samples[index]),
            "cold_start_q1_ms": quartiles(s[0] for s in samples[index])[0],
            "cold_start_q3_ms": quartiles(s[0] for s in samples[index])[1],
            "peak_rss_mb": max(s[1] for s in samples[index]),
            "runs": runs,
        }
        for index, (backend, install, _) in enumerate(variants)
    ]


def quartiles(values) -> tuple[float, float]:
    values = list(values)
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


# --- 2. decision latency ------------------------------------------------------------------


def clock_overhead_ns(samples: int = 20_000) -> float:
    clock = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        start = clock()
        costs.append(clock() - start)
    return float(np.median(costs))


def empty_callable(obs: np.ndarray) -> float:
    """What the harness costs per call by itself (a Python call and the list indexing)."""
    return 0.5


def latency(candidates: dict, observations: list, rounds: int, batch: int) -> dict:
    """{name: (median us, p99 us)}; candidates run round-robin on the same observations,
    each batch after `WARM_UP_CALLS` untimed calls of the same candidate."""
    clock = time.perf_counter_ns
    overhead = clock_overhead_ns()
    batch_us = {name: [] for name in candidates}
    single_ns = {name: [] for name in candidates}
    count, wrapped = len(observations), observations + observations
    for round_index in range(rounds):
        first = round_index * batch % count
        batch_observations = wrapped[first : first + batch]
        for name, decide in candidates.items():
            for obs in batch_observations[:WARM_UP_CALLS]:
                decide(obs)
            start = clock()
            for obs in batch_observations:  # the harness's own cost: the empty callable's row
                decide(obs)
            batch_us[name].append((clock() - start) / batch / 1000)
            for i in range(batch):
                obs = observations[(round_index + i * 7) % count]
                start = clock()
                decide(obs)
                single_ns[name].append(clock() - start - overhead)
    return {
        name: (statistics.median(batch_us[name]), float(np.percentile(single_ns[name], 99)) / 1000)
        for name in candidates
    }


def bench_latency(directory: Path, quick: bool, with_ort: bool) -> tuple[list[dict], str]:
    rows, graph = [], "-"
    samples = np.random.default_rng(0).standard_normal((4096, 4)).astype(np.float32)
    observations = [row.copy() for row in samples]  # separate 1-D arrays, as a plant hands them
    for hidden in HIDDEN_SIZES:
        path, graph = make_policy(directory, hidden, with_ort)
        policy = load_policy(path)
        candidates = {
            "empty callable": empty_callable,
            "naive numpy": naive_decision(policy.params),
            "fused numpy": fused_decision(policy.params),
        }
        if with_ort:
            candidates["onnxruntime run()"] = make_active(policy, "onnxruntime", path).probability
        for decide in candidates.values():  # warm up every path first
            for obs in observations[:2000]:
                decide(obs)
        result = latency(candidates, observations, rounds=20 if quick else 100, batch=200)
        for name, (median, p99) in result.items():
            rows.append({"hidden": hidden, "candidate": name, "median_us": median, "p99_us": p99})
    return rows, graph


def numpy_floor_ns(hidden: int = 128, number: int = 20_000, repeat: int = 7) -> dict[str, float]:
    """ns per call of each NumPy call of the fused path, timed alone: the floor under any
    NumPy decision function (median of `repeat` timeit runs of `number` calls)."""
    rng = np.random.default_rng(hidden)
    w1t = np.ascontiguousarray(rng.standard_normal((4, hidden)), dtype=np.float32)
    negated_w2_row = -rng.standard_normal((1, hidden)).astype(np.float32)
    # ReLU outputs: garbage from np.empty can hold subnormals, which make the dot 50x slower
    hidden_buffer = np.abs(rng.standard_normal(hidden)).astype(np.float32)
    hidden_bits = hidden_buffer.view(np.int32)  # the ReLU on the bits, as the backend runs it
    names = {
        "obs": rng.standard_normal(4).astype(np.float32),
        "w1t": w1t,
        "negated_w2_row": negated_w2_row,
        "negated_logit": np.empty(1, dtype=np.float32),
        "hidden": hidden_buffer,
        "hidden_bits": hidden_bits,
        "zeros": np.zeros_like(hidden_bits),
        "into_hidden_bits": (hidden_bits,),
        "maximum": np.maximum,
    }
    names["negated_logit_value"] = memoryview(names["negated_logit"])
    calls = (
        "obs.dot(w1t, hidden)",
        "maximum(hidden_bits, zeros, out=into_hidden_bits)",
        "negated_w2_row.dot(hidden, negated_logit)",
        "negated_logit_value[0]",
    )
    floor = {}
    for call in calls:
        timer = timeit.Timer(call, globals=names)
        floor[call] = statistics.median(timer.repeat(repeat, number)) / number * 1e9
    return floor


# --- 3. loop jitter ---------------------------------------------------------------------------


def bench_jitter(directory: Path, seconds: float) -> dict:
    path, _ = make_policy(directory, 128, False)
    active = make_active(load_policy(path), "numpy")
    loop = ControlLoop(CartPoleSim(), PolicySlot(active), hz=100, duration=seconds, seed=0)
    loop.stats.lateness_ns = deque()  # keep every wake-up, not just the recent window
    summary = loop.run()
    late_ms = np.array(loop.stats.lateness_ns) / 1e6
    return {
        "hz": 100,
        "seconds": seconds,
        "steps": summary.decisions,
        "late_p50_ms": float(np.percentile(late_ms, 50)),
        "late_p99_ms": float(np.percentile(late_ms, 99)),
        "late_max_ms": float(late_ms.max()),
        "overruns": summary.overruns,
    }


# --- 4. heads -------------------------------------------------------------------------------


def head_policy(head: str, obs_dim: int, hidden: int, rng: np.random.Generator, normaliser):
    """A format-2 relu policy with random (not zero) biases and the given normaliser (mean,
    std): categorical 3 actions, gaussian 2 in [-1, 1]."""
    actions = {"bernoulli": 1, "categorical": 3, "gaussian": 2}[head]
    bounds = {"action_low": (-1.0,) * 2, "action_high": (1.0,) * 2} if head == "gaussian" else {}
    spec = PolicySpec(hidden, obs_dim, "relu", head, actions, **bounds)
    params = init_params(hidden, rng, spec=spec, biases=True, normaliser=True)
    params["b1"] = rng.standard_normal(hidden) * 0.1
    params["obs_mean"], params["obs_std"] = normaliser
    return parse_policy(policy_bytes(params, make_meta(spec=spec, version=1)))


def head_observations(mean, std, rng: np.random.Generator, beyond: bool) -> list[np.ndarray]:
    """4096 observations as the normaliser describes them, mean + std * N(0, 1): none beyond its
    clip at 10 standard deviations; or `beyond`, each with one value 11 standard deviations
    out (the fused path's slow case: the layers run twice)."""
    z = rng.standard_normal((4096, len(mean)))
    if beyond:
        rows = np.arange(len(z))
        z[rows, rows % len(mean)] = 11.0 * np.where(rows % 2, 1.0, -1.0)
    return [row.copy() for row in (mean + z * std).astype(np.float32)]


def bench_heads(quick: bool) -> list[dict]:
    """Every size with observations within the clip, then beyond it: format 1's bernoulli and
    the format-2 heads on the same observations and one normaliser, interleaved."""
    rows = []
    rng = np.random.default_rng(0)
    for observed in HEAD_OBSERVATIONS:
        for obs_dim, hidden in HEAD_SIZES:
            normaliser = rng.standard_normal(obs_dim), np.exp(rng.standard_normal(obs_dim))
            observations = head_observations(*normaliser, rng, observed == "beyond the clip")
            candidates = {"format 1 bernoulli": fused_decision(init_params(hidden, rng, obs_dim))}
            for head in HEAD_CANDIDATES[1:]:
                policy = head_policy(head, obs_dim, hidden, rng, normaliser)
                candidates[head] = fused_action(policy)
            for decide in candidates.values():
                for obs in observations[:2000]:
                    decide(obs)
            result = latency(candidates, observations, rounds=10 if quick else 100, batch=200)
            base = result["format 1 bernoulli"][0]
            for name, (median, p99) in result.items():
                rows.append(
                    {
                        "observations": observed,
                        "obs_dim": obs_dim,
                        "hidden": hidden,
                        "candidate": name,
                        "median_us": median,
                        "p99_us": p99,
                        "ratio": median / base,
                    }
                )
    return rows


def print_heads(rows) -> None:
    for observed in HEAD_OBSERVATIONS:
        print(
            f"\n== decision latency per head, fused NumPy, format 2 with biases + normaliser,"
            f" observations {observed} (us, ratio to format 1 bernoulli)"
        )
        print(f"{'obs':>4} {'H':>4}  " + "  ".join(f"{name:>22}" for name in HEAD_CANDIDATES))
        table = [r for r in rows if r["observations"] == observed]
        for obs_dim, hidden in HEAD_SIZES:
            cells = {
                r["candidate"]: r for r in table if (r["obs_dim"], r["hidden"]) == (obs_dim, hidden)
            }
            line = "  ".join(
                f"{cells[name]['median_us']:>6.2f} ({cells[name]['ratio']:4.2f}x) p99 {cells[name]['p99_us']:5.1f}"
                for name in HEAD_CANDIDATES
            )
            print(f"{obs_dim:>4} {hidden:>4}  {line}")
    print(
        f"\ntarget: every head within {TARGET_HEAD_RATIO}x of format 1's bernoulli at the same"
        " sizes (observations within the clip):"
    )
    for line in head_verdicts(rows):
        print(line)


def head_verdicts(rows) -> list[str]:
    """One line per format-2 head: PASS or FAIL, how many sizes met the target, the worst."""
    lines = []
    for head in HEAD_CANDIDATES[1:]:
        cells = [
            r for r in rows if r["candidate"] == head and r["observations"] == HEAD_OBSERVATIONS[0]
        ]
        missed = [r for r in cells if r["ratio"] > TARGET_HEAD_RATIO]
        worst = max(cells, key=lambda r: r["ratio"])
        sizes = ", ".join(f"obs {r['obs_dim']} H {r['hidden']} {r['ratio']:.2f}x" for r in missed)
        lines.append(
            f"  {head:<12} {'FAIL' if missed else 'PASS'}  {len(cells) - len(missed)}/{len(cells)} sizes,"
            f" worst {worst['ratio']:.2f}x (obs {worst['obs_dim']} H {worst['hidden']})"
            + (f"; missed at {sizes}" if missed else "")
        )
    return lines


# --- report ---------------------------------------------------------------------------------


def print_report(latency_rows, graph, floor, cold_rows, jitter, head_rows=None) -> None:
    """The sections that ran (the others are None)."""
    print(f"machine: {machine()}")
    if cold_rows is not None:
        print_cold_start(cold_rows)
    if latency_rows is not None:
        print_latency(latency_rows, graph, floor)
    if jitter is not None:
        print_jitter(jitter)
    if head_rows is not None:
        print_heads(head_rows)


def print_cold_start(cold_rows) -> None:
    print("\n== cold start to first action (median, quartiles) and peak RSS, H=128")
    for row in cold_rows:
        print(
            f"{row['backend']:<22} {row['install']:<33} {row['cold_start_ms']:6.1f} ms"
            f" ({row['cold_start_q1_ms']:.0f}-{row['cold_start_q3_ms']:.0f})"
            f"  {row['peak_rss_mb']:5.1f} MB  ({row['runs']} runs)"
        )
    print(f"targets (numpy): <= {TARGET_COLD_MS:g} ms, <= {TARGET_RSS_MB:g} MB")


def print_latency(latency_rows, graph, floor) -> None:
    print(f"\n== decision latency, one observation (us); ONNX graph: {graph}")
    print(f"{'H':>4}  {'candidate':<18} {'median':>8} {'p99':>8} {'vs fused':>9}")
    for hidden in HIDDEN_SIZES:
        rows = [r for r in latency_rows if r["hidden"] == hidden]
        fused = next(r for r in rows if r["candidate"] == "fused numpy")["median_us"]
        for row in rows:
            ratio = (
                "" if row["candidate"] == "empty callable" else f"{row['median_us'] / fused:8.2f}x"
            )
            print(
                f"{hidden:>4}  {row['candidate']:<18} {row['median_us']:>8.2f}"
                f" {row['p99_us']:>8.2f} {ratio:>9}"
            )
    at128 = {r["candidate"]: r["median_us"] for r in latency_rows if r["hidden"] == 128}
    fused = at128["fused numpy"]
    print(f"\nH=128: fused {fused:.2f} us (target <= {TARGET_FUSED_US})", end="")
    print(f", naive/fused {at128['naive numpy'] / fused:.2f}x", end="")
    if "onnxruntime run()" in at128:
        ratio = fused / at128["onnxruntime run()"]
        print(f", fused/onnxruntime {ratio:.2f} (target <= {TARGET_RATIO_ORT})", end="")
    print()
    print(
        f"harness: {at128['empty callable']:.2f} us per call of an empty callable, included"
        " in every median above"
    )
    calls = " + ".join(f"{call} {ns:.0f}" for call, ns in floor.items())
    print(
        f"NumPy floor at H=128 (timeit, each call alone, ns): {calls}"
        f" = {sum(floor.values()) / 1000:.2f} us"
    )


def print_jitter(jitter) -> None:
    print(
        f"\n== loop jitter at {jitter['hz']} Hz for {jitter['seconds']:g} s ({jitter['steps']} steps)"
    )
    print(
        f"lateness p50 {jitter['late_p50_ms']:.3f} ms, p99 {jitter['late_p99_ms']:.3f} ms,"
        f" max {jitter['late_max_ms']:.3f} ms, overruns {jitter['overruns']}"
        f" (target: 0 overruns, p99 <= {TARGET_LATE_P99_MS:g} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--runs", type=int, default=None, help="cold starts per variant (15)")
    parser.add_argument("--jitter-seconds", type=float, default=None, help="(10)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default: all four)",
    )
    args = parser.parse_args(argv)
    sections = args.only or SECTIONS
    runs = args.runs or (2 if args.quick else 15)
    seconds = args.jitter_seconds or (1.0 if args.quick else 10.0)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        with_ort = True
    except ImportError:
        print("onnx/onnxruntime not installed: the onnxruntime rows are left out")
        with_ort = False
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        directory = Path(tmp)
        cold_rows = latency_rows = graph = floor = jitter = head_rows = None
        if "cold" in sections:  # first: no thread of ours runs yet
            cold_rows = bench_cold_start(directory, runs, with_ort)
        if "latency" in sections:
            latency_rows, graph = bench_latency(directory, args.quick, with_ort)
            floor = numpy_floor_ns(number=2_000 if args.quick else 20_000)
        if "jitter" in sections:
            jitter = bench_jitter(directory, seconds)
        if "heads" in sections:
            head_rows = bench_heads(args.quick)
    print_report(latency_rows, graph, floor, cold_rows, jitter, head_rows)
    if args.json:
        results = {"machine": machine(), "latency": latency_rows, "numpy_floor_ns": floor}
        results |= {"cold_start": cold_rows, "jitter": jitter, "heads": head_rows}
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
