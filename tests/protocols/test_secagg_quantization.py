"""Quantisation into Z_{2^bits} (property 10) and the encoder duck type."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    IntegerEncoder,
    OverflowRiskError,
    ProtocolConfigError,
    StochasticQuantizer,
    required_bits,
    to_signed,
)
from protocols.prg import MAX_KEYSTREAM_BYTES


def _sum_mod(encs: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros_like(encs[0])
    for e in encs:
        total += e  # uint64 wraps mod 2^64
    return total & np.uint64((1 << bits) - 1) if bits < 64 else total


def test_notes_example_needs_33_bits_and_32_is_rejected() -> None:
    assert required_bits(total_bound=1000 * 1.0, precision_bits=22, n_clients=1000) == 33
    with pytest.raises(OverflowRiskError):
        StochasticQuantizer(clip=1.0, precision_bits=22, n_clients=1000, bits=32)
    q = StochasticQuantizer(clip=1.0, precision_bits=22, n_clients=1000)
    assert q.bits == 33


def test_validator_rejects_exactly_when_the_sum_could_wrap() -> None:
    for n, c, f in ((1, 1.0, 0), (7, 0.5, 10), (100, 3.0, 16), (1000, 1.0, 22)):
        b = required_bits(total_bound=n * c, precision_bits=f, n_clients=n)
        worst = math.ceil(c * 2**f) * n  # largest |sum of quantised values|
        assert worst <= 2 ** (b - 1) - 1
        StochasticQuantizer(clip=c, precision_bits=f, n_clients=n, bits=b)
        with pytest.raises(OverflowRiskError):
            StochasticQuantizer(clip=c, precision_bits=f, n_clients=n, bits=b - 1)


def test_worst_case_sum_decodes_without_wrapping() -> None:
    n, c, f = 1000, 1.0, 22
    q = StochasticQuantizer(clip=c, precision_bits=f, n_clients=n, rng=np.random.default_rng(0))
    x = np.array([5.0, -5.0, 1.0, -1.0, 0.0])
    encs = [q.encode(x=x) for _ in range(n)]
    got = q.decode(total=_sum_mod(encs, q.bits), n_summed=n)
    assert np.allclose(got, [1000.0, -1000.0, 1000.0, -1000.0, 0.0])
    # with one bit fewer the same sum would silently wrap -- this is what validation prevents
    wrapped = to_signed(total=_sum_mod(encs, q.bits - 1), bits=q.bits - 1)
    assert wrapped[0] < 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=30),
    clip=st.floats(min_value=0.01, max_value=100.0),
    f=st.integers(min_value=0, max_value=24),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_error_bound_holds(dtype: type, n: int, clip: float, f: int, seed: int) -> None:
    """Both rounding paths (float64, and the integer-domain path of float32 inputs)."""
    q = StochasticQuantizer(clip=clip, precision_bits=f, n_clients=n, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    xs = [rng.uniform(-2 * clip, 2 * clip, size=64).astype(dtype) for _ in range(n)]
    encs = [q.encode(x=x) for x in xs]
    for e, x in zip(encs, xs, strict=True):
        signed = to_signed(total=e, bits=q.bits)
        assert np.all(np.abs(signed) <= math.ceil(clip * 2**f))
        v = np.clip(x.astype(np.float64), -clip, clip) * 2**f
        assert np.all((signed == np.floor(v)) | (signed == np.floor(v) + 1))
    total = _sum_mod(encs, q.bits)
    got = q.decode(total=total, n_summed=n)
    exact = sum(np.clip(x.astype(np.float64), -clip, clip) for x in xs)
    # each stochastic rounding moves a value by < 1/s
    assert np.all(np.abs(got - exact) < n / 2.0**f + 1e-6)
    assert np.all(total < 2**q.bits)


def test_stochastic_rounding_is_unbiased_with_variance_at_most_a_quarter() -> None:
    q = StochasticQuantizer(clip=10.0, precision_bits=0, n_clients=1, rng=np.random.default_rng(1))
    for v in (0.3, -1.7, 2.5, 4.0):
        x = np.full(200_000, v)
        dec = q.decode(total=q.encode(x=x), n_summed=1)
        assert set(np.unique(dec)) <= {math.floor(v), math.ceil(v)}
        assert abs(dec.mean() - v) < 5 * 0.5 / math.sqrt(x.size)
        assert dec.var() <= 0.25 + 1e-3


def test_sum_error_std_matches_sqrt_n_over_2s() -> None:
    n, f = 64, 4
    q = StochasticQuantizer(clip=1.0, precision_bits=f, n_clients=n, rng=np.random.default_rng(2))
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-1, 1, size=20_000) for _ in range(n)]
    err = q.decode(total=_sum_mod([q.encode(x=x) for x in xs], q.bits), n_summed=n) - sum(xs)
    assert abs(err.mean()) < 5 * math.sqrt(n) / (2 * 2**f) / math.sqrt(err.size)
    assert err.std() <= math.sqrt(n) / (2 * 2**f) * 1.02


def test_weighted_total_bound_and_64_bits() -> None:
    w = [0.5, 2.0, 3.0]
    q = StochasticQuantizer(clip=3.0, precision_bits=20, n_clients=3, total_bound=sum(w) * 1.0)
    assert q.bits == required_bits(total_bound=5.5, precision_bits=20, n_clients=3)
    q64 = StochasticQuantizer(clip=1.0, precision_bits=30, n_clients=4, bits=64)
    x = np.array([-1.0, 0.5, 1.0])
    total = _sum_mod([q64.encode(x=x) for _ in range(4)], 64)
    assert np.allclose(q64.decode(total=total, n_summed=4), 4 * x, atol=4 / 2**30)


def test_encoder_protocol_and_input_validation() -> None:
    q = StochasticQuantizer(clip=1.0, precision_bits=8, n_clients=3)
    assert isinstance(q, IntegerEncoder)
    enc = q.encode(x=np.array([0.1, -0.2], dtype=np.float32))
    # the word type of the masks: uint32 up to 32 bits, uint64 above, from either input type
    assert enc.dtype == np.uint32 and np.all(enc < 2**q.bits)
    assert q.encode(x=np.array([0.1, -0.2])).dtype == np.uint32
    wide = StochasticQuantizer(clip=1.0, precision_bits=8, n_clients=3, bits=40)
    for dt in (np.float32, np.float64):
        e = wide.encode(x=np.array([0.1, -0.2], dtype=dt))
        assert e.dtype == np.uint64
        a, b = to_signed(total=e, bits=40).tolist()
        assert a in (25, 26) and b in (-52, -51)  # 0.1 * 256 = 25.6, -0.2 * 256 = -51.2
    with pytest.raises(ProtocolConfigError):
        q.encode(x=np.array([np.nan]))
    with pytest.raises(ProtocolConfigError):
        q.decode(total=enc, n_summed=4)
    for bad in (
        {"clip": 0.0, "precision_bits": 8, "n_clients": 3},
        {"clip": math.inf, "precision_bits": 8, "n_clients": 3},
        {"clip": 1.0, "precision_bits": -1, "n_clients": 3},
        {"clip": 1.0, "precision_bits": 8, "n_clients": 0},
        {"clip": 1.0, "precision_bits": 8, "n_clients": 3, "bits": 65},
        {"clip": 1.0, "precision_bits": 60, "n_clients": 3},
    ):
        with pytest.raises(ProtocolConfigError):
            StochasticQuantizer(**bad)
    with pytest.raises(OverflowRiskError):
        StochasticQuantizer(clip=1e6, precision_bits=50, n_clients=1000)


def test_to_signed_edges() -> None:
    assert to_signed(total=np.array([0, 1, 127, 128, 255], dtype=np.uint64), bits=8).tolist() == [
        0,
        1,
        127,
        -128,
        -1,
    ]
    assert to_signed(total=np.array([2**64 - 1], dtype=np.uint64), bits=64).tolist() == [-1]
    assert to_signed(total=np.array([2**62], dtype=np.uint64), bits=63).tolist() == [-(2**62)]
    with pytest.raises(ProtocolConfigError):
        to_signed(total=np.array([1], dtype=np.uint64), bits=0)


def test_float32_path_is_unbiased_and_exact_on_representable_values() -> None:
    q = StochasticQuantizer(clip=10.0, precision_bits=2, n_clients=1, rng=np.random.default_rng(4))
    for v in (0.3, -1.7, 2.55, -0.01):
        x = np.full(200_000, v, dtype=np.float32)
        dec = q.decode(total=q.encode(x=x), n_summed=1)
        target = float(np.float32(v)) * 4
        assert set(np.unique(dec * 4)) <= {math.floor(target), math.floor(target) + 1}
        assert abs(dec.mean() - float(np.float32(v))) < 5 * 0.5 / 4 / math.sqrt(x.size)
    # values on the grid are never rounded away
    x = np.array([0.25, -0.5, 9.75, -10.0, 0.0], dtype=np.float32)
    assert np.array_equal(q.decode(total=q.encode(x=x), n_summed=1), x.astype(np.float64))


def test_float32_path_with_default_aes_coins_is_unbiased() -> None:
    """Without an explicit rng, float32 coins come from AES-CTR: still unbiased, still in range."""
    q = StochasticQuantizer(clip=2.0, precision_bits=3, n_clients=1)
    for v in (0.3, -1.7, 0.01):
        x = np.full(400_000, v, dtype=np.float32)
        dec = q.decode(total=q.encode(x=x), n_summed=1)
        target = float(np.float32(v)) * 8
        assert set(np.unique(dec * 8)) <= {math.floor(target), math.floor(target) + 1}
        assert abs(dec.mean() - float(np.float32(v))) < 5 * 0.5 / 8 / math.sqrt(x.size)
    # two default quantisers draw independent coins
    x = np.full(10_000, 0.5 / 8, dtype=np.float32)
    a, b = StochasticQuantizer(clip=2.0, precision_bits=3, n_clients=1), q
    assert not np.array_equal(a.encode(x=x), b.encode(x=x))


def test_coin_keystream_is_rekeyed_before_its_counter_runs_out() -> None:
    """The coins' AES-CTR stream is re-keyed when the next chunk would pass its 32-bit counter."""
    q = StochasticQuantizer(clip=2.0, precision_bits=3, n_clients=1)
    x = np.full(10_000, 0.5 / 8, dtype=np.float32)  # exactly half a step: coins decide each one
    first = q._coin_stream
    q.encode(x=x)
    assert q._coin_stream is first  # plenty left: same stream
    q._coin_bytes_left = 4 * x.size - 1  # one byte short of the next chunk
    enc = q.encode(x=x)
    assert q._coin_stream is not first
    assert q._coin_bytes_left == MAX_KEYSTREAM_BYTES - 4 * x.size
    assert 0.3 < float(np.mean(q.decode(total=enc, n_summed=1) * 8)) < 0.7


