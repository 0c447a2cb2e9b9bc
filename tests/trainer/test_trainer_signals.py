"""SIGTERM (kill, timeout, a service stop) saves the run like Ctrl-C.

It used to kill the trainer at once: exit -15, an empty run directory, every episode lost.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from runtime.policy import load_policy
from trainer import cli
from trainer.cli import main


def test_sigterm_saves_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    update = cli._Progress.update

    def terminate_after_40(self: cli._Progress, state) -> None:  # noqa: ANN001
        update(self, state)
        if state.episodes >= 40:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered here

    monkeypatch.setattr(cli._Progress, "update", terminate_after_40)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    flags = ["--seed", "3", "--max-episodes", "200", "--eval-episodes", "0", "--quiet"]
    assert main(["--out", str(out), *flags]) == 130
    assert "interrupted after" in capsys.readouterr().err
    rows = (out / "metrics.csv").read_text().splitlines()
    assert 40 <= len(rows) - 1 < 200
    assert load_policy(out / "policy.npz").meta["episodes"] == len(rows) - 1
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert len(checkpoint["returns"]) == len(rows) - 1
    assert signal.getsignal(signal.SIGTERM) is before  # restored for whoever runs main next


def test_sigterm_while_saving_finishes_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import rundir

    save_checkpoint = rundir.save_checkpoint

    def signalled(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGTERM)
        return save_checkpoint(*args, **kwargs)

    monkeypatch.setattr(rundir, "save_checkpoint", signalled)
    out = tmp_path / "run"
    flags = ["--max-episodes", "16", "--eval-episodes", "0", "--quiet"]
    assert main(["--out", str(out), *flags]) == 130
    assert (out / "checkpoint.npz").is_file() and (out / "curve.png").is_file()
