"""NumPy's `default_rng(seed).uniform(low, high)` in plain Python, bit for bit.

Why: the sim needs four uniform numbers per episode, and importing `numpy.random` to draw
them costs 14-19 ms of the runtime's cold start on this machine (it pulls in `secrets`,
`hmac` and OpenSSL's `hashlib`; docs/performance.md). The algorithms are NumPy's own and
stable since NumPy 1.17:
- `SeedSequence` (numpy/random/bit_generator.pyx): the seed's 32-bit words hashed into a
  pool of four, then drawn out as the generator's state;
- `PCG64` (numpy/random/src/pcg64): a 128-bit LCG with the XSL-RR 64-bit output;
- `next_double` and `random_uniform` (numpy/random/src/distributions): the top 53 bits of a
  draw scaled to [0, 1), then `low + (high - low) * u`.
tests/runtime/test_runtime_rng.py checks it against NumPy for many seeds. Python rounds
`span * u` and then the sum; a NumPy built with a compiler that fuses them into one
multiply-add (allowed on arm64) could differ in the last bit of a draw (at most 3.5e-18 here).
"""

from __future__ import annotations

import operator
import os

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
MASK128 = (1 << 128) - 1
POOL_SIZE = 4  # 32-bit words in a SeedSequence's pool
INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875  # hashmix constants while entropy goes in
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED  # hashmix constants while state words come out
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
XSHIFT = 16  # half a 32-bit word
PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645  # PCG_DEFAULT_MULTIPLIER_128
DOUBLE_UNIT = 1.0 / 9007199254740992.0  # 2**-53: a 53-bit integer to [0, 1)


def seed_words(seed: int) -> list[int]:
    """A non-negative integer as 32-bit words, least significant first (at least one)."""
    seed = operator.index(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    words = [seed & MASK32]
    seed >>= 32
    while seed:
        words.append(seed & MASK32)
        seed >>= 32
    return words


def hashmix(value: int, hash_const: int, multiplier: int) -> tuple[int, int]:
    """One hashing round of SeedSequence: (hashed value, next hash constant)."""
    value ^= hash_const
    hash_const = (hash_const * multiplier) & MASK32
    value = (value * hash_const) & MASK32
    return value ^ (value >> XSHIFT), hash_const


def mix(x: int, y: int) -> int:
    result = (MIX_MULT_L * x - MIX_MULT_R * y) & MASK32
    return result ^ (result >> XSHIFT)


def seed_pool(words: list[int]) -> list[int]:
    """SeedSequence.mix_entropy: every entropy word stirred into a pool of four."""
    pool, hash_const = [], INIT_A
    for index in range(POOL_SIZE):
        word = words[index] if index < len(words) else 0
        hashed, hash_const = hashmix(word, hash_const, MULT_A)
        pool.append(hashed)
    for source in range(POOL_SIZE):
        for target in range(POOL_SIZE):
            if source != target:
                hashed, hash_const = hashmix(pool[source], hash_const, MULT_A)
                pool[target] = mix(pool[target], hashed)
    for word in words[POOL_SIZE:]:
        for target in range(POOL_SIZE):
            hashed, hash_const = hashmix(word, hash_const, MULT_A)
            pool[target] = mix(pool[target], hashed)
    return pool


def generate_state(pool: list[int], count: int) -> list[int]:
    """SeedSequence.generate_state(count, np.uint64): pairs of 32-bit words, low word first."""
    words, hash_const = [], INIT_B
    for index in range(2 * count):
        hashed, hash_const = hashmix(pool[index % POOL_SIZE], hash_const, MULT_B)
        words.append(hashed)
    return [words[2 * k] | (words[2 * k + 1] << 32) for k in range(count)]


class Generator:
    """`np.random.default_rng(seed)` for `uniform` only: PCG64 on a SeedSequence.

    `seed=None` takes 128 bits from the operating system, as NumPy does.
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            seed = int.from_bytes(os.urandom(16), "little")
        high_state, low_state, high_inc, low_inc = generate_state(seed_pool(seed_words(seed)), 4)
        self.increment = ((((high_inc << 64) | low_inc) << 1) | 1) & MASK128
        self.state = 0  # pcg_setseq_128_srandom_r: step, add the initial state, step
        self._step()
        self.state = (self.state + ((high_state << 64) | low_state)) & MASK128
        self._step()

    def _step(self) -> None:
        self.state = (self.state * PCG_MULTIPLIER + self.increment) & MASK128

    def next_uint64(self) -> int:
        """PCG64's next output: step, then XSL-RR (xor the halves, rotate by the top 6 bits)."""
        self._step()
        state = self.state
        value, rotation = ((state >> 64) ^ state) & MASK64, state >> 122
        return ((value >> rotation) | (value << (64 - rotation))) & MASK64

    def uniform(self, low: float, high: float, size: int) -> list[float]:
        """`size` floats uniform in [low, high), the same as NumPy's `uniform`."""
        span = high - low
        return [low + span * ((self.next_uint64() >> 11) * DOUBLE_UNIT) for _ in range(size)]
