"""The cryptographic random source of every DP mechanism, and the test hook that fixes it.

:class:`CryptoNoiseSource` is the AES-256 keystream in counter mode (``cryptography``'s OpenSSL
binding) under a 256-bit key from :func:`os.urandom`; the keystream is read as little-endian
``uint64`` words and turned into uniforms, coins, geometric, Poisson and discrete Gaussian
samples with vectorised numpy code (no per-coordinate Python loop). Predicting or reproducing the
noise means recovering the key: 2^256 work, against 2^32 for a torch ``manual_seed`` (MT19937
keeps only the low 32 bits of the seed) — the attack that motivated this module (issue 16). A
source notices a ``fork``: the child re-keys from :func:`os.urandom`, so two processes never
replay one keystream. The key lives in the process that draws the noise (the site for record-level
and distributed DP, the trusted aggregator for client-level DP) and is never written anywhere.

Test hook
---------
:func:`fixed_noise_source` (a context manager) makes :func:`noise_source` hand out one keyed,
deterministic :class:`FixedNoiseSource` to every consumer created inside the ``with`` block, in
this process, so neighbouring-dataset tests can fix every random source. Production code never
builds a fixed source: :func:`noise_source` returns a fresh :class:`CryptoNoiseSource` unless the
hook is active, and the hook does not cross process boundaries (set it in each process, or use
the sequential backend).

Every name here is also importable from :mod:`privacy.noise`, whose samplers draw from these sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privacy.errors import InvalidInputError, InvalidPrivacyConfigError

__all__ = [
    "KEY_BITS",
    "CryptoNoiseSource",
    "FixedNoiseSource",
    "NoiseSource",
    "check_size",
    "fixed_noise_source",
    "noise_source",
    "resolve_noise_source",
]

#: Key size of every noise source (AES-256).
KEY_BITS = 256

_TWO64 = 2.0**64
_TWO53_INV = 2.0**-53
_CHUNK_WORDS = 1 << 20  # keystream is produced in 8 MiB pieces
_ZEROS = memoryview(bytes(8 * _CHUNK_WORDS))  # plaintext of the keystream (zero pages until read)


def check_size(size: int) -> int:
    """``size`` as an int, if it is an integer >= 0 (bools refused).

    Args:
        size: a number of samples (or a dimension).

    Returns:
        ``int(size)``.

    Raises:
        InvalidInputError: not an integer >= 0.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or int(size) < 0:
        raise InvalidInputError(f"size must be an int >= 0, got {size!r}")
    return int(size)


