"""bench/export.py's Cortex-M section keeps working and keeps the size target (sizes are
deterministic for one toolchain; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "export.py"
needs_arm_gcc = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None or shutil.which("arm-none-eabi-size") is None,
    reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi"
    " libnewlib-arm-none-eabi)",
)
CATEGORICAL_TARGET_TEXT = 2500  # bytes: a 4->32->2 categorical program on Cortex-M4F (issue 15)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_export_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_arm_gcc
def test_a_4_32_2_categorical_program_fits_the_cortex_m4f_target(bench, tmp_path: Path) -> None:
    case = next(case for case in bench.SIZE_CASES if case[0] == "4->32->2 categorical")
    rows = bench.cortex_m_sizes(tmp_path, cases=[case])
    assert [row["target"] for row in rows] == ["Cortex-M4F", "Cortex-M0+"]
    for row in rows:
        # the object holds the weights (936 bytes of floats) and the code; the program more
        assert 936 < row["object_text"] < row["text"], row
        assert row["data"] >= 0 and row["bss"] >= 4 * 4, row  # the volatile observation
    assert rows[0]["text"] <= CATEGORICAL_TARGET_TEXT, rows[0]


@needs_arm_gcc
def test_the_cortex_m_section_prints_every_case_and_target(bench, capsys) -> None:
    assert bench.main(["--only", "cortex-m"]) == 0
    printed = capsys.readouterr().out
    assert "== policy.h on Cortex-M" in printed and "skipped" not in printed
    for label, _, _ in bench.SIZE_CASES:
        assert printed.count(f"{label} ") == 2, label  # one row per target


def test_without_the_cross_compiler_the_section_says_it_is_skipped(
    bench, monkeypatch, capsys, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert bench.cortex_m_sizes(tmp_path) == []
    assert bench.main(["--only", "cortex-m"]) == 0
    printed = capsys.readouterr().out
    assert "skipped: arm-none-eabi-gcc" in printed and "apt-get install" in printed
