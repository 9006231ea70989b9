"""Shamir sharing (property 8): any t shares reconstruct, t - 1 reveal nothing."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import MalformedMessageError, ProtocolConfigError, ReconstructionError
from protocols.shamir import (
    PRIME,
    decode_share,
    encode_share,
    int_to_secret,
    lagrange_at_zero,
    random_field_elements,
    reconstruct,
    secret_to_int,
    split,
    split_many,
)


def _is_probable_prime(n: int) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_prime_and_larger_than_2_256() -> None:
    assert PRIME > 2**256
    assert _is_probable_prime(PRIME)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=12),
    data=st.data(),
)
def test_any_t_shares_reconstruct(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    xs = data.draw(st.lists(st.integers(min_value=1, max_value=2**32), min_size=n, max_size=n, unique=True))
    secret = secret_to_int(os.urandom(32))
    shares = dict(zip(xs, split(secret=secret, t=t, xs=xs), strict=True))
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert reconstruct(shares={x: shares[x] for x in subset}, t=t) == secret


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=3, max_value=10), data=st.data())
def test_t_minus_1_shares_do_not_reconstruct(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=2, max_value=n))
    xs = list(range(1, n + 1))
    secret = secret_to_int(os.urandom(32))
    shares = dict(zip(xs, split(secret=secret, t=t, xs=xs), strict=True))
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t - 1, max_size=t - 1, unique=True))
    few = {x: shares[x] for x in subset}
    with pytest.raises(ReconstructionError):
        reconstruct(shares=few, t=t)
    # interpolating t-1 shares as if the threshold were t-1 gives a wrong secret (w.h.p.)
    if t >= 2:
        assert reconstruct(shares=few, t=t - 1) != secret


@pytest.mark.parametrize("t", [2, 3])
def test_t_minus_1_shares_look_uniform_whatever_the_secret(t: int) -> None:
    """t - 1 shares of secret 0 and of secret 2^256 - 1 are both uniform (top 3 bits, chi-square).

    Shares are uniform field elements below p ~ 2^256, so bits 253..255 take 8 values equally often.
    """
    rng = random.Random(0)
    for secret in (0, 2**256 - 1):
        counts = [0] * 8
        for _ in range(800):
            xs = rng.sample(range(1, 2**20), t - 1) + [2**20 + 1]
            shares = split(secret=secret, t=t, xs=xs)[: t - 1]
            for sh in shares:
                counts[(sh >> 253) & 0x7] += 1
        expected = sum(counts) / 8
        chi2 = sum((c - expected) ** 2 / expected for c in counts)
        assert chi2 < 40.0, (secret, counts)  # df = 7: 40 is p ~ 1e-6


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=1, max_value=10), count=st.integers(min_value=1, max_value=3), data=st.data())
def test_split_many_gives_each_secret_its_own_polynomial(n: int, count: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    xs = data.draw(st.lists(st.integers(min_value=1, max_value=2**32), min_size=n, max_size=n, unique=True))
    secrets = [secret_to_int(os.urandom(32)) for _ in range(count - 1)]
    secrets.append(secrets[0] if secrets else 7)  # a repeated secret still gets a fresh polynomial
    all_shares = split_many(secrets=secrets, t=t, xs=xs)
    assert len(all_shares) == count
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    for secret, shares in zip(secrets, all_shares, strict=True):
        by_x = dict(zip(xs, shares, strict=True))
        assert reconstruct(shares={x: by_x[x] for x in subset}, t=t) == secret
    if t >= 2 and count >= 2:
        assert all_shares[0] != all_shares[-1]  # same secret, independent polynomials (w.h.p.)
    with pytest.raises(ProtocolConfigError):
        split_many(secrets=[*secrets, PRIME], t=t, xs=xs)


def test_x_zero_and_duplicate_xs_are_rejected() -> None:
    with pytest.raises(ProtocolConfigError):
        split(secret=1, t=2, xs=[0, 1, 2])
    with pytest.raises(ProtocolConfigError):
        split(secret=1, t=2, xs=[1, 1, 2])
    with pytest.raises(ProtocolConfigError):
        split(secret=1, t=4, xs=[1, 2, 3])
    with pytest.raises(ProtocolConfigError):
        split(secret=PRIME, t=2, xs=[1, 2])
    with pytest.raises(ProtocolConfigError):
        lagrange_at_zero((0, 1))


def test_share_encoding_and_secret_bounds() -> None:
    v = PRIME - 1
    assert decode_share(encode_share(v)) == v
    with pytest.raises(MalformedMessageError):
        decode_share(PRIME.to_bytes(33, "big"))
    with pytest.raises(MalformedMessageError):
        decode_share(b"\x00" * 32)
    s = os.urandom(32)
    assert int_to_secret(secret_to_int(s)) == s
    with pytest.raises(ReconstructionError):
        int_to_secret(2**256)
    with pytest.raises(ProtocolConfigError):
        secret_to_int(b"short")


def test_lagrange_cache_reuses_coefficients() -> None:
    xs = tuple(range(1, 40))
    a = lagrange_at_zero(xs)
    b = lagrange_at_zero(xs)
    assert a is b
    # coefficients sum to 1 (they interpolate the constant polynomial)
    assert sum(a) % PRIME == 1


def test_random_field_elements_rejects_candidates_not_below_p(monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates >= p are rejected, not reduced (no modulo bias), and a batch short of
    accepted candidates is topped up from a further os.urandom call."""
    import protocols.shamir as shamir_mod

    big = (PRIME + 5).to_bytes(33, "big")  # below 2^257, so it survives the mask, but >= p
    good = (PRIME - 1).to_bytes(33, "big")
    calls: list[int] = []

    def fake_urandom(n: int) -> bytes:
        calls.append(n)
        # the first batch holds one acceptable candidate, every later batch only acceptable ones
        cands = [big] * (n // 33 - 1) + [good] if len(calls) == 1 else [good] * (n // 33)
        return b"".join(cands)

    monkeypatch.setattr(shamir_mod.os, "urandom", fake_urandom)
    out = random_field_elements(3)
    assert out == [PRIME - 1] * 3
    assert len(calls) == 2


def test_random_field_elements_range_and_spread() -> None:
    vals = random_field_elements(2000)
    assert len(vals) == 2000 and all(0 <= v < PRIME for v in vals)
    assert len(set(vals)) == 2000
    # the top bit below 2^256 is set in about half of the values
    top = sum(v >> 255 & 1 for v in vals)
    assert 850 < top < 1150
    assert random_field_elements(0) == []
