"""DDG / Skellam RDP against direct numerical Rényi divergences of their pmfs, and Zhu–Wang amplification."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from privacy.analysis import (
    ddg_rdp,
    ddg_tau,
    distributed_epsilon,
    gaussian_rdp,
    poisson_subsampled_gaussian_rdp,
    poisson_subsampled_rdp,
    rounded_l1_norm_bound,
    rounded_l2_norm_bound,
    sampled_ddg_rdp,
    sampled_skellam_rdp,
    skellam_rdp,
)
from privacy.errors import InvalidPrivacyConfigError

# ---------------------------------------------------------------------------------------------------
# Independent numerical references (pmfs summed directly with numpy/scipy)
# ---------------------------------------------------------------------------------------------------


def discrete_gaussian_pmf(sigma: float, half_width: int) -> np.ndarray:
    """pmf of N_Z(0, sigma^2) on [-half_width, half_width]."""
    x = np.arange(-half_width, half_width + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def sum_of_discrete_gaussians_pmf(sigma: float, n: int) -> np.ndarray:
    """pmf of the sum of n i.i.d. N_Z(0, sigma^2), centred, by repeated direct convolution."""
    single = discrete_gaussian_pmf(sigma, int(math.ceil(40 * sigma)) + 60)
    out = single
    for _ in range(n - 1):
        out = np.convolve(out, single)  # direct (not FFT) convolution keeps tiny tails accurate
    return out


def skellam_pmf(mu: float, half_width: int) -> np.ndarray:
    """pmf of the symmetric Skellam with variance mu: P(k) = e^{-mu} I_|k|(mu) (scipy's ive)."""
    k = np.arange(-half_width, half_width + 1)
    return special.ive(np.abs(k), mu)


def renyi_shift(pmf: np.ndarray, shift: int, alpha: float) -> float:
    """D_alpha(P || P shifted by `shift`) for a pmf on a centred integer grid."""
    p = pmf
    q = np.zeros_like(p)
    if shift >= 0:
        q[shift:] = p[: len(p) - shift]
    else:
        q[:shift] = p[-shift:]
    mask = (p > 1e-280) & (q > 1e-280)
    log_terms = alpha * np.log(p[mask]) + (1 - alpha) * np.log(q[mask])
    return float(special.logsumexp(log_terms)) / (alpha - 1)


def renyi_mixture(pmf: np.ndarray, shift: int, q: float, alpha: float) -> float:
    """max over both directions of D_alpha((1-q) P + q P_shift || P): Poisson-subsampled pmf divergence."""
    shifted = np.zeros_like(pmf)
    shifted[shift:] = pmf[: len(pmf) - shift]
    mix = (1 - q) * pmf + q * shifted
    mask = (pmf > 1e-280) & (mix > 1e-280)
    a = special.logsumexp(alpha * np.log(mix[mask]) + (1 - alpha) * np.log(pmf[mask])) / (alpha - 1)
    b = special.logsumexp(alpha * np.log(pmf[mask]) + (1 - alpha) * np.log(mix[mask])) / (alpha - 1)
    return float(max(a, b))


def test_reference_pmfs_are_sane() -> None:
    dg = discrete_gaussian_pmf(2.0, 60)
    assert dg.sum() == pytest.approx(1.0)
    sk = skellam_pmf(7.0, 120)
    assert sk.sum() == pytest.approx(1.0, abs=1e-12)
    k = np.arange(-120, 121)
    assert float(np.sum(sk * k**2)) == pytest.approx(7.0, rel=1e-10)
    # Skellam = difference of two Poisson(mu/2): check against an independent construction
    from scipy.stats import poisson

    pois = poisson.pmf(np.arange(0, 121), 3.5)
    diff = np.convolve(pois, pois[::-1])  # index j <-> value j - 120
    centre = slice(120 - 60, 120 + 61)  # away from the truncated Poisson tails
    np.testing.assert_allclose(diff[centre], sk[centre], rtol=1e-9, atol=1e-300)


# ---------------------------------------------------------------------------------------------------
# Distributed discrete Gaussian
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
@pytest.mark.parametrize("delta_shift", [1, 3])
def test_single_discrete_gaussian_is_exact_at_integer_orders(sigma: float, delta_shift: int) -> None:
    # n = 1: tau = 0 and the bound is alpha Delta^2 / (2 sigma^2), which is exact for integer alpha
    # (Canonne, Kamath & Steinke 2020).
    pmf = discrete_gaussian_pmf(sigma, int(40 * sigma) + 40)
    for alpha in (2.0, 3.0, 5.0):
        numeric = renyi_shift(pmf, delta_shift, alpha)
        bound = ddg_rdp(
            orders=[alpha],
            l2_sensitivity=delta_shift,
            l1_sensitivity=delta_shift,
            local_stddev=sigma,
            num_clients=1,
            dim=1,
        )[0]
        assert bound == pytest.approx(numeric, rel=1e-8)
    for alpha in (1.5, 2.7):
        numeric = renyi_shift(pmf, delta_shift, alpha)
        bound = ddg_rdp(orders=[alpha], l2_sensitivity=delta_shift, local_stddev=sigma, num_clients=1, dim=1)[
            0
        ]
        assert numeric <= bound * (1 + 1e-9)


@pytest.mark.parametrize("sigma", [0.5, 0.7, 1.0, 1.6, 3.0])
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("delta_shift", [1, 4])
def test_ddg_bound_dominates_numerical_divergence_of_the_sum(sigma: float, n: int, delta_shift: int) -> None:
    pmf = sum_of_discrete_gaussians_pmf(sigma, n)
    orders = [1.5, 2.0, 4.0, 8.0, 16.0]
    bound = ddg_rdp(
        orders=orders,
        l2_sensitivity=delta_shift,
        l1_sensitivity=delta_shift,
        local_stddev=sigma,
        num_clients=n,
        dim=1,
    )
    numeric = np.array([renyi_shift(pmf, delta_shift, a) for a in orders])
    assert np.all(numeric <= bound * (1 + 1e-9) + 1e-12)
    if sigma >= 1.5:
        # tau is negligible: the sum behaves like one discrete Gaussian of variance n sigma^2 and the
        # bound is tight.
        np.testing.assert_allclose(bound, numeric, rtol=2e-2)


def test_ddg_multidimensional_shift() -> None:
    sigma, n = 1.2, 3
    pmf = sum_of_discrete_gaussians_pmf(sigma, n)
    shift = (3, -4)  # L2 = 5, L1 = 7
    for alpha in (2.0, 6.0):
        numeric = sum(renyi_shift(pmf, s, alpha) for s in shift)  # product distribution
        bound = ddg_rdp(
            orders=[alpha], l2_sensitivity=5.0, l1_sensitivity=7.0, local_stddev=sigma, num_clients=n, dim=2
        )
        assert numeric <= bound[0]


def test_tau() -> None:
    assert ddg_tau(local_stddev=0.5, num_clients=1) == 0.0
    expected = 10 * sum(math.exp(-2 * math.pi**2 * 0.25 * k / (k + 1)) for k in range(1, 10))
    assert ddg_tau(local_stddev=0.5, num_clients=10) == pytest.approx(expected, rel=1e-12)
    assert ddg_tau(local_stddev=0.5, num_clients=10) > 0.1  # not negligible at small sigma
    assert ddg_tau(local_stddev=1.5, num_clients=1000) < 1e-5  # negligible above ~1.5
    with pytest.raises(InvalidPrivacyConfigError):
        ddg_tau(local_stddev=0.4, num_clients=3)


# ---------------------------------------------------------------------------------------------------
# Skellam
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [2.0, 10.0, 60.0, 400.0])
@pytest.mark.parametrize("delta_shift", [1, 3])
def test_skellam_bound_dominates_numerical_divergence(mu: float, delta_shift: int) -> None:
    half = int(30 * math.sqrt(mu)) + 60
    pmf = skellam_pmf(mu, half)
    orders = [1.5, 2.0, 3.0, 5.0, 10.0]
    bound = skellam_rdp(
        orders=orders, l2_sensitivity=delta_shift, l1_sensitivity=delta_shift, total_variance=mu, dim=1
    )
    numeric = np.array([renyi_shift(pmf, delta_shift, a) for a in orders])
    assert np.all(numeric <= bound * (1 + 1e-9))
    if mu >= 60:
        main = np.ceil(orders) * delta_shift**2 / (2 * mu)
        assert np.all(
            bound <= numeric * 1.15 + (np.ceil(orders) - np.array(orders)) * delta_shift**2 / (2 * mu) + 1e-3
        )
        assert np.all(bound >= main)


