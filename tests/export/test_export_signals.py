"""SIGTERM during an export cleans up like Ctrl-C, and a signal
during the renames waits until every artifact is in place."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import export.build as build
from export.cli import main


def test_sigterm_during_parity_exits_130_and_leaves_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """SIGTERM killed the export outright: .export-staging-* and a new --out stayed behind."""
    real = build.check_parity

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "check_parity", terminated)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main([str(run_dir), "--all", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) is before  # restored for in-process callers


def test_a_signal_during_the_renames_waits_for_the_last_one(
    run_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "out"
    assert main([str(run_dir), "--version", "1", "--all", "--out", str(out)]) == 0
    real_replace, renamed = os.replace, []

    def replace_then_interrupt(source, target):
        real_replace(source, target)
        if Path(target).parent != out:  # atomic_write's own rename inside the staging dir
            return
        renamed.append(Path(target).name)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(build.os, "replace", replace_then_interrupt)
    assert main([str(run_dir), "--version", "2", "--all", "--out", str(out)]) == 130
    monkeypatch.undo()
    assert renamed == ["policy.npz", "policy.onnx", "policy.h", "manifest.json"]
    manifest = (out / "manifest.json").read_text()
    assert '"policy_version": 2' in manifest
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "policy.h",
        "policy.npz",
        "policy.onnx",
    ]
