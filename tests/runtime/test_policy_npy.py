"""The .npy header fast path against NumPy's own reader: the same answer, or the same refusal."""

from __future__ import annotations

import io

import numpy as np
import pytest

from runtime.policy import NPY_HEADER, NPY_V1_HEADER_START, _npy_header


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def numpy_header(raw: bytes):
    """What NumPy's reader says: (shape, fortran_order, dtype, offset) or the exception type."""
    buffer = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran_order, dtype = read_header(buffer)
    except Exception:  # noqa: BLE001 - a damaged header can raise tokenize.TokenError too
        return "refused"
    return shape, fortran_order, dtype, buffer.tell()


def fast_header(raw: bytes):
    try:
        return _npy_header(raw)
    except Exception:  # noqa: BLE001
        return "refused"


ARRAYS = [
    np.zeros((32, 4), "<f4"),
    np.zeros(32, "<f4"),
    np.array('{"format": "reinforce-edge-policy"}'),
    np.frombuffer(b"s" * 64, np.uint8),
    np.zeros((0,), "<f4"),
    np.zeros((), "<f8"),
    np.zeros((3, 4), ">f4"),
    np.asfortranarray(np.zeros((3, 4), "<f4")),
    np.zeros((2, 3), "<i8"),
    np.zeros(5, "?"),
    np.zeros(5, "<c16"),
    np.array(["abc", "de"]),
    np.zeros((1, 1), "<f2"),
    np.zeros((100_000, 0), "<f4"),
    np.zeros((2, 2, 2), "<u2"),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_every_header_numpy_writes_takes_the_fast_path_with_numpys_answer(array) -> None:
    raw = npy(array)
    end = NPY_V1_HEADER_START + int.from_bytes(raw[8:10], "little")
    assert NPY_HEADER.fullmatch(raw, NPY_V1_HEADER_START, end), raw[:end]
    assert fast_header(raw) == numpy_header(raw)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # literal_eval on damaged headers
def test_damaged_headers_get_numpys_answer() -> None:
    rng = np.random.default_rng(20261126)
    base = npy(np.zeros((32, 4), "<f4"))
    header_end = NPY_V1_HEADER_START + int.from_bytes(base[8:10], "little")
    fast_taken = 0
    for _ in range(2000):
        raw = bytearray(base)
        for _ in range(rng.integers(1, 4)):
            raw[rng.integers(0, header_end + 2)] = rng.integers(0, 256)
        raw = bytes(raw)
        assert fast_header(raw) == numpy_header(raw), raw[: header_end + 2]
        fast_taken += fast_header(raw) != "refused"
    assert fast_taken > 10  # some damaged headers are still valid ones (a digit for a digit)


def test_an_oversized_padded_header_is_left_to_numpy() -> None:
    body = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
    header = body + b" " * (20_000 - len(body) - 1) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8)
    assert fast_header(raw) == numpy_header(raw)  # NumPy refuses headers over 10,000 bytes


def test_a_header_numpys_reader_trips_on_is_a_policy_error() -> None:
    from runtime.policy import PolicyError, _read_npy

    raw = bytearray(npy(np.zeros((32, 4), "<f4")))
    raw[raw.index(b"(")] = 0x7F  # tokenize.TokenError inside NumPy's reader, not a ValueError
    with pytest.raises(PolicyError, match="entry W1 is not a valid .npy array"):
        _read_npy("W1", bytes(raw))
