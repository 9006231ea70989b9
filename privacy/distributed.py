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
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from privacy.accountants import DistributedEvent
from privacy.analysis._checks import check_finite_nonneg, check_int, check_positive, check_rate
from privacy.analysis.calibration import bisect_noise, distributed_epsilon
from privacy.analysis.discrete import (
    DDG_MIN_LOCAL_STDDEV,
    DISTRIBUTED_MECHANISMS,
    discrete_gaussian_variance,
    rounded_l1_norm_bound,
    rounded_l2_norm_bound,
)
from privacy.errors import CalibrationError, EncodingError, InvalidInputError, InvalidPrivacyConfigError
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
#: β = e^{-1/2}, the conditional-rounding parameter used by Kairouz et al. (2021) in their experiments.
DEFAULT_BETA = math.exp(-0.5)
#: Largest accepted bit width (values travel as uint64).
MAX_BITS = 64
#: Largest per-client Skellam variance (integer units) we sample: two Poisson(5e11) draws. The limit
#: dates from numpy's Poisson sampler (variance ratio 1.000 at a mean of 1e13, 1.008 at 1e14); the
#: keystream PTRS sampler of :mod:`privacy.noise` is tested at this mean and the limit is kept.
SKELLAM_MAX_LOCAL_VARIANCE = 1e12
_ROTATION_DOMAIN = b"secfed.privacy.distributed.rotation.v1"


# --------------------------------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------------------------------


