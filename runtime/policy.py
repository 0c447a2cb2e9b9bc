"""The policy: one forward pass and one weight-file format, shared by trainer, exporter and device.

    h = relu(W1 @ obs)              W1: (hidden, 4), no biases
    p(right) = sigmoid(W2 . h)      W2: (hidden,)

`policy.npz` is a plain, uncompressed NumPy zip archive with the entries `W1.npy` (float32),
`W2.npy` (float32), `meta.npy` (0-d unicode array holding UTF-8 JSON) and optionally
`signature.npy` (uint8, 64 bytes of Ed25519, see `signed_bytes`). The bytes are reproducible:
fixed entry order and zip timestamps, so the same weights and meta give the same file.

Every file or payload is untrusted until `parse_policy` has checked it, cheapest check first:
size, zip structure (stored entries, declared sizes, exact key set), array headers (no pickles,
declared shape against the bytes present), dtypes and shapes, finite values, then meta fields.
"""

from __future__ import annotations

import binascii
import datetime as dt
import errno
import functools
import io
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.constants import (
    ALLOWED_KEYS,
    DEFAULT_MAX_POLICY_BYTES,
    ENV_ID,
    FORMAT_NAME,
    FORMAT_VERSION,
    KEY_META,
    KEY_SIGNATURE,
    KEY_W1,
    KEY_W2,
    MAX_HIDDEN,
    MAX_META_BYTES,
    META_FIELDS,
    OBS_DIM,
    REQUIRED_KEYS,
    SIGNATURE_BYTES,
    SIGNATURE_DOMAIN,
)

Params = dict[str, np.ndarray]
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp: keeps the bytes reproducible
# The zip records a policy.npz is read through (PKWARE APPNOTE.TXT, sections 4.3.7, 4.3.12,
# 4.3.16), little-endian, each followed by its variable-length fields
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... name length, extra length
ZIP_CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")  # ... name, extra, comment lengths ... offset
ZIP_END_RECORD = struct.Struct("<4s4H2LH")  # ... entries, directory size and offset, comment
ZIP_MAX_COMMENT = 0xFFFF
ZIP_MAX_ENTRIES = 16  # a policy.npz has 3 or 4
ZIP_ENCRYPTED, ZIP_UTF8_NAMES = 0x1, 0x800  # general purpose flag bits
ZIP_STORED = 0  # compression method: none
# The .npy header as np.lib.format.write_array writes it (every NumPy since 1.9), read with a
# regex: NumPy's reader runs ast.literal_eval, half the time of parsing a whole policy (README,
# Performance). Any other header goes to NumPy's reader, which decides.
NPY_V1_MAGIC = b"\x93NUMPY\x01\x00"
NPY_V1_HEADER_START = 10  # magic, version, u16le header length
NPY_MAX_HEADER = 10_000  # NumPy's own limit (max_header_size) before it refuses to parse
NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z][0-9]{0,5})', 'fortran_order': (False|True),"
    rb" 'shape': \(((?:[0-9]{1,18}, )*[0-9]{1,18},?|)\), \} *\n"
)


class PolicyError(ValueError):
    """A policy file or payload is unusable; the message says what is wrong."""


# --- the maths -----------------------------------------------------------------


def init_params(hidden: int, rng: np.random.Generator, obs_dim: int = OBS_DIM) -> Params:
    """Xavier-style initialisation: each weight ~ N(0, 1 / fan_in)."""
    if not isinstance(hidden, int) or not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"hidden must be an integer in 1..{MAX_HIDDEN}, got {hidden!r}")
    return {
        KEY_W1: rng.standard_normal((hidden, obs_dim)) / math.sqrt(obs_dim),
        KEY_W2: rng.standard_normal(hidden) / math.sqrt(hidden),
    }


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written with tanh so that no magnitude overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * logit))