class _EnumeratedCoins(StochasticQuantizer):
    """A quantiser whose 24-bit coins run through a fixed grid, so round-up counts are exact."""

    def __init__(self, coins: np.ndarray, **kw: Any) -> None:
        super().__init__(rng=np.random.default_rng(0), **kw)
        self._grid = coins

    def _coins_into(self, buf: np.ndarray, k: int) -> np.ndarray:
        c = buf[:k]
        c[:] = np.resize(self._grid, k)
        return c.view(np.int32)


def test_float32_word_path_rounds_up_with_probability_frac_exactly() -> None:
    """With the coins enumerating every multiple of 2^12 below 2^24 once, a value whose
    fraction is j/2^12 must round up exactly j times, for positive and negative values, small
    and large (the 32-bit path's exactness claim for |v| >= 1/2, and for all v >= 0)."""
    grid = np.arange(0, 1 << 24, 1 << 12, dtype=np.uint32)  # 4096 coins
    f = 4
    q = _EnumeratedCoins(grid, clip=1000.0, precision_bits=f, n_clients=1)
    assert q.bits <= 32
    for base in (0.0, 1.0, -1.0, 37.0, -512.0, 999.0, -1000.0 + 1):
        for j in (0, 1, 7, 2048, 4095):
            v = base + j / 4096  # v = x 2^f
            if abs(v) > 1000 * 2**f or (abs(v) < 0.5 and v < 0):
                continue
            x = np.full(grid.size, v / 2**f, dtype=np.float32)
            assert float(x[0]) * 2**f == v  # representable, so only the rounding is random
            q_signed = to_signed(total=q.encode(x=x), bits=q.bits)
            lo = math.floor(v)
            assert set(np.unique(q_signed).tolist()) <= {lo, lo + 1}
            assert int((q_signed == lo + 1).sum()) == j, (base, j)


def test_float32_word_path_matches_float64_path_in_distribution() -> None:
    """Same means (unbiased) and the same clip and range on both input types."""
    q32 = StochasticQuantizer(clip=2.0, precision_bits=6, n_clients=4, rng=np.random.default_rng(5))
    q64 = StochasticQuantizer(clip=2.0, precision_bits=6, n_clients=4, rng=np.random.default_rng(6))
    for v in (-3.0, -2.0, -0.3, -1e-9, 0.0, 1e-9, 0.011, 1.999, 2.0, 5.0):
        x = np.full(100_000, v, dtype=np.float32)
        a = q32.decode(total=q32.encode(x=x), n_summed=1)
        b = q64.decode(total=q64.encode(x=x.astype(np.float64)), n_summed=1)
        target = float(np.clip(np.float32(v), -2.0, 2.0))
        for dec in (a, b):
            assert np.all(np.abs(dec) <= 2.0)
            assert abs(dec.mean() - target) < 5 * 0.5 / 2**6 / math.sqrt(x.size) + 2.0**-30
