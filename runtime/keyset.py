"""The device's trusted key set and the signed `keys` message that rotates it (docs/ota.md).

A device trusts a set of Ed25519 public keys (at most MAX_TRUSTED_KEYS): at first the keys of
its configuration (`--public-key`, `--trusted-keys-dir`), version 0. A `keys` message, signed by
a key trusted before the change, replaces the whole set:

    {"format": "reinforce-edge/keyset", "version": 3, "keys": [B64, ...],
     "revoked": [B64, ...], "signer": KEY_ID, "signature": B64}

B64 is standard base64 (with padding) of a key's 32 raw bytes, KEY_ID the first 16 hex digits
of their sha256. The signature covers KEYSET_SIGNATURE_DOMAIN followed by the canonical JSON
(sorted keys, separators `,` `:`, ASCII) of every field but `signature`. The version must be
newer than the applied one (anti-rollback; an older one is refused before its signature is
looked at, the one applied last is a quiet no-op); revocation is cumulative and permanent: a revoked
key is never trusted again, whatever a later message lists. The result is persisted as
STATE_DIR/keys.json (atomically, `runtime.policy.atomic_write`) and overrides the configured
keys from then on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.constants import (
    KEY_ID_CHARS,
    KEYSET_FORMAT,
    KEYSET_SIGNATURE_DOMAIN,
    KEYSET_STATE_FORMAT,
    MAX_KEYS_MESSAGE_BYTES,
    MAX_REVOKED_KEYS,
    MAX_TRUSTED_KEYS,
    SIGNATURE_BYTES,
)
from runtime.policy import PolicyError
from runtime.updates import AlreadyRunning, Stale, UpdateRejected

RAW_KEY_BYTES = 32
MESSAGE_FIELDS = ("format", "keys", "revoked", "signature", "signer", "version")
STATE_FIELDS = ("format", "keys", "revoked", "sha256", "version")
KEY_FILE_SUFFIXES = (".pub", ".pem")  # what --trusted-keys-dir reads; other files are ignored
MAX_VERSION = 2**63 - 1


class RevokedKey(PolicyError):
    """A signature made by a key this device revoked."""


def key_id(raw: bytes) -> str:
    """A public key's id: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_CHARS]