class NoiseSource:
    """A stream of uniform 64-bit words and the basic draws built on it.

    Subclasses implement :meth:`_keystream_into`; the rest is shared. Not meant to be built directly:
    use :func:`noise_source`.

    Attributes:
        fixed: ``True`` only for the test-only :class:`FixedNoiseSource`.
    """

    fixed = False

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def key_bits(self) -> int:
        """Bits of key material behind the stream."""
        return KEY_BITS

    def _keystream_into(self, buf: memoryview, n_bytes: int) -> None:
        """Write ``n_bytes`` of keystream to the start of ``buf`` (``len(buf) >= n_bytes + 15``)."""
        raise NotImplementedError

    def words(self, *, size: int) -> np.ndarray:
        """``size`` independent uniform ``uint64`` words from the keystream.

        Args:
            size: Number of words (>= 0).

        Returns:
            A fresh ``uint64`` array.

        Raises:
            InvalidInputError: If ``size`` is negative or not an int.
        """
        n = check_size(size)
        out = np.empty(n + 2, dtype=np.uint64)  # two spare words: room the cipher API asks for
        done = 0
        while done < n:
            m = min(n - done, _CHUNK_WORDS)
            self._keystream_into(out[done : done + m + 2].data.cast("B"), 8 * m)
            done += m
        return out[:n]

    def uniform(self, *, size: int) -> np.ndarray:
        """Uniforms on the 53-bit grid of ``[0, 1)`` (float64).

        Args:
            size: Number of samples.

        Returns:
            ``(w >> 11) · 2^-53`` for fresh words ``w``.
        """
        return (self.words(size=size) >> np.uint64(11)).astype(np.float64) * _TWO53_INV

    def uniform_open0(self, *, size: int) -> np.ndarray:
        """Uniforms on the 53-bit grid of ``(0, 1]`` (float64; safe for ``log``)."""
        return ((self.words(size=size) >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * _TWO53_INV

    def bernoulli(self, *, p: np.ndarray) -> np.ndarray:
        """Independent coins with ``P(True) = p[i]`` at 128-bit resolution.

        A fresh word ``w`` is compared with ``⌊p·2^64⌋``; on a tie (probability 2^-64) a second
        word is compared with the fractional part, so the probability is exact up to the float64
        rounding of ``p`` itself (relative 2^-53) plus an absolute 2^-128. ``p >= 1`` is always
        ``True``, ``p <= 0`` never.

        Args:
            p: Probabilities (any shape; values outside ``[0, 1]`` are clamped).

        Returns:
            A bool array of ``p``'s shape.
        """
        probs = np.asarray(p, dtype=np.float64)
        w = self.words(size=int(probs.size)).reshape(probs.shape)
        scaled = np.clip(probs, 0.0, 1.0) * _TWO64
        whole = np.floor(scaled)
        # 2^64 - 2048 is the largest float64 below 2^64 (exactly representable as uint64).
        hi = np.minimum(whole, _TWO64 - 2048.0).astype(np.uint64)
        frac = scaled - whole  # non-zero only where p·2^64 < 2^53
        out = w < hi
        tie = (w == hi) & (frac > 0.0)
        if np.any(tie):
            lo = np.minimum(frac[tie] * _TWO64, _TWO64 - 2048.0).astype(np.uint64)
            out[tie] = self.words(size=int(np.count_nonzero(tie))) < lo
        return out | (probs >= 1.0)


class CryptoNoiseSource(NoiseSource):
    """AES-256-CTR keystream under a fresh 256-bit key from :func:`os.urandom` (production).

    The key never leaves the object. After a ``fork`` the child re-keys on its first draw, so
    parent and child never share a stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rekey(os.urandom(KEY_BITS // 8))

    def _rekey(self, key: bytes) -> None:
        if len(key) * 8 < 128:
            raise InvalidPrivacyConfigError(f"noise key must have >= 128 bits, got {8 * len(key)}")
        self._key_bits = 8 * len(key)
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._pid = os.getpid()

    @property
    def key_bits(self) -> int:
        """Bits of the AES key (256)."""
        return self._key_bits

    def _after_fork(self) -> None:
        self._rekey(os.urandom(KEY_BITS // 8))

    def _keystream_into(self, buf: memoryview, n_bytes: int) -> None:
        with self._lock:
            if os.getpid() != self._pid:
                self._after_fork()
            written = self._encryptor.update_into(_ZEROS[:n_bytes], buf)
            if written != n_bytes:  # CTR is a stream mode: never happens
                raise RuntimeError("AES-CTR returned a short keystream")


class FixedNoiseSource(CryptoNoiseSource):
    """TEST ONLY: the same keystream for the same seed (key = SHA-256 of a domain tag and the seed).

    Built only by :func:`fixed_noise_source`; never used unless a test enters that context. A fork
    does not re-key it (tests want determinism).

    Args:
        seed: Any int, str or bytes.
    """

    fixed = True

    def __init__(self, *, seed: int | str | bytes) -> None:
        NoiseSource.__init__(self)
        if isinstance(seed, bool) or not isinstance(seed, int | str | bytes):
            raise InvalidInputError(f"seed must be an int, str or bytes, got {type(seed).__name__}")
        material = seed if isinstance(seed, bytes) else str(seed).encode()
        self._rekey(hashlib.sha256(b"secfed.privacy.noise.fixed-test-source.v1\x00" + material).digest())

    def _after_fork(self) -> None:
        self._pid = os.getpid()


_override: NoiseSource | None = None
_override_lock = threading.Lock()


def noise_source() -> NoiseSource:
    """The noise source a mechanism should use: fresh and cryptographic unless a test fixed it.

    Returns:
        A new :class:`CryptoNoiseSource`, or the active :func:`fixed_noise_source` (tests only).
    """
    current = _override
    return CryptoNoiseSource() if current is None else current


@contextlib.contextmanager
def fixed_noise_source(*, seed: int | str | bytes) -> Iterator[FixedNoiseSource]:
    """TEST ONLY: inside the block every :func:`noise_source` call returns one deterministic source.

    Mechanisms take their source when they are built (optimisers, aggregators, encoders), so build
    them inside the block. Blocks nest (the previous source is restored on exit). Per process.

    Args:
        seed: Seed of the deterministic keystream.

    Yields:
        The fixed source.

    Raises:
        InvalidInputError: If the seed has the wrong type.
    """
    global _override
    source = FixedNoiseSource(seed=seed)
    with _override_lock:
        previous, _override = _override, source
    try:
        yield source
    finally:
        with _override_lock:
            _override = previous


def resolve_noise_source(source: NoiseSource | None) -> NoiseSource:
    if source is None:
        return noise_source()
    if not isinstance(source, NoiseSource):
        raise InvalidInputError(
            f"source must be a privacy.noise.NoiseSource (see noise_source()), got {type(source).__name__}"
        )
    return source
