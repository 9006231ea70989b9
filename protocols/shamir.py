"""Shamir secret sharing over the prime field GF(p), p = 2^256 + 297.

Shamir, "How to share a secret", CACM 1979. p is the smallest prime above 2^256, so every
32-byte secret (an X25519 private key, a self-mask seed) is a field element without reduction.
Shares are evaluations of a random polynomial of degree ``t - 1`` at x-coordinates chosen by the
caller, which must be distinct, non-zero and below p (x = 0 is the secret itself). Coefficients
are drawn uniformly from the field by rejection sampling (:func:`random_field_elements`: 257-bit
candidates from ``os.urandom``, rejected when not below p), so there is no modulo bias.

Reconstruction uses Lagrange coefficients at 0, cached per x-set (in full-graph SecAgg every
secret is reconstructed from the same survivor set). :func:`reconstruct_verified` checks the
result against a commitment and, when it fails, searches other t-subsets of the shares received
and names the holders whose shares are off the polynomial, so one bad share can make a
reconstruction fail but never pass as a wrong secret.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Sequence
from functools import lru_cache

from protocols.errors import MalformedMessageError, ProtocolConfigError, ReconstructionError

__all__ = [
    "PRIME",
    "random_field_elements",
    "SHARE_BYTES",
    "SECRET_BYTES",
    "split",
    "split_many",
    "reconstruct",
    "reconstruct_verified",
    "lagrange_at_zero",
    "secret_to_int",
    "int_to_secret",
    "encode_share",
    "decode_share",
]

PRIME = 2**256 + 297
_CANDIDATE_BYTES = 33  # 264 random bits, masked to 257: PRIME < 2^257
_CANDIDATE_MASK = (1 << 257) - 1
SHARE_BYTES = 33  # ceil(257 / 8)
SECRET_BYTES = 32


def secret_to_int(secret: bytes) -> int:
    """Map a 32-byte secret to a field element (big-endian).

    Args:
        secret: Exactly 32 bytes.

    Returns:
        The integer in ``[0, 2^256)``.

    Raises:
        ProtocolConfigError: If ``secret`` is not 32 bytes.
    """
    if len(secret) != SECRET_BYTES:
        raise ProtocolConfigError(f"Shamir secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    return int.from_bytes(secret, "big")


def int_to_secret(value: int) -> bytes:
    """Inverse of :func:`secret_to_int`.

    Args:
        value: Field element that encodes a 32-byte secret.

    Returns:
        The 32-byte secret.

    Raises:
        ReconstructionError: If ``value`` does not fit in 32 bytes (shares were inconsistent).
    """
    if not 0 <= value < 2**256:
        raise ReconstructionError("reconstructed value is not a 32-byte secret (inconsistent shares)")
    return value.to_bytes(SECRET_BYTES, "big")


def encode_share(value: int) -> bytes:
    """Serialise a share value as 33 big-endian bytes.

    Args:
        value: Field element.

    Returns:
        33 bytes.
    """
    return value.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    """Parse a 33-byte share value and check that it is a field element.

    Args:
        data: 33 bytes.

    Returns:
        The field element.

    Raises:
        MalformedMessageError: If the length is wrong or the value is not below the prime.
    """
    if len(data) != SHARE_BYTES:
        raise MalformedMessageError(f"share must be {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise MalformedMessageError("share value is not a field element")
    return value


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ProtocolConfigError("Shamir x-coordinates must be distinct")
    for x in xs:
        if not 0 < x < PRIME:
            raise ProtocolConfigError(f"Shamir x-coordinate must be in [1, p), got {x}")


def random_field_elements(count: int) -> list[int]:
    """``count`` independent uniform elements of ``[0, PRIME)`` from the OS RNG.

    Rejection sampling, as :func:`secrets.randbelow` does, but from one ``os.urandom`` call per
    batch: each candidate is 257 random bits, accepted when below ``PRIME`` (about half are), so
    the result is exactly uniform.

    Args:
        count: Number of elements (>= 0).

    Returns:
        The elements.
    """
    out: list[int] = []
    while len(out) < count:
        need = count - len(out)
        raw = os.urandom(_CANDIDATE_BYTES * (2 * need + 2))
        for i in range(0, len(raw), _CANDIDATE_BYTES):
            v = int.from_bytes(raw[i : i + _CANDIDATE_BYTES], "big") & _CANDIDATE_MASK
            if v < PRIME:
                out.append(v)
                if len(out) == count:
                    break
    return out


def split(*, secret: int, t: int, xs: Sequence[int]) -> list[int]:
    """Split ``secret`` into shares ``f(x)`` for each ``x`` in ``xs`` with threshold ``t``.

    Args:
        secret: Field element in ``[0, p)``.
        t: Number of shares needed to reconstruct (polynomial degree ``t - 1``), ``1 <= t <= len(xs)``.
        xs: Distinct non-zero x-coordinates.

    Returns:
        Share values, in the order of ``xs``.

    Raises:
        ProtocolConfigError: On an invalid threshold, secret or x-coordinate.
    """
    return split_many(secrets=[secret], t=t, xs=xs)[0]


def split_many(*, secrets: Sequence[int], t: int, xs: Sequence[int]) -> list[list[int]]:
    """Split several secrets with the same threshold and x-coordinates, each with its own
    independent random polynomial (one OS-randomness draw and one argument check for all).

    Args:
        secrets: Field elements in ``[0, p)``.
        t: Number of shares needed to reconstruct (polynomial degree ``t - 1``), ``1 <= t <= len(xs)``.
        xs: Distinct non-zero x-coordinates.

    Returns:
        For each secret, its share values in the order of ``xs``.

    Raises:
        ProtocolConfigError: On an invalid threshold, secret or x-coordinate.
    """
    if not 1 <= t <= len(xs):
        raise ProtocolConfigError(f"threshold t must be in [1, {len(xs)}], got {t}")
    if not all(0 <= secret < PRIME for secret in secrets):
        raise ProtocolConfigError("secret must be a field element")
    _check_xs(xs)
    randomness = random_field_elements((t - 1) * len(secrets))
    p = PRIME
    out = []
    for j, secret in enumerate(secrets):
        # coefficients[0] is the highest degree so that Horner's rule runs from it down to the secret
        coefficients = randomness[j * (t - 1) : (j + 1) * (t - 1)]
        coefficients.append(secret)
        shares = []
        for x in xs:
            acc = 0
            for c in coefficients:
                acc = (acc * x + c) % p
            shares.append(acc)
        out.append(shares)
    return out


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange coefficients ``l_i(0)`` for the x-coordinates ``xs`` (cached).

    ``f(0) = sum_i l_i(0) f(x_i)`` for every polynomial of degree < ``len(xs)``.

    Args:
        xs: Distinct non-zero x-coordinates.

    Returns:
        The coefficients, aligned with ``xs``.

    Raises:
        ProtocolConfigError: If ``xs`` are not distinct non-zero field elements.
    """
    _check_xs(xs)
    p = PRIME
    nums = []
    dens = []
    for i, xi in enumerate(xs):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % p
                den = den * (xj - xi) % p
        nums.append(num)
        dens.append(den)
    # one modular inversion for all denominators (Montgomery's trick)
    prefix = [1] * (len(dens) + 1)
    for i, d in enumerate(dens):
        prefix[i + 1] = prefix[i] * d % p
    inv = pow(prefix[-1], -1, p)
    inv_dens = [0] * len(dens)
    for i in range(len(dens) - 1, -1, -1):
        inv_dens[i] = prefix[i] * inv % p
        inv = inv * dens[i] % p
    return tuple(n * d % p for n, d in zip(nums, inv_dens, strict=True))