def forward(params: Params, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p(action 1) and the hidden activations for one observation (4,) or a batch (N, 4)."""
    hidden = np.maximum(obs @ params[KEY_W1].T, 0.0)  # h = relu(W1 obs)
    return sigmoid(hidden @ params[KEY_W2]), hidden  # p = sigmoid(W2 . h)


def action_probability(params: Params, obs: np.ndarray) -> np.ndarray:
    """p(action 1 = push right) for one observation (4,) or a batch (N, 4)."""
    return forward(params, obs)[0]


# --- the file ------------------------------------------------------------------


# eq=False: compared by identity (`==` on the weight arrays has no single truth value), and
# two generated methods fewer to compile at start-up (README, Performance)
@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy: float32 weights, meta, optional signature, its file bytes and their
    sha256 (hex)."""

    params: Params = field(repr=False)
    meta: dict[str, Any]
    meta_json: str = field(repr=False)
    signature: bytes | None = field(repr=False)
    data: bytes = field(repr=False)  # the policy.npz bytes it was parsed from

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def hidden(self) -> int:
        return int(self.params[KEY_W1].shape[0])

    @functools.cached_property
    def sha256(self) -> str:
        """Computed on first use: a plain start never needs it, and hashlib loads OpenSSL
        (about 5 ms of start-up with NumPy 2; README, Performance)."""
        import hashlib

        return hashlib.sha256(self.data).hexdigest()


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def make_meta(
    *,
    hidden: int,
    version: int | None = None,
    train_seed: int | None = None,
    episodes: int = 0,
    eval_mean_return: float | None = None,
    env_id: str = ENV_ID,
    created: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Meta for a new policy; `version` defaults to the current time in seconds."""
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": int(now.timestamp()) if version is None else version,
        "hidden": hidden,
        "obs_dim": OBS_DIM,
        "env_id": env_id,
        "created": created or now.replace(microsecond=0).isoformat(),
        "train_seed": train_seed,
        "episodes": episodes,
        "eval_mean_return": eval_mean_return,
        **extra,
    }


def meta_to_json(meta: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, no spaces, so equal meta gives equal bytes."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)


def signed_bytes(meta_json: str, w1: np.ndarray, w2: np.ndarray) -> bytes:
    """The exact byte string an Ed25519 signature covers (documented in README).

    domain tag || u64le(len(meta)) || meta UTF-8 || for W1, W2 in order:
    name ASCII || 0x00 || u32le(ndim) || u64le(dim) per dim || float32 little-endian C-order data
    """
    meta_bytes = meta_json.encode("utf-8")
    parts = [SIGNATURE_DOMAIN, struct.pack("<Q", len(meta_bytes)), meta_bytes]
    for name, array in ((KEY_W1, w1), (KEY_W2, w2)):
        array = np.ascontiguousarray(array, dtype="<f4")
        parts += [name.encode("ascii"), b"\x00", struct.pack("<I", array.ndim)]
        parts += [struct.pack("<Q", dim) for dim in array.shape]
        parts.append(array.tobytes())
    return b"".join(parts)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def policy_bytes(params: Params, meta: dict[str, Any], signature: bytes | None = None) -> bytes:
    """The reproducible bytes of a policy.npz (stored entries, fixed timestamps)."""
    entries = {
        KEY_W1: np.asarray(params[KEY_W1], dtype="<f4"),
        KEY_W2: np.asarray(params[KEY_W2], dtype="<f4"),
        KEY_META: np.array(meta_to_json(meta)),
    }
    if signature is not None:
        entries[KEY_SIGNATURE] = np.frombuffer(signature, dtype=np.uint8)
    import zipfile  # imported here: reading needs no zipfile (start-up time, README, Performance)

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in entries.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, _npy_bytes(array))
    return out.getvalue()


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, fsync, rename over it, fsync the directory."""
    from pathlib import Path

    path = Path(path)
    _refuse_special_target(path)
    tmp = write_synced_temporary(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_synced_temporary(path: os.PathLike, data: bytes, mode: int) -> str:
    """A temporary file beside `path` holding `data`, fsync'd, with `mode`; returns its name."""
    import tempfile  # imported here: start-up time (README, Performance)
    from pathlib import Path

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make the names created or renamed in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_special_target(path: os.PathLike) -> None:
    """os.replace would put a regular file in place of a device node, a FIFO or a socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        raise FileExistsError(
            errno.EEXIST,
            "not a regular file (a device, a pipe or a socket): not replaced",
            str(path),
        )


def save_policy(
    path: str | os.PathLike,
    params: Params,
    meta: dict[str, Any],
    signature: bytes | None = None,
) -> Policy:
    """Validate, then write atomically; returns the policy as it will load."""
    data = policy_bytes(params, meta, signature)
    policy = parse_policy(data, obs_dim=int(meta.get("obs_dim", OBS_DIM)))
    atomic_write(path, data)
    return policy


def load_policy(
    path: str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_POLICY_BYTES,
    obs_dim: int = OBS_DIM,
) -> Policy:
    """Read and validate a policy.npz; every problem is a PolicyError naming the file."""
    path = os.fspath(path)  # not pathlib: it is start-up time on NumPy 2 (README, Performance)
    try:
        data = _read_regular_file(path, max_bytes)
    except PolicyError as error:
        raise PolicyError(f"{path}: {error}") from None
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PolicyError(f"{path}: is a directory, expected a policy.npz file") from None
    except OSError as error:
        raise PolicyError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return parse_policy(data, max_bytes=max_bytes, obs_dim=obs_dim)
    except PolicyError as error:
        raise PolicyError(f"{path}: {error}") from None


def _read_regular_file(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of a regular file: a FIFO would block and /dev/zero never ends."""
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(status.st_mode):
            raise PolicyError("not a regular file (a device or a pipe), expected a policy.npz")
        if status.st_size > max_bytes:
            raise PolicyError(f"{status.st_size} bytes, more than the limit of {max_bytes}")
        data = handle.read(max_bytes + 1)  # bounded even if the file grows meanwhile
    if len(data) > max_bytes:
        raise PolicyError(f"more than the limit of {max_bytes} bytes")
    return data


def parse_policy(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_POLICY_BYTES,
    obs_dim: int = OBS_DIM,
) -> Policy:
    """Validate the bytes of a policy.npz, cheapest check first, and return the Policy."""
    data = bytes(data)  # no copy when it is bytes already
    if len(data) == 0:
        raise PolicyError("empty policy (0 bytes)")
    if len(data) > max_bytes:
        raise PolicyError(f"policy is {len(data)} bytes, more than the limit of {max_bytes}")
    arrays = _read_archive(data, max_bytes)
    w1, w2 = arrays[KEY_W1], arrays[KEY_W2]
    _check_weights(w1, w2, obs_dim)
    meta_json = _meta_json(arrays[KEY_META])
    meta = _check_meta(meta_json, w1.shape[0], obs_dim)
    signature = _signature(arrays.get(KEY_SIGNATURE))
    return Policy(
        params={KEY_W1: w1, KEY_W2: w2},
        meta=meta,
        meta_json=meta_json,
        signature=signature,
        data=data,
    )


def _read_archive(data: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    try:
        entries, directory_offset = _zip_directory(data)
    except ValueError:
        raise PolicyError("not a policy.npz: not a readable zip archive") from None
    names = [entry[0] for entry in entries]
    if len(set(names)) != len(names):
        raise PolicyError(f"duplicate entries in archive: {sorted(names)}")
    keys = {name.removesuffix(".npy") for name in names}
    if not all(name.endswith(".npy") for name in names) or not (
        REQUIRED_KEYS <= keys <= ALLOWED_KEYS
    ):
        raise PolicyError(
            f"archive entries {sorted(keys)}, expected {sorted(REQUIRED_KEYS)}"
            f" and optionally {KEY_SIGNATURE!r}"
        )
    if any(method != ZIP_STORED for _, _, method, *_ in entries):
        raise PolicyError("archive entries must be stored uncompressed")
    declared = sum(size for *_, size, _, _ in entries)
    if declared > max_bytes or declared > len(data):
        raise PolicyError(f"archive declares {declared} bytes of entries, more than it holds")
    arrays = {}
    for entry in entries:
        name = entry[0]
        try:
            raw = _zip_entry(data, entry, directory_offset)
        except ValueError as error:
            raise PolicyError(f"entry {name} is corrupt: {error}") from None
        arrays[name.removesuffix(".npy")] = _read_npy(name, raw)
    return arrays


def _zip_directory(data: bytes) -> tuple[list[tuple], int]:
    """The entries of a zip archive's central directory, each (name, flags, compression
    method, CRC-32, size, stored size, local header offset), and the directory's offset.

    Read with `struct` rather than `zipfile`, whose import (shutil, bz2, lzma and more behind
    it) is start-up time on a board (README, Performance). Only what a policy.npz needs:
    one disk, no zip64; anything else or out of bounds is a ValueError.
    """
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - ZIP_END_RECORD.size - ZIP_MAX_COMMENT))
    if end < 0 or end + ZIP_END_RECORD.size > len(data):
        raise ValueError("no end of central directory record")
    _, disk, first_disk, on_disk, count, size, offset, _ = ZIP_END_RECORD.unpack_from(data, end)
    if disk != 0 or first_disk != 0 or on_disk != count:
        raise ValueError("a multi-disk archive")
    if count > ZIP_MAX_ENTRIES or offset + size > end:
        raise ValueError("central directory out of bounds")
    entries, position, directory_end = [], offset, offset + size
    for _ in range(count):
        if position + ZIP_CENTRAL_HEADER.size > directory_end:
            raise ValueError("central directory out of bounds")
        fields = ZIP_CENTRAL_HEADER.unpack_from(data, position)
        (signature, _, _, flags, method, _, _, crc, stored_size, file_size, name_length,
         extra_length, comment_length, _, _, _, local_offset) = fields  # fmt: skip
        if signature != b"PK\x01\x02":
            raise ValueError("bad central directory signature")
        name_start = position + ZIP_CENTRAL_HEADER.size
        raw_name = data[name_start : name_start + name_length]
        name = raw_name.decode("utf-8" if flags & ZIP_UTF8_NAMES else "ascii", "replace")
        entry = (name, flags, method, crc, file_size, stored_size, local_offset)
        entries.append(entry)
        position = name_start + name_length + extra_length + comment_length
        if position > directory_end:
            raise ValueError("central directory out of bounds")
    return entries, offset


def _zip_entry(data: bytes, entry: tuple, limit: int) -> bytes:
    """The bytes of one stored entry, checked against its local header and CRC-32; entries lie
    before the central directory (`limit`). The messages are zipfile's."""
    name, flags, _, crc, file_size, stored_size, offset = entry
    if flags & ZIP_ENCRYPTED:
        raise ValueError(f"File {name!r} is encrypted")
    if stored_size != file_size:
        raise ValueError(f"stored size {stored_size} differs from its size {file_size}")
    if offset + ZIP_LOCAL_HEADER.size > limit:
        raise ValueError("local header out of bounds")
    header = ZIP_LOCAL_HEADER.unpack_from(data, offset)
    if header[0] != b"PK\x03\x04":
        raise ValueError("Bad magic number for file header")
    name_start = offset + ZIP_LOCAL_HEADER.size
    name_length, extra_length = header[9], header[10]
    if data[name_start : name_start + name_length] != name.encode("utf-8"):
        raise ValueError(f"File name in directory {name!r} and header differ")
    start = name_start + name_length + extra_length
    if start + file_size > limit:
        raise ValueError("data out of bounds")
    raw = data[start : start + file_size]
    if binascii.crc32(raw) != crc:
        raise ValueError(f"Bad CRC-32 for file {name!r}")
    return raw


def _read_npy(name: str, raw: bytes) -> np.ndarray:
    """Parse one .npy entry without trusting its header: no pickles, shape must match bytes."""
    try:
        shape, fortran_order, dtype, offset = _npy_header(raw)
    except Exception as error:  # noqa: BLE001 - NumPy's header reader on untrusted bytes can
        # raise more than ValueError/SyntaxError (tokenize.TokenError on a damaged header)
        raise PolicyError(f"entry {name} is not a valid .npy array: {error}") from None
    if dtype.hasobject:
        raise PolicyError(f"entry {name} holds Python objects (pickled data is refused)")
    if len(shape) > 2 or any(dim < 0 for dim in shape):
        raise PolicyError(f"entry {name} has an unexpected shape {shape}")
    payload = raw[offset:]
    expected = math.prod(shape) * dtype.itemsize
    if len(payload) != expected:
        raise PolicyError(
            f"entry {name} declares shape {shape} of {dtype} ({expected} bytes)"
            f" but holds {len(payload)} bytes"
        )
    order = "F" if fortran_order else "C"
    return np.frombuffer(payload, dtype=dtype).reshape(shape, order=order).copy()


def _npy_header(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of a .npy entry (the header untrusted)."""
    end = NPY_V1_HEADER_START + int.from_bytes(raw[8:NPY_V1_HEADER_START], "little")
    if raw[:8] == NPY_V1_MAGIC and end - NPY_V1_HEADER_START <= NPY_MAX_HEADER:
        match = NPY_HEADER.fullmatch(raw, NPY_V1_HEADER_START, end)
        if match is not None:
            descr, fortran_order, dims = match.groups()
            shape = tuple(int(dim) for dim in dims.split(b",") if dim)
            return shape, fortran_order == b"True", np.dtype(descr.decode("ascii")), end
    buffer = io.BytesIO(raw)
    version = np.lib.format.read_magic(buffer)
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran_order, dtype = read_header(buffer)
    return shape, fortran_order, dtype, buffer.tell()


def _check_weights(w1: np.ndarray, w2: np.ndarray, obs_dim: int) -> None:
    for name, array in ((KEY_W1, w1), (KEY_W2, w2)):
        if array.dtype != np.float32:
            raise PolicyError(f"{name} has dtype {array.dtype}, expected float32")
    if w1.ndim != 2 or w1.shape[1] != obs_dim or not 1 <= w1.shape[0] <= MAX_HIDDEN:
        raise PolicyError(
            f"W1 has shape {w1.shape}, expected (hidden, {obs_dim}) with hidden in 1..{MAX_HIDDEN}"
        )
    if w2.shape != (w1.shape[0],):
        raise PolicyError(f"W2 has shape {w2.shape}, expected ({w1.shape[0]},) to match W1")
    for name, array in ((KEY_W1, w1), (KEY_W2, w2)):
        if not np.all(np.isfinite(array)):
            raise PolicyError(f"{name} holds non-finite values (NaN or inf)")


def _meta_json(array: np.ndarray) -> str:
    if array.shape != () or array.dtype.kind != "U":
        raise PolicyError(
            f"meta must be a 0-d unicode array, got {array.dtype} shape {array.shape}"
        )
    text = str(array[()])
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # UTF-32 in the .npy can hold what UTF-8 cannot
        raise PolicyError("meta is not valid Unicode text (a lone surrogate)") from None
    if size > MAX_META_BYTES:
        raise PolicyError(f"meta is larger than {MAX_META_BYTES} bytes")
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(text: str, hidden: int, obs_dim: int) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise PolicyError(f"meta is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"meta must be a JSON object, got {type(meta).__name__}")
    missing = [name for name in META_FIELDS if name not in meta]
    if missing:
        raise PolicyError(f"meta is missing {', '.join(missing)}")
    if meta["format"] != FORMAT_NAME:
        raise PolicyError(f"meta.format is {meta['format']!r}, expected {FORMAT_NAME!r}")
    if meta["format_version"] != FORMAT_VERSION or not _is_int(meta["format_version"]):
        raise PolicyError(
            f"meta.format_version is {meta['format_version']!r}, this runtime reads {FORMAT_VERSION}"
        )
    if not _is_int(meta["version"]) or meta["version"] <= 0:
        raise PolicyError(f"meta.version must be a positive integer, got {meta['version']!r}")
    if meta["hidden"] != hidden or not _is_int(meta["hidden"]):
        raise PolicyError(f"meta.hidden is {meta['hidden']!r} but W1 has {hidden} rows")
    if meta["obs_dim"] != obs_dim or not _is_int(meta["obs_dim"]):
        raise PolicyError(f"meta.obs_dim is {meta['obs_dim']!r}, the plant needs {obs_dim}")
    if not isinstance(meta["env_id"], str):
        raise PolicyError(f"meta.env_id must be a string, got {meta['env_id']!r}")
    try:
        dt.datetime.fromisoformat(str(meta["created"]))
    except ValueError:
        raise PolicyError(f"meta.created is not an ISO 8601 time: {meta['created']!r}") from None
    for name in ("train_seed", "episodes"):
        if meta.get(name) is not None and not _is_int(meta[name]):
            raise PolicyError(f"meta.{name} must be an integer or null, got {meta[name]!r}")
    score = meta.get("eval_mean_return")
    if score is not None and (not isinstance(score, (int, float)) or not math.isfinite(score)):
        raise PolicyError(f"meta.eval_mean_return must be a finite number or null, got {score!r}")
    return meta


def _signature(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    if array.dtype != np.uint8 or array.shape != (SIGNATURE_BYTES,):
        raise PolicyError(
            f"signature has dtype {array.dtype} shape {array.shape}, expected uint8 ({SIGNATURE_BYTES},)"
        )
    return array.tobytes()
