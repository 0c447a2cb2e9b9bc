"""Values the config used to accept and then crash on (one line, exit 2 now)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--target-return", "0"], "target_return must be a number in (0.0, 500.0]"),  # was / 0
        (["--target-return", "-1"], "target_return must be a number in (0.0, 500.0]"),
        (["--target-return", "501"], "target_return must be a number in (0.0, 500.0]"),
        (["--lr", "1e308"], "lr must be a number in (0.0, 1.0]"),  # was inf weights, traceback
        (["--lr-final", "2"], "lr_final must be a number in (0.0, 1.0]"),
    ],
)
def test_out_of_range_values_are_one_line_exit_2(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert (
        main([*argv, "--max-episodes", "16", "--eval-episodes", "0", "--quiet", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert not out.exists()


def test_the_largest_allowed_values_train_and_save(tmp_path: Path) -> None:
    flags = ["--lr", "1", "--target-return", "500", "--max-episodes", "24", "--quiet"]
    assert main([*flags, "--eval-episodes", "0", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "policy.npz").is_file()


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["--batch-final", "0"],
            "argument --batch-final: batch_final must be an integer in 1..1000000, got 0",
        ),
        (["--hidden", "1.5"], "argument --hidden: must be an integer, got '1.5'"),
        (["--gamma", "1e3"], "argument --gamma: gamma must be a number in (0.0, 1.0], got 1000.0"),
        (["--rms-eps", "x"], "argument --rms-eps: must be a number, got 'x'"),
        (
            ["eval", "p.npz", "--episodes", "1e3"],
            "argument --episodes: must be an integer, got '1e3'",
        ),
    ],
)
def test_every_bad_value_names_its_flag_and_what_it_allows(
    argv: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(tmp_path / "o")] if argv[0] != "eval" else []
    assert main([*argv, *out]) == 2
    assert capsys.readouterr().err == f"trainer: error: {line}\n"