def reconstruct(*, shares: dict[int, int], t: int) -> int:
    """Reconstruct the secret from at least ``t`` shares.

    Uses the ``t`` shares with the smallest x-coordinates so that equal x-sets hit the cache.

    Args:
        shares: Share value by x-coordinate.
        t: The threshold the shares were made with.

    Returns:
        The secret (field element).

    Raises:
        ReconstructionError: If fewer than ``t`` shares are given.
        ProtocolConfigError: On invalid x-coordinates or ``t``.
    """
    if t < 1:
        raise ProtocolConfigError(f"threshold t must be >= 1, got {t}")
    if len(shares) < t:
        raise ReconstructionError(f"need {t} shares to reconstruct, got {len(shares)}")
    xs = tuple(sorted(shares)[:t])
    coeffs = lagrange_at_zero(xs)
    p = PRIME
    acc = 0
    for x, c in zip(xs, coeffs, strict=True):
        acc += c * shares[x]
    return acc % p


def _interpolate_at_zero(xs: tuple[int, ...], shares: dict[int, int]) -> int:
    coeffs = lagrange_at_zero(xs)
    acc = 0
    for x, c in zip(xs, coeffs, strict=True):
        acc += c * shares[x]
    return acc % PRIME


def _interpolate_at(xs: tuple[int, ...], shares: dict[int, int], x: int) -> int:
    """Value at ``x`` of the polynomial of degree < len(xs) through the shares at ``xs``."""
    p = PRIME
    acc = 0
    for i, xi in enumerate(xs):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (x - xj) % p
                den = den * (xi - xj) % p
        acc += shares[xi] * num * pow(den, -1, p)
    return acc % p


