"""Ed25519 verification of a policy's signature: all a device needs is the public key.

The signature covers `runtime.policy.signed_bytes(meta_json, W1, W2)` for format 1 and
`runtime.policy.signed_bytes_v2(meta_json, params)` for format 2 (`signed_message` picks by the
policy's format), and a signed file must be byte for byte the canonical encoding
(`runtime.policy.policy_bytes`) of its content.
`cryptography` is imported only here, so a device without signed updates never loads it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from runtime.constants import MAX_KEY_FILE_BYTES
from runtime.policy import Policy, PolicyError, policy_bytes, signed_message


def load_public_key(path: str | os.PathLike) -> Any:
    """An Ed25519 public key from a PEM file or a file of 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)  # a 3 GB "key" is not read whole
    except OSError as error:
        raise PolicyError(f"public key {path}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise PolicyError(
            f"public key {path}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key file"
        )
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    if b"PRIVATE KEY-----" in data:  # the signing key itself: never copy it to a device
        raise PolicyError(
            f"public key {path}: this is a private key; give the public one (signing.pub)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise PolicyError(f"public key {path}: not a PEM or raw 32-byte Ed25519 key") from None
    if not isinstance(key, Ed25519PublicKey):
        kind = type(key).__name__.lstrip("_")  # cryptography 38 names it _RSAPublicKey
        raise PolicyError(f"public key {path}: a {kind}, expected Ed25519")
    return key


def verify_policy(policy: Policy, public_key: Any) -> None:
    """Raise PolicyError unless the policy carries a valid signature from `public_key`, an
    Ed25519 public key or a `runtime.keyset.KeySet` (any of its trusted keys; a revoked key's
    signature is refused, naming the key)."""
    from cryptography.exceptions import InvalidSignature

    from runtime.keyset import KeySet

    if policy.signature is None:
        raise PolicyError("policy is unsigned")
    message = signed_message(policy.meta_json, policy.params, policy.format_version)
    if isinstance(public_key, KeySet):
        public_key.signer_of(policy.signature, message)
    else:
        try:
            public_key.verify(policy.signature, message)
        except InvalidSignature:
            raise PolicyError("signature does not match the policy and the public key") from None
    # The signature covers the content, not the zip around it (timestamps, header fields):
    # the file must be exactly the canonical encoding of what was signed, so that a changed
    # byte anywhere is refused.
    canonical = policy_bytes(policy.params, policy.meta, policy.signature)
    if hashlib.sha256(canonical).hexdigest() != policy.sha256:
        raise PolicyError("policy bytes are not the canonical encoding of the signed content")
