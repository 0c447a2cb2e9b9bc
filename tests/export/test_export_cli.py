"""The command line: dispatch, bad input (one line, exit 2, nothing written), parity failure
(exit 1, nothing written) and the gcc-missing warning."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import export.cli as cli
import export.parity as parity
from export.cli import main
from runtime.policy import init_params, load_policy, make_meta, policy_bytes


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def wrong_shape_policy() -> bytes:
    """A policy.npz whose W2 does not match W1."""
    good = policy_bytes(init_params(4, np.random.default_rng(0)), make_meta(hidden=4, version=1))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "W2.npy":
                buffer = io.BytesIO()
                np.save(buffer, np.zeros(3, dtype=np.float32))
                data = buffer.getvalue()
            dst.writestr(info, data)
    return out.getvalue()


def nan_policy() -> bytes:
    params = init_params(4, np.random.default_rng(0))
    params["W2"][1] = np.nan
    return policy_bytes(params, make_meta(hidden=4, version=1))


def ec_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


BAD_INPUTS = {
    # name: (files to create relative to tmp, argv after substitution, expected words)
    "missing run dir": ({}, ["{tmp}/nowhere", "--all"], "no such run directory"),
    "run dir without policy": ({"run/notes.txt": b"x"}, ["{tmp}/run"], "no policy.npz"),
    "corrupt policy": ({"run/policy.npz": b"PK\x03\x04 garbage"}, ["{tmp}/run"], "not a"),
    "truncated policy": ("truncated", ["{tmp}/run", "--all"], "policy.npz"),
    "wrong shape": ({"run/policy.npz": wrong_shape_policy()}, ["{tmp}/run"], "W2 has shape"),
    "nan weights": ({"run/policy.npz": nan_policy()}, ["{tmp}/run", "--c"], "non-finite"),
    "version zero": ("good", ["{tmp}/run", "--version", "0"], "positive integer"),
    "version negative": ("good", ["{tmp}/run", "--version", "-4"], "positive integer"),
    "version text": ("good", ["{tmp}/run", "--version", "seven"], "positive integer"),
    "version float": ("good", ["{tmp}/run", "--version", "2.5"], "positive integer"),
    "missing key": ("good", ["{tmp}/run", "--all", "--sign", "{tmp}/no.key"], "cannot read"),
    "garbage key": ("garbage key", ["{tmp}/run", "--sign", "{tmp}/k.key"], "not a PEM"),
    "public key to sign": (
        "good",
        ["{tmp}/run", "--sign", "{tmp}/keys/signing.pub"],
        "public key",
    ),
    "wrong key type": ("ec key", ["{tmp}/run", "--sign", "{tmp}/k.key"], "expected Ed25519"),
    "out is a file": ("good", ["{tmp}/run", "--out", "{tmp}/run/policy.npz"], "not a directory"),
    "unknown flag": ("good", ["{tmp}/run", "--onx"], "unrecognized arguments"),
    "no source": ({}, [], "RUN_DIR_OR_POLICY"),
    "keygen over a key": ({}, ["keygen", "--out", "{tmp}/keys"], "already exists"),
    "keygen without out": ({}, ["keygen"], "--out"),
    "verify missing file": (
        "public key",
        ["verify", "{tmp}/no.npz", "--public-key", "{tmp}/keys/signing.pub"],
        "cannot read",
    ),
    "verify bad public key": (
        "good",
        ["verify", "{tmp}/run/policy.npz", "--public-key", "{tmp}/run/policy.npz"],
        "not a PEM",
    ),
}


@pytest.fixture
def setup_case(tmp_path: Path, make_run, keys):
    def setup(files) -> None:
        if files in ("good", "truncated", "garbage key", "ec key"):
            make_run(tmp_path / "run")
        if files == "truncated":
            policy = tmp_path / "run" / "policy.npz"
            policy.write_bytes(policy.read_bytes()[:-40])
        if files == "garbage key":
            (tmp_path / "k.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
        if files == "ec key":
            (tmp_path / "k.key").write_bytes(ec_key_pem())
        for name, data in (files if isinstance(files, dict) else {}).items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)

    return setup


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str, tmp_path: Path, setup_case, capsys
) -> None:
    files, argv, words = BAD_INPUTS[case]
    setup_case(files)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert words in captured.err and "Traceback" not in captured.err
    assert snapshot(tmp_path) == before  # no partial artifacts, nothing changed


def test_parity_failure_exits_1_and_leaves_no_artifacts(run_dir: Path, monkeypatch, capsys):
    assert main([str(run_dir), "--onnx"]) == 0  # an earlier, good export stays as it was
    before = snapshot(run_dir)
    truth = parity.reference_probabilities
    monkeypatch.setattr(
        parity, "reference_probabilities", lambda params, obs: truth(params, obs) + 1e-3
    )
    capsys.readouterr()
    assert main([str(run_dir), "--all", "--version", "9"]) == 1
    err = capsys.readouterr().err
    assert "parity" in err and err.count("\n") == 1
    assert snapshot(run_dir) == before


def test_parity_failure_in_a_new_directory_removes_it(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(parity, "reference_probabilities", lambda params, obs: obs[:, 0] * 0 + 2)
    assert main([str(run_dir), "--c", "--out", str(run_dir / "new")]) == 1
    assert not (run_dir / "new").exists()


def test_out_where_the_file_system_refuses_is_one_line_exit_2(
    run_dir: Path, monkeypatch, capsys
) -> None:
    import export.build as build

    def refused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(1, "Operation not permitted")  # as /sys does even for root

    monkeypatch.setattr(build.tempfile, "mkdtemp", refused)
    before = snapshot(run_dir)
    assert main([str(run_dir), "--all", "--out", str(run_dir / "new")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to" in err and "Traceback" not in err
    assert snapshot(run_dir) == before and not (run_dir / "new").exists()


def test_missing_gcc_is_a_warning_line(run_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(parity, "gcc_path", lambda: None)
    assert main([str(run_dir), "--c"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "gcc" in err
    assert (run_dir / "dist" / "policy.h").exists()


def test_help_and_subcommand_registration(run_dir: Path, monkeypatch, capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "keygen" in out and "verify" in out and "--onnx" in out
    calls = []
    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", ("json:dumps", "test"))
    monkeypatch.setattr("json.dumps", lambda argv: calls.append(argv) or 0)
    assert main(["hello", "x", "--y"]) == 0 and calls == [["x", "--y"]]


def test_the_design_command_works_in_a_subprocess(run_dir: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "export", str(run_dir), "--onnx"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / "dist" / "policy.onnx").exists()


def test_a_missing_optional_package_is_one_line_and_leaves_nothing(
    run_dir: Path, monkeypatch, capsys
) -> None:
    import sys

    before = snapshot(run_dir)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    assert main([str(run_dir), "--onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime" in err and "not installed" in err
    assert snapshot(run_dir) == before


def test_header_names_the_source_when_the_export_changed_the_bytes(run_dir: Path) -> None:
    from runtime.policy import load_policy

    source = load_policy(run_dir / "policy.npz")
    assert main([str(run_dir), "--c", "--version", "31"]) == 0
    exported = load_policy(run_dir / "dist" / "policy.npz")
    header = (run_dir / "dist" / "policy.h").read_text()
    assert exported.sha256 != source.sha256
    assert f"policy.npz sha256: {exported.sha256}" in header
    assert f"exported from policy.npz sha256: {source.sha256}" in header
    assert "policy version: 31" in header


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "out",
    [
        lambda run: run,  # the run directory itself
        lambda run: run / ".",
        lambda run: run / "dist" / "..",
        lambda run: run.parent / "link",  # a symlink to it
    ],
)
def test_out_holding_the_source_is_refused_and_the_source_kept(
    run_dir: Path, capsys, out, keys
) -> None:
    (run_dir.parent / "link").symlink_to(run_dir)
    before = digest(run_dir / "policy.npz")
    code = main(
        [
            str(run_dir),
            "--all",
            "--version",
            "99",
            "--sign",
            str(keys[0]),
            "--out",
            str(out(run_dir)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "holds the source" in err, err
    assert digest(run_dir / "policy.npz") == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["policy.npz"]


def test_a_policy_file_exported_into_its_own_directory_is_refused(run_dir: Path, capsys) -> None:
    assert main([str(run_dir), "--version", "3"]) == 0
    dist = run_dir / "dist"
    before = {p.name: digest(p) for p in dist.iterdir()}
    assert main([str(dist / "policy.npz"), "--version", "4", "--out", str(dist)]) == 2
    assert "holds the source" in capsys.readouterr().err
    assert {p.name: digest(p) for p in dist.iterdir()} == before


def test_a_differently_named_source_may_share_the_output_directory(run_dir: Path) -> None:
    renamed = run_dir / "trained.npz"
    (run_dir / "policy.npz").rename(renamed)
    before = digest(renamed)
    assert main([str(renamed), "--out", str(run_dir)]) == 0
    assert digest(renamed) == before and (run_dir / "policy.npz").is_file()


@pytest.mark.parametrize("version", ["5_0", "٥", "１２", "+5", "0x10", "5 5", "²"])
def test_version_must_be_plain_decimal_digits(run_dir: Path, capsys, version: str) -> None:
    assert main([str(run_dir), "--version", version]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a positive integer" in err
    assert not (run_dir / "dist").exists()


@pytest.mark.parametrize(("version", "expected"), [("42", 42), (" 7 ", 7), ("007", 7)])
def test_version_in_decimal_is_taken(run_dir: Path, version: str, expected: int) -> None:
    assert main([str(run_dir), "--version", version]) == 0
    assert load_policy(run_dir / "dist" / "policy.npz").version == expected


def special_files(tmp_path: Path) -> list[Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [fifo, Path("/dev/zero"), Path("/dev/null")]


def test_a_fifo_or_device_as_source_is_refused_not_read(tmp_path: Path, capsys) -> None:
    """A FIFO blocked export forever and /dev/zero (size 0 to stat) was read without end."""
    for path in special_files(tmp_path):
        assert main([str(path), "--c", "--out", str(tmp_path / "out")]) == 2
        assert "not a regular file" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "policy.npz")
    assert main([str(run), "--onnx"]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (run / "dist").exists()


def test_a_fifo_or_device_as_key_or_verified_file_is_refused(
    tmp_path: Path, run_dir: Path, keys, capsys
) -> None:
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    signed = run_dir / "dist" / "policy.npz"
    capsys.readouterr()
    for path in special_files(tmp_path):
        for argv in (
            [str(run_dir), "--sign", str(path), "--out", str(tmp_path / "out")],
            ["verify", str(path), "--public-key", str(keys[1])],
            ["verify", str(signed), "--public-key", str(path)],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "not a regular file" in err, (argv, err)
    assert main(["verify", str(run_dir), "--public-key", str(keys[1])]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["verify", str(signed), "--public-key", str(keys[1])]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["{run}", "--out", ""],
        ["", "--c"],
        ["{run}", "--sign", " "],
        ["keygen", "--out", ""],
        ["verify", "", "--public-key", "{run}/policy.npz"],
        ["verify", "{run}/policy.npz", "--public-key", ""],
    ],
)
def test_an_empty_path_is_refused_not_taken_as_the_current_directory(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys, argv: list[str]
) -> None:
    """`--out "$OUT"` with OUT unset wrote into the current directory (keygen: its keys)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main([arg.format(run=run_dir) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a path" in err, err
    assert list(cwd.iterdir()) == [] and not (run_dir / "dist").exists()


@pytest.mark.parametrize("name", ["policy.npz", "policy.onnx", "policy.h", "manifest.json"])
def test_a_directory_where_an_artifact_goes_is_refused_before_any_rename(
    run_dir: Path, tmp_path: Path, capsys, name: str
) -> None:
    """policy.npz was replaced, then the rename onto the directory failed: a new policy.npz
    beside the old manifest, and 'no artifacts written' on stderr."""
    out = tmp_path / "out"
    assert main([str(run_dir), "--version", "1", "--out", str(out)]) == 0
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    before = {p.name: (digest(p) if p.is_file() else "dir") for p in out.iterdir()}
    capsys.readouterr()
    assert main([str(run_dir), "--version", "2", "--all", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a file" in err, err
    assert {p.name: (digest(p) if p.is_file() else "dir") for p in out.iterdir()} == before


def test_a_newline_in_a_file_name_cannot_split_the_one_line(
    run_dir: Path, tmp_path: Path, keys, capsys
) -> None:
    assert main([str(tmp_path / "no\nsuch"), "--c"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no\\nsuch" in err, err
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    odd = tmp_path / "odd\nname.npz"
    odd.write_bytes((run_dir / "dist" / "policy.npz").read_bytes())
    capsys.readouterr()
    assert main(["verify", str(odd), "--public-key", str(keys[1])]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("VALID: ") and "odd\\nname" in out, out


class FullStdout:
    """A stdout like /dev/full: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("command", ["export", "verify", "keygen", "help"])
def test_a_full_stdout_is_one_warning_and_the_commands_own_exit_code(
    run_dir: Path, tmp_path: Path, keys, monkeypatch, capsys, command: str
) -> None:
    """print() raised: a traceback and exit 1, for verify even on a VALID signature."""
    assert main([str(run_dir), "--sign", str(keys[0])]) == 0
    argv = {
        "export": [str(run_dir), "--c", "--out", str(tmp_path / "out")],
        "verify": ["verify", str(run_dir / "dist" / "policy.npz"), "--public-key", str(keys[1])],
        "keygen": ["keygen", "--out", str(tmp_path / "more-keys")],
        "help": ["--help"],
    }[command]
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", FullStdout())
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err == "warning: cannot write to stdout: No space left on device\n", err


def test_a_failed_export_removes_every_directory_it_made(
    run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Only the deepest --out directory was removed: --out new/a/b left new/ and new/a/."""
    import export.build as build

    def disagree(*args, **kwargs):
        return build.ParityReport(observations=1, c=1.0, c_action_mismatches=1)

    monkeypatch.setattr(build, "check_parity", disagree)
    (tmp_path / "kept").mkdir()
    assert main([str(run_dir), "--c", "--out", str(tmp_path / "kept" / "new" / "a" / "b")]) == 1
    assert "parity check failed" in capsys.readouterr().err
    assert list((tmp_path / "kept").iterdir()) == []
