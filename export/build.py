"""`python -m export RUN_DIR_OR_POLICY`: write the policy's artifacts, each proven equal to it.

Flow: load and validate the source policy -> set the version, sign -> render every artifact
in memory -> write them into a staging directory beside the output -> check parity on the
staged files -> write manifest.json -> rename each into place. Any error before the renames
removes the staging directory, so no partial artifact is ever left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from export.c_header import render_header
from export.console import Failure, InputError, Parser, path_arg, positive_int, say
from export.keys import load_private_key, sign_policy
from export.onnx_graph import build_onnx, onnx_interface
from export.parity import ParityReport, check_parity
from runtime.constants import (
    C_HEADER_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ONNX_FILE,
    POLICY_FILE,
)
from runtime.interrupts import signals_held, terminate_as_interrupt
from runtime.policy import (
    Policy,
    PolicyError,
    atomic_write,
    fsync_directory,
    load_policy,
    meta_to_json,
    parse_policy,
    policy_bytes,
)
from runtime.signing import verify_policy

log = logging.getLogger(__name__)

TOOL_NAME = "reinforce-edge export"
DIST_DIR = "dist"


def tool_version() -> str:
    try:
        return metadata.version("reinforce-edge")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ExportConfig:
    """What to export and where; every field is also a command-line flag."""

    source: Path = field(metadata={"help": "a run directory holding policy.npz, or a policy.npz"})
    out: Path | None = field(
        default=None, metadata={"help": "output directory (default: RUN_DIR/dist)"}
    )
    onnx: bool = field(default=False, metadata={"help": "also write policy.onnx"})
    c: bool = field(default=False, metadata={"help": "also write policy.h (C99)"})
    sign_key: Path | None = field(
        default=None, metadata={"help": "Ed25519 private key (PEM) to sign policy.npz with"}
    )
    version: int | None = field(
        default=None, metadata={"help": "set meta.version to this positive integer"}
    )

    def __post_init__(self) -> None:
        if self.version is not None and (
            not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1
        ):
            raise ValueError(f"version must be a positive integer, got {self.version!r}")


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    policy: Policy
    files: list[Path]
    parity: ParityReport
    manifest: dict[str, Any]


def export_policy(config: ExportConfig) -> ExportResult:
    """Write the artifacts of `config`; InputError for bad input, Failure for parity."""
    policy_path, default_out = resolve_source(config.source)
    out_dir = Path(config.out) if config.out is not None else default_out
    refuse_overwriting_source(policy_path, out_dir)
    try:
        source = load_policy(policy_path)
    except PolicyError as error:
        raise InputError(str(error)) from None
    private_key = load_private_key(config.sign_key) if config.sign_key is not None else None
    policy = exported_policy(source, config.version, private_key)
    artifacts = render_artifacts(policy, config.onnx, config.c, source.sha256)
    return write_artifacts(out_dir, source, policy, artifacts)


def resolve_source(source: Path) -> tuple[Path, Path]:
    """(the policy.npz to read, the default output directory) for a run dir or a file."""
    source = Path(source)
    if source.is_dir():
        policy_path = source / POLICY_FILE
        if not policy_path.exists():
            raise InputError(f"{source}: no {POLICY_FILE} in this run directory")
        _require_regular_file(policy_path)
        return policy_path, source / DIST_DIR
    if not source.exists():
        raise InputError(f"{source}: no such run directory or policy file")
    _require_regular_file(source)
    return source, source.parent / DIST_DIR


def _require_regular_file(path: Path) -> None:
    """A FIFO would block the read forever and /dev/zero never ends (its size reads as 0)."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise InputError(f"{path}: not a regular file, expected a policy.npz file")


def refuse_overwriting_source(policy_path: Path, out_dir: Path) -> None:
    """The export must leave its input as it was: --out cannot be the source's directory."""
    target = out_dir / POLICY_FILE
    try:  # the same file also through a symlink or another spelling of the path
        same = os.path.samefile(target, policy_path)
    except OSError:  # e.g. RUN/new/..: the path goes through a directory not made yet
        same = os.path.realpath(target) == os.path.realpath(policy_path)
    if same:
        raise InputError(
            f"--out {out_dir} holds the source {policy_path}, which the export would replace;"
            " choose another output directory"
        )


def exported_policy(source: Policy, version: int | None, private_key: Any | None) -> Policy:
    """The policy to ship: `source` with its new version, signed when a key is given."""
    meta = dict(source.meta)
    if version is not None:
        meta["version"] = version
    meta_json = meta_to_json(meta)
    if private_key is not None:
        signature = sign_policy(private_key, meta_json, source.params, source.format_version)
    elif source.signature is not None and meta_json == source.meta_json:
        signature = source.signature  # same content: the source's signature still covers it
    else:
        if source.signature is not None:
            log.warning(
                "warning: the source's signature does not cover the new meta and is dropped;"
                " pass --sign KEY to sign the export"
            )
        signature = None
    policy = parse_policy(policy_bytes(source.params, meta, signature))
    if private_key is not None:
        verify_policy(policy, private_key.public_key())  # the signature we just made checks out
    return policy


