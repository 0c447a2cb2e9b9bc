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


@pytest.mark.parametrize("private_first", [True, False])
def test_a_pem_with_both_keys_signs(
    run_dir: Path, tmp_path: Path, keys, capsys, private_first: bool
) -> None:
    """It was refused as 'is a public key' because the file also held a PUBLIC KEY block."""
    private, public = (path.read_bytes() for path in keys)
    both = tmp_path / "both.pem"
    both.write_bytes(private + public if private_first else public + private)
    both.chmod(0o600)
    assert main([str(run_dir), "--sign", str(both)]) == 0
    signed = run_dir / "dist" / "policy.npz"
    assert main(["verify", str(signed), "--public-key", str(keys[1])]) == 0
    assert "VALID" in capsys.readouterr().out


def test_a_public_key_alone_is_still_refused_for_signing(run_dir: Path, keys, capsys) -> None:
    assert main([str(run_dir), "--sign", str(keys[1])]) == 2
    assert "is a public key" in capsys.readouterr().err


def test_keygen_never_replaces_a_key_that_appears_while_it_runs(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The existence check came first and the write renamed over the name: a key made by a
    concurrent keygen in between was overwritten (its public key no longer matched)."""
    import export.keys as keys_module

    out = tmp_path / "keys"
    out.mkdir()
    real_write = keys_module.write_new

    def racing_write(path: Path, data: bytes, mode: int) -> None:
        if path.name == "signing.pub":
            path.write_bytes(b"the other keygen's public key")
        real_write(path, data, mode)

    monkeypatch.setattr(keys_module, "write_new", racing_write)
    assert main(["keygen", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["signing.pub"]  # ours removed, theirs kept
    assert (out / "signing.pub").read_bytes() == b"the other keygen's public key"


def test_keygen_files_and_modes(tmp_path: Path) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["signing.key", "signing.pub"]
    assert (tmp_path / "k" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "signing.pub").stat().st_mode & 0o777 == 0o644


def test_keygen_without_hard_links_still_writes_and_refuses(tmp_path: Path, monkeypatch) -> None:
    """FAT and some network file systems refuse link(): keygen falls back to O_EXCL."""
    import os

    from export.keys import generate_keypair, load_private_key

    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    private, public = generate_keypair(tmp_path / "k")
    assert private.stat().st_mode & 0o777 == 0o600
    assert load_private_key(private).public_key() is not None
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["signing.key", "signing.pub"]
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 2


def test_a_huge_key_file_is_refused_before_it_is_read(
    run_dir: Path, tmp_path: Path, keys, capsys
) -> None:
    """A 3 GB file as --sign or --public-key was read whole: MemoryError traceback, exit 1."""
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as handle:  # sparse: no disk used
        handle.truncate(3 * 1024**3)
    huge.chmod(0o600)
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    signed = run_dir / "dist" / "policy.npz"
    capsys.readouterr()
    for argv in (
        [str(run_dir), "--sign", str(huge), "--out", str(tmp_path / "out")],
        ["verify", str(signed), "--public-key", str(huge)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "too large for a key file" in err, err
    assert not (tmp_path / "out").exists()


def test_an_openssh_key_is_named_as_such(run_dir: Path, tmp_path: Path, capsys) -> None:
    """ssh-keygen -t ed25519 is what many users have: say what it is and what to do."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    ssh_key.chmod(0o600)
    assert main([str(run_dir), "--sign", str(ssh_key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "an OpenSSH key" in err and "keygen" in err, err


def test_another_key_type_is_named_plainly(run_dir: Path, tmp_path: Path, capsys) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_file = tmp_path / "ec.pem"
    key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    assert main([str(run_dir), "--sign", str(key_file)]) == 2
    err = capsys.readouterr().err
    assert "ECPrivateKey, expected Ed25519" in err and " a _" not in err, err
