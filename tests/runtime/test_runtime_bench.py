"""bench/runtime.py keeps working: each part on a tiny budget (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "runtime.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_runtime_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_cold_start_and_jitter_parts_run(bench, tmp_path: Path) -> None:
    rows, _ = bench.bench_latency(tmp_path, quick=True, with_ort=False)
    assert {(r["hidden"], r["candidate"]) for r in rows} == {
        (h, c) for h in (64, 128, 200) for c in ("empty callable", "naive numpy", "fused numpy")
    }
    assert all(r["median_us"] > 0 and r["p99_us"] > 0 for r in rows)
    floor = bench.numpy_floor_ns(number=100, repeat=2)
    assert len(floor) == 4 and all(ns > 0 for ns in floor.values())
    path, _ = bench.make_policy(tmp_path, 128, False)
    site = bench.install_like_a_device(tmp_path)
    assert list((site / "runtime" / "__pycache__").glob("cli.*.pyc"))
    assert bench.device_environment()["PYTHONPATH"].startswith(str(site))
    bench.install_console_script(tmp_path)
    for install in bench.INSTALLS:
        elapsed_ms, rss_mb = bench.cold_start(path, "numpy", install)
        assert 0 < elapsed_ms < 30_000 and 10 < rss_mb < 200, install
    bench.DEVICE_PACKAGES.clear()
    bench.CONSOLE_SCRIPTS.clear()
    jitter = bench.bench_jitter(tmp_path, 0.2)
    assert jitter["steps"] >= 10 and jitter["late_max_ms"] >= jitter["late_p50_ms"]


def test_only_one_section_runs_and_is_reported(bench, tmp_path: Path, capsys) -> None:
    out = tmp_path / "jitter.json"
    assert (
        bench.main(["--quick", "--only", "jitter", "--jitter-seconds", "0.2", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "== loop jitter" in printed
    assert "== cold start" not in printed and "== decision latency" not in printed
    assert "== decision latency per head" not in printed
    results = json.loads(out.read_text())
    assert results["latency"] is None and results["cold_start"] is None
    assert results["jitter"]["steps"] >= 10


def test_the_heads_section_runs_and_is_reported(bench, capsys) -> None:
    rows = bench.bench_heads(quick=True)
    assert sorted(
        (r["observations"], r["obs_dim"], r["hidden"], r["candidate"]) for r in rows
    ) == sorted(
        (observed, o, h, c)
        for observed in bench.HEAD_OBSERVATIONS
        for o, h in bench.HEAD_SIZES
        for c in bench.HEAD_CANDIDATES
    )
    assert all(r["median_us"] > 0 and r["p99_us"] > 0 and r["ratio"] > 0 for r in rows)
    bench.print_heads(rows)
    printed = capsys.readouterr().out
    assert "target: every head within 1.3x" in printed
    for head in ("bernoulli", "categorical", "gaussian"):
        assert f"  {head} " in printed


def test_the_head_verdicts_name_every_size_that_misses(bench) -> None:
    rows = [
        {"observations": observed, "obs_dim": o, "hidden": h, "candidate": c, "ratio": ratio}
        for observed in bench.HEAD_OBSERVATIONS
        for o, h in bench.HEAD_SIZES
        for c, ratio in zip(bench.HEAD_CANDIDATES, (1.0, 1.2, 1.3, 1.2), strict=True)
    ]
    rows[7]["ratio"] = 1.31  # gaussian at the second size, within the clip
    rows[-1]["ratio"] = 9.0  # beyond the clip: no target
    bernoulli, categorical, gaussian = bench.head_verdicts(rows)
    assert bernoulli.split()[:3] == ["bernoulli", "PASS", "9/9"]
    assert categorical.split()[:3] == ["categorical", "PASS", "9/9"]  # 1.3 meets "within 1.3x"
    assert gaussian.split()[:3] == ["gaussian", "FAIL", "8/9"]
    assert (
        gaussian.endswith("missed at obs 3 H 64 1.31x") and "worst 1.31x (obs 3 H 64)" in gaussian
    )
