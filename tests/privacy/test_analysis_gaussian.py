"""RDP of the sampled Gaussian, RDP -> (eps, delta) conversion, PRV/PLD cross-checks, reference values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis import rdp as opacus_rdp

from privacy.analysis import (
    DEFAULT_RDP_ORDERS,
    OPACUS_RDP_ORDERS,
    composed_gaussian_rdp,
    gaussian_epsilon,
    gaussian_rdp,
    pld_epsilon,
    poisson_subsampled_gaussian_rdp,
    prv_epsilon,
    rdp_to_delta,
    rdp_to_epsilon,
    rdp_to_epsilon_classic,
)
from privacy.errors import InvalidPrivacyConfigError

DELTA = 1e-5
CASES = [(1.0, 0.01), (0.6, 0.05), (2.0, 0.2), (1.1, 1.0), (4.0, 0.001)]


@pytest.mark.parametrize("sigma,q", CASES)
def test_opacus_rdp_equals_dp_accounting_rdp_at_integer_orders(sigma: float, q: float) -> None:
    orders = np.array([float(a) for a in DEFAULT_RDP_ORDERS if float(a).is_integer()])
    ours = poisson_subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)
    theirs = dpa_rdp._compute_rdp_poisson_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sigma,q", [(1.0, 0.01), (4.0, 0.001), (1.1, 1.0)])
def test_opacus_rdp_equals_dp_accounting_rdp_at_all_orders(sigma: float, q: float) -> None:
    orders = np.array(DEFAULT_RDP_ORDERS)
    ours = poisson_subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)
    theirs = dpa_rdp._compute_rdp_poisson_subsampled_gaussian(q=q, noise_multiplier=sigma, orders=orders)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def _rdp_by_integration(sigma: float, q: float, alpha: float) -> float:
    """D_alpha((1-q) N(0,s^2) + q N(1,s^2) || N(0,s^2)) by quadrature (Mironov et al. 2019, Sec. 3)."""
    from scipy import integrate
    from scipy.stats import norm

    def integrand(z: float) -> float:
        ratio = (1 - q) + q * math.exp((2 * z - 1) / (2 * sigma**2))
        return float(norm.pdf(z, 0, sigma) * ratio**alpha)

    value, _ = integrate.quad(integrand, -60 * sigma, 60 * sigma, limit=500, epsabs=0, epsrel=1e-12)
    return math.log(value) / (alpha - 1)


@pytest.mark.parametrize("sigma,q", [(0.6, 0.05), (2.0, 0.2), (0.8, 0.1)])
def test_fractional_orders_match_numerical_integration(sigma: float, q: float) -> None:
    # In these regimes dp_accounting 0.6's fractional-order series misses by up to 6e-3 (or does not
    # converge); the Opacus computation we use matches direct numerical integration.
    orders = np.array([1.5, 1.6, 2.5, 3.7, 7.3])
    ours = poisson_subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)
    exact = np.array([_rdp_by_integration(sigma, q, a) for a in orders])
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-9)


def test_reference_values_from_notes() -> None:
    # PRIVACY_NOTES section 1: q=0.01, sigma=1, T=1000, delta=1e-5.
    rdp = gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA, accountant="rdp")
    prv = gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA, accountant="prv")
    pld = gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA, accountant="pld")
    assert round(rdp, 4) == 2.1014
    assert round(prv, 4) == 1.8384
    assert round(pld, 4) == 1.8282


def test_rdp_epsilon_matches_both_libraries_end_to_end() -> None:
    acc = dpa_rdp.RdpAccountant()
    import dp_accounting

    acc.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.0)), 1000
        )
    )
    ours = gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA)
    assert abs(ours - acc.get_epsilon(DELTA)) < 1e-4
    rdp = opacus_rdp.compute_rdp(q=0.01, noise_multiplier=1.0, steps=1000, orders=list(OPACUS_RDP_ORDERS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opacus_eps, _ = opacus_rdp.get_privacy_spent(orders=list(OPACUS_RDP_ORDERS), rdp=rdp, delta=DELTA)
    ours_opacus_orders = gaussian_epsilon(
        noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=DELTA, orders=OPACUS_RDP_ORDERS
    )
    assert ours_opacus_orders == pytest.approx(float(opacus_eps), rel=1e-12)


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.01, 1000), (2.0, 0.1, 50), (1.5, 1.0, 10)])
def test_prv_agrees_with_pld_within_stated_error(sigma: float, q: float, steps: int) -> None:
    eps_error = 0.01
    prv = prv_epsilon(history=[(sigma, q, steps)], delta=DELTA, eps_error=eps_error)
    pld = pld_epsilon(history=[(sigma, q, steps)], delta=DELTA)
    # Both are upper bounds; PRV's is within eps_error of the truth, PLD's pessimistic grid adds ~1e-3.
    assert abs(prv - pld) <= eps_error + 2.5e-3
    # and both are tighter than RDP
    rdp = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    assert max(prv, pld) < rdp


def test_unsampled_gaussian_rdp_is_alpha_over_two_sigma_squared() -> None:
    orders = np.array([1.5, 2.0, 10.0, 64.0])
    np.testing.assert_allclose(gaussian_rdp(noise_multiplier=2.0, orders=orders), orders / 8.0)
    np.testing.assert_allclose(
        poisson_subsampled_gaussian_rdp(noise_multiplier=2.0, sample_rate=1.0, orders=orders), orders / 8.0
    )


def test_pld_exact_for_unsampled_gaussian() -> None:
    # T Gaussian steps with sigma = one Gaussian with sigma/sqrt(T); its exact delta(eps) is known
    # (Balle & Wang 2018): delta = Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s)), s = sigma/sqrt(T).
    from scipy.stats import norm

    sigma, steps = 3.0, 16
    eps = pld_epsilon(history=[(sigma, 1.0, steps)], delta=DELTA)
    s = sigma / math.sqrt(steps)
    delta_at_eps = norm.cdf(-eps * s + 1 / (2 * s)) - math.exp(eps) * norm.cdf(-eps * s - 1 / (2 * s))
    assert delta_at_eps <= DELTA * 1.0001
    slightly_less = eps - 2e-3
    delta_less = norm.cdf(-slightly_less * s + 1 / (2 * s)) - math.exp(slightly_less) * norm.cdf(
        -slightly_less * s - 1 / (2 * s)
    )
    assert delta_less > DELTA


def test_conversion_matches_libraries_and_beats_classic() -> None:
    orders = np.array(DEFAULT_RDP_ORDERS)
    rdp = composed_gaussian_rdp(history=[(0.9, 0.02, 300), (1.3, 0.05, 100)], orders=orders)
    eps, order = rdp_to_epsilon(orders=orders, rdp=rdp, delta=DELTA)
    ref_eps, ref_order = dpa_rdp.compute_epsilon(orders, rdp, DELTA)
    assert eps == pytest.approx(ref_eps, rel=1e-12)
    assert order == ref_order
    classic, _ = rdp_to_epsilon_classic(orders=orders, rdp=rdp, delta=DELTA)
    assert classic > eps
    # inverse direction is consistent
    delta_back, _ = rdp_to_delta(orders=orders, rdp=rdp, epsilon=eps)
    assert delta_back <= DELTA * (1 + 1e-9)
    delta_tighter, _ = rdp_to_delta(orders=orders, rdp=rdp, epsilon=eps * 0.99)
    assert delta_tighter > DELTA


def test_conversion_edge_cases_and_errors() -> None:
    orders = [2.0, 4.0]
    assert rdp_to_epsilon(orders=orders, rdp=[0.0, 0.0], delta=DELTA)[0] == 0.0
    assert math.isinf(rdp_to_epsilon(orders=orders, rdp=[math.inf, math.inf], delta=DELTA)[0])
    with pytest.raises(InvalidPrivacyConfigError):
        rdp_to_epsilon(orders=orders, rdp=[1.0], delta=DELTA)
    with pytest.raises(InvalidPrivacyConfigError):
        rdp_to_epsilon(orders=[1.0, 2.0], rdp=[1.0, 1.0], delta=DELTA)
    with pytest.raises(InvalidPrivacyConfigError):
        rdp_to_epsilon(orders=orders, rdp=[1.0, 1.0], delta=0.0)
    with pytest.raises(InvalidPrivacyConfigError):
        rdp_to_epsilon(orders=orders, rdp=[-1.0, 1.0], delta=DELTA)
    with pytest.raises(InvalidPrivacyConfigError):
        poisson_subsampled_gaussian_rdp(noise_multiplier=-1.0, sample_rate=0.1, orders=orders)
    with pytest.raises(InvalidPrivacyConfigError):
        poisson_subsampled_gaussian_rdp(noise_multiplier=1.0, sample_rate=1.5, orders=orders)
    with pytest.raises(InvalidPrivacyConfigError):
        gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=DELTA, accountant="moments")


def test_degenerate_histories() -> None:
    assert gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.0, steps=100, delta=DELTA) == 0.0
    assert gaussian_epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=DELTA) == 0.0
    assert math.isinf(gaussian_epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=1, delta=DELTA))
    assert math.isinf(prv_epsilon(history=[(0.0, 0.1, 3)], delta=DELTA))
    assert pld_epsilon(history=[(1.0, 0.0, 3)], delta=DELTA) == 0.0


sigmas = st.floats(min_value=0.5, max_value=5.0)
rates = st.floats(min_value=1e-3, max_value=0.5)
steps_st = st.integers(min_value=1, max_value=2000)


@settings(max_examples=10, deadline=None)
@given(sigma=sigmas, q=rates, steps=steps_st, extra=st.integers(min_value=1, max_value=500))
def test_epsilon_rises_with_steps(sigma: float, q: float, steps: int, extra: int) -> None:
    a = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    b = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps + extra, delta=DELTA)
    assert b > a


@settings(max_examples=10, deadline=None)
@given(sigma=sigmas, q=rates, steps=steps_st, factor=st.floats(min_value=1.05, max_value=2.0))
def test_epsilon_rises_with_sample_rate(sigma: float, q: float, steps: int, factor: float) -> None:
    a = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    b = gaussian_epsilon(noise_multiplier=sigma, sample_rate=min(1.0, q * factor), steps=steps, delta=DELTA)
    assert b > a


@settings(max_examples=10, deadline=None)
@given(sigma=sigmas, q=rates, steps=steps_st, factor=st.floats(min_value=1.05, max_value=2.0))
def test_epsilon_falls_with_sigma(sigma: float, q: float, steps: int, factor: float) -> None:
    a = gaussian_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    b = gaussian_epsilon(noise_multiplier=sigma * factor, sample_rate=q, steps=steps, delta=DELTA)
    assert b < a