def raw_public_bytes(public_key: Any) -> bytes:
    """The 32 raw bytes of an Ed25519 public key object."""
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _public_key(raw: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class KeySet:
    """The keys a device trusts (raw bytes, ordered by id), the ones it revoked, and the
    version and sha256 of the keys message that made it (0 and None: from the config)."""

    keys: tuple[bytes, ...]
    revoked: tuple[bytes, ...] = ()
    version: int = 0
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key set needs at least one key")
        if len(self.keys) > MAX_TRUSTED_KEYS:
            raise ValueError(f"{len(self.keys)} keys: a device trusts at most {MAX_TRUSTED_KEYS}")
        if any(len(raw) != RAW_KEY_BYTES for raw in (*self.keys, *self.revoked)):
            raise ValueError("an Ed25519 public key is 32 raw bytes")

    @property
    def ids(self) -> list[str]:
        return [key_id(raw) for raw in self.keys]

    @property
    def revoked_ids(self) -> list[str]:
        return [key_id(raw) for raw in self.revoked]

    def signer_of(self, signature: bytes, message: bytes) -> str:
        """The id of the trusted key that made `signature` over `message`; PolicyError naming
        a revoked key that made it, or saying that no trusted key did."""
        for raw in self.keys:
            if _verifies(raw, signature, message):
                return key_id(raw)
        for raw in self.revoked:
            if _verifies(raw, signature, message):
                raise RevokedKey(f"signed by revoked key {key_id(raw)} (refused from now on)")
        if len(self.keys) == 1:  # the message devices with one key have always given
            raise PolicyError("signature does not match the policy and the public key")
        raise PolicyError(
            f"signature does not match the policy and any of the {len(self.keys)} trusted keys"
        )


def _verifies(raw: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        _public_key(raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _unique(raws: list[bytes]) -> tuple[bytes, ...]:
    """Deduplicated, ordered by key id (so a set has one canonical order)."""
    return tuple(sorted(set(raws), key=key_id))


def keys_in_directory(directory: str | os.PathLike) -> list[bytes]:
    """The raw bytes of every `*.pub` / `*.pem` public key in `directory`; PolicyError naming
    the first file that is not one (a private key, an RSA key, junk)."""
    from runtime.signing import load_public_key

    directory = Path(directory)
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix in KEY_FILE_SUFFIXES)
    except OSError as error:
        raise PolicyError(
            f"trusted keys directory {directory}: cannot read: {error.strerror or error}"
        ) from None
    if not names:
        raise PolicyError(f"trusted keys directory {directory}: no *.pub or *.pem key in it")
    return [raw_public_bytes(load_public_key(path)) for path in names]


def configured_keyset(public_key: str | None, keys_dir: str | None) -> KeySet | None:
    """The key set of the configuration (version 0), or None when it names no key."""
    from runtime.signing import load_public_key

    raws = [raw_public_bytes(load_public_key(public_key))] if public_key else []
    if keys_dir:
        raws += keys_in_directory(keys_dir)
    if not raws:
        return None
    keys = _unique(raws)
    if len(keys) > MAX_TRUSTED_KEYS:
        raise PolicyError(f"{len(keys)} trusted keys configured: at most {MAX_TRUSTED_KEYS}")
    return KeySet(keys)


def as_keyset(public_key: Any) -> KeySet | None:
    """A KeySet as it is, an Ed25519 public key as a set of one, None as None."""
    if public_key is None or isinstance(public_key, KeySet):
        return public_key
    return KeySet((raw_public_bytes(public_key),))


def trusted_keyset(config: Any) -> KeySet | None:
    """What a `runtime.config.RuntimeConfig` trusts: the key set persisted in its state
    directory when the runtime uses one (`--broker` or `--state-dir`), else its keys."""
    from runtime.constants import STATE_KEYS_FILE

    configured = configured_keyset(config.public_key, config.trusted_keys_dir)
    if config.broker is None and config.state_dir is None:
        return configured
    from runtime.state import default_state_dir

    directory = Path(config.state_dir or default_state_dir())
    return read_keyset_state(directory / STATE_KEYS_FILE) or configured


# --- the keys message -------------------------------------------------------------------


def signed_keyset_bytes(body: dict[str, Any]) -> bytes:
    """What a keys message's signature covers: the domain tag, then the canonical JSON of
    every field but `signature`."""
    fields = {name: value for name, value in body.items() if name != "signature"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return KEYSET_SIGNATURE_DOMAIN + canonical.encode("ascii")


def make_keys_message(
    version: int, keys: list[bytes], revoked: list[bytes], private_key: Any
) -> bytes:
    """A signed keys message (UTF-8 JSON, one field per line); ValueError naming a bad value."""
    trusted, gone = _unique(keys), _unique(revoked)
    both = set(trusted) & set(gone)
    if both:
        raise ValueError(f"key {key_id(min(both, key=key_id))} is both trusted and revoked")
    KeySet(trusted, gone, version)  # the same limits as the device's
    if not (isinstance(version, int) and 1 <= version <= MAX_VERSION):
        raise ValueError(f"version must be an integer in 1..{MAX_VERSION}, got {version!r}")
    if len(gone) > MAX_REVOKED_KEYS:
        raise ValueError(f"{len(gone)} revoked keys: at most {MAX_REVOKED_KEYS}")
    body: dict[str, Any] = {
        "format": KEYSET_FORMAT,
        "version": version,
        "keys": [b64(raw) for raw in trusted],
        "revoked": [b64(raw) for raw in gone],
        "signer": key_id(raw_public_bytes(private_key.public_key())),
    }
    body["signature"] = b64(private_key.sign(signed_keyset_bytes(body)))
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("ascii")


@dataclass(frozen=True)
class KeysMessage:
    """A keys message that is well formed (not yet checked against any key)."""

    version: int
    keys: tuple[bytes, ...]
    revoked: tuple[bytes, ...]
    signer: str
    signature: bytes
    signed: bytes  # signed_keyset_bytes of it
    sha256: str  # of the payload bytes


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_key(text: Any, where: str, size: int = RAW_KEY_BYTES) -> bytes:
    if not isinstance(text, str):
        raise PolicyError(f"{where} must be a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise PolicyError(f"{where} is not base64: {text[:60]!r}") from None
    if len(raw) != size:
        raise PolicyError(f"{where} holds {len(raw)} bytes, expected {size}")
    return raw


def _key_list(value: Any, name: str, limit: int) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise PolicyError(f"{name} must be a list of base64 keys, got {type(value).__name__}")
    if len(value) > limit:
        raise PolicyError(f"{name} lists {len(value)} keys, at most {limit}")
    raws = [_decode_key(text, f"{name}[{index}]") for index, text in enumerate(value)]
    if len(set(raws)) != len(raws):
        duplicate = next(raw for raw in raws if raws.count(raw) > 1)
        raise PolicyError(f"{name} lists key {key_id(duplicate)} twice")
    return tuple(raws)


def parse_keys_message(data: bytes) -> KeysMessage:
    """The message's fields, checked for form only; PolicyError naming what is wrong."""
    if not data:
        raise PolicyError("empty keys message")
    if len(data) > MAX_KEYS_MESSAGE_BYTES:
        raise PolicyError(f"keys message is {len(data)} bytes, more than {MAX_KEYS_MESSAGE_BYTES}")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise PolicyError(f"keys message is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise PolicyError("keys message must be a JSON object")
    if sorted(body) != sorted(MESSAGE_FIELDS):
        raise PolicyError(
            f"keys message fields are {sorted(body)}, expected {', '.join(MESSAGE_FIELDS)}"
        )
    if body["format"] != KEYSET_FORMAT:
        raise PolicyError(f"keys message format is {body['format']!r}, expected {KEYSET_FORMAT!r}")
    version = body["version"]
    if not (isinstance(version, int) and not isinstance(version, bool)) or not (
        1 <= version <= MAX_VERSION
    ):
        raise PolicyError(f"keys message version must be an integer in 1..2**63-1, got {version!r}")
    keys = _key_list(body["keys"], "keys", MAX_TRUSTED_KEYS)
    revoked = _key_list(body["revoked"], "revoked", MAX_REVOKED_KEYS)
    both = set(keys) & set(revoked)
    if both:
        raise PolicyError(f"key {key_id(min(both))} is both in keys and in revoked")
    signer = body["signer"]
    if not (isinstance(signer, str) and re.fullmatch(f"[0-9a-f]{{{KEY_ID_CHARS}}}", signer)):
        raise PolicyError(f"keys message signer must be a key id of 16 hex digits, got {signer!r}")
    signature = _decode_key(body["signature"], "signature", SIGNATURE_BYTES)
    return KeysMessage(
        version,
        keys,
        revoked,
        signer,
        signature,
        signed_keyset_bytes(body),
        hashlib.sha256(data).hexdigest(),
    )


def apply_keys_message(data: bytes, current: KeySet | None) -> KeySet:
    """The key set a keys message makes of `current`, or UpdateRejected (Stale for an old
    version) with one line saying why; AlreadyRunning when it is the one applied last."""
    try:
        message = parse_keys_message(data)
    except PolicyError as error:
        raise UpdateRejected(str(error)) from None
    version = message.version
    if current is None:
        raise UpdateRejected("this device trusts no key: it cannot check a keys message", version)
    # the version first: a replayed or retained old message is old news (Stale, quiet when
    # retained) whoever signed it, and the one applied last (same bytes) is a no-op
    if message.sha256 == current.sha256:
        raise AlreadyRunning()
    if version < current.version:
        raise Stale(
            f"keys version {version} is not newer than version {current.version} (anti-rollback)",
            version,
        )
    if version == current.version:
        raise UpdateRejected(
            f"keys version {version} is already applied with other content", version
        )
    if message.signer in current.revoked_ids:
        raise UpdateRejected(f"keys message signed by revoked key {message.signer}", version)
    by_id = dict(zip(current.ids, current.keys, strict=True))
    if message.signer not in by_id:
        raise UpdateRejected(
            f"keys message signer {message.signer} is not a trusted key of this device"
            f" (trusted: {', '.join(current.ids)})",
            version,
        )
    if not _verifies(by_id[message.signer], message.signature, message.signed):
        raise UpdateRejected(
            f"signature check failed: the keys message does not match signer {message.signer}",
            version,
        )
    return _successor(message, current)


def _successor(message: KeysMessage, current: KeySet) -> KeySet:
    if not message.keys:
        raise UpdateRejected(
            "the new key set is empty: the device would trust no key", message.version
        )
    revoked = _unique([*current.revoked, *message.revoked])
    again = [raw for raw in message.keys if raw in revoked]
    if again:
        raise UpdateRejected(
            f"key {key_id(again[0])} was revoked on this device and is never trusted again",
            message.version,
        )
    if len(revoked) > MAX_REVOKED_KEYS:
        raise UpdateRejected(
            f"{len(revoked)} revoked keys in all: a device remembers at most {MAX_REVOKED_KEYS}",
            message.version,
        )
    return KeySet(_unique(list(message.keys)), revoked, message.version, message.sha256)


# --- STATE_DIR/keys.json -------------------------------------------------------------------


def keyset_state_bytes(keyset: KeySet) -> bytes:
    """The persisted form of an applied key set."""
    body = {
        "format": KEYSET_STATE_FORMAT,
        "version": keyset.version,
        "keys": [b64(raw) for raw in keyset.keys],
        "revoked": [b64(raw) for raw in keyset.revoked],
        "sha256": keyset.sha256,
    }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("ascii")


def read_keyset_state(path: Path) -> KeySet | None:
    """The persisted key set, None when there is none; PolicyError naming the file when it
    is damaged (never a silent fallback: the configured keys may include revoked ones)."""
    if not os.path.lexists(path):
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        if not isinstance(body, dict) or sorted(body) != sorted(STATE_FIELDS):
            raise PolicyError(f"expected the fields {', '.join(STATE_FIELDS)}")
        if body["format"] != KEYSET_STATE_FORMAT:
            raise PolicyError(f"format {body['format']!r}")
        version, sha256 = body["version"], body["sha256"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise PolicyError(f"version {version!r}")
        if not (isinstance(sha256, str) and re.fullmatch("[0-9a-f]{64}", sha256)):
            raise PolicyError(f"sha256 {sha256!r}")
        keys = _key_list(body["keys"], "keys", MAX_TRUSTED_KEYS)
        revoked = _key_list(body["revoked"], "revoked", MAX_REVOKED_KEYS)
        return KeySet(_unique(list(keys)), _unique(list(revoked)), version, sha256)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, PolicyError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise PolicyError(
            f"trusted key set {path} is damaged ({text}): restore it from a backup, or delete"
            " it to trust the configured keys again (they may include revoked ones)"
        ) from None
