"""DP-FedAvg with a trusted aggregator: clipping, Poisson client sampling, noise calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy.accountants import RDPAccountant
from privacy.client_dp import (
    ADJACENCY,
    PRIVACY_UNIT,
    DPFedAvgAggregator,
    DPFedAvgConfig,
    clip_update,
    sample_clients,
)
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.noise import FixedNoiseSource


def test_privacy_unit_and_adjacency_are_declared() -> None:
    assert PRIVACY_UNIT == "client"
    assert ADJACENCY == "add/remove"
    assert DPFedAvgAggregator.PRIVACY_UNIT == PRIVACY_UNIT and DPFedAvgAggregator.ADJACENCY == ADJACENCY


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_clipping_bound_holds(kind: str) -> None:
    rng = np.random.default_rng(1)
    for scale in (0.01, 0.5, 3.0, 100.0):
        raw = rng.normal(size=257) * scale
        update = raw.astype(np.float32) if kind == "numpy" else torch.tensor(raw, dtype=torch.float32)
        clipped, norm = clip_update(update=update, clip_norm=1.0)
        assert type(clipped) is type(update) and clipped.dtype == update.dtype
        c = np.asarray(clipped, dtype=np.float64)
        assert np.linalg.norm(c) <= 1.0 + 1e-5
        assert norm == pytest.approx(float(np.linalg.norm(raw)), rel=1e-5)
        if norm <= 1.0:
            np.testing.assert_allclose(c, raw, rtol=1e-6, atol=1e-7)  # untouched
        else:
            np.testing.assert_allclose(c, raw / norm, rtol=1e-5, atol=1e-7)  # same direction
    zero, norm = clip_update(update=np.zeros(4), clip_norm=1.0)
    assert norm == 0.0 and not zero.any()


def test_clip_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        clip_update(update=np.ones((2, 2)), clip_norm=1.0)
    with pytest.raises(InvalidInputError):
        clip_update(update=np.array([1.0, np.nan]), clip_norm=1.0)
    with pytest.raises(InvalidInputError):
        clip_update(update=[1.0, 2.0], clip_norm=1.0)  # type: ignore[type-var]
    with pytest.raises(InvalidPrivacyConfigError):
        clip_update(update=np.ones(3), clip_norm=0.0)


def test_noise_std_matches_z_times_c() -> None:
    config = DPFedAvgConfig(clip_norm=2.0, noise_multiplier=1.5, sample_rate=0.1, num_clients=100)
    agg = DPFedAvgAggregator(config=config, source=FixedNoiseSource(seed=7))
    d = 40_000
    out = agg.noisy_sum(updates=[], dim=d)
    assert isinstance(out, np.ndarray) and out.shape == (d,)
    # std estimate has relative standard error 1/sqrt(2d) ~ 0.35 %
    assert out.std() == pytest.approx(config.noise_std, rel=0.02)
    assert config.noise_std == pytest.approx(3.0)
    assert abs(out.mean()) < 5 * config.noise_std / np.sqrt(d)


def test_noisy_sum_is_sum_of_clipped_updates_plus_noise() -> None:
    config = DPFedAvgConfig(clip_norm=1.0, noise_multiplier=0.5, sample_rate=0.5, num_clients=8)
    agg = DPFedAvgAggregator(config=config, source=FixedNoiseSource(seed=3))
    rng = np.random.default_rng(4)
    d = 20_000
    updates = [rng.normal(size=d) * s for s in (0.001, 0.1, 5.0, 50.0)]
    clipped_sum = sum(clip_update(update=u, clip_norm=1.0)[0] for u in updates)
    residual = agg.noisy_sum(updates=updates, dim=d) - clipped_sum
    assert residual.std() == pytest.approx(0.5, rel=0.03)
    mean = agg.noisy_mean(updates=updates, dim=d)
    assert config.expected_clients == 4.0
    assert np.linalg.norm(mean * 4.0 - clipped_sum) == pytest.approx(np.linalg.norm(residual), rel=0.05)


def test_torch_updates_return_tensor() -> None:
    config = DPFedAvgConfig(clip_norm=1.0, noise_multiplier=1.0, sample_rate=0.5, num_clients=4)
    agg = DPFedAvgAggregator(config=config, source=FixedNoiseSource(seed=0))
    ups = [torch.randn(1000, dtype=torch.float32) for _ in range(3)]
    out = agg.noisy_sum(updates=ups, dim=1000)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (1000,)
    with pytest.raises(InvalidInputError):
        agg.noisy_sum(updates=[ups[0], np.zeros(1000)], dim=1000)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        agg.noisy_sum(updates=[torch.zeros(999)], dim=1000)


def test_default_noise_is_unpredictable() -> None:
    config = DPFedAvgConfig(clip_norm=1.0, noise_multiplier=1.0, sample_rate=0.5, num_clients=4)
    a = DPFedAvgAggregator(config=config).noisy_sum(updates=[], dim=64)
    b = DPFedAvgAggregator(config=config).noisy_sum(updates=[], dim=64)
    assert not np.allclose(a, b)


def test_poisson_client_sampling() -> None:
    ids = list(range(20_000))
    picked = sample_clients(client_ids=ids, sample_rate=0.1)
    # Binomial(20000, 0.1): mean 2000, std ~42
    assert abs(len(picked) - 2000) < 6 * 42
    assert picked == sorted(picked) and len(set(picked)) == len(picked)
    assert sample_clients(client_ids=ids[:50], sample_rate=0.0) == []
    assert sample_clients(client_ids=ids[:50], sample_rate=1.0) == ids[:50]
    sizes = {len(sample_clients(client_ids=ids[:20], sample_rate=0.5)) for _ in range(30)}
    assert len(sizes) > 1  # Poisson sampling: the sample size varies
    with pytest.raises(InvalidInputError):
        sample_clients(client_ids=["a", "a"], sample_rate=0.5)
    with pytest.raises(InvalidPrivacyConfigError):
        sample_clients(client_ids=["a"], sample_rate=1.5)


def test_accounting_and_config_validation() -> None:
    config = DPFedAvgConfig(clip_norm=1.0, noise_multiplier=1.1, sample_rate=0.2, num_clients=50)
    agg = DPFedAvgAggregator(config=config)
    acc = RDPAccountant()
    agg.account(accountant=acc, rounds=10)
    assert acc.history == [(1.1, 0.2, 10)]
    for bad in (
        dict(clip_norm=0.0, noise_multiplier=1.0, sample_rate=0.1, num_clients=5),
        dict(clip_norm=1.0, noise_multiplier=-1.0, sample_rate=0.1, num_clients=5),
        dict(clip_norm=1.0, noise_multiplier=1.0, sample_rate=0.0, num_clients=5),
        dict(clip_norm=1.0, noise_multiplier=1.0, sample_rate=0.1, num_clients=0),
    ):
        with pytest.raises(InvalidPrivacyConfigError):
            DPFedAvgConfig(**bad)
