"""`python -m export keys sign|push`: make and publish a signed key-set change (docs/ota.md).

    python -m export keys sign --version 2 --key keys-new/signing.pub --key backup/signing.pub \
        --revoke keys/signing.pub --sign-key backup/signing.key --out keyset-2.json
    python -m export keys push keyset-2.json --fleet --broker mqtts://broker.lan --ca-file ca.pem

`sign` writes the full new key set (every --key), the keys it revokes (--revoke) and the
version, signed by --sign-key, which the devices must trust before the change
(`runtime.keyset.make_keys_message`). `push` publishes it on the keys topics and waits for the
devices' answers exactly as `python -m export push` does for a policy (export/push.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from export.console import InputError, Parser, check_key_file, path_arg, positive_int, say
from export.keys import load_private_key
from export.push import KEYS_TOPICS, UsageError, _run, add_target_arguments, publish_and_report
from export.push import Parser as PushParser
from runtime.policy import PolicyError, atomic_write

ACTIONS = ("sign", "push")


def build_sign_parser() -> Parser:
    """`python -m export keys sign`'s parser."""
    parser = Parser(
        prog="python -m export keys sign",
        description="Sign a key-set change for the devices: the full new set of trusted public"
        " keys, the keys it revokes (never trusted again) and its version (newer than the last).",
    )
    parser.add_argument(
        "--version", required=True, type=positive_int, help="key-set version, above the last one"
    )
    parser.add_argument(
        "--key",
        action="append",
        required=True,
        type=path_arg,
        metavar="PUB",
        help="a public key of the new set (repeat; at most 16)",
    )
    parser.add_argument(
        "--revoke",
        action="append",
        default=[],
        type=path_arg,
        metavar="PUB",
        help="a public key to revoke (repeat)",
    )
    parser.add_argument(
        "--sign-key",
        required=True,
        type=path_arg,
        metavar="KEY",
        help="private key the devices trust now (PEM)",
    )
    parser.add_argument("--out", required=True, type=path_arg, help="the keys message to write")
    return parser


def build_push_parser() -> PushParser:
    """`python -m export keys push`'s parser."""
    parser = PushParser(
        prog="python -m export keys push",
        description="Publish a signed key-set change to devices over MQTT and wait for answers.",
    )
    parser.add_argument("file", help="keys message (as `python -m export keys sign` wrote it)")
    add_target_arguments(parser)
    return parser


def read_public_key(path: Path) -> bytes:
    """The 32 raw bytes of a public key file; InputError naming the file."""
    from runtime.keyset import raw_public_bytes
    from runtime.signing import load_public_key

    check_key_file(path, "public key")
    try:
        return raw_public_bytes(load_public_key(path))
    except PolicyError as error:
        raise InputError(str(error)) from None


def sign_main(argv: Sequence[str]) -> int:
    from runtime.keyset import key_id, make_keys_message

    args = build_sign_parser().parse_args(argv)
    keys = [read_public_key(path) for path in args.key]
    revoked = [read_public_key(path) for path in args.revoke]
    private_key = load_private_key(args.sign_key)
    try:
        data = make_keys_message(args.version, keys, revoked, private_key)
    except ValueError as error:
        raise InputError(str(error)) from None
    try:
        atomic_write(args.out, data)
    except OSError as error:
        raise InputError(f"--out {args.out}: cannot write: {error.strerror or error}") from None
    ids = ", ".join(sorted({key_id(raw) for raw in keys}))
    gone = ", ".join(sorted({key_id(raw) for raw in revoked})) or "none"
    say(f"wrote {args.out}: key set version {args.version}, keys {ids}; revoked {gone}")
    return 0


def push_main(argv: Sequence[str]) -> int:
    def body() -> int:
        from runtime.keyset import parse_keys_message  # the form only: devices judge the rest

        args = build_push_parser().parse_args(argv)
        path = Path(args.file)
        try:
            data = path.read_bytes()
            message = parse_keys_message(data)
        except OSError as error:
            raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None
        except PolicyError as error:
            raise UsageError(f"{path}: {error}") from None
        headline = (
            f"pushed {path} key set version {message.version} sha256 {message.sha256[:12]}..."
        )
        return publish_and_report(args, data, headline, KEYS_TOPICS)

    return _run(body)


def main(argv: Sequence[str]) -> int:
    """`python -m export keys ACTION ...`."""
    argv = list(argv)
    if not argv or argv[0] not in ACTIONS:
        given = repr(argv[0]) if argv else "nothing"
        raise InputError(
            f"python -m export keys: expected one of {', '.join(ACTIONS)}, got {given}"
            " (see python -m export keys sign --help)"
        )
    return (sign_main if argv[0] == "sign" else push_main)(argv[1:])
