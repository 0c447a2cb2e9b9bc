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
