"""Paths the trainer may not read, and eval's bounds (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def denied(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise PermissionError(13, "Permission denied")  # what a non-root user gets (tests run as root)


def test_out_in_a_directory_we_may_not_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setattr(Path, "iterdir", denied)  # was a PermissionError traceback, exit 1
    assert main(["--out", str(out), "--max-episodes", "2", "--quiet"]) == 2
    assert f"--out {out}: not readable: Permission denied" in one_line(capsys)
    monkeypatch.setattr(Path, "stat", denied)  # a parent we may not search: exists() raises
    assert main(["--out", str(out / "x"), "--max-episodes", "2", "--quiet"]) == 2
    assert "not readable: Permission denied" in one_line(capsys)


def test_eval_of_a_path_we_may_not_search_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Path, "stat", denied)
    assert main(["eval", str(tmp_path / "locked" / "policy.npz")]) == 2
    assert "cannot read: Permission denied" in one_line(capsys)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--episodes", str(10**20)], "--episodes must be in 1..1000000"),  # ran for ever
        (["--seed", str(2**64)], "--seed must be in 0..9223372036854775807"),
        (["--seed", "-1"], "--seed must be in 0.."),
    ],
)
def test_eval_bounds(flags: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "unused.npz", *flags]) == 2
    assert fragment in one_line(capsys)


def test_resume_names_its_own_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["--out", str(out), "--max-episodes", "2", "--eval-episodes", "0", "--quiet"]) == 0
    from trainer import rundir

    monkeypatch.setattr(rundir.tempfile, "TemporaryFile", denied)  # a read-only run directory
    assert main(["--resume", str(out), "--max-episodes", "4", "--quiet"]) == 2
    assert f"--resume {out}: not writable: Permission denied" in one_line(capsys)


def test_an_empty_out_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--out", "", "--max-episodes", "2", "--quiet"]) == 2
    assert "--out: the path is empty" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []  # not runs/<timestamp>


def test_record_never_overwrites_what_is_not_a_gif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["--out", str(run), "--max-episodes", "2", "--eval-episodes", "0", "--quiet"]) == 0
    capsys.readouterr()
    policy = (run / "policy.npz").read_bytes()
    for target, fragment in [
        (run / "policy.npz", "is the policy being evaluated"),  # was replaced by the GIF
        (run / "metrics.csv", "exists and is not a GIF"),
        (Path("/dev/null"), "not a regular file"),  # /dev/full was replaced as root
    ]:
        assert main(["eval", str(run), "--episodes", "1", "--record", str(target)]) == 2
        assert fragment in one_line(capsys)
    assert (run / "policy.npz").read_bytes() == policy
    gif = tmp_path / "a.gif"
    assert main(["eval", str(run), "--episodes", "1", "--record", str(gif)]) == 0
    assert main(["eval", str(run), "--episodes", "1", "--record", str(gif)]) == 0  # a GIF: again
