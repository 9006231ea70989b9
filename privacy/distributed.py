"""Client-side integer encoders for distributed DP under secure aggregation (DDG and Skellam).

Pipeline (Kairouz, Liu & Steinke, ICML 2021, arXiv 2102.06387, Algorithm 1; Agarwal, Kairouz & Liu,
NeurIPS 2021, arXiv 2110.04995, same pipeline with Skellam noise), per client:

1. clip ``x`` to L2 norm <= ``c``;
2. zero-pad to ``d'`` = the next power of two and rotate with a randomised Hadamard transform
   ``R = H D / √d'`` (``D`` = diagonal of random signs derived from a seed shared by all clients and
   the server; ``H`` = Walsh–Hadamard, applied in O(d' log d'));
3. scale by ``1/γ``;
4. conditional randomised rounding: stochastic rounding to ℤ^{d'}, resampled until the L2 norm is
   at most Δ₂ (Kairouz et al. 2021, Thm. 1; see :func:`privacy.analysis.rounded_l2_norm_bound`);
5. add integer noise per coordinate: discrete Gaussian N_ℤ(0, σ̄²) (sampler of Canonne, Kamath &
   Steinke, NeurIPS 2020, arXiv 2004.00010, Algorithm 3) or symmetric Skellam with variance σ̄²
   (difference of two Poisson(σ̄²/2)), where σ̄ = σ/γ is this client's *share* of the noise;
6. reduce modulo 2^b (uint64 values in [0, 2^b)).

Server: the SecAgg sum (mod 2^b) is mapped to [-2^(b-1), 2^(b-1)), multiplied by γ, rotated back
with ``Rᵀ`` and truncated to ``d``.

Choosing γ (Kairouz et al. 2021, Sec. 4.2/4.4): after the rotation each coordinate of the sum is
sub-Gaussian with variance proxy at most ``n²c²/d'`` (signal) + ``n/4`` (rounding) + ``n σ̄²`` (noise;
the discrete Gaussian is σ̄²-sub-Gaussian, Canonne et al. 2020), in integer units. No coordinate wraps
with probability about ``1 - wrap_probability`` when ``k · sqrt(n²c²/(d'γ²) + n/4 + nσ²/γ²) <=
2^(b-1)`` with ``k = sqrt(2 ln(2d'/wrap_probability))`` (union bound over coordinates); :func:
`plan_distributed_dp` picks the smallest such γ for the largest number of clients ``n`` that may be
summed. (For Skellam the noise is only approximately sub-Gaussian; with σ̄ >~ 1 the margin is ample.)

Randomness: the rotation signs come from SHAKE-256 of the shared seed (public by design: the server
must undo the rotation). The rounding coins and the noise (discrete Gaussian and the Poisson draws
of Skellam) all come from :mod:`privacy.noise`: an AES-256-CTR keystream under a fresh 256-bit key
from :func:`os.urandom` per encoder (formerly a numpy PCG64 generator, which is not a
cryptographic generator), so the server cannot predict or subtract a client's noise. Nothing
remains on PCG64. The samplers are vectorised rejection samplers on the keystream (Canonne, Kamath
& Steinke 2020 for the discrete Gaussian; Hörmann 1993 PTRS for Poisson). Encodings are therefore
not reproducible from the experiment seed; tests fix the source with
:func:`privacy.noise.fixed_noise_source` or inject one.

Adjacency for the accountant: one client's contribution replaced by zero while it still adds its
noise share ("zero-out"), as in Kairouz et al. and Agarwal et al.; :meth:`DistributedDPEncoder.event`
builds the :class:`~privacy.accountants.DistributedEvent` to record, with the number of clients
whose noise actually reached the sum.

Modules: the rotation is :mod:`privacy.hadamard`, the shared configuration and its planning
:mod:`privacy.distributed_config`; this module keeps the client's rounding and noise and the
encoder, and re-exports every public name of both.
"""

from __future__ import annotations

import math

import numpy as np

from privacy.accountants import DistributedEvent
from privacy.analysis._checks import check_int, check_positive
from privacy.analysis.discrete import DISTRIBUTED_MECHANISMS
from privacy.distributed_config import (
    DEFAULT_BETA,
    MAX_BITS,
    SKELLAM_MAX_LOCAL_VARIANCE,
    DistributedDPConfig,
    calibrate_distributed_dp,
    plan_distributed_dp,
)
from privacy.errors import EncodingError, InvalidInputError, InvalidPrivacyConfigError
from privacy.hadamard import RandomizedHadamard, fwht, next_power_of_two
from privacy.noise import NoiseSource, noise_source
from privacy.noise import sample_discrete_gaussian as _noise_discrete_gaussian
from privacy.noise import sample_skellam as _noise_skellam

