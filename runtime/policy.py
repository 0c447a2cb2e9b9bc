"""The policy: one forward pass and one weight-file format, shared by trainer, exporter and device.

Format 1 (every CartPole policy; what devices run):

    h = relu(W1 @ obs)              W1: (hidden, 4), no biases
    p(right) = sigmoid(W2 . h)      W2: (hidden,)

Format 2 (meta.format_version 2): still one hidden layer, with optional biases and observation
normaliser, and the hidden activation and the output head named in meta (`PolicySpec`):

    x = clip((obs - obs_mean) / obs_std, -10, 10)   only with obs_mean and obs_std (obs_dim,)
    h = act(W1 @ x + b1)            act relu or tanh; W1 (hidden, obs_dim), b1 (hidden,)
    bernoulli:   p(action 1) = sigmoid(W2 . h + b2[0])     W2 (hidden,), b2 (1,)
    categorical: probs = softmax(W2 @ h + b2)              W2 (n, hidden), b2 (n,), n >= 2
    gaussian:    mean = W2 @ h + b2, std = exp(log_std)    W2 (k, hidden), b2 (k,), log_std (k,)

A multi-output W2 is (outputs, hidden), as W1 is (outputs, inputs). b1 and b2, and obs_mean
with obs_std, are each optional; log_std is there exactly for a gaussian head. Greedy actions:
1 when p > 0.5, the argmax, the mean clipped to meta's action_low..action_high.

`policy.npz` is a plain, uncompressed NumPy zip archive with the entries `W1.npy` (float32),
`W2.npy` (float32), format 2's optional float32 arrays (in the order of
`constants.ARRAY_KEYS_V2`), `meta.npy` (0-d unicode array holding UTF-8 JSON) and optionally
`signature.npy` (uint8, 64 bytes of Ed25519, see `signed_bytes` and `signed_bytes_v2`). The
bytes are reproducible: fixed entry order and zip timestamps, so the same content gives the
same file.

Every file or payload is untrusted until `parse_policy` has checked it, cheapest check first:
size, zip structure (stored entries, declared sizes, known keys), array headers (no pickles,
declared shape against the bytes present), then format 1: its exact key set, dtypes and
shapes, finite values, meta fields; format 2: meta fields first (they say which entries and
shapes are valid), then the entry set, dtypes, shapes, finite values and obs_std > 0.
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
    ACTIVATIONS,
    ALLOWED_KEYS,
    ALLOWED_KEYS_V2,
    ARRAY_KEYS_V2,
    DEFAULT_MAX_POLICY_BYTES,
    ENV_ID,
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMAT_VERSION_2,
    FORMAT_VERSIONS,
    HEAD_BERNOULLI,
    HEAD_CATEGORICAL,
    HEAD_GAUSSIAN,
    HEADS,
    KEY_B1,
    KEY_B2,
    KEY_LOG_STD,
    KEY_META,
    KEY_OBS_MEAN,
    KEY_OBS_STD,
    KEY_SIGNATURE,
    KEY_W1,
    KEY_W2,
    MAX_ACTION_DIM,
    MAX_HIDDEN,
    MAX_META_BYTES,
    MAX_OBS_DIM,
    META_BOUNDS_V2,
    META_FIELDS,
    META_FIELDS_V2,
    META_OPTIONAL_V2,
    OBS_CLIP,
    OBS_DIM,
    REQUIRED_KEYS,
    SIGNATURE_BYTES,
    SIGNATURE_DOMAIN,
    SIGNATURE_DOMAIN_V2,
)

Params = dict[str, np.ndarray]
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp: keeps the bytes reproducible
# The zip records a policy.npz is read through (PKWARE APPNOTE.TXT, sections 4.3.7, 4.3.12,
# 4.3.16), little-endian, each followed by its variable-length fields
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... name length, extra length
ZIP_CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")  # ... name, extra, comment lengths ... offset
ZIP_END_RECORD = struct.Struct("<4s4H2LH")  # ... entries, directory size and offset, comment
ZIP_MAX_COMMENT = 0xFFFF
ZIP_MAX_ENTRIES = 16  # a policy.npz has 3 or 4 (format 2: up to 9)
ZIP_ENCRYPTED, ZIP_UTF8_NAMES = 0x1, 0x800  # general purpose flag bits
ZIP_STORED = 0  # compression method: none
# The .npy header as np.lib.format.write_array writes it (every NumPy since 1.9), read with a
# regex: NumPy's reader runs ast.literal_eval, half the time of parsing a whole policy
# (docs/performance.md, MQTT). Any other header goes to NumPy's reader, which decides.
NPY_V1_MAGIC = b"\x93NUMPY\x01\x00"
NPY_V1_HEADER_START = 10  # magic, version, u16le header length
NPY_MAX_HEADER = 10_000  # NumPy's own limit (max_header_size) before it refuses to parse
NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z][0-9]{0,5})', 'fortran_order': (False|True),"
    rb" 'shape': \(((?:[0-9]{1,18}, )*[0-9]{1,18},?|)\), \} *\n"
)
FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max: an action bound must fit
ACTION_DIM_RANGE = {  # action_dim allowed per head, inclusive
    HEAD_BERNOULLI: (1, 1),
    HEAD_CATEGORICAL: (2, MAX_ACTION_DIM),
    HEAD_GAUSSIAN: (1, MAX_ACTION_DIM),
}


class PolicyError(ValueError):
    """A policy file or payload is unusable; the message says what is wrong."""


# --- what a policy computes ------------------------------------------------------


def _check_size(name: str, value: Any, low: int, high: int, why: str = "") -> None:
    if not _is_int(value) or not low <= value <= high:
        allowed = str(low) if low == high else f"an integer in {low}..{high}"
        raise PolicyError(f"{name} must be {allowed}{why}, got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise PolicyError(f"{name} is {value!r}, expected one of {', '.join(allowed)}")


def _action_bounds(name: str, value: Any, size: int) -> tuple[float, ...]:
    """`size` finite float32 numbers as a tuple of floats (JSON gives a list)."""
    if not isinstance(value, (list, tuple)) or len(value) != size:
        raise PolicyError(
            f"{name} must be a list of {size} numbers for a gaussian head, got {value!r}"
        )
    for index, bound in enumerate(value):
        if not _is_finite_float32(bound):
            raise PolicyError(f"{name}[{index}] must be a finite float32 number, got {bound!r}")
    return tuple(float(bound) for bound in value)


def _is_finite_float32(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return abs(float(value)) <= FLOAT32_MAX  # False for NaN and inf too
    except OverflowError:  # an integer beyond any float
        return False


@dataclass(frozen=True)
class PolicySpec:
    """What a policy computes: its sizes, hidden activation and output head (format 2's meta).

    head bernoulli: one output, p(action 1) = sigmoid, action_dim 1 (format 1 is exactly this,
    with relu); categorical: action_dim = n in 2..MAX_ACTION_DIM logits, softmax; gaussian:
    action_dim = k in 1..MAX_ACTION_DIM means of a diagonal Gaussian, its greedy action clipped
    to action_low..action_high (k finite float32 bounds each, low < high; gaussian only).
    Checked where built: a PolicyError names the field and what is allowed.
    """

    hidden: int
    obs_dim: int = OBS_DIM
    activation: str = "relu"
    head: str = HEAD_BERNOULLI
    action_dim: int = 1
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_size("hidden", self.hidden, 1, MAX_HIDDEN)
        _check_size("obs_dim", self.obs_dim, 1, MAX_OBS_DIM)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("head", self.head, HEADS)
        low, high = ACTION_DIM_RANGE[self.head]
        _check_size("action_dim", self.action_dim, low, high, f" for a {self.head} head")
        if self.head == HEAD_GAUSSIAN:
            self._check_bounds()
            return
        for name in META_BOUNDS_V2:
            if getattr(self, name) is not None:
                raise PolicyError(f"{name} is only for a gaussian head, not {self.head}")

    def _check_bounds(self) -> None:
        lows = _action_bounds("action_low", self.action_low, self.action_dim)
        highs = _action_bounds("action_high", self.action_high, self.action_dim)
        # compared as the float32 values the clip uses: 1.0 and 1.00000001 are one float32
        below = np.float32(lows) < np.float32(highs)
        if not np.all(below):
            index = int(np.argmin(below))
            raise PolicyError(
                f"action_low[{index}] = {lows[index]!r} is not below action_high[{index}]"
                f" = {highs[index]!r} (in float32); each low must be less than its high"
            )
        object.__setattr__(self, "action_low", lows)  # lists from JSON become tuples
        object.__setattr__(self, "action_high", highs)


def param_shapes(spec: PolicySpec) -> dict[str, tuple[int, ...]]:
    """The shape of every array a policy with `spec` may hold (which are present: see
    `parse_policy`): W2 is (hidden,) for bernoulli as in format 1, else (outputs, hidden)."""
    hidden, obs_dim, outputs = spec.hidden, spec.obs_dim, spec.action_dim
    return {
        KEY_W1: (hidden, obs_dim),
        KEY_W2: (hidden,) if spec.head == HEAD_BERNOULLI else (outputs, hidden),
        KEY_B1: (hidden,),
        KEY_B2: (outputs,),
        KEY_OBS_MEAN: (obs_dim,),
        KEY_OBS_STD: (obs_dim,),
        KEY_LOG_STD: (outputs,),
    }


# --- the maths -----------------------------------------------------------------


def init_params(
    hidden: int,
    rng: np.random.Generator,
    obs_dim: int | None = None,
    *,
    spec: PolicySpec | None = None,
    biases: bool = False,
    normaliser: bool = False,
) -> Params:
    """Xavier-style initialisation: each weight ~ N(0, 1 / fan_in).

    Without `spec`, a format-1 policy (bernoulli, obs_dim default 4), drawn exactly as ever.
    With `spec` (its hidden and obs_dim must agree with the arguments given), W2 has the head's
    shape (`param_shapes`), a gaussian head gets log_std = 0 (std 1); `biases` adds b1, b2 = 0
    and `normaliser` the identity normaliser obs_mean = 0, obs_std = 1.
    """
    if not isinstance(hidden, int) or not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"hidden must be an integer in 1..{MAX_HIDDEN}, got {hidden!r}")
    if spec is not None and (hidden != spec.hidden or obs_dim not in (None, spec.obs_dim)):
        raise ValueError(
            f"hidden {hidden} and obs_dim {obs_dim} do not match the spec's"
            f" {spec.hidden} and {spec.obs_dim}"
        )
    if spec is None:
        obs_dim = OBS_DIM if obs_dim is None else obs_dim
        shapes = {KEY_W1: (hidden, obs_dim), KEY_W2: (hidden,), KEY_B1: (hidden,), KEY_B2: (1,)}
    else:
        obs_dim, shapes = spec.obs_dim, param_shapes(spec)
    params = {
        KEY_W1: rng.standard_normal(shapes[KEY_W1]) / math.sqrt(obs_dim),
        KEY_W2: rng.standard_normal(shapes[KEY_W2]) / math.sqrt(hidden),
    }
    if biases:
        params[KEY_B1], params[KEY_B2] = np.zeros(shapes[KEY_B1]), np.zeros(shapes[KEY_B2])
    if normaliser:
        params[KEY_OBS_MEAN], params[KEY_OBS_STD] = np.zeros(obs_dim), np.ones(obs_dim)
    if spec is not None and spec.head == HEAD_GAUSSIAN:
        params[KEY_LOG_STD] = np.zeros(shapes[KEY_LOG_STD])
    return params


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written with tanh so that no magnitude overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * logit))


def softmax(logits: np.ndarray) -> np.ndarray:
    """exp(z) / sum(exp(z)) over the last axis, shifted by the maximum: no overflow."""
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return shifted / np.sum(shifted, axis=-1, keepdims=True)


def normalise(params: Params, obs: np.ndarray) -> np.ndarray:
    """clip((obs - obs_mean) / obs_std, -10, 10) as SB3's VecNormalize (clip_obs 10) when the
    policy carries a normaliser, else obs itself; (obs_dim,) or (N, obs_dim)."""
    mean = params.get(KEY_OBS_MEAN)
    if mean is None:
        return obs
    return np.clip((obs - mean) / params[KEY_OBS_STD], -OBS_CLIP, OBS_CLIP)


def forward_pass(
    params: Params, obs: np.ndarray, spec: PolicySpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(hidden, output) for one observation (obs_dim,) or a batch (N, obs_dim), any head.

    hidden = act(W1 x + b1), after the activation (what a backward pass needs: relu' is
    hidden > 0, tanh' is 1 - hidden**2), x the normalised observation; output = W2 h + b2
    before the head: the logit (scalar or (N,)) for bernoulli, the logits for categorical, the
    mean for gaussian ((n,) or (N, n)). `spec` None is format 1's relu.
    """
    pre = normalise(params, obs) @ params[KEY_W1].T
    b1 = params.get(KEY_B1)
    if b1 is not None:
        pre = pre + b1
    tanh = spec is not None and spec.activation == "tanh"
    hidden = np.tanh(pre) if tanh else np.maximum(pre, 0.0)
    w2 = params[KEY_W2]
    output = hidden @ w2 if w2.ndim == 1 else hidden @ w2.T
    b2 = params.get(KEY_B2)
    if b2 is not None:
        output = output + (b2[0] if w2.ndim == 1 else b2)
    return hidden, output


def forward(params: Params, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p(action 1) and the hidden activations for one observation (4,) or a batch (N, 4):
    format 1 (bernoulli, relu); the trainer's order, (p, hidden), unlike `forward_pass`."""
    hidden, logit = forward_pass(params, obs)
    return sigmoid(logit), hidden  # p = sigmoid(W2 . h)


def action_probability(params: Params, obs: np.ndarray) -> np.ndarray:
    """p(action 1 = push right) for one observation (4,) or a batch (N, 4)."""
    return forward(params, obs)[0]


def distribution(params: Params, obs: np.ndarray, spec: PolicySpec | None = None) -> np.ndarray:
    """The head's distribution parameters for one observation or a batch: p(action 1) for
    bernoulli, the action probabilities (n,) or (N, n) for categorical, the mean (k,) or
    (N, k) for gaussian (its std is `gaussian_std`, the same for every observation)."""
    output = forward_pass(params, obs, spec)[1]
    head = HEAD_BERNOULLI if spec is None else spec.head
    if head == HEAD_BERNOULLI:
        return sigmoid(output)
    if head == HEAD_CATEGORICAL:
        return softmax(output)
    return output


def gaussian_std(params: Params) -> np.ndarray:
    """exp(log_std), the gaussian head's state-independent standard deviations (k,)."""
    return np.exp(params[KEY_LOG_STD])


def greedy_action(params: Params, obs: np.ndarray, spec: PolicySpec | None = None) -> Any:
    """The greedy action: bernoulli 1 when p > 0.5 (as the trainer evaluates), categorical
    the argmax (lowest index among ties), both an int for one observation or an int64 array
    (N,) for a batch; gaussian the mean clipped to action_low..action_high, float32 (k,) or
    (N, k)."""
    head = HEAD_BERNOULLI if spec is None else spec.head
    if head == HEAD_GAUSSIAN:
        low, high = np.float32(spec.action_low), np.float32(spec.action_high)
        return np.clip(forward_pass(params, obs, spec)[1], low, high).astype(np.float32)
    if head == HEAD_CATEGORICAL:
        action = np.argmax(forward_pass(params, obs, spec)[1], axis=-1)  # softmax keeps order
    else:
        action = (distribution(params, obs, spec) > 0.5).astype(np.int64)
    return int(action) if np.ndim(action) == 0 else action.astype(np.int64)


# --- the file ------------------------------------------------------------------


# eq=False: compared by identity (`==` on the weight arrays has no single truth value), and
# two generated methods fewer to compile at start-up (docs/performance.md)
@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy: float32 weights, meta, optional signature, its file bytes and their
    sha256 (hex)."""

    params: Params = field(repr=False)
    meta: dict[str, Any]
    meta_json: str = field(repr=False)
    signature: bytes | None = field(repr=False)
    data: bytes = field(repr=False)  # the policy.npz bytes it was parsed from
    spec: PolicySpec  # what it computes (format 1: bernoulli, relu)

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def format_version(self) -> int:
        return int(self.meta["format_version"])

    @property
    def hidden(self) -> int:
        return int(self.params[KEY_W1].shape[0])

    @functools.cached_property
    def sha256(self) -> str:
        """Computed on first use: a plain start never needs it, and hashlib loads OpenSSL
        (about 5 ms of start-up with NumPy 2; docs/performance.md)."""
        import hashlib

        return hashlib.sha256(self.data).hexdigest()


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def make_meta(
    *,
    hidden: int | None = None,
    version: int | None = None,
    train_seed: int | None = None,
    episodes: int = 0,
    eval_mean_return: float | None = None,
    env_id: str = ENV_ID,
    created: str | None = None,
    spec: PolicySpec | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Meta for a new policy; `version` defaults to the current time in seconds.

    Without `spec`: format 1 (give `hidden`). With `spec`: format 2, its fields from the spec
    (`hidden`, if given, must agree); format 2 allows no `extra` beyond META_OPTIONAL_V2.
    """
    now = dt.datetime.now(dt.timezone.utc)
    if spec is not None:
        if hidden not in (None, spec.hidden):
            raise ValueError(f"hidden {hidden} differs from the spec's {spec.hidden}")
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION_2,
            "version": int(now.timestamp()) if version is None else version,
            **_spec_fields(spec),
            "env_id": env_id,
            "created": created or now.replace(microsecond=0).isoformat(),
            "train_seed": train_seed,
            "episodes": episodes,
            "eval_mean_return": eval_mean_return,
            **extra,
        }
    if hidden is None:
        raise ValueError("make_meta needs hidden (format 1) or spec (format 2)")
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


def _spec_fields(spec: PolicySpec) -> dict[str, Any]:
    """Format 2's meta fields for `spec`; the bounds are lists (JSON), gaussian only."""
    fields = {
        "hidden": spec.hidden,
        "obs_dim": spec.obs_dim,
        "activation": spec.activation,
        "head": spec.head,
        "action_dim": spec.action_dim,
    }
    if spec.head == HEAD_GAUSSIAN:
        fields["action_low"], fields["action_high"] = list(spec.action_low), list(spec.action_high)
    return fields


def meta_to_json(meta: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, no spaces, so equal meta gives equal bytes."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)


def signed_bytes(meta_json: str, w1: np.ndarray, w2: np.ndarray) -> bytes:
    """The exact byte string an Ed25519 signature covers (documented in docs/export.md, Signing).

    domain tag || u64le(len(meta)) || meta UTF-8 || for W1, W2 in order:
    name ASCII || 0x00 || u32le(ndim) || u64le(dim) per dim || float32 little-endian C-order data
    """
    return _signed_message(SIGNATURE_DOMAIN, meta_json, ((KEY_W1, w1), (KEY_W2, w2)))


def signed_bytes_v2(meta_json: str, params: Params) -> bytes:
    """What a format-2 signature covers: as `signed_bytes`, with its own domain tag
    (SIGNATURE_DOMAIN_V2, so no v1 signature verifies a v2 file) and every array present in
    the order W1, W2, b1, b2, obs_mean, obs_std, log_std (ARRAY_KEYS_V2), each encoded like W1.
    An entry added or removed changes the bytes: its name is part of them."""
    arrays = [(name, params[name]) for name in ARRAY_KEYS_V2 if name in params]
    return _signed_message(SIGNATURE_DOMAIN_V2, meta_json, arrays)


def signed_message(meta_json: str, params: Params, format_version: int) -> bytes:
    """The bytes a signature of a policy in `format_version` (1 or 2) covers."""
    if format_version == FORMAT_VERSION_2:
        return signed_bytes_v2(meta_json, params)
    if format_version == FORMAT_VERSION:
        return signed_bytes(meta_json, params[KEY_W1], params[KEY_W2])
    raise PolicyError(f"format_version is {format_version!r}, expected one of {FORMAT_VERSIONS}")


def _signed_message(
    domain: bytes, meta_json: str, arrays: list[tuple[str, np.ndarray]] | tuple
) -> bytes:
    meta_bytes = meta_json.encode("utf-8")
    parts = [domain, struct.pack("<Q", len(meta_bytes)), meta_bytes]
    for name, array in arrays:
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
    """The reproducible bytes of a policy.npz (stored entries, fixed timestamps).

    Format 1 meta: W1, W2, meta[, signature]; format 2: the arrays of ARRAY_KEYS_V2 present
    in `params`, in that order, then meta[, signature]. Other keys of `params` are not written.
    """
    if meta.get("format_version") == FORMAT_VERSION_2:
        keys = [key for key in ARRAY_KEYS_V2 if key in params]
    else:
        extra = [key for key in ARRAY_KEYS_V2 if key in params and key not in REQUIRED_KEYS]
        if extra:  # dropped silently, the file would compute something else
            raise PolicyError(
                f"params hold {', '.join(extra)}, which format 1 has not:"
                " a format-2 meta is needed (make_meta(spec=...))"
            )
        keys = [KEY_W1, KEY_W2]
    entries = {key: np.asarray(params[key], dtype="<f4") for key in keys}
    entries[KEY_META] = np.array(meta_to_json(meta))
    if signature is not None:
        entries[KEY_SIGNATURE] = np.frombuffer(signature, dtype=np.uint8)
    import zipfile  # imported here: reading needs no zipfile (start-up time, docs/performance.md)

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
    import tempfile  # imported here: start-up time (docs/performance.md)
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
    obs_dim: int | None = None,
) -> Policy:
    """Read and validate a policy.npz; every problem is a PolicyError naming the file.
    `obs_dim` as in `parse_policy`."""
    path = os.fspath(path)  # not pathlib: it is start-up time on NumPy 2 (docs/performance.md)
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
    obs_dim: int | None = None,
) -> Policy:
    """Validate the bytes of a policy.npz, cheapest check first, and return the Policy.

    `obs_dim` is the plant's observation size the policy must take; None accepts a format-2
    policy's own obs_dim (a format 1 one must take OBS_DIM).
    """
    data = bytes(data)  # no copy when it is bytes already
    if len(data) == 0:
        raise PolicyError("empty policy (0 bytes)")
    if len(data) > max_bytes:
        raise PolicyError(f"policy is {len(data)} bytes, more than the limit of {max_bytes}")
    arrays = _read_archive(data, max_bytes)
    meta = _peek_meta(arrays[KEY_META])  # parsed once: the checks below take it as it is
    declared = None if meta is None else meta.get("format_version")
    declared = declared if _is_int(declared) else FORMAT_VERSION
    if declared == FORMAT_VERSION_2:
        return _parse_format_2(data, arrays, obs_dim, meta)
    if declared != FORMAT_VERSION:  # a later format: its entries would only confuse the checks
        raise PolicyError(
            f"meta.format_version is {declared}, this runtime reads {_formats_read()}"
        )
    return _parse_format_1(data, arrays, OBS_DIM if obs_dim is None else obs_dim, meta)


