"""What every `python -m export` subcommand shares: one-line errors and their exit codes.

Exit codes: 0 ok, 1 failure (a check did not pass), 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

INT64_MAX = 2**63 - 1  # ONNX model_version is an int64


class InputError(Exception):
    """Bad usage or input (exit 2); the message is the one line the user sees."""


class Failure(Exception):
    """The work failed, e.g. a parity check or writing the output (exit 1)."""


def one_line(message: str) -> str:
    """`message` with control characters shown escaped: a newline in a file name cannot
    split the one line a user or a script reads."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and an InputError instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see --help)")


def path_arg(text: str) -> Path:
    """argparse type: a path; an empty one (an unset shell variable) would mean '.'."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    return Path(text)


def positive_int(text: str) -> int:
    """argparse type: an integer in 1..2**63-1, written with the digits 0-9 only.

    int() alone also takes '5_0' (50) and other scripts' digits ('٥' is 5), which no
    version a user means to type looks like.
    """
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    value = int(digits, 10)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    if value > INT64_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {INT64_MAX} (int64), got {text!r}")
    return value
