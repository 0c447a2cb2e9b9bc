"""Ed25519 keys on the desktop: make a key pair, load the private key, sign a policy.

The private key never leaves the machine that exports; a device holds only `signing.pub`
and checks signatures with `runtime.signing.verify_policy`. The signature covers
`runtime.policy.signed_bytes(meta_json, W1, W2)` for format 1 and
`runtime.policy.signed_bytes_v2(meta_json, params)` for format 2 (the definitions are in
docs/export.md, Signing).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from export.console import InputError, Parser, check_key_file, path_arg, say
from runtime.policy import (
    Params,
    fsync_directory,
    signed_bytes,
    signed_message,
    write_synced_temporary,
)

log = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"


def generate_keypair(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write signing.key (PKCS8 PEM, mode 0600) and signing.pub (PEM); never overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir = Path(out_dir)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise InputError(f"{path} already exists; refusing to overwrite a key")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {out_dir}: {error.strerror or error}") from None

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    written: list[Path] = []
    try:
        for path, data, mode in (
            (private_path, private_pem, 0o600),
            (public_path, public_pem, 0o644),
        ):
            write_new(path, data, mode)
            written.append(path)
    except FileExistsError:  # another keygen got there between the check and now
        for path in written:
            path.unlink(missing_ok=True)
        raise InputError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as error:
        for path in written:
            path.unlink(missing_ok=True)
        raise InputError(f"cannot write keys to {out_dir}: {error.strerror or error}") from None
    return private_path, public_path


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a complete file at `path` that did not exist: FileExistsError if it does.

    A temporary file is written (mode 0600 from the start), then hard-linked to its name:
    unlike a rename, a link never replaces an existing file, so a key is never overwritten.
    """
    tmp = write_synced_temporary(path, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network file systems)
            _write_exclusive(path, data, mode)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_directory(path.parent)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """O_EXCL create: also never replaces a file; a crash may leave it short, not wrong."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def load_private_key(path: str | os.PathLike) -> Any:
    """An Ed25519 private key from a PEM file (PKCS8, unencrypted); InputError otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    check_key_file(path, "signing key")
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except IsADirectoryError:
        raise InputError(f"signing key {path}: is a directory, expected a PEM file") from None
    except OSError as error:
        raise InputError(f"signing key {path}: cannot read: {error.strerror or error}") from None
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:  # a file may hold both
        raise InputError(f"signing key {path}: is a public key; --sign needs the private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(f"signing key {path}: is encrypted; use an unencrypted key") from None
    except Exception:  # bad PEM raises ValueError or, for some inputs, library-specific errors
        if b"OPENSSH PRIVATE KEY" in data:
            raise InputError(
                f"signing key {path}: an OpenSSH key, expected a PKCS8 PEM key"
                " (make one with: python -m export keygen --out DIR)"
            ) from None
        raise InputError(f"signing key {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.lstrip("_")  # cryptography 38 names it _RSAPrivateKey
        raise InputError(f"signing key {path}: {kind}, expected Ed25519")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("warning: signing key %s is readable by others (chmod 600 it)", path)
    return key


def sign(private_key: Any, meta_json: str, w1: np.ndarray, w2: np.ndarray) -> bytes:
    """The 64-byte Ed25519 signature over `signed_bytes(meta_json, W1, W2)`."""
    return private_key.sign(signed_bytes(meta_json, w1, w2))


def sign_policy(private_key: Any, meta_json: str, params: Params, format_version: int) -> bytes:
    """The 64-byte Ed25519 signature of a policy in either format (`signed_message`)."""
    return private_key.sign(signed_message(meta_json, params, format_version))


def keygen_main(argv: list[str]) -> int:
    """`python -m export keygen --out DIR`."""
    args = build_keygen_parser().parse_args(argv)
    private_path, public_path = generate_keypair(args.out)
    say(f"wrote {private_path} (private, keep it secret) and {public_path} (public)")
    return 0


def build_keygen_parser() -> Parser:
    """`python -m export keygen`'s parser."""
    parser = Parser(
        prog="python -m export keygen",
        description="Make an Ed25519 key pair: DIR/signing.key (private, PKCS8 PEM, mode 0600) "
        "and DIR/signing.pub (public, PEM; the only key a device needs).",
    )
    parser.add_argument(
        "--out", required=True, type=path_arg, help="directory for signing.key and signing.pub"
    )
    return parser