def next_power_of_two(*, n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    n = check_int("n", n, minimum=1)
    return 1 << (n - 1).bit_length()


def fwht(*, x: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh–Hadamard transform along the last axis, O(d log d).

    ``fwht(x=fwht(x=v)) == d · v``; ``fwht(x=v) / √d`` is orthogonal and symmetric (Sylvester ordering).

    Args:
        x: real array whose last dimension is a power of two.

    Returns:
        A new float64 array of the same shape.

    Raises:
        InvalidInputError: the last dimension is not a power of two.
    """
    arr = np.array(x, dtype=np.float64, copy=True)
    n = arr.shape[-1] if arr.ndim else 0
    if n < 1 or n & (n - 1):
        raise InvalidInputError(f"fwht needs a last dimension that is a power of two, got {n}")
    lead = arr.shape[:-1]
    h = 1
    while h < n:
        blocks = arr.reshape(*lead, n // (2 * h), 2, h)
        a = blocks[..., 0, :]
        b = blocks[..., 1, :]
        arr = np.stack((a + b, a - b), axis=-2).reshape(*lead, n)
        h *= 2
    return arr


def _rotation_signs(seed: bytes, dim: int) -> np.ndarray:
    digest = hashlib.shake_256(
        _ROTATION_DOMAIN + len(seed).to_bytes(4, "big") + seed + dim.to_bytes(8, "big")
    ).digest((dim + 7) // 8)
    bits = np.unpackbits(np.frombuffer(digest, dtype=np.uint8), bitorder="little")[:dim]
    return 1.0 - 2.0 * bits.astype(np.float64)


class RandomizedHadamard:
    """The orthogonal rotation ``R = H D / √d`` with shared-seed random signs ``D``.

    Args:
        seed: shared seed (>= 16 bytes), identical for all clients and the server of a round.
        dim: d, a power of two.

    Raises:
        InvalidPrivacyConfigError: short seed or ``dim`` not a power of two.
    """

    def __init__(self, *, seed: bytes, dim: int) -> None:
        if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
            raise InvalidPrivacyConfigError("rotation seed must be at least 16 bytes")
        d = check_int("dim", dim, minimum=1)
        if d & (d - 1):
            raise InvalidPrivacyConfigError(f"rotation dimension must be a power of two, got {d}")
        self.dim = d
        self._signs = _rotation_signs(bytes(seed), d)
        self._scale = 1.0 / math.sqrt(d)

    def _check(self, v: np.ndarray) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape[-1:] != (self.dim,):
            raise InvalidInputError(f"expected last dimension {self.dim}, got shape {arr.shape}")
        return arr

    def forward(self, *, x: np.ndarray) -> np.ndarray:
        """``R x`` (along the last axis)."""
        return fwht(x=self._check(x) * self._signs) * self._scale

    def inverse(self, *, y: np.ndarray) -> np.ndarray:
        """``Rᵀ y = D H y / √d`` (along the last axis)."""
        return fwht(x=self._check(y)) * self._scale * self._signs


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
# Configuration
# --------------------------------------------------------------------------------------------------


def _wrap_k(padded_dim: int, wrap_probability: float) -> float:
    return math.sqrt(2.0 * math.log(2.0 * padded_dim / wrap_probability))


@dataclass(frozen=True)
class DistributedDPConfig:
    """Parameters of one distributed-DP encoding (shared by all clients and the server).

    Attributes:
        mechanism: ``"ddg"`` or ``"skellam"``.
        dim: d, the length of the real vectors.
        clip_norm: c, the L2 clip applied by each client (real units).
        local_stddev: σ, each client's noise share std in real units (integer-unit std is σ/γ).
        gamma: γ, the quantisation step (real units per integer unit).
        bits: b, values live in ℤ_{2^b}.
        max_clients: the largest number of clients whose encodings may be summed (no-wrap guarantee).
        beta: β in [0, 1) for conditional rounding.
        wrap_probability: target probability that some coordinate of the sum wraps.

    Raises:
        InvalidPrivacyConfigError: on construction if any value is invalid or the sum of
            ``max_clients`` encodings could wrap (see the module docstring).
    """

    mechanism: str
    dim: int
    clip_norm: float
    local_stddev: float
    gamma: float
    bits: int
    max_clients: int
    beta: float = DEFAULT_BETA
    wrap_probability: float = 1e-9

    def __post_init__(self) -> None:
        if self.mechanism not in DISTRIBUTED_MECHANISMS:
            raise InvalidPrivacyConfigError(
                f"mechanism must be one of {DISTRIBUTED_MECHANISMS}, got {self.mechanism!r}"
            )
        check_int("dim", self.dim, minimum=1)
        check_positive("clip_norm", self.clip_norm)
        check_positive("local_stddev", self.local_stddev)
        check_positive("gamma", self.gamma)
        bits = check_int("bits", self.bits, minimum=2)
        if bits > MAX_BITS:
            raise InvalidPrivacyConfigError(f"bits must be <= {MAX_BITS}, got {bits}")
        check_int("max_clients", self.max_clients, minimum=1)
        beta = check_finite_nonneg("beta", self.beta)
        if beta >= 1:
            raise InvalidPrivacyConfigError(f"beta must be in [0, 1), got {self.beta}")
        wp = check_rate("wrap_probability", self.wrap_probability)
        if wp == 0 or wp >= 1:
            raise InvalidPrivacyConfigError(
                f"wrap_probability must be in (0, 1), got {self.wrap_probability}"
            )
        if self.mechanism == "skellam" and self.scaled_local_stddev**2 > SKELLAM_MAX_LOCAL_VARIANCE:
            raise InvalidPrivacyConfigError(
                f"Skellam noise of variance {self.scaled_local_stddev**2:.3g} per client (integer units) "
                f"exceeds {SKELLAM_MAX_LOCAL_VARIANCE:g}, beyond which the Poisson sampler is inaccurate; "
                "use fewer bits (a larger gamma) or mechanism 'ddg'"
            )
        if self.mechanism == "ddg" and self.scaled_local_stddev < DDG_MIN_LOCAL_STDDEV:
            raise InvalidPrivacyConfigError(
                f"DDG needs local_stddev/gamma >= {DDG_MIN_LOCAL_STDDEV} (Kairouz et al. 2021, Thm. 1), got "
                f"{self.scaled_local_stddev:.4g}; lower gamma (more bits) or raise the noise"
            )
        bound = self.wrap_bound(n_summed=self.max_clients)
        if bound > 2.0 ** (bits - 1):
            raise InvalidPrivacyConfigError(
                f"{bits} bits cannot hold the sum of {self.max_clients} encodings: "
                f"the high-probability bound "
                f"{bound:.4g} exceeds 2^{bits - 1}; raise bits or gamma (see plan_distributed_dp)"
            )

    @property
    def padded_dim(self) -> int:
        """d' = the next power of two >= d (the length of encoded vectors)."""
        return next_power_of_two(n=self.dim)

    @property
    def scaled_local_stddev(self) -> float:
        """σ̄ = σ/γ, each client's noise std in integer units."""
        return self.local_stddev / self.gamma

    @property
    def l2_sensitivity(self) -> float:
        """Δ₂ in integer units: the conditional-rounding bound for norm c/γ in d' dimensions."""
        return rounded_l2_norm_bound(
            scaled_l2_norm=self.clip_norm / self.gamma, dim=self.padded_dim, beta=self.beta
        )

    @property
    def l1_sensitivity(self) -> float:
        """Δ₁ in integer units: ``Δ₂ · min(√d', Δ₂)``."""
        return rounded_l1_norm_bound(l2_bound=self.l2_sensitivity, dim=self.padded_dim)

    @property
    def local_noise_variance(self) -> float:
        """Exact per-coordinate variance of one client's integer noise."""
        if self.mechanism == "ddg":
            return discrete_gaussian_variance(sigma=self.scaled_local_stddev)
        return self.scaled_local_stddev**2

    def wrap_bound(self, *, n_summed: int) -> float:
        """``k · sqrt(n²c²/(d'γ²) + n/4 + n σ̄²)``: the high-probability bound on a coordinate of the sum.

        Args:
            n_summed: number of summed encodings.

        Returns:
            The bound in integer units.
        """
        n = check_int("n_summed", n_summed, minimum=1)
        k = _wrap_k(self.padded_dim, self.wrap_probability)
        c_scaled = self.clip_norm / self.gamma
        return k * math.sqrt(
            n * n * c_scaled**2 / self.padded_dim + n / 4.0 + n * self.scaled_local_stddev**2
        )

    def event(self, *, num_survivors: int, sample_rate: float = 1.0) -> DistributedEvent:
        """The accountant event of one round in which ``num_survivors`` clients' noise reached the sum.

        Args:
            num_survivors: clients whose encodings are in the decoded sum (after dropouts).
            sample_rate: Poisson client-sampling rate of the round.

        Returns:
            A :class:`~privacy.accountants.DistributedEvent`.

        Raises:
            InvalidPrivacyConfigError: invalid arguments.
        """
        return DistributedEvent(
            mechanism=self.mechanism,
            l2_sensitivity=self.l2_sensitivity,
            l1_sensitivity=self.l1_sensitivity,
            dim=self.padded_dim,
            local_stddev=self.scaled_local_stddev,
            num_survivors=num_survivors,
            sample_rate=sample_rate,
        )


def plan_distributed_dp(
    *,
    mechanism: str,
    dim: int,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: int,
    bits: int,
    max_clients: int | None = None,
    beta: float = DEFAULT_BETA,
    wrap_probability: float = 1e-9,
) -> DistributedDPConfig:
    """Choose σ and γ for a target total noise ``z·c`` and a bit width.

    Each client's share is ``σ = z·c/√expected_clients`` (so the sum over ``expected_clients``
    clients has std ``z·c`` per coordinate, before the rounding inflation of the sensitivity), and γ is
    the smallest value for which ``max_clients`` encodings cannot wrap with high probability
    (Kairouz et al. 2021, Sec. 4.4): ``γ = sqrt(n²c²/d' + nσ²) / sqrt((2^(b-1)/k)² - n/4)``.

    Args:
        mechanism: ``"ddg"`` or ``"skellam"``.
        dim: d.
        clip_norm: c.
        noise_multiplier: z > 0.
        expected_clients: clients expected to contribute noise each round.
        bits: b (<= 64).
        max_clients: largest number of clients that may be summed (default ``expected_clients``).
        beta: conditional-rounding β.
        wrap_probability: target probability that some coordinate wraps.

    Returns:
        A validated :class:`DistributedDPConfig`.

    Raises:
        InvalidPrivacyConfigError: the bit width is too small, or DDG's σ/γ would fall below 1/2.
    """
    d = check_int("dim", dim, minimum=1)
    c = check_positive("clip_norm", clip_norm)
    z = check_positive("noise_multiplier", noise_multiplier)
    n_exp = check_int("expected_clients", expected_clients, minimum=1)
    n_max = n_exp if max_clients is None else check_int("max_clients", max_clients, minimum=1)
    if n_max < n_exp:
        raise InvalidPrivacyConfigError(f"max_clients ({n_max}) must be >= expected_clients ({n_exp})")
    b = check_int("bits", bits, minimum=2)
    wp = check_rate("wrap_probability", wrap_probability)
    if wp == 0 or wp >= 1:
        raise InvalidPrivacyConfigError(f"wrap_probability must be in (0, 1), got {wrap_probability}")
    d_pad = next_power_of_two(n=d)
    sigma = z * c / math.sqrt(n_exp)
    k = _wrap_k(d_pad, wp)
    room = (2.0 ** (b - 1) / k) ** 2 - n_max / 4.0
    if room <= 0:
        raise InvalidPrivacyConfigError(
            f"{b} bits are too few for {n_max} clients (rounding alone may wrap); raise bits"
        )
    gamma = math.sqrt((n_max**2 * c**2 / d_pad + n_max * sigma**2) / room) * (1.0 + 1e-9)
    return DistributedDPConfig(
        mechanism=mechanism,
        dim=d,
        clip_norm=c,
        local_stddev=sigma,
        gamma=gamma,
        bits=b,
        max_clients=n_max,
        beta=beta,
        wrap_probability=wp,
    )


def calibrate_distributed_dp(
    *,
    mechanism: str,
    target_epsilon: float,
    delta: float,
    rounds: int,
    sample_rate: float,
    dim: int,
    clip_norm: float,
    expected_clients: int,
    bits: int,
    max_clients: int | None = None,
    beta: float = DEFAULT_BETA,
    wrap_probability: float = 1e-9,
    rtol: float = 1e-3,
) -> DistributedDPConfig:
    """Smallest-noise plan whose ε over ``rounds`` rounds (``expected_clients`` surviving) is <= target.

    Bisects the noise multiplier of :func:`plan_distributed_dp`, accounting each candidate exactly
    (its γ, rounding-inflated Δ₂, τ, and Zhu–Wang amplification for ``sample_rate``). If fewer
    clients survive a round than planned, the accountant (told the actual survivors) reports more.

    Args:
        mechanism: ``"ddg"`` or ``"skellam"``.
        target_epsilon: ε* > 0.
        delta: δ in (0, 1).
        rounds: number of rounds >= 1.
        sample_rate: client sampling rate q in (0, 1].
        dim: d.
        clip_norm: c.
        expected_clients: clients expected to contribute noise each round.
        bits: b.
        max_clients: largest number of clients that may be summed.
        beta: conditional-rounding β.
        wrap_probability: target wrap probability.
        rtol: relative precision on the noise multiplier.

    Returns:
        The validated :class:`DistributedDPConfig`.

    Raises:
        CalibrationError: the target cannot be met with this bit width (rounding error dominates).
        InvalidPrivacyConfigError: invalid arguments.
    """

    def plan(z: float) -> DistributedDPConfig:
        return plan_distributed_dp(
            mechanism=mechanism,
            dim=dim,
            clip_norm=clip_norm,
            noise_multiplier=z,
            expected_clients=expected_clients,
            bits=bits,
            max_clients=max_clients,
            beta=beta,
            wrap_probability=wrap_probability,
        )

    config_errors: list[str] = []

    def eps(z: float) -> float:
        try:
            cfg = plan(z)
        except InvalidPrivacyConfigError as exc:
            config_errors.append(str(exc))
            return math.inf  # e.g. DDG σ/γ < 1/2 at this z
        ev = cfg.event(num_survivors=expected_clients, sample_rate=sample_rate)
        return distributed_epsilon(
            mechanism=mechanism,
            local_stddev=ev.local_stddev,
            num_clients=ev.num_survivors,
            l2_sensitivity=ev.l2_sensitivity,
            l1_sensitivity=ev.l1_sensitivity,
            dim=ev.dim,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=delta,
        )

    check_int("rounds", rounds, minimum=1)
    try:
        z = bisect_noise(
            epsilon_fn=eps, target_epsilon=target_epsilon, lower=0.05, upper=1.0, rtol=rtol, max_noise=1e4
        )
    except CalibrationError as exc:
        hint = f"; the last invalid plan said: {config_errors[-1]}" if config_errors else ""
        raise CalibrationError(f"{exc}{hint}") from exc
    return plan(z)


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
