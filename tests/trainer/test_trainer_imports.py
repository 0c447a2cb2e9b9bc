"""A missing optional package is refused before any work, in one line.

Without matplotlib the run was trained, then a traceback (exit 1) at curve.png; without
gymnasium the final evaluation raised before anything was saved; without pygame `eval
--record` evaluated first, then a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainer.cli import main


@pytest.mark.parametrize(
    "module, argv",
    [
        ("matplotlib", ["--max-episodes", "4", "--eval-episodes", "0"]),
        ("gymnasium", ["--max-episodes", "4", "--eval-episodes", "3"]),
        ("gymnasium", ["--preset", "seed", "--max-episodes", "4", "--eval-episodes", "0"]),
    ],
)
def test_training_without_an_optional_package(
    module: str,
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec says None
    out = tmp_path / "run"
    assert main([*argv, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{module} is not installed" in err
    assert not out.exists()


def test_gymnasium_is_not_needed_without_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    flags = ["--max-episodes", "4", "--eval-episodes", "0", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("module", ["pygame", "PIL"])
def test_record_without_its_packages_is_refused_before_evaluating(
    module: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    assert main(["--out", str(run), "--max-episodes", "2", "--eval-episodes", "0", "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, module, None)
    gif = tmp_path / "a.gif"
    assert main(["eval", str(run), "--episodes", "2", "--record", str(gif)]) == 2
    captured = capsys.readouterr()
    assert f"{module} is not installed" in captured.err and captured.err.count("\n") == 1
    assert captured.out == "" and not gif.exists()  # nothing evaluated