def test_skellam_multidimensional_shift() -> None:
    mu = 25.0
    pmf = skellam_pmf(mu, 250)
    numeric = sum(renyi_shift(pmf, s, 4.0) for s in (3, 4))
    bound = skellam_rdp(orders=[4.0], l2_sensitivity=5.0, l1_sensitivity=7.0, total_variance=mu, dim=2)[0]
    assert numeric <= bound


# ---------------------------------------------------------------------------------------------------
# Survivors, amplification, rounding bounds
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_fewer_survivors_give_larger_epsilon(mechanism: str) -> None:
    kwargs = dict(
        mechanism=mechanism, local_stddev=30.0, l2_sensitivity=200.0, dim=4096, rounds=50, delta=1e-5
    )
    eps = [distributed_epsilon(num_clients=n, sample_rate=1.0, **kwargs) for n in (100, 80, 50, 20, 5)]
    assert all(a < b for a, b in zip(eps, eps[1:], strict=False))
    eps_sampled = [distributed_epsilon(num_clients=n, sample_rate=0.1, **kwargs) for n in (100, 50, 5)]
    assert all(a < b for a, b in zip(eps_sampled, eps_sampled[1:], strict=False))
    # sampling amplifies
    assert eps_sampled[0] < eps[0]


def test_zhu_wang_on_gaussian_is_a_valid_and_useful_upper_bound() -> None:
    orders = np.arange(2, 65, dtype=np.float64)
    sigma = 1.5
    for q in (0.01, 0.1, 0.5):
        amplified = poisson_subsampled_rdp(
            orders=orders, sample_rate=q, base_rdp=lambda a: gaussian_rdp(noise_multiplier=sigma, orders=a)
        )
        exact = poisson_subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)
        unamplified = gaussian_rdp(noise_multiplier=sigma, orders=orders)
        assert np.all(amplified >= exact * (1 - 1e-9))
        assert np.all(amplified <= unamplified)
    small = poisson_subsampled_rdp(
        orders=[2.0], sample_rate=0.01, base_rdp=lambda a: gaussian_rdp(noise_multiplier=sigma, orders=a)
    )[0]
    assert small < 0.01 * gaussian_rdp(noise_multiplier=sigma, orders=[2.0])[0]