def render_artifacts(
    policy: Policy, onnx: bool, c: bool, source_sha256: str | None = None
) -> dict[str, bytes]:
    """File name -> bytes, in the order they are written (policy.npz first)."""
    artifacts = {POLICY_FILE: policy_bytes(policy.params, policy.meta, policy.signature)}
    assert hashlib.sha256(artifacts[POLICY_FILE]).hexdigest() == policy.sha256
    if onnx:
        artifacts[ONNX_FILE] = build_onnx(policy, tool_version())
    if c:
        header = render_header(policy, tool_version(), source_sha256=source_sha256)
        artifacts[C_HEADER_FILE] = header.encode("ascii")
    return artifacts


def write_artifacts(
    out_dir: Path, source: Policy, policy: Policy, artifacts: dict[str, bytes]
) -> ExportResult:
    """Stage, check parity on the staged files, write the manifest, then rename into place."""
    created = _make_out_dir(out_dir)
    _refuse_non_files(out_dir, [*artifacts, MANIFEST_FILE])
    try:  # the real test of writability: os.access says yes to root where writes are refused
        staging = Path(tempfile.mkdtemp(prefix=".export-staging-", dir=out_dir))
    except OSError as error:
        _discard(None, created)
        raise InputError(f"cannot write to {out_dir}: {error.strerror or error}") from None
    try:
        for name, data in artifacts.items():
            atomic_write(staging / name, data)
        parity = staged_parity(staging, policy, artifacts)
        problems = parity.failures()
        if problems:
            raise Failure(
                f"parity check failed on {parity.observations} observations: "
                f"{'; '.join(problems)}; no artifacts written"
            )
        notes = parity.float_variant_notes()
        if notes:
            log.warning(
                "warning: policy.h with POLICY_ACCUMULATOR float (not the default): %s",
                "; ".join(notes),
            )
        manifest = make_manifest(source, policy, artifacts, parity)
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(staging / MANIFEST_FILE, manifest_bytes)
        files = [out_dir / name for name in [*artifacts, MANIFEST_FILE]]
        with signals_held() as caught:  # Ctrl-C or SIGTERM takes effect after the last rename
            for path in files:
                os.replace(staging / path.name, path)
        if caught:
            raise KeyboardInterrupt
        fsync_directory(out_dir)
    except OSError as error:
        _discard(staging, created)
        raise Failure(
            f"cannot write to {out_dir}: {error.strerror or error}; no artifacts written"
        ) from None
    except BaseException:
        _discard(staging, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    _remove_stale(out_dir, artifacts)
    return ExportResult(out_dir, policy, files, parity, manifest)


def staged_parity(staging: Path, policy: Policy, artifacts: dict[str, bytes]) -> ParityReport:
    """Read the staged files back and compare each with the policy's forward pass."""
    staged = load_policy(staging / POLICY_FILE)
    for key in sorted(set(staged.params) | set(policy.params)):  # format 2: up to 7 arrays
        if not np.array_equal(staged.params.get(key), policy.params.get(key)):
            raise Failure(f"{POLICY_FILE} read back with different {key}; no artifacts written")
    onnx_model = (staging / ONNX_FILE).read_bytes() if ONNX_FILE in artifacts else None
    header = (staging / C_HEADER_FILE).read_text() if C_HEADER_FILE in artifacts else None
    spec = None if staged.format_version == FORMAT_VERSION else staged.spec  # None: format 1
    if spec is not None and onnx_model is None and header is None:  # policy.npz alone
        return ParityReport(observations=0)
    try:
        return check_parity(staged.params, onnx_model=onnx_model, header=header, spec=spec)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as error:
        raise Failure(f"parity check could not run: {error}; no artifacts written") from None


def make_manifest(
    source: Policy, policy: Policy, artifacts: dict[str, bytes], parity: ParityReport
) -> dict[str, Any]:
    """The manifest; format 2's also names its format and head and, with policy.onnx, the
    graph's input and outputs (format 1's is as it always was)."""
    manifest = {
        "tool": TOOL_NAME,
        "tool_version": tool_version(),
        "policy_version": policy.version,
        "hidden": policy.hidden,
        "signed": policy.signature is not None,
        "source_sha256": source.sha256,
        "artifacts": [
            {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in artifacts.items()
        ],
        "parity": parity.as_dict(),
    }
    if policy.format_version == FORMAT_VERSION:
        return manifest
    manifest.update(format_version=policy.format_version, head=policy.spec.head)
    if ONNX_FILE in artifacts:
        obs, outputs = onnx_interface(policy.spec)
        manifest["onnx"] = {
            "input": obs.as_dict(),
            "outputs": [output.as_dict() for output in outputs],
        }
    return manifest


def _make_out_dir(out_dir: Path) -> list[Path]:
    """Create the output directory and its missing parents; the ones made, deepest first."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    missing, path = [], out_dir
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        _discard(None, missing)
        raise InputError(f"cannot write to {out_dir}: {error.strerror or error}") from None
    return missing


def _refuse_non_files(out_dir: Path, names: list[str]) -> None:
    """A directory where an artifact goes would fail its rename after the others were done."""
    for name in names:
        path = out_dir / name
        if os.path.lexists(path) and not path.is_symlink() and not path.is_file():
            raise InputError(f"{path} exists and is not a file; move it away and export again")


def _discard(staging: Path | None, created: list[Path]) -> None:
    """Remove the staging directory and the directories made for this export (if empty)."""
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    for directory in created:  # deepest first; rmdir refuses one that is not empty
        with contextlib.suppress(OSError):
            directory.rmdir()


def _remove_stale(out_dir: Path, artifacts: dict[str, bytes]) -> None:
    """An artifact from an earlier export that this one did not make would not match it."""
    for name in (ONNX_FILE, C_HEADER_FILE):
        stale = out_dir / name
        if name not in artifacts and stale.is_file():
            stale.unlink()
            log.warning("warning: removed %s from an earlier export (not part of this one)", stale)


def main(argv: list[str]) -> int:
    """The default command: `python -m export RUN_DIR_OR_POLICY [flags]`."""
    config = parse_args(argv)
    with terminate_as_interrupt():
        result = export_policy(config)
    print_summary(result)
    return 0


def parse_args(argv: list[str]) -> ExportConfig:
    args = build_parser().parse_args(argv)
    return ExportConfig(
        source=args.source,
        out=args.out,
        onnx=args.onnx or args.all,
        c=args.c or args.all,
        sign_key=args.sign_key,
        version=args.version,
    )


def build_parser() -> Parser:
    """The default command's parser (also what the docs' CLI reference is generated from)."""
    helps = {
        name: spec.metadata["help"] for name, spec in ExportConfig.__dataclass_fields__.items()
    }
    parser = Parser(
        prog="python -m export",
        description="Export a trained policy: policy.npz (optionally signed), policy.onnx, "
        "policy.h and manifest.json, each checked against the NumPy forward pass.",
        epilog="Exit codes: 0 ok, 1 parity or writing failed, 2 bad usage or input, "
        "130 interrupted.",
    )
    parser.add_argument("source", metavar="RUN_DIR_OR_POLICY", type=path_arg, help=helps["source"])
    parser.add_argument("--out", type=path_arg, metavar="DIR", help=helps["out"])
    parser.add_argument("--onnx", action="store_true", help=helps["onnx"])
    parser.add_argument("--c", action="store_true", help=helps["c"])
    parser.add_argument("--all", action="store_true", help="--onnx and --c")
    parser.add_argument(
        "--sign", type=path_arg, metavar="KEY", dest="sign_key", help=helps["sign_key"]
    )
    parser.add_argument("--version", type=positive_int, metavar="N", help=helps["version"])
    return parser


def print_summary(result: ExportResult) -> None:
    policy, parity = result.policy, result.parity
    signed = "signed" if policy.signature is not None else "unsigned"
    say(
        f"exported policy version {policy.version} (hidden {policy.hidden}, {signed})"
        f" to {result.out_dir}"
    )
    for entry in result.manifest["artifacts"]:
        say(f"  {entry['file']:<12} {entry['size']:>8} bytes  sha256 {entry['sha256']}")
    say(f"  {MANIFEST_FILE}")
    if any(path.name == ONNX_FILE for path in result.files):
        spec = None if policy.format_version == FORMAT_VERSION else policy.spec
        obs, outputs = onnx_interface(spec)
        say(f"{ONNX_FILE}: {obs.describe()} -> {', '.join(out.describe() for out in outputs)}")
    if parity.onnx_outputs is not None:
        say_onnx_parity(parity)
    checks = []
    if parity.onnxruntime is not None and parity.onnx_outputs is None:
        checks.append(
            f"onnxruntime {parity.onnxruntime:.2g}, onnx.reference {parity.reference:.2g}"
        )
    if parity.c is not None and parity.c_accumulator is not None:  # format 2: scaled error
        checks.append(
            f"C ({parity.c_accumulator} sums) {parity.c:.2g} of 1 + sum |terms|"
            f" ({parity.c_action_mismatches} action mismatches)"
        )
    elif parity.c is not None:
        checks.append(f"C {parity.c:.2g} ({parity.c_action_mismatches} action mismatches)")
        if parity.c_float is not None:
            checks.append(f"C float accumulator {parity.c_float:.2g}")
    elif parity.c_skipped:
        checks.append(f"C skipped ({parity.c_skipped})")
    if checks:
        say(f"parity, max abs error on {parity.observations} observations: {', '.join(checks)}")


def say_onnx_parity(parity: ParityReport) -> None:
    """Format 2's ONNX parity, a line per evaluator: each output's worst error, or on how
    many of the observations off the decision boundary a discrete action differs."""
    for evaluator, errors in parity.onnx_outputs.items():
        parts = []
        for key, value in errors.items():
            if key == "action_mismatches":
                parts.append(f"action differs on {value} of {parity.onnx_actions_compared}")
            else:
                parts.append(f"{key.removesuffix('_max_error')} max error {value:.2g}")
        say(f"parity on {parity.observations} observations, {evaluator}: {', '.join(parts)}")