__all__ = [
    "ADJACENCY",
    "DEFAULT_BETA",
    "DISTRIBUTED_MECHANISMS",
    "MAX_BITS",
    "PRIVACY_UNIT",
    "SKELLAM_MAX_LOCAL_VARIANCE",
    "DistributedDPConfig",
    "DistributedDPEncoder",
    "RandomizedHadamard",
    "calibrate_distributed_dp",
    "conditional_randomized_round",
    "fwht",
    "next_power_of_two",
    "plan_distributed_dp",
    "sample_discrete_gaussian",
    "sample_skellam",
]

#: Privacy unit of the distributed mechanisms: one client's whole update.
PRIVACY_UNIT = "client"
#: One client's contribution replaced by zero (it still adds its noise share).
ADJACENCY = "zero-out"


# --------------------------------------------------------------------------------------------------
# Rounding and noise
# --------------------------------------------------------------------------------------------------


def conditional_randomized_round(
    *, x: np.ndarray, l2_bound: float, source: NoiseSource, max_attempts: int = 1000
) -> tuple[np.ndarray, int]:
    """Stochastic rounding to integers, resampled until ``‖x̃‖₂ <= l2_bound`` (Kairouz et al. 2021).

    Each coordinate rounds to ``⌊x⌋ + Bernoulli(x - ⌊x⌋)`` (unbiased). With ``l2_bound`` equal to
    :func:`~privacy.analysis.rounded_l2_norm_bound` for ``‖x‖ <= c/γ`` and parameter β, an attempt
    succeeds with probability >= 1 - β; with β = 0 the bound ``‖x‖ + √d`` always holds.

    Args:
        x: 1-D float array (already scaled).
        l2_bound: Δ₂ > 0.
        source: random source (:func:`privacy.noise.noise_source`); the coins compare keystream
            words with ``frac · 2^64``.
        max_attempts: give up after this many attempts.

    Returns:
        ``(rounded int64 array, attempts used)``.

    Raises:
        EncodingError: no attempt met the bound.
        InvalidInputError: non-finite input.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise InvalidInputError("x must be a finite 1-D array")
    bound_sq = float(l2_bound) ** 2
    base = np.floor(arr)
    frac = arr - base
    base_int = base.astype(np.int64)
    for attempt in range(1, check_int("max_attempts", max_attempts, minimum=1) + 1):
        rounded = base_int + source.bernoulli(p=frac)
        if float(np.dot(rounded.astype(np.float64), rounded.astype(np.float64))) <= bound_sq:
            return rounded.astype(np.int64), attempt
    raise EncodingError(
        f"conditional rounding failed {max_attempts} times for bound {l2_bound:g} (input norm "
        f"{float(np.linalg.norm(arr)):g}); the bound does not match the clip norm / gamma"
    )


def sample_discrete_gaussian(*, sigma: float, size: int, source: NoiseSource) -> np.ndarray:
    """Samples of the discrete Gaussian N_ℤ(0, σ²) (P(x) ∝ exp(-x²/(2σ²)), x ∈ ℤ).

    Rejection sampler of Canonne, Kamath & Steinke (2020), Algorithm 3, on the cryptographic
    keystream: :func:`privacy.noise.sample_discrete_gaussian` (vectorised; acceptance coins at
    128-bit resolution; the running time depends on the acceptance coins only, which are
    independent of the accepted values).

    Args:
        sigma: σ > 0.
        size: number of samples >= 0.
        source: random source (:func:`privacy.noise.noise_source`).

    Returns:
        int64 array of ``size`` samples.

    Raises:
        InvalidPrivacyConfigError: invalid σ or size.
    """
    s = check_positive("sigma", sigma)
    n = check_int("size", size, minimum=0)
    return _noise_discrete_gaussian(sigma=s, size=n, source=source)


def sample_skellam(*, variance: float, size: int, source: NoiseSource) -> np.ndarray:
    """Samples of the symmetric Skellam distribution with the given variance: Poisson(v/2) - Poisson(v/2).

    The Poisson draws are :func:`privacy.noise.sample_poisson` on the cryptographic keystream
    (inversion below a mean of 10, Hörmann's PTRS above).

    Args:
        variance: v in (0, :data:`SKELLAM_MAX_LOCAL_VARIANCE`].
        size: number of samples >= 0.
        source: random source (:func:`privacy.noise.noise_source`).

    Returns:
        int64 array of ``size`` samples.

    Raises:
        InvalidPrivacyConfigError: invalid variance (including one too large to sample accurately) or size.
    """
    v = check_positive("variance", variance)
    if v > SKELLAM_MAX_LOCAL_VARIANCE:
        raise InvalidPrivacyConfigError(
            f"Skellam variance {v:.3g} exceeds {SKELLAM_MAX_LOCAL_VARIANCE:g}, the largest the Poisson "
            "sampler is validated for; use fewer bits (larger gamma) or DDG noise"
        )
    n = check_int("size", size, minimum=0)
    return _noise_skellam(variance=v, size=n, source=source)


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------


class DistributedDPEncoder:
    """Encode a client's real vector into ℤ_{2^b} with its noise share; decode the SecAgg sum.

    The same class serves both sides: clients call :meth:`encode` (one encoder per client, its own
    unpredictable randomness), the server calls :meth:`decode` on the modular sum.

    Args:
        config: the shared :class:`DistributedDPConfig`.
        rotation_seed: shared seed of the round's rotation (>= 16 bytes; use a fresh one per round).
        source: randomness for rounding and noise; ``None`` (the default, and the only choice for
            real runs) is :func:`privacy.noise.noise_source` (a fresh AES-256-CTR keystream per
            encoder). Inject one only in tests.

    Attributes:
        bits: b; encoded values lie in [0, 2^b).
        dim: d, the length of input/decoded vectors.
        encoded_dim: d', the length of encoded vectors.
        last_rounding_attempts: attempts used by the last conditional rounding.
    """

    PRIVACY_UNIT = PRIVACY_UNIT
    ADJACENCY = ADJACENCY

    def __init__(
        self, *, config: DistributedDPConfig, rotation_seed: bytes, source: NoiseSource | None = None
    ) -> None:
        if not isinstance(config, DistributedDPConfig):
            raise InvalidPrivacyConfigError(
                f"config must be a DistributedDPConfig, got {type(config).__name__}"
            )
        self.config = config
        self.bits: int = config.bits
        self.dim: int = config.dim
        self.encoded_dim: int = config.padded_dim
        self.rotation = RandomizedHadamard(seed=rotation_seed, dim=self.encoded_dim)
        if source is not None and not isinstance(source, NoiseSource):
            raise InvalidInputError(
                f"source must be a privacy.noise.NoiseSource, got {type(source).__name__}"
            )
        self._noise = noise_source() if source is None else source
        self._l2_bound = config.l2_sensitivity
        self._mask = np.uint64((1 << self.bits) - 1) if self.bits < 64 else None
        self.last_rounding_attempts = 0

    # ---- client side --------------------------------------------------------------------------
    def clip(self, *, x: np.ndarray) -> np.ndarray:
        """``x`` scaled to L2 norm <= c (float64 copy).

        Raises:
            InvalidInputError: wrong shape or non-finite values.
        """
        arr = _vector(x, name="x", length=self.dim, kind=np.number, what="a numeric").astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError("x contains NaN or inf")
        norm = float(np.linalg.norm(arr))
        if norm > self.config.clip_norm:
            arr = arr * (self.config.clip_norm / norm)
        return arr

    def quantize(self, *, x: np.ndarray) -> np.ndarray:
        """Steps 1–4 without noise: clip, pad, rotate, scale by 1/γ, conditionally round (int64, length d').

        Raises:
            InvalidInputError: bad input.
            EncodingError: conditional rounding failed (should not happen with a valid config).
        """
        clipped = self.clip(x=x)
        padded = np.zeros(self.encoded_dim)
        padded[: self.dim] = clipped
        scaled = self.rotation.forward(x=padded) / self.config.gamma
        rounded, attempts = conditional_randomized_round(
            x=scaled, l2_bound=self._l2_bound, source=self._noise
        )
        self.last_rounding_attempts = attempts
        return rounded

    def noise(self) -> np.ndarray:
        """One client's integer noise share (int64, length d')."""
        sigma_bar = self.config.scaled_local_stddev
        if self.config.mechanism == "ddg":
            return sample_discrete_gaussian(sigma=sigma_bar, size=self.encoded_dim, source=self._noise)
        return sample_skellam(variance=sigma_bar**2, size=self.encoded_dim, source=self._noise)

    def encode(self, *, x: np.ndarray) -> np.ndarray:
        """Encode one client's vector: clip, rotate, scale, round, add noise share, reduce mod 2^b.

        Args:
            x: real vector of shape ``(dim,)``.

        Returns:
            uint64 array of shape ``(encoded_dim,)`` with values in [0, 2^bits).

        Raises:
            InvalidInputError: wrong shape or non-finite values.
            EncodingError: conditional rounding failed.
        """
        values = self.quantize(x=x) + self.noise()
        out = values.astype(np.uint64)  # two's complement: reduction mod 2^64
        if self._mask is not None:
            out &= self._mask
        return out

    # ---- server side --------------------------------------------------------------------------
    def to_signed(self, *, total: np.ndarray) -> np.ndarray:
        """Map a modular sum to its representative in [-2^(b-1), 2^(b-1)) (int64).

        Raises:
            InvalidInputError: wrong shape or non-integer dtype.
        """
        arr = _vector(total, name="total", length=self.encoded_dim, kind=np.integer, what="an integer")
        v = arr.astype(np.uint64)
        shift = np.uint64(64 - self.bits)
        return ((v << shift).view(np.int64) >> np.int64(64 - self.bits)).astype(np.int64)

    def decode(self, *, total: np.ndarray, n_summed: int) -> np.ndarray:
        """Decode the SecAgg sum of ``n_summed`` encodings into a real vector of length ``dim``.

        Args:
            total: the modular sum (integer array of length ``encoded_dim``; reduced mod 2^b here).
            n_summed: number of encodings in the sum (1..max_clients).

        Returns:
            float64 array of shape ``(dim,)``: the sum of the clipped inputs plus noise and rounding error.

        Raises:
            InvalidInputError: bad shape/dtype, or ``n_summed`` outside [1, max_clients] (the no-wrap
                guarantee was planned for at most ``max_clients``).
        """
        if (
            isinstance(n_summed, bool)
            or not isinstance(n_summed, (int, np.integer))
            or not 1 <= n_summed <= self.config.max_clients
        ):
            raise InvalidInputError(
                f"n_summed must be in [1, {self.config.max_clients}] (the configured max_clients), "
                f"got {n_summed}"
            )
        signed = self.to_signed(total=total)
        rotated = signed.astype(np.float64) * self.config.gamma
        return self.rotation.inverse(y=rotated)[: self.dim]

    def noise_stddev(self, *, n_summed: int) -> float:
        """Std of the noise in each decoded coordinate when ``n_summed`` noise shares are summed (real units).

        The rotation is orthogonal, so i.i.d. integer noise of variance v per coordinate stays at
        variance v per coordinate after ``Rᵀ``: the answer is ``γ · sqrt(n · v)``.
        """
        n = check_int("n_summed", n_summed, minimum=1)
        return self.config.gamma * math.sqrt(n * self.config.local_noise_variance)

    def event(self, *, num_survivors: int, sample_rate: float = 1.0) -> DistributedEvent:
        """Accountant event for a round with ``num_survivors`` summed clients.

        See :meth:`DistributedDPConfig.event`.
        """
        return self.config.event(num_survivors=num_survivors, sample_rate=sample_rate)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DistributedDPEncoder({c.mechanism}, d={c.dim}->{self.encoded_dim}, bits={c.bits}, "
            f"gamma={c.gamma:.4g}, local_stddev={c.local_stddev:.4g}, max_clients={c.max_clients})"
        )


def _vector(value: np.ndarray, *, name: str, length: int, kind: type, what: str) -> np.ndarray:
    """``value`` as an array, once it is checked to be of shape ``(length,)`` and of dtype ``kind``.

    Raises:
        InvalidInputError: another shape or dtype (the message says ``{name} must be {what} array``).
    """
    arr = np.asarray(value)
    if arr.shape != (length,) or not np.issubdtype(arr.dtype, kind):
        raise InvalidInputError(
            f"{name} must be {what} array of shape ({length},), got {arr.dtype} {arr.shape}"
        )
    return arr
