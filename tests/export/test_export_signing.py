"""Ed25519: keygen, signing at export, `verify`, and that any changed byte is refused."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from export.keys import generate_keypair, load_private_key, sign
from runtime.policy import (
    PolicyError,
    init_params,
    load_policy,
    make_meta,
    meta_to_json,
    parse_policy,
    policy_bytes,
    signed_bytes,
)
from runtime.signing import load_public_key, verify_policy


def test_keygen_writes_a_private_pem_0600_and_a_public_key(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    private, public = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    key = load_private_key(private)
    message = b"any message"
    load_public_key(public).verify(key.sign(message), message)
    assert "signing.key" in capsys.readouterr().out


def test_keygen_refuses_to_overwrite(keys, capsys) -> None:
    private, _ = keys
    before = private.read_bytes()
    capsys.readouterr()
    assert main(["keygen", "--out", str(private.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert private.read_bytes() == before


def test_signed_export_verifies(run_dir: Path, keys, capsys) -> None:
    key, pub = keys
    assert main([str(run_dir), "--sign", str(key)]) == 0
    capsys.readouterr()
    assert main(["verify", str(run_dir / "dist" / "policy.npz"), "--public-key", str(pub)]) == 0
    out = capsys.readouterr().out
    policy = load_policy(run_dir / "dist" / "policy.npz")
    assert out.startswith("VALID") and "version 7" in out and policy.sha256 in out
    verify_policy(policy, load_public_key(pub))  # the device's check agrees


def test_signature_is_over_the_documented_bytes(run_dir: Path, keys) -> None:
    key, pub = keys
    assert main([str(run_dir), "--sign", str(key), "--version", "99"]) == 0
    policy = load_policy(run_dir / "dist" / "policy.npz")
    assert policy.version == 99 and policy.meta_json == meta_to_json(policy.meta)
    message = signed_bytes(policy.meta_json, policy.params["W1"], policy.params["W2"])
    load_public_key(pub).verify(policy.signature, message)


def test_unsigned_and_other_key_are_refused(run_dir: Path, keys, tmp_path: Path, capsys) -> None:
    key, _ = keys
    _, other_pub = generate_keypair(tmp_path / "other")
    assert main(["verify", str(run_dir / "policy.npz"), "--public-key", str(other_pub)]) == 1
    assert "unsigned" in capsys.readouterr().out
    assert main([str(run_dir), "--sign", str(key)]) == 0
    signed = run_dir / "dist" / "policy.npz"
    capsys.readouterr()
    assert main(["verify", str(signed), "--public-key", str(other_pub)]) == 1
    assert capsys.readouterr().out.startswith("INVALID")
    with pytest.raises(PolicyError):
        verify_policy(load_policy(signed), load_public_key(other_pub))


def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path, keys, capsys) -> None:
    key, pub = keys
    params = init_params(1, np.random.default_rng(5))  # small: every offset is checked
    meta = make_meta(hidden=1, version=3, created="2026-01-01T00:00:00+00:00")
    private = load_private_key(key)
    signature = sign(private, meta_to_json(meta), params["W1"], params["W2"])
    data = policy_bytes(params, meta, signature)
    public = load_public_key(pub)
    verify_policy(parse_policy(data), public)
    target = tmp_path / "tampered.npz"
    cli_offsets = range(0, len(data), 8)  # the CLI and the file loader on a dense sample
    for offset in range(len(data)):
        tampered = bytearray(data)
        tampered[offset] ^= 0x01  # the smallest change: one bit
        with pytest.raises(PolicyError):  # the device's path: parse, then the signature
            verify_policy(parse_policy(bytes(tampered)), public)
        if offset in cli_offsets:
            tampered[offset] ^= 0xFF
            target.write_bytes(bytes(tampered))
            with pytest.raises(PolicyError):
                verify_policy(load_policy(target), public)
            assert main(["verify", str(target), "--public-key", str(pub)]) == 1, offset
    assert capsys.readouterr().out.count("INVALID") == len(cli_offsets)


def test_new_version_drops_a_stale_signature_and_same_meta_keeps_it(
    run_dir: Path, keys, tmp_path: Path, capsys
) -> None:
    key, pub = keys
    assert main([str(run_dir), "--sign", str(key)]) == 0
    signed = run_dir / "dist" / "policy.npz"
    assert main([str(signed), "--out", str(tmp_path / "same")]) == 0  # same meta: still signed
    assert (tmp_path / "same" / "policy.npz").read_bytes() == signed.read_bytes()
    capsys.readouterr()
    assert main([str(signed), "--out", str(tmp_path / "bumped"), "--version", "8"]) == 0
    assert "signature" in capsys.readouterr().err
    bumped = load_policy(tmp_path / "bumped" / "policy.npz")
    assert bumped.version == 8 and bumped.signature is None


def test_an_independent_verifier_from_the_readme_definition_agrees(run_dir: Path, keys) -> None:
    """The README's signed-bytes definition, implemented without runtime/ or export/."""
    import struct

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key, pub = keys
    assert main([str(run_dir), "--sign", str(key), "--version", "12"]) == 0
    npz = np.load(run_dir / "dist" / "policy.npz")
    meta = str(npz["meta"]).encode("utf-8")
    message = b"reinforce-edge/policy-signature/v1\x00" + struct.pack("<Q", len(meta)) + meta
    for name in ("W1", "W2"):
        array = np.ascontiguousarray(npz[name], dtype="<f4")
        message += name.encode() + b"\x00" + struct.pack("<I", array.ndim)
        message += b"".join(struct.pack("<Q", d) for d in array.shape) + array.tobytes()
    load_pem_public_key(pub.read_bytes()).verify(npz["signature"].tobytes(), message)
