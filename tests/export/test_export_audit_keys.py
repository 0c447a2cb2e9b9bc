"""Audit of issue 3 (keys): a PEM file holding the private key and its public key signs."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.cli import main


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