@pytest.mark.parametrize("q", [0.05, 0.3])
def test_sampled_ddg_dominates_numerical_mixture_divergence(q: float) -> None:
    sigma, shift = 1.0, 2
    pmf = discrete_gaussian_pmf(sigma, 80)
    orders = [2.0, 3.0, 6.0, 12.0]
    bound = sampled_ddg_rdp(
        orders=orders,
        l2_sensitivity=shift,
        l1_sensitivity=shift,
        local_stddev=sigma,
        num_clients=1,
        dim=1,
        sample_rate=q,
    )
    numeric = np.array([renyi_mixture(pmf, shift, q, a) for a in orders])
    assert np.all(numeric <= bound * (1 + 1e-9))
    unsampled = ddg_rdp(
        orders=orders, l2_sensitivity=shift, l1_sensitivity=shift, local_stddev=sigma, num_clients=1, dim=1
    )
    assert np.all(bound <= unsampled)
    assert bound[0] < unsampled[0]


def test_sampled_skellam_dominates_numerical_mixture_divergence() -> None:
    mu, shift, q = 9.0, 2, 0.1
    pmf = skellam_pmf(mu, 150)
    orders = [2.0, 4.0, 8.0]
    bound = sampled_skellam_rdp(
        orders=orders, l2_sensitivity=shift, l1_sensitivity=shift, total_variance=mu, dim=1, sample_rate=q
    )
    numeric = np.array([renyi_mixture(pmf, shift, q, a) for a in orders])
    assert np.all(numeric <= bound * (1 + 1e-9))


def test_rounding_bounds() -> None:
    assert rounded_l2_norm_bound(scaled_l2_norm=10.0, dim=64, beta=0.0) == pytest.approx(18.0)
    b = math.exp(-0.5)
    expected = math.sqrt(100 + 64 / 4 + math.sqrt(2 * math.log(1 / b)) * (10 + 4))
    assert rounded_l2_norm_bound(scaled_l2_norm=10.0, dim=64, beta=b) == pytest.approx(min(18.0, expected))
    assert rounded_l1_norm_bound(l2_bound=3.0, dim=100) == pytest.approx(9.0)  # min(sqrt d, D2) = D2
    assert rounded_l1_norm_bound(l2_bound=30.0, dim=100) == pytest.approx(300.0)
    with pytest.raises(InvalidPrivacyConfigError):
        rounded_l2_norm_bound(scaled_l2_norm=1.0, dim=4, beta=1.0)


def test_fractional_skellam_orders_use_the_ceiling() -> None:
    a = skellam_rdp(orders=[2.2, 3.0], l2_sensitivity=2.0, total_variance=50.0, dim=4)
    assert a[0] == pytest.approx(a[1])


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidPrivacyConfigError):
        ddg_rdp(orders=[2.0], l2_sensitivity=1.0, local_stddev=0.3, num_clients=2, dim=1)
    with pytest.raises(InvalidPrivacyConfigError):
        ddg_rdp(orders=[2.0], l2_sensitivity=1.0, local_stddev=1.0, num_clients=0, dim=1)
    with pytest.raises(InvalidPrivacyConfigError):
        skellam_rdp(orders=[2.0], l2_sensitivity=1.0, total_variance=0.0, dim=1)
    with pytest.raises(InvalidPrivacyConfigError):
        distributed_epsilon(
            mechanism="laplace",
            local_stddev=1.0,
            num_clients=1,
            l2_sensitivity=1.0,
            dim=1,
            sample_rate=1.0,
            rounds=1,
            delta=1e-5,
        )