def _formats_read() -> str:
    return " and ".join(str(version) for version in FORMAT_VERSIONS)


def _parse_format_1(
    data: bytes, arrays: dict[str, np.ndarray], obs_dim: int, peeked: dict[str, Any] | None
) -> Policy:
    """Format 1, checked as it always was: exactly W1, W2, meta and optionally signature.
    `peeked`: meta as `_peek_meta` parsed it (None: not a readable JSON object)."""
    if not set(arrays) <= ALLOWED_KEYS:
        newer = ", ".join(key for key in ARRAY_KEYS_V2 if key in arrays and key not in ALLOWED_KEYS)
        raise PolicyError(
            f"archive entries {sorted(arrays)}, expected {sorted(REQUIRED_KEYS)}"
            f" and optionally {KEY_SIGNATURE!r} in a format-1 policy"
            f" ({newer} only in format 2, meta.format_version 2)"
        )
    w1, w2 = arrays[KEY_W1], arrays[KEY_W2]
    _check_weights(w1, w2, obs_dim)
    meta_json = _meta_json(arrays[KEY_META])
    meta = _check_meta(meta_json, w1.shape[0], obs_dim, peeked)
    signature = _signature(arrays.get(KEY_SIGNATURE))
    return Policy(
        params={KEY_W1: w1, KEY_W2: w2},
        meta=meta,
        meta_json=meta_json,
        signature=signature,
        data=data,
        spec=PolicySpec(hidden=w1.shape[0], obs_dim=obs_dim),
    )


