"""runtime.rng draws exactly what NumPy's default_rng draws, without importing numpy.random."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.rng import Generator, seed_words

# small, word-boundary and many-word seeds; those of the other tests are small
SEEDS = [0, 1, 2, 42, 2**31 - 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 2**127 + 5]
SEEDS += [2**128 + 3, 2**160 - 1, 10**40, 3**101]


@pytest.mark.parametrize("seed", SEEDS)
def test_uniform_equals_numpy_bit_for_bit(seed: int) -> None:
    ours, numpy_rng = Generator(seed), np.random.default_rng(seed)
    for size in (4, 1, 7, 4):  # the stream goes on across calls, as across resets
        expected = numpy_rng.uniform(low=-0.05, high=0.05, size=(size,)).tolist()
        assert ours.uniform(-0.05, 0.05, size) == expected


def test_random_seeds_and_ranges_equal_numpy() -> None:
    draw = np.random.default_rng(2026)
    for _ in range(200):
        seed = int(draw.integers(0, 2**62)) << int(draw.integers(0, 80))
        low = float(draw.uniform(-10, 10))
        high = low + float(draw.exponential(3.0))
        ours, theirs = Generator(seed), np.random.default_rng(seed)
        assert ours.uniform(low, high, 3) == theirs.uniform(low, high, size=3).tolist()


def test_numpy_integers_are_seeds() -> None:
    assert Generator(np.int64(9)).uniform(0, 1, 2) == Generator(9).uniform(0, 1, 2)
    assert Generator(np.uint64(2**64 - 1)).next_uint64() == Generator(2**64 - 1).next_uint64()


def test_without_a_seed_each_generator_is_different_and_in_range() -> None:
    first, second = Generator().uniform(-0.05, 0.05, 64), Generator().uniform(-0.05, 0.05, 64)
    assert first != second
    assert all(-0.05 <= value < 0.05 for value in first + second)


def test_bad_seeds_are_refused_like_numpy() -> None:
    with pytest.raises(ValueError, match="non-negative integer, got -1"):
        Generator(-1)
    with pytest.raises(ValueError):
        np.random.default_rng(-1)
    for not_an_integer in (1.5, "3", [1, 2]):
        with pytest.raises(TypeError):
            Generator(not_an_integer)  # type: ignore[arg-type]


def test_seed_words_are_little_endian_32_bit() -> None:
    assert seed_words(0) == [0]
    assert seed_words(2**32 + 7) == [7, 1]
    assert seed_words(2**64) == [0, 0, 1]
