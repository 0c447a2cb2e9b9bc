"""Audit of issue 3 (command line): the export leaves its input untouched and reads
--version as a plain decimal number."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from export.cli import main
from runtime.policy import load_policy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "out",
    [
        lambda run: run,  # the run directory itself
        lambda run: run / ".",
        lambda run: run / "dist" / "..",
        lambda run: run.parent / "link",  # a symlink to it
    ],
)
def test_out_holding_the_source_is_refused_and_the_source_kept(
    run_dir: Path, capsys, out, keys
) -> None:
    (run_dir.parent / "link").symlink_to(run_dir)
    before = digest(run_dir / "policy.npz")
    code = main(
        [
            str(run_dir),
            "--all",
            "--version",
            "99",
            "--sign",
            str(keys[0]),
            "--out",
            str(out(run_dir)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "holds the source" in err, err
    assert digest(run_dir / "policy.npz") == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["policy.npz"]


def test_a_policy_file_exported_into_its_own_directory_is_refused(run_dir: Path, capsys) -> None:
    assert main([str(run_dir), "--version", "3"]) == 0
    dist = run_dir / "dist"
    before = {p.name: digest(p) for p in dist.iterdir()}
    assert main([str(dist / "policy.npz"), "--version", "4", "--out", str(dist)]) == 2
    assert "holds the source" in capsys.readouterr().err
    assert {p.name: digest(p) for p in dist.iterdir()} == before


def test_a_differently_named_source_may_share_the_output_directory(run_dir: Path) -> None:
    renamed = run_dir / "trained.npz"
    (run_dir / "policy.npz").rename(renamed)
    before = digest(renamed)
    assert main([str(renamed), "--out", str(run_dir)]) == 0
    assert digest(renamed) == before and (run_dir / "policy.npz").is_file()


@pytest.mark.parametrize("version", ["5_0", "٥", "１２", "+5", "0x10", "5 5", "²"])
def test_version_must_be_plain_decimal_digits(run_dir: Path, capsys, version: str) -> None:
    assert main([str(run_dir), "--version", version]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a positive integer" in err
    assert not (run_dir / "dist").exists()


@pytest.mark.parametrize(("version", "expected"), [("42", 42), (" 7 ", 7), ("007", 7)])
def test_version_in_decimal_is_taken(run_dir: Path, version: str, expected: int) -> None:
    assert main([str(run_dir), "--version", version]) == 0
    assert load_policy(run_dir / "dist" / "policy.npz").version == expected


def special_files(tmp_path: Path) -> list[Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [fifo, Path("/dev/zero"), Path("/dev/null")]


def test_a_fifo_or_device_as_source_is_refused_not_read(tmp_path: Path, capsys) -> None:
    """A FIFO blocked export forever and /dev/zero (size 0 to stat) was read without end."""
    for path in special_files(tmp_path):
        assert main([str(path), "--c", "--out", str(tmp_path / "out")]) == 2
        assert "not a regular file" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "policy.npz")
    assert main([str(run), "--onnx"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (run / "dist").exists()


def test_a_fifo_or_device_as_key_or_verified_file_is_refused(
    tmp_path: Path, run_dir: Path, keys, capsys
) -> None:
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    signed = run_dir / "dist" / "policy.npz"
    capsys.readouterr()
    for path in special_files(tmp_path):
        for argv in (
            [str(run_dir), "--sign", str(path), "--out", str(tmp_path / "out")],
            ["verify", str(path), "--public-key", str(keys[1])],
            ["verify", str(signed), "--public-key", str(path)],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "not a regular file" in err, (argv, err)
    assert main(["verify", str(run_dir), "--public-key", str(keys[1])]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["verify", str(signed), "--public-key", str(keys[1])]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["{run}", "--out", ""],
        ["", "--c"],
        ["{run}", "--sign", " "],
        ["keygen", "--out", ""],
        ["verify", "", "--public-key", "{run}/policy.npz"],
        ["verify", "{run}/policy.npz", "--public-key", ""],
    ],
)
def test_an_empty_path_is_refused_not_taken_as_the_current_directory(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys, argv: list[str]
) -> None:
    """`--out "$OUT"` with OUT unset wrote into the current directory (keygen: its keys)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main([arg.format(run=run_dir) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a path" in err, err
    assert list(cwd.iterdir()) == [] and not (run_dir / "dist").exists()


@pytest.mark.parametrize("name", ["policy.npz", "policy.onnx", "policy.h", "manifest.json"])
def test_a_directory_where_an_artifact_goes_is_refused_before_any_rename(
    run_dir: Path, tmp_path: Path, capsys, name: str
) -> None:
    """policy.npz was replaced, then the rename onto the directory failed: a new policy.npz
    beside the old manifest, and 'no artifacts written' on stderr."""
    out = tmp_path / "out"
    assert main([str(run_dir), "--version", "1", "--out", str(out)]) == 0
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    before = {p.name: (digest(p) if p.is_file() else "dir") for p in out.iterdir()}
    capsys.readouterr()
    assert main([str(run_dir), "--version", "2", "--all", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a file" in err, err
    assert {p.name: (digest(p) if p.is_file() else "dir") for p in out.iterdir()} == before


def test_a_newline_in_a_file_name_cannot_split_the_one_line(
    run_dir: Path, tmp_path: Path, keys, capsys
) -> None:
    assert main([str(tmp_path / "no\nsuch"), "--c"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no\\nsuch" in err, err
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    odd = tmp_path / "odd\nname.npz"
    odd.write_bytes((run_dir / "dist" / "policy.npz").read_bytes())
    capsys.readouterr()
    assert main(["verify", str(odd), "--public-key", str(keys[1])]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("VALID: ") and "odd\\nname" in out, out


class FullStdout:
    """A stdout like /dev/full: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("command", ["export", "verify", "keygen", "help"])
def test_a_full_stdout_is_one_warning_and_the_commands_own_exit_code(
    run_dir: Path, tmp_path: Path, keys, monkeypatch, capsys, command: str
) -> None:
    """print() raised: a traceback and exit 1, for verify even on a VALID signature."""
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    argv = {
        "export": [str(run_dir), "--c", "--out", str(tmp_path / "out")],
        "verify": ["verify", str(run_dir / "dist" / "policy.npz"), "--public-key", str(keys[1])],
        "keygen": ["keygen", "--out", str(tmp_path / "more-keys")],
        "help": ["--help"],
    }[command]
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", FullStdout())
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == "warning: cannot write to stdout: No space left on device\n", err


def test_a_failed_export_removes_every_directory_it_made(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Only the deepest --out directory was removed: --out new/a/b left new/ and new/a/."""
    import export.build as build

    def disagree(*args, **kwargs):
        return build.ParityReport(observations=1, c=1.0, c_action_mismatches=1)

    monkeypatch.setattr(build, "check_parity", disagree)
    (tmp_path / "kept").mkdir()
    assert main([str(run_dir), "--c", "--out", str(tmp_path / "kept" / "new" / "a" / "b")]) == 1
    assert "parity check failed" in capsys.readouterr().err
    assert list((tmp_path / "kept").iterdir()) == []
