"""Every bad policy or key: one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.policy import make_meta, policy_bytes, signed_bytes

ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

GAINS = np.array([0.5, 1.0, 10.0, 2.0], dtype=np.float32)
PARAMS = {"W1": np.stack([GAINS, -GAINS]), "W2": np.array([1.0, -1.0], dtype=np.float32)}
META = make_meta(hidden=2, version=5)


def sign(params, meta, key) -> bytes:
    from runtime.policy import meta_to_json

    return key.sign(signed_bytes(meta_to_json(meta), params["W1"], params["W2"]))


def npz_with(entries: dict[str, np.ndarray], allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, array in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return out.getvalue()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in ("good", "other"):
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (tmp_path / f"{name}.pub").write_bytes(pem)
        paths[name] = tmp_path / f"{name}.pub"
        paths[name + "_private"] = private
    return paths


def run(tmp_path: Path, data: bytes | None, capsys, *extra: str) -> tuple[int, str]:
    path = tmp_path / "policy.npz"
    if data is not None:
        path.write_bytes(data)
    code = main(["--policy", str(path), "--episodes", "1", "--hz", "0", *extra], environ={})
    err = capsys.readouterr().err
    return code, err


GOOD = policy_bytes(PARAMS, META)
NAN_PARAMS = {"W1": PARAMS["W1"].copy(), "W2": PARAMS["W2"]}
NAN_PARAMS["W1"][0, 2] = np.nan
BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": (b"", "empty policy"),
    "truncated": (GOOD[: len(GOOD) // 2], "not a readable zip archive"),
    "not a zip": (b"#!/bin/sh\necho hello\n" * 10, "not a readable zip archive"),
    "pickled": (
        npz_with(
            {"W1": np.array([object()], dtype=object), "W2": PARAMS["W2"], "meta": np.array("{}")},
            allow_pickle=True,
        ),
        "pickled data is refused",
    ),
    "NaN": (policy_bytes(NAN_PARAMS, META), "W1 holds non-finite values"),
    "wrong shape": (
        policy_bytes({"W1": np.ones((2, 3), np.float32), "W2": PARAMS["W2"]}, META),
        "W1 has shape (2, 3), expected (hidden, 4)",
    ),
    "wrong W2": (
        policy_bytes({"W1": PARAMS["W1"], "W2": np.ones(3, np.float32)}, META),
        "W2 has shape (3,)",
    ),
    "missing key": (npz_with({"W1": PARAMS["W1"], "W2": PARAMS["W2"]}), "archive entries"),
    "lone surrogate in meta": (  # UTF-32 in the .npy holds it, UTF-8 cannot
        npz_with({"W1": PARAMS["W1"], "W2": PARAMS["W2"], "meta": np.array('{"notes": "\ud800"}')}),
        "meta is not valid Unicode text",
    ),
    "wrong dtype": (
        npz_with(
            {"W1": PARAMS["W1"].astype(np.float64), "W2": PARAMS["W2"], "meta": np.array("{}")}
        ),
        "W1 has dtype float64, expected float32",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_policy_files(tmp_path: Path, capsys, case: str) -> None:
    data, message = BAD_FILES[case]
    code, err = run(tmp_path, data, capsys)
    assert code == 2, err
    assert message in err and "policy.npz" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_directory_instead_of_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "policy.npz").mkdir()
    code, err = run(tmp_path, None, capsys)
    assert code == 2 and "is a directory" in err


def test_oversize_file(tmp_path: Path, capsys) -> None:
    code, err = run(tmp_path, GOOD, capsys, "--max-policy-bytes", "100")
    assert code == 2 and "more than the limit of 100" in err


def test_signed_policy_runs_with_its_key(tmp_path: Path, capsys, keys) -> None:
    data = policy_bytes(PARAMS, META, sign(PARAMS, META, keys["good_private"]))
    code, err = run(tmp_path, data, capsys, "--public-key", str(keys["good"]))
    assert code == 0, err
    assert "unsigned" not in err


@pytest.mark.parametrize("case", ["unsigned", "other key", "flipped signature", "changed weights"])
def test_badly_signed_policies_are_refused(tmp_path: Path, capsys, keys, case: str) -> None:
    signature = sign(PARAMS, META, keys["good_private"])
    params = PARAMS
    if case == "unsigned":
        signature = None
    elif case == "other key":
        signature = sign(PARAMS, META, keys["other_private"])
    elif case == "flipped signature":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    else:
        params = {"W1": PARAMS["W1"] * 1.5, "W2": PARAMS["W2"]}
    code, err = run(
        tmp_path, policy_bytes(params, META, signature), capsys, "--public-key", str(keys["good"])
    )
    assert code == 2, err
    assert "refused" in err and ("unsigned" in err or "signature does not match" in err)
    assert len(err.strip().splitlines()) == 1


def test_bad_public_key_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.pub").write_text("not a key")
    code, err = run(tmp_path, GOOD, capsys, "--public-key", str(tmp_path / "bad.pub"))
    assert code == 2 and "not a PEM or raw 32-byte Ed25519 key" in err
    code, err = run(tmp_path, GOOD, capsys, "--public-key", str(tmp_path / "absent.pub"))
    assert code == 2 and "cannot read" in err


def test_unsigned_policy_starts_with_a_warning(tmp_path: Path, capsys, caplog) -> None:
    code, _ = run(tmp_path, GOOD, capsys)
    assert code == 0
    assert any("unsigned" in record.getMessage() for record in caplog.records)


def test_public_key_without_cryptography_is_one_line_exit_2(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A board without the device extra: a clear line, not an ImportError."""
    for name in [name for name in sys.modules if name.split(".")[0] == "cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    (tmp_path / "fleet.pub").write_bytes(bytes(32))
    code, err = run(tmp_path, GOOD, capsys, "--public-key", str(tmp_path / "fleet.pub"))
    assert code == 2
    assert "needs the cryptography package" in err and len(err.strip().splitlines()) == 1


def test_a_device_or_a_pipe_instead_of_a_file(tmp_path: Path, capsys) -> None:
    """/dev/zero would be read forever and a FIFO would block: refused before opening."""
    os.mkfifo(tmp_path / "fifo")
    for path in ("/dev/zero", str(tmp_path / "fifo")):
        assert main(["--policy", path, "--episodes", "1"], environ={}) == 2
        err = capsys.readouterr().err
        assert "not a regular file" in err and len(err.strip().splitlines()) == 1
        (tmp_path / "policy.npz").write_bytes(GOOD)
        for flag in ("--public-key", "--config"):
            args = ["--policy", str(tmp_path / "policy.npz"), flag, path, "--episodes", "1"]
            assert main(args, environ={}) == 2
            err = capsys.readouterr().err
            assert "not a regular file" in err and len(err.strip().splitlines()) == 1


def test_password_on_the_command_line_is_refused_without_echoing_it(tmp_path, capsys) -> None:
    # argparse would take --password as an abbreviation of --password-file and print the value
    for argv in (["--password", "hunter2"], ["--password=hunter2"], ["--password"]):
        code, err = run(tmp_path, GOOD, capsys, "--broker", "mqtt://127.0.0.1:1", *argv)
        assert code == 2 and "--password is not accepted" in err and "hunter2" not in err


def test_load_policy_refuses_devices_and_pipes_without_reading_them(tmp_path: Path) -> None:
    # the CLI refuses them first; load_policy itself must too (trainer eval, export, agent)
    from runtime.policy import PolicyError, load_policy

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo):  # /dev/zero never ends; a FIFO with no writer blocks
        with pytest.raises(PolicyError, match="not a regular file"):
            load_policy(path)


def test_a_huge_public_key_file_is_refused_without_reading_it(tmp_path, capsys) -> None:
    big = tmp_path / "big.pub"
    with open(big, "wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: 3 GB that would all be read
    code, err = run(tmp_path, GOOD, capsys, "--public-key", str(big))
    assert code == 2 and "not a key file" in err and "MemoryError" not in err
