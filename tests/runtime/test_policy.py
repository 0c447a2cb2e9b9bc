"""The one forward pass and the policy.npz format: round trip and every validation error."""

from __future__ import annotations

import io
import json
import stat
import zipfile

import numpy as np
import pytest

from runtime.policy import (
    PolicyError,
    action_probability,
    forward,
    init_params,
    load_policy,
    make_meta,
    parse_policy,
    policy_bytes,
    save_policy,
)


def make_params(hidden: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    return init_params(hidden, np.random.default_rng(seed))


def test_forward_matches_the_formula() -> None:
    params = make_params()
    obs = np.random.default_rng(1).standard_normal((50, 4))
    expected = 1 / (1 + np.exp(-(np.maximum(params["W1"] @ obs.T, 0).T @ params["W2"])))
    np.testing.assert_allclose(action_probability(params, obs), expected, rtol=1e-12)
    single, hidden = forward(params, obs[0])
    assert single.shape == () and hidden.shape == (8,)
    np.testing.assert_allclose(single, expected[0], rtol=1e-12)


def test_sigmoid_does_not_overflow_at_huge_magnitudes() -> None:
    params = make_params()
    with np.errstate(all="raise"):
        probs = action_probability(params, np.array([[1e30, -1e30, 1e30, -1e30], [0, 0, 0, 0.0]]))
    assert np.all((probs >= 0) & (probs <= 1))
    assert probs[1] == 0.5


def test_round_trip(tmp_path) -> None:
    params = make_params()
    meta = make_meta(hidden=8, version=7, train_seed=3, episodes=12, eval_mean_return=500.0)
    saved = save_policy(tmp_path / "policy.npz", params, meta)
    loaded = load_policy(tmp_path / "policy.npz")
    assert loaded.version == 7 and loaded.hidden == 8 and loaded.sha256 == saved.sha256
    assert loaded.params["W1"].dtype == np.float32
    np.testing.assert_array_equal(loaded.params["W1"], params["W1"].astype(np.float32))
    assert np.load(tmp_path / "policy.npz", allow_pickle=False)["W2"].shape == (8,)
    assert policy_bytes(params, meta) == (tmp_path / "policy.npz").read_bytes()


def rebuild(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def good() -> bytes:
    return policy_bytes(make_params(), make_meta(hidden=8, version=5))


def with_entry(name: str, data: bytes) -> bytes:
    entries = entries_of(good())
    entries[name] = data
    return rebuild(entries)


def with_meta(**changes) -> bytes:
    meta = make_meta(hidden=8, version=5)
    meta.update(changes)
    return with_entry("meta.npy", npy(np.array(json.dumps(meta))))


BAD = {
    "empty": (b"", "empty"),
    "not a zip": (b"hello world" * 10, "not a readable zip"),
    "truncated": (good()[:200], "zip"),
    "missing W2": (
        rebuild({k: v for k, v in entries_of(good()).items() if k != "W2.npy"}),
        "entries",
    ),
    "extra key": (with_entry("extra.npy", npy(np.zeros(3))), "entries"),
    "compressed": (rebuild(entries_of(good()), zipfile.ZIP_DEFLATED), "uncompressed"),
    "pickled": (with_entry("W1.npy", npy(np.array([{"a": 1}], dtype=object), True)), "pickled"),
    "float64": (with_entry("W1.npy", npy(np.zeros((8, 4)))), "float32"),
    "wrong shape": (with_entry("W1.npy", npy(np.zeros((8, 5), np.float32))), "shape"),
    "W2 mismatch": (with_entry("W2.npy", npy(np.zeros(9, np.float32))), "W2 has shape"),
    "nan": (with_entry("W2.npy", npy(np.full(8, np.nan, np.float32))), "non-finite"),
    "inf": (with_entry("W1.npy", npy(np.full((8, 4), np.inf, np.float32))), "non-finite"),
    "meta not json": (with_entry("meta.npy", npy(np.array("{nope"))), "JSON"),
    "meta list": (with_entry("meta.npy", npy(np.array("[1, 2]"))), "JSON object"),
    "meta bytes": (with_entry("meta.npy", npy(np.array(b"{}"))), "unicode"),
    "wrong format": (with_meta(format="other"), "meta.format"),
    "zero version": (with_meta(version=0), "meta.version"),
    "string version": (with_meta(version="7"), "meta.version"),
    "hidden mismatch": (with_meta(hidden=9), "meta.hidden"),
    "obs_dim": (with_meta(obs_dim=3), "meta.obs_dim"),
    "bad created": (with_meta(created="yesterday"), "meta.created"),
    "missing field": (with_entry("meta.npy", npy(np.array('{"format": "x"}'))), "missing"),
    "lying header": (with_entry("W2.npy", npy(np.zeros(8, np.float32))[:-8]), "holds"),
    "bad signature": (with_entry("signature.npy", npy(np.zeros(3, np.uint8))), "signature"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_payload_is_refused_with_its_reason(case: str) -> None:
    data, reason = BAD[case]
    with pytest.raises(PolicyError, match=reason):
        parse_policy(data)


def test_size_limit_checked_first() -> None:
    with pytest.raises(PolicyError, match="limit"):
        parse_policy(good(), max_bytes=100)


def test_load_names_the_file(tmp_path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "absent.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(PolicyError, match="bad.npz"):
        load_policy(tmp_path / "bad.npz")


def test_atomic_write_never_replaces_a_device_node_or_a_pipe(tmp_path) -> None:
    # os.replace would swap /dev/full (as root) or a FIFO for a regular file
    import os

    from runtime.policy import atomic_write

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="not a regular file"):
        atomic_write(fifo, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["fifo"]
    regular = tmp_path / "regular"
    atomic_write(regular, b"one")
    atomic_write(regular, b"two")
    assert regular.read_bytes() == b"two"
