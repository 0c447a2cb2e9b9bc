"""`python -m export verify FILE --public-key PUB`: is FILE a policy signed by that key?

Exit 0: valid. Exit 1: the file was read but is not a validly signed policy (unsigned, wrong
key, altered anywhere: content, signature or zip bytes, or not a policy at all).
Exit 2: the file or the key cannot be read, or the key is not an Ed25519 public key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from export.console import InputError, Parser, check_key_file, one_line, path_arg, say
from runtime.constants import DEFAULT_MAX_POLICY_BYTES
from runtime.policy import PolicyError, parse_policy
from runtime.signing import load_public_key, verify_policy


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_key_file(args.public_key, "public key")
    try:
        key = load_public_key(args.public_key)
    except (PolicyError, ValueError) as error:
        raise InputError(str(error)) from None
    data = read_limited(args.file)
    try:
        policy = parse_policy(data)
    except PolicyError as error:
        say(one_line(f"INVALID: {args.file}: {error}"))
        return 1
    identity = f"version {policy.version}, sha256 {policy.sha256}"
    try:
        verify_policy(policy, key)
    except PolicyError as error:
        say(one_line(f"INVALID: {args.file}: {error} ({identity})"))
        return 1
    say(one_line(f"VALID: {args.file}: signed by {args.public_key} ({identity})"))
    return 0


def build_parser() -> Parser:
    """`python -m export verify`'s parser."""
    parser = Parser(
        prog="python -m export verify",
        description="Check that a policy.npz carries a valid Ed25519 signature from a public key. "
        "Exit 0 valid, 1 missing or wrong signature (or an altered file), 2 unreadable input.",
    )
    parser.add_argument("file", metavar="FILE", type=path_arg, help="the policy.npz to check")
    parser.add_argument(
        "--public-key", required=True, type=path_arg, metavar="PUB", help="signing.pub (PEM or raw)"
    )
    return parser


def read_limited(path: Path, limit: int = DEFAULT_MAX_POLICY_BYTES) -> bytes:
    """The file's bytes, or at most limit + 1 of them (parse_policy then refuses the size)."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a policy.npz file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "is a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{path}: {what}, expected a policy.npz file")
    with os.fdopen(fd, "rb") as handle:
        try:
            return handle.read(limit + 1)
        except OSError as error:
            raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