def _candidate_subsets(xs: list[int], t: int, max_tries: int) -> list[tuple[int, ...]]:
    """t-subsets to try after the first t failed: leave-one-out of the first t + 1 (one bad
    share among them), sliding windows, then uniformly random subsets (OS randomness)."""
    out: list[tuple[int, ...]] = []
    head = xs[: t + 1]
    if len(head) == t + 1:
        out.extend(tuple(head[:i] + head[i + 1 :]) for i in range(t + 1))
    out.extend(tuple(xs[j : j + t]) for j in range(1, len(xs) - t + 1))
    if len(xs) <= 16:  # few shares: every subset (at most C(16, 8) = 12,870, capped below)
        out.extend(itertools.islice(itertools.combinations(xs, t), max_tries))
    else:
        rng = secrets.SystemRandom()
        out.extend(tuple(sorted(rng.sample(xs, t))) for _ in range(max_tries))
    seen: set[tuple[int, ...]] = set()
    unique = []
    for c in out:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique[:max_tries]


def reconstruct_verified(
    *, shares: dict[int, int], t: int, accept: Callable[[int], bool], max_tries: int = 512
) -> tuple[int, list[int]]:
    """Reconstruct a committed secret; never return a value that ``accept`` refuses.

    The fast path interpolates the ``t`` shares with the smallest x (cached coefficients) and
    checks the commitment. Only when that fails are other t-subsets tried (at most
    ``max_tries``); the first value ``accept`` takes is returned with the x-coordinates of every
    received share that does not lie on its polynomial (their holders sent bad shares).

    Args:
        shares: Share value by x-coordinate.
        t: The threshold the shares were made with.
        accept: Commitment check of a candidate secret (a binding hash or a derived public key).
        max_tries: Most t-subsets to interpolate after the first one failed.

    Returns:
        ``(secret, bad x-coordinates)``; the list is empty on the fast path.

    Raises:
        ReconstructionError: If fewer than ``t`` shares are given or no subset tried yields a
            secret the commitment accepts (too many bad shares: the round must abort).
        ProtocolConfigError: On invalid x-coordinates or ``t``.
    """
    if t < 1:
        raise ProtocolConfigError(f"threshold t must be >= 1, got {t}")
    if len(shares) < t:
        raise ReconstructionError(f"need {t} shares to reconstruct, got {len(shares)}")
    xs = sorted(shares)
    first = tuple(xs[:t])
    value = _interpolate_at_zero(first, shares)
    if accept(value):
        return value, []
    for subset in _candidate_subsets(xs, t, max_tries):
        if subset == first:
            continue
        value = _interpolate_at_zero(subset, shares)
        if accept(value):
            members = set(subset)
            bad = [x for x in xs if x not in members and _interpolate_at(subset, shares, x) != shares[x]]
            return value, bad
    raise ReconstructionError(
        f"no t-subset of the {len(xs)} shares received reconstructs the committed secret "
        f"(t={t}, {min(max_tries, len(xs))}+ subsets tried): bad shares; aborting"
    )
