"""Command line of `python -m runtime` (placeholder until its issue lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("not implemented yet", file=sys.stderr)
    return 1
