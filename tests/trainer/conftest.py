"""Fixtures for the trainer's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trainer import cli

# what a run directory holds, as docs/training.md lists it
RUN_FILES = {"policy.npz", "metrics.csv", "config.json", "curve.png", "checkpoint.npz"}


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int | None], None]:
    """`interrupt_after(n)` makes the progress callback raise KeyboardInterrupt (Ctrl-C) once
    n episodes are done; `interrupt_after(None)` puts the real callback back."""
    update = cli._Progress.update

    def install(episodes: int | None) -> None:
        if episodes is None:
            monkeypatch.setattr(cli._Progress, "update", update)
            return

        def interrupting(self: cli._Progress, state) -> None:  # noqa: ANN001
            update(self, state)
            if state.episodes >= episodes:
                raise KeyboardInterrupt

        monkeypatch.setattr(cli._Progress, "update", interrupting)

    return install
