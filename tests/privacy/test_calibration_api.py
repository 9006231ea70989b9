"""Calibration: round trips, Opacus reference values, distributed mechanisms, failure modes."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.utils import get_noise_multiplier

from privacy.analysis import bisect_noise
from privacy.calibration import (
    calibrate_distributed_noise,
    calibrate_noise,
    distributed_epsilon_for,
    epsilon_for,
)
from privacy.errors import CalibrationError, InvalidPrivacyConfigError

DELTA = 1e-5


@pytest.mark.parametrize("target,reference", [(1.0, 1.523), (3.0, 0.866), (8.0, 0.616)])
def test_reproduces_opacus_get_noise_multiplier(target: float, reference: float) -> None:
    # PRIVACY_NOTES: get_noise_multiplier (RDP), q=0.01, T=1000, delta=1e-5 -> 1.523 / 0.866 / 0.616.
    # Opacus stops at an absolute epsilon tolerance of 0.01, we at a relative sigma tolerance of 1e-3,
    # so our sigma is slightly smaller but within 1 %.
    sigma = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=0.01, steps=1000)
    assert sigma == pytest.approx(reference, rel=1e-2)
    eps = epsilon_for(noise_multiplier=sigma, sample_rate=0.01, steps=1000, delta=DELTA)
    assert target - 0.02 <= eps <= target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opacus_sigma = get_noise_multiplier(
            target_epsilon=target, target_delta=DELTA, sample_rate=0.01, steps=1000
        )
    assert sigma <= opacus_sigma
    assert epsilon_for(noise_multiplier=opacus_sigma, sample_rate=0.01, steps=1000, delta=DELTA) <= target


@settings(max_examples=5, deadline=None)
@given(
    target=st.floats(min_value=0.3, max_value=12.0),
    q=st.floats(min_value=1e-3, max_value=0.3),
    steps=st.integers(min_value=1, max_value=3000),
)
def test_calibration_round_trip_rdp(target: float, q: float, steps: int) -> None:
    rtol = 1e-3
    sigma = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, rtol=rtol)
    assert epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA) <= target
    # and it is (nearly) the smallest such sigma
    smaller = sigma / (1 + 2 * rtol)
    if smaller > 0.05:
        assert epsilon_for(noise_multiplier=smaller, sample_rate=q, steps=steps, delta=DELTA) > target


@pytest.mark.parametrize("accountant", ["prv", "pld"])
def test_calibration_round_trip_numerical_accountants(accountant: str) -> None:
    target = 2.0
    sigma = calibrate_noise(
        target_epsilon=target, delta=DELTA, sample_rate=0.05, steps=40, accountant=accountant, rtol=5e-2
    )
    eps = epsilon_for(noise_multiplier=sigma, sample_rate=0.05, steps=40, delta=DELTA, accountant=accountant)
    assert eps <= target
    rdp_sigma = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=0.05, steps=40, rtol=5e-2)
    assert sigma <= rdp_sigma  # tighter accounting never needs more noise


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_distributed_calibration_round_trip(mechanism: str) -> None:
    kwargs = dict(
        mechanism=mechanism,
        delta=DELTA,
        num_clients=50,
        l2_sensitivity=500.0,
        dim=4096,
        sample_rate=0.2,
        rounds=200,
    )
    sigma = calibrate_distributed_noise(target_epsilon=4.0, **kwargs)
    assert distributed_epsilon_for(local_stddev=sigma, **kwargs) <= 4.0
    assert distributed_epsilon_for(local_stddev=sigma * 0.99, **kwargs) > 4.0
    # fewer survivors than planned => the accountant reports more than the target
    fewer = dict(kwargs, num_clients=30)
    assert distributed_epsilon_for(local_stddev=sigma, **fewer) > 4.0


def test_bisect_noise_reports_unreachable_targets() -> None:
    with pytest.raises(CalibrationError):
        bisect_noise(
            epsilon_fn=lambda s: 1.0 + 1.0 / s, target_epsilon=0.5, lower=0.1, upper=1.0, max_noise=1e3
        )
    assert bisect_noise(epsilon_fn=lambda s: 1.0 / s, target_epsilon=100.0, lower=0.1, upper=1.0) == 0.1
    s = bisect_noise(epsilon_fn=lambda s: 1.0 / s, target_epsilon=0.25, lower=0.1, upper=1.0, rtol=1e-6)
    assert s == pytest.approx(4.0, rel=1e-5) and 1.0 / s <= 0.25


def test_invalid_calibration_inputs() -> None:
    with pytest.raises(InvalidPrivacyConfigError):
        calibrate_noise(target_epsilon=0.0, delta=DELTA, sample_rate=0.01, steps=10)
    with pytest.raises(InvalidPrivacyConfigError):
        calibrate_noise(target_epsilon=1.0, delta=DELTA, sample_rate=0.0, steps=10)
    with pytest.raises(InvalidPrivacyConfigError):
        calibrate_noise(target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=0)
    with pytest.raises(InvalidPrivacyConfigError):
        calibrate_noise(target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=10, accountant="gdp")
    with pytest.raises(InvalidPrivacyConfigError):
        epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=2.0)
    assert math.isinf(epsilon_for(noise_multiplier=0.0, sample_rate=0.5, steps=1, delta=DELTA))
