"""What every `python -m export` subcommand shares: one-line errors and their exit codes.

Exit codes: 0 ok, 1 failure (a check did not pass), 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from pathlib import Path
from typing import NoReturn

from runtime.constants import MAX_KEY_FILE_BYTES

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1  # ONNX model_version is an int64


class InputError(Exception):
    """Bad usage or input (exit 2); the message is the one line the user sees."""


class Failure(Exception):
    """The work failed, e.g. a parity check or writing the output (exit 1)."""


def check_key_file(path: Path, what: str) -> None:
    """Refuse, before reading, a key file that is a FIFO or a device (the read would block
    or never end) or far too large to be a key (the read would exhaust memory)."""
    try:
        info = path.stat()
    except OSError:
        return  # the reader reports a missing or unreadable file in its own words
    if stat.S_ISDIR(info.st_mode):
        return
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path}: not a regular file, expected a PEM file")
    if info.st_size > MAX_KEY_FILE_BYTES:
        raise InputError(
            f"{what} {path}: {info.st_size} bytes, too large for a key file"
            f" (at most {MAX_KEY_FILE_BYTES})"
        )


def say(text: str) -> None:
    """Print a result line; a stdout that refuses it (/dev/full, a closed pipe) is one warning
    on stderr, and the command still exits with its own code (the work is done)."""
    try:
        print(text, flush=True)
    except OSError as error:
        log.warning("warning: cannot write to stdout: %s", error.strerror or error)
        try:  # later writes and the flush at exit go nowhere instead of failing again
            fd = sys.stdout.fileno()
        except (OSError, ValueError, AttributeError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives until exit)
            return
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


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
