"""runtime.policy reads policy.npz's zip with `struct` (no zipfile at start-up): it must read
what zipfile and NumPy write, and refuse damage with a PolicyError, never anything else."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from runtime.policy import PolicyError, make_meta, meta_to_json, parse_policy, policy_bytes

PARAMS = {
    "W1": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32),
    "W2": np.random.default_rng(1).standard_normal(8).astype(np.float32),
}
META = make_meta(hidden=8, version=5)
GOOD = policy_bytes(PARAMS, META, signature=bytes(range(64)))


def assert_same_content(data: bytes) -> None:
    policy = parse_policy(data)
    for key, array in PARAMS.items():
        np.testing.assert_array_equal(policy.params[key], array)
    assert policy.meta == META and policy.signature == bytes(range(64))


def test_the_canonical_bytes_and_their_sha256() -> None:
    assert_same_content(GOOD)
    assert parse_policy(GOOD).sha256 == hashlib.sha256(GOOD).hexdigest()


def test_numpy_savez_files_are_read(tmp_path) -> None:
    """np.savez writes zip64 extra fields into its local headers; the directory's sizes count."""
    path = tmp_path / "policy.npz"
    meta = np.array(meta_to_json(META))
    np.savez(
        path, W1=PARAMS["W1"], W2=PARAMS["W2"], meta=meta, signature=np.arange(64, dtype=np.uint8)
    )
    assert_same_content(path.read_bytes())


def test_any_entry_order_names_in_utf8_and_an_archive_comment() -> None:
    with zipfile.ZipFile(io.BytesIO(GOOD)) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in reversed(entries):
            info = zipfile.ZipInfo(name)
            info.flag_bits |= 0x800  # names declared UTF-8
            archive.writestr(info, data)
        archive.comment = b"written by another tool"
    assert_same_content(out.getvalue())


def mutations(data: bytes, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        kind, index = rng.integers(3), int(rng.integers(len(data)))
        if kind == 0:  # one byte flipped
            yield (
                data[:index] + bytes([data[index] ^ int(rng.integers(1, 256))]) + data[index + 1 :]
            )
        elif kind == 1:  # cut short
            yield data[:index]
        else:  # bytes inserted
            yield data[:index] + rng.bytes(int(rng.integers(1, 5))) + data[index:]


@pytest.mark.parametrize("seed", range(4))
def test_damaged_archives_are_refused_or_read_intact(seed: int) -> None:
    """Every damage is a PolicyError, unless it hit a field the content does not depend on
    (a timestamp, an attribute): then the content is exactly the original."""
    refused = 0
    for data in mutations(GOOD, 300, seed):
        try:
            assert_same_content(data)
        except PolicyError:
            refused += 1
    assert refused > 200  # most damage lands in the content and its CRC-32