def _peek_meta(array: np.ndarray) -> dict[str, Any] | None:
    """meta as a JSON object when it reads as one, else None: its format_version decides which
    checks run, and a format-1 file, or one too damaged to tell, is checked exactly as format 1
    always was (the same errors, in the same order: `_meta_json` and `_check_meta` report what
    this passes over)."""
    if array.shape != () or array.dtype.kind != "U":
        return None
    text = str(array[()])
    if len(text) > MAX_META_BYTES:  # characters: never more than its UTF-8 bytes
        return None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def _parse_format_2(
    data: bytes, arrays: dict[str, np.ndarray], obs_dim: int | None, peeked: dict[str, Any]
) -> Policy:
    """Format 2: meta first (its spec says which entries and shapes are valid), then arrays;
    `peeked` is meta as `_peek_meta` parsed it."""
    meta_json = _meta_json(arrays[KEY_META])
    meta, spec = _check_meta_v2(meta_json, obs_dim, peeked)
    _check_entries_v2(set(arrays), spec)
    params = {key: arrays[key] for key in ARRAY_KEYS_V2 if key in arrays}
    _check_arrays_v2(params, spec)
    return Policy(
        params=params,
        meta=meta,
        meta_json=meta_json,
        signature=_signature(arrays.get(KEY_SIGNATURE)),
        data=data,
        spec=spec,
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
        REQUIRED_KEYS <= keys <= ALLOWED_KEYS_V2
    ):
        optional = ", ".join(key for key in ARRAY_KEYS_V2 if key not in REQUIRED_KEYS)
        raise PolicyError(
            f"archive entries {sorted(keys)}, expected {sorted(REQUIRED_KEYS)}"
            f" and optionally {KEY_SIGNATURE!r} (format 2 also {optional})"
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
    it) is start-up time on a board (docs/performance.md). Only what a policy.npz needs:
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


