"""The shared parameters of a distributed-DP encoding: :class:`DistributedDPConfig`, and the choice of
γ and the bit width (:func:`plan_distributed_dp`) or of the noise for a target ε
(:func:`calibrate_distributed_dp`). See :mod:`privacy.distributed` for the pipeline and the choice
of γ; every name here is importable from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.accountants import DistributedDPAccountant, DistributedEvent
from privacy.analysis._checks import check_finite_nonneg, check_int, check_positive, check_rate
from privacy.analysis.calibration import bisect_noise
from privacy.analysis.discrete import (
    DDG_MIN_LOCAL_STDDEV,
    DISTRIBUTED_MECHANISMS,
    discrete_gaussian_variance,
    rounded_l1_norm_bound,
    rounded_l2_norm_bound,
)
from privacy.errors import CalibrationError, InvalidPrivacyConfigError
from privacy.hadamard import next_power_of_two

__all__ = [
    "DEFAULT_BETA",
    "MAX_BITS",
    "SKELLAM_MAX_LOCAL_VARIANCE",
    "DistributedDPConfig",
    "calibrate_distributed_dp",
    "plan_distributed_dp",
]

#: β = e^{-1/2}, the conditional-rounding parameter used by Kairouz et al. (2021) in their experiments.
DEFAULT_BETA = math.exp(-0.5)
#: Largest accepted bit width (values travel as uint64).
MAX_BITS = 64
#: Largest per-client Skellam variance (integer units) we sample: two Poisson(5e11) draws. The limit
#: dates from numpy's Poisson sampler (variance ratio 1.000 at a mean of 1e13, 1.008 at 1e14); the
#: keystream PTRS sampler of :mod:`privacy.noise` is tested at this mean and the limit is kept.
SKELLAM_MAX_LOCAL_VARIANCE = 1e12


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
        accountant = DistributedDPAccountant()
        accountant.step(
            event=cfg.event(num_survivors=expected_clients, sample_rate=sample_rate), num_rounds=rounds
        )
        return accountant.get_epsilon(delta=delta)

    check_int("rounds", rounds, minimum=1)
    try:
        z = bisect_noise(
            epsilon_fn=eps, target_epsilon=target_epsilon, lower=0.05, upper=1.0, rtol=rtol, max_noise=1e4
        )
    except CalibrationError as exc:
        hint = f"; the last invalid plan said: {config_errors[-1]}" if config_errors else ""
        raise CalibrationError(f"{exc}{hint}") from exc
    return plan(z)
