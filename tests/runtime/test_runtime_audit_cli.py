"""Audit regressions for `python -m runtime`'s command line, configuration and reports."""

from __future__ import annotations

import io
from pathlib import Path

from runtime.cli import build_config, run


def test_a_run_without_decisions_reports_dashes_not_none(policy_path: Path, capsys) -> None:
    # found by the audit: "decision p50 None us p99 None us" when the bridge closed at once
    config = build_config({"policy": str(policy_path), "plant": "stdio"}, {})
    assert run(config, stdin=io.BytesIO(b""), stdout=io.BytesIO()) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("done (plant closed): 0 episodes, mean return -, 0 decisions")
    assert "decision p50 - p99 -," in line and "None" not in line