def _check_meta(
    text: str, hidden: int, obs_dim: int, parsed: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Format 1's meta; `parsed`, when given, is `text` already parsed (a JSON object)."""
    meta = _json_object(text) if parsed is None else parsed
    missing = [name for name in META_FIELDS if name not in meta]
    if missing:
        raise PolicyError(f"meta is missing {', '.join(missing)}")
    if meta["format"] != FORMAT_NAME:
        raise PolicyError(f"meta.format is {meta['format']!r}, expected {FORMAT_NAME!r}")
    if meta["format_version"] != FORMAT_VERSION or not _is_int(meta["format_version"]):
        raise PolicyError(
            f"meta.format_version is {meta['format_version']!r}, this runtime reads"
            f" {_formats_read()}"
        )
    if not _is_int(meta["version"]) or meta["version"] <= 0:
        raise PolicyError(f"meta.version must be a positive integer, got {meta['version']!r}")
    if meta["hidden"] != hidden or not _is_int(meta["hidden"]):
        raise PolicyError(f"meta.hidden is {meta['hidden']!r} but W1 has {hidden} rows")
    if meta["obs_dim"] != obs_dim or not _is_int(meta["obs_dim"]):
        raise PolicyError(f"meta.obs_dim is {meta['obs_dim']!r}, the plant needs {obs_dim}")
    _check_run_fields(meta)
    return meta


def _check_run_fields(meta: dict[str, Any]) -> None:
    """The fields both formats share after the sizes: env_id, created, the training's."""
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


def _signature(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    if array.dtype != np.uint8 or array.shape != (SIGNATURE_BYTES,):
        raise PolicyError(
            f"signature has dtype {array.dtype} shape {array.shape}, expected uint8 ({SIGNATURE_BYTES},)"
        )
    return array.tobytes()


# --- format 2's checks -------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise PolicyError(f"meta is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"meta must be a JSON object, got {type(meta).__name__}")
    return meta


def _check_meta_v2(
    text: str, obs_dim: int | None, parsed: dict[str, Any] | None = None
) -> tuple[dict[str, Any], PolicySpec]:
    """Format 2's meta: exactly its fields (unknown ones refused), each of its type, and the
    spec they describe; `obs_dim` (the plant's, None: any) must be the policy's. `parsed`,
    when given, is `text` already parsed."""
    meta = _json_object(text) if parsed is None else parsed
    missing = [name for name in META_FIELDS_V2 if name not in meta]
    if meta.get("head") == HEAD_GAUSSIAN:
        missing += [name for name in META_BOUNDS_V2 if name not in meta]
    if missing:  # names the format: a format-1 meta that claims 2 lacks format 2's fields
        raise PolicyError(f"meta is missing {', '.join(missing)} (meta.format_version is 2)")
    unknown = sorted(set(meta) - {*META_FIELDS_V2, *META_BOUNDS_V2, *META_OPTIONAL_V2})
    if unknown:
        raise PolicyError(
            f"meta has unknown fields {', '.join(unknown)}; format 2 allows only"
            f" {', '.join(META_FIELDS_V2 + META_BOUNDS_V2 + META_OPTIONAL_V2)}"
        )
    if meta["format"] != FORMAT_NAME:
        raise PolicyError(f"meta.format is {meta['format']!r}, expected {FORMAT_NAME!r}")
    if not _is_int(meta["version"]) or meta["version"] <= 0:
        raise PolicyError(f"meta.version must be a positive integer, got {meta['version']!r}")
    spec = _spec_from_meta(meta)
    if obs_dim is not None and spec.obs_dim != obs_dim:
        raise PolicyError(f"meta.obs_dim is {spec.obs_dim!r}, the plant needs {obs_dim}")
    _check_run_fields(meta)
    if meta.get("solved_episode") is not None and not _is_int(meta["solved_episode"]):
        raise PolicyError(
            f"meta.solved_episode must be an integer or null, got {meta['solved_episode']!r}"
        )
    target = meta.get("target_return")
    if target is not None and not _is_finite_float32(target):
        raise PolicyError(f"meta.target_return must be a finite number or null, got {target!r}")
    return meta, spec


def _spec_from_meta(meta: dict[str, Any]) -> PolicySpec:
    """The spec of meta's fields; its errors name the meta field ("meta.head is ...")."""
    try:
        return PolicySpec(
            hidden=meta["hidden"],
            obs_dim=meta["obs_dim"],
            activation=meta["activation"],
            head=meta["head"],
            action_dim=meta["action_dim"],
            action_low=meta.get("action_low"),
            action_high=meta.get("action_high"),
        )
    except PolicyError as error:
        raise PolicyError(f"meta.{error}") from None


def _check_entries_v2(keys: set[str], spec: PolicySpec) -> None:
    """log_std exactly for a gaussian head; obs_mean and obs_std together or neither."""
    if spec.head == HEAD_GAUSSIAN and KEY_LOG_STD not in keys:
        raise PolicyError("a gaussian head needs a log_std entry (its log standard deviations)")
    if spec.head != HEAD_GAUSSIAN and KEY_LOG_STD in keys:
        raise PolicyError(f"log_std is only for a gaussian head, this policy's is {spec.head}")
    if (KEY_OBS_MEAN in keys) != (KEY_OBS_STD in keys):
        absent = KEY_OBS_STD if KEY_OBS_MEAN in keys else KEY_OBS_MEAN
        raise PolicyError(f"obs_mean and obs_std come together or not at all: {absent} is missing")


def _check_arrays_v2(params: Params, spec: PolicySpec) -> None:
    """float32, the shapes the spec gives (`param_shapes`), finite, obs_std > 0."""
    for name, array in params.items():
        if array.dtype != np.float32:
            raise PolicyError(f"{name} has dtype {array.dtype}, expected float32")
    shapes = param_shapes(spec)
    for name, array in params.items():
        if array.shape != shapes[name]:
            raise PolicyError(
                f"{name} has shape {array.shape}, expected {shapes[name]} for meta's hidden"
                f" {spec.hidden}, obs_dim {spec.obs_dim}, head {spec.head} with action_dim"
                f" {spec.action_dim}"
            )
    for name, array in params.items():
        if not np.all(np.isfinite(array)):
            raise PolicyError(f"{name} holds non-finite values (NaN or inf)")
    std = params.get(KEY_OBS_STD)
    if std is not None and not np.all(std > 0):
        index = int(np.argmin(std > 0))
        raise PolicyError(
            f"obs_std[{index}] is {float(std[index])!r}; a standard deviation must be > 0"
        )
