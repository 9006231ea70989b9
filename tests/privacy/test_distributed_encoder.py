"""Distributed DP encoders: rotation, rounding, samplers, modular encode/decode, noise levels, planning."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest
from scipy import special
from scipy.linalg import hadamard

from privacy.accountants import DistributedDPAccountant
from privacy.analysis import discrete_gaussian_variance, rounded_l2_norm_bound
from privacy.distributed import (
    ADJACENCY,
    DEFAULT_BETA,
    SKELLAM_MAX_LOCAL_VARIANCE,
    DistributedDPConfig,
    DistributedDPEncoder,
    RandomizedHadamard,
    calibrate_distributed_dp,
    conditional_randomized_round,
    fwht,
    plan_distributed_dp,
    sample_discrete_gaussian,
    sample_skellam,
)
from privacy.errors import CalibrationError, EncodingError, InvalidInputError, InvalidPrivacyConfigError
from privacy.noise import FixedNoiseSource

SEED = b"\x01" * 32


def _encoder(cfg: DistributedDPConfig, seed: int) -> DistributedDPEncoder:
    return DistributedDPEncoder(config=cfg, rotation_seed=SEED, source=FixedNoiseSource(seed=seed))


def _secagg_sum(encodings: list[np.ndarray], bits: int) -> np.ndarray:
    """What the protocols package delivers: the sum mod 2^bits, as uint64."""
    total = np.zeros_like(encodings[0], dtype=np.uint64)
    for e in encodings:
        total += e  # wraps mod 2^64, and 2^bits divides 2^64
    return total & np.uint64((1 << bits) - 1) if bits < 64 else total


# --------------------------------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_fwht_matches_hadamard_matrix(d: int) -> None:
    x = np.random.default_rng(0).normal(size=(3, d))
    np.testing.assert_allclose(fwht(x=x), x @ hadamard(d).T, atol=1e-10)
    np.testing.assert_allclose(fwht(x=fwht(x=x)), d * x, atol=1e-9)
    with pytest.raises(InvalidInputError):
        fwht(x=np.ones(6))


def test_randomized_hadamard_is_orthogonal_and_invertible() -> None:
    d = 64
    rot = RandomizedHadamard(seed=SEED, dim=d)
    matrix = rot.forward(x=np.eye(d)).T  # column j = R e_j
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(d), atol=1e-12)
    x = np.random.default_rng(1).normal(size=d)
    np.testing.assert_allclose(rot.inverse(y=rot.forward(x=x)), x, atol=1e-12)
    assert np.linalg.norm(rot.forward(x=x)) == pytest.approx(np.linalg.norm(x))
    # shared seed -> same rotation; other seed -> other rotation
    np.testing.assert_array_equal(RandomizedHadamard(seed=SEED, dim=d).forward(x=x), rot.forward(x=x))
    assert not np.allclose(RandomizedHadamard(seed=b"\x02" * 32, dim=d).forward(x=x), rot.forward(x=x))
    # it flattens: a spike is spread evenly
    spike = np.zeros(d)
    spike[5] = 1.0
    np.testing.assert_allclose(np.abs(rot.forward(x=spike)), 1 / math.sqrt(d))
    with pytest.raises(InvalidPrivacyConfigError):
        RandomizedHadamard(seed=b"short", dim=d)
    with pytest.raises(InvalidPrivacyConfigError):
        RandomizedHadamard(seed=SEED, dim=12)


# --------------------------------------------------------------------------------------------------
# Conditional rounding
# --------------------------------------------------------------------------------------------------


def test_conditional_rounding_bound_always_holds() -> None:
    rng = np.random.default_rng(2)
    src = FixedNoiseSource(seed=2)
    d, c = 256, 12.0
    bound = rounded_l2_norm_bound(scaled_l2_norm=c, dim=d, beta=DEFAULT_BETA)
    assert bound < c + math.sqrt(d)  # the conditional bound is the tighter one here
    attempts = []
    for _ in range(200):
        x = rng.normal(size=d)
        x *= c / np.linalg.norm(x)
        r, a = conditional_randomized_round(x=x, l2_bound=bound, source=src)
        attempts.append(a)
        assert r.dtype == np.int64
        assert np.linalg.norm(r) <= bound
        assert np.all(np.abs(r - x) < 1.0)
    # P(attempt fails) <= beta, so the mean number of attempts is <= 1/(1-beta) ~ 2.5
    assert np.mean(attempts) <= 1 / (1 - DEFAULT_BETA) + 0.5


def test_unconditioned_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-3, 3, size=50)
    src = FixedNoiseSource(seed=3)
    mean = np.mean(
        [conditional_randomized_round(x=x, l2_bound=1e9, source=src)[0] for _ in range(4000)], axis=0
    )
    assert np.max(np.abs(mean - x)) < 0.05


def test_conditional_rounding_fails_loudly_when_bound_is_impossible() -> None:
    with pytest.raises(EncodingError):
        conditional_randomized_round(
            x=np.full(16, 3.0), l2_bound=1.0, source=FixedNoiseSource(seed=0), max_attempts=5
        )


# --------------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------------


def test_discrete_gaussian_sampler_matches_pmf() -> None:
    sigma, n = 1.5, 200_000
    samples = sample_discrete_gaussian(sigma=sigma, size=n, source=FixedNoiseSource(seed=4))
    assert samples.dtype == np.int64
    support = np.arange(-8, 9)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= np.exp(-(np.arange(-60, 61) ** 2) / (2 * sigma**2)).sum()
    counts = np.array([(samples == k).sum() for k in support])
    expected = n * pmf
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 50  # 16 degrees of freedom: P(chi2 > 50) < 1e-4
    assert samples.var() == pytest.approx(discrete_gaussian_variance(sigma=sigma), rel=0.02)


def test_discrete_gaussian_sampler_large_and_small_sigma() -> None:
    big = sample_discrete_gaussian(sigma=300.0, size=50_000, source=FixedNoiseSource(seed=5))
    assert big.std() == pytest.approx(300.0, rel=0.02) and abs(big.mean()) < 5 * 300 / math.sqrt(50_000)
    small = sample_discrete_gaussian(sigma=0.3, size=50_000, source=FixedNoiseSource(seed=6))
    p0 = 1 / np.exp(-(np.arange(-10, 11) ** 2) / (2 * 0.09)).sum()
    assert (small == 0).mean() == pytest.approx(p0, abs=0.01)


def test_skellam_sampler_matches_pmf() -> None:
    var, n = 6.0, 200_000
    samples = sample_skellam(variance=var, size=n, source=FixedNoiseSource(seed=7))
    support = np.arange(-6, 7)
    expected = n * special.ive(np.abs(support), var)  # e^{-mu} I_k(mu)
    counts = np.array([(samples == k).sum() for k in support])
    assert float(np.sum((counts - expected) ** 2 / expected)) < 45
    assert samples.var() == pytest.approx(var, rel=0.02)


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_decode_of_sum_recovers_sum_of_clipped_inputs(mechanism: str) -> None:
    n, d = 6, 3000
    cfg = plan_distributed_dp(
        mechanism=mechanism, dim=d, clip_norm=1.0, noise_multiplier=0.5, expected_clients=n, bits=24
    )
    encoders = [_encoder(cfg, seed) for seed in range(n)]
    rng = np.random.default_rng(11)
    xs = [rng.normal(size=d) * s for s in (0.001, 0.01, 0.05, 1.0, 10.0, 0.02)]
    encodings = [e.encode(x=x) for e, x in zip(encoders, xs, strict=True)]
    for enc in encodings:
        assert enc.dtype == np.uint64 and enc.shape == (cfg.padded_dim,)
        assert int(enc.max()) < 2**cfg.bits
    decoded = encoders[0].decode(total=_secagg_sum(encodings, cfg.bits), n_summed=n)
    target = sum(encoders[0].clip(x=x) for x in xs)
    err = decoded - target
    noise_std = encoders[0].noise_stddev(n_summed=n)
    assert noise_std == pytest.approx(0.5 * 1.0, rel=1e-3)  # z * c with all planned clients present
    # error = noise + rounding (per client and coordinate: variance <= 1/4 in integer units)
    upper = math.sqrt(noise_std**2 + n * cfg.gamma**2 / 4)
    assert noise_std * 0.95 <= err.std() <= upper * 1.05
    assert abs(err.mean()) < 5 * upper / math.sqrt(d)


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_measured_noise_matches_claimed_std_per_client_and_aggregate(mechanism: str) -> None:
    d = 8192
    cfg = plan_distributed_dp(
        mechanism=mechanism, dim=d, clip_norm=1.0, noise_multiplier=1.0, expected_clients=8, bits=20
    )
    zeros = np.zeros(d)  # rounding of 0 is exact, so the decoded value is pure noise
    one = _encoder(cfg, 0)
    single = one.decode(total=one.encode(x=zeros), n_summed=1)
    assert single.std() == pytest.approx(one.noise_stddev(n_summed=1), rel=0.04)
    assert one.noise_stddev(n_summed=1) == pytest.approx(1.0 / math.sqrt(8), rel=1e-3)
    encs = [_encoder(cfg, s).encode(x=zeros) for s in range(8)]
    agg = one.decode(total=_secagg_sum(encs, cfg.bits), n_summed=8)
    assert agg.std() == pytest.approx(one.noise_stddev(n_summed=8), rel=0.04)
    assert one.noise_stddev(n_summed=8) == pytest.approx(1.0, rel=1e-3)


def test_clipping_and_quantization_bound() -> None:
    d = 500
    cfg = plan_distributed_dp(
        mechanism="ddg", dim=d, clip_norm=2.0, noise_multiplier=1.0, expected_clients=4, bits=24
    )
    enc = _encoder(cfg, 1)
    x = np.random.default_rng(12).normal(size=d) * 10
    clipped = enc.clip(x=x)
    assert np.linalg.norm(clipped) == pytest.approx(2.0)
    q = enc.quantize(x=x)
    assert np.linalg.norm(q) <= cfg.l2_sensitivity
    back = enc.rotation.inverse(y=q.astype(np.float64) * cfg.gamma)[:d]
    # rounding error per coordinate < gamma, orthogonal rotation keeps the L2 error < gamma sqrt(d')
    assert np.linalg.norm(back - clipped) < cfg.gamma * math.sqrt(cfg.padded_dim)


def test_modular_wraparound_of_negative_sums_and_64_bits() -> None:
    d = 64
    for bits in (16, 64):
        cfg = DistributedDPConfig(
            mechanism="skellam", dim=d, clip_norm=1.0, local_stddev=1e-3, gamma=1e-4, bits=bits, max_clients=3
        )
        encoders = [_encoder(cfg, s) for s in range(3)]
        x = -np.ones(d) / math.sqrt(d)  # negative coordinates -> values near 2^bits
        encs = [e.encode(x=x) for e in encoders]
        if bits == 16:
            assert int(np.max(encs[0])) > 2**15  # negative numbers really wrapped
        out = encoders[0].decode(total=_secagg_sum(encs, bits), n_summed=3)
        np.testing.assert_allclose(out, 3 * x, atol=0.01)


def test_default_noise_is_fresh_per_encoder() -> None:
    cfg = plan_distributed_dp(
        mechanism="ddg", dim=32, clip_norm=1.0, noise_multiplier=1.0, expected_clients=2, bits=20
    )
    a = DistributedDPEncoder(config=cfg, rotation_seed=os.urandom(32)).encode(x=np.zeros(32))
    b = DistributedDPEncoder(config=cfg, rotation_seed=os.urandom(32)).encode(x=np.zeros(32))
    assert not np.array_equal(a, b)


def test_skellam_variance_limit() -> None:
    # numpy's Poisson sampler drifts above a mean of ~1e13; huge Skellam shares are refused.
    with pytest.raises(InvalidPrivacyConfigError):
        sample_skellam(variance=SKELLAM_MAX_LOCAL_VARIANCE * 2, size=3, source=FixedNoiseSource(seed=0))
    big = sample_skellam(variance=SKELLAM_MAX_LOCAL_VARIANCE, size=100_000, source=FixedNoiseSource(seed=1))
    assert big.astype(np.float64).var() == pytest.approx(SKELLAM_MAX_LOCAL_VARIANCE, rel=0.02)
    with pytest.raises(InvalidPrivacyConfigError, match="ddg"):
        plan_distributed_dp(
            mechanism="skellam", dim=1000, clip_norm=1.0, noise_multiplier=1.0, expected_clients=10, bits=48
        )
    # the same plan with DDG noise is fine
    plan_distributed_dp(
        mechanism="ddg", dim=1000, clip_norm=1.0, noise_multiplier=1.0, expected_clients=10, bits=48
    )


def test_settings_validation() -> None:
    with pytest.raises(InvalidPrivacyConfigError):  # far too few bits for 100 clients
        plan_distributed_dp(
            mechanism="ddg", dim=1000, clip_norm=1.0, noise_multiplier=1.0, expected_clients=100, bits=6
        )
    with pytest.raises(InvalidPrivacyConfigError):  # wraps: gamma too small for the bit width
        DistributedDPConfig(
            mechanism="skellam", dim=64, clip_norm=1.0, local_stddev=1.0, gamma=1e-6, bits=16, max_clients=10
        )
    with pytest.raises(InvalidPrivacyConfigError):  # DDG needs sigma/gamma >= 1/2
        DistributedDPConfig(
            mechanism="ddg", dim=64, clip_norm=1.0, local_stddev=0.1, gamma=1.0, bits=32, max_clients=2
        )
    with pytest.raises(InvalidPrivacyConfigError):
        DistributedDPConfig(
            mechanism="laplace", dim=64, clip_norm=1.0, local_stddev=1.0, gamma=0.01, bits=32, max_clients=2
        )
    with pytest.raises(InvalidPrivacyConfigError):
        DistributedDPConfig(
            mechanism="ddg", dim=64, clip_norm=1.0, local_stddev=1.0, gamma=0.01, bits=65, max_clients=2
        )
    cfg = plan_distributed_dp(
        mechanism="ddg",
        dim=100,
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_clients=5,
        max_clients=7,
        bits=20,
    )
    assert cfg.wrap_bound(n_summed=7) <= 2**19
    enc = _encoder(cfg, 0)
    assert enc.bits == 20 and enc.encoded_dim == 128 and enc.ADJACENCY == ADJACENCY
    with pytest.raises(InvalidInputError):
        enc.decode(total=np.zeros(128, dtype=np.uint64), n_summed=8)  # more than max_clients
    with pytest.raises(InvalidInputError):
        enc.decode(total=np.zeros(100, dtype=np.uint64), n_summed=1)
    with pytest.raises(InvalidInputError):
        enc.decode(total=np.zeros(128), n_summed=1)  # float sums are not SecAgg output
    with pytest.raises(InvalidInputError):
        enc.encode(x=np.zeros(99))
    with pytest.raises(InvalidInputError):
        enc.encode(x=np.full(100, np.inf))


def test_events_feed_the_accountant_and_dropouts_raise_epsilon() -> None:
    cfg = plan_distributed_dp(
        mechanism="ddg", dim=10_000, clip_norm=1.0, noise_multiplier=1.0, expected_clients=20, bits=32
    )
    planned, dropped = DistributedDPAccountant(), DistributedDPAccountant()
    planned.step(event=cfg.event(num_survivors=20, sample_rate=0.5), num_rounds=10)
    dropped.step(event=cfg.event(num_survivors=12, sample_rate=0.5), num_rounds=10)
    assert dropped.get_epsilon(delta=1e-5) > planned.get_epsilon(delta=1e-5)
    ev = cfg.event(num_survivors=20)
    assert ev.dim == cfg.padded_dim and ev.local_stddev == pytest.approx(cfg.local_stddev / cfg.gamma)
    assert ev.l2_sensitivity >= cfg.clip_norm / cfg.gamma


# eps = 3 after 100 rounds at q = 0.3 with 30 expected clients and dim 5000
CALIBRATION: dict[str, Any] = {
    "target_epsilon": 3.0,
    "delta": 1e-5,
    "rounds": 100,
    "sample_rate": 0.3,
    "dim": 5000,
    "clip_norm": 1.0,
    "expected_clients": 30,
}


@pytest.mark.parametrize("mechanism,bits", [("ddg", 32), ("skellam", 24)])
def test_calibrated_plan_meets_target(mechanism: str, bits: int) -> None:
    cfg = calibrate_distributed_dp(mechanism=mechanism, bits=bits, **CALIBRATION)
    acc = DistributedDPAccountant()
    acc.step(event=cfg.event(num_survivors=30, sample_rate=0.3), num_rounds=100)
    assert acc.get_epsilon(delta=1e-5) <= 3.0
    assert acc.get_epsilon(delta=1e-5) > 2.8  # and not wastefully noisy


def test_calibration_explains_impossible_plans() -> None:
    with pytest.raises(CalibrationError, match="Skellam"):
        calibrate_distributed_dp(mechanism="skellam", bits=40, **CALIBRATION)
