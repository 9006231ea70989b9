"""The DP noise source and samplers (privacy.noise), and that every noise path draws from them.

Written from the adversary's side where it matters: someone who sees a release (the server, a
reader of the run directory) must not be able to reproduce the noise from a short seed, must not
learn the low bits of the clipped sum from the released floats, and a forked process must not
replay its parent's noise.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from dpsgd_setup import episodic_dpsgd, per_sample_dpsgd
from scipy import special, stats
from torch import nn

from privacy import noise
from privacy import noise_source as noise_source_module
from privacy.analysis import discrete_gaussian_variance
from privacy.client_dp import DPFedAvgAggregator, DPFedAvgConfig
from privacy.distributed import DistributedDPEncoder, plan_distributed_dp
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.noise import (
    KEY_BITS,
    CryptoNoiseSource,
    FixedNoiseSource,
    NoiseSource,
    add_gaussian_noise,
    add_gaussian_noise_to_tensors,
    fixed_noise_source,
    lattice_sensitivity_inflation,
    lattice_spacing,
    noise_source,
    sample_discrete_gaussian,
    sample_discrete_laplace,
    sample_poisson,
    sample_skellam,
)

REPO = Path(__file__).resolve().parents[2]


def _chi2(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> tuple[float, int]:
    """Chi-square statistic over ``support`` plus one bin for everything else."""
    n = samples.size
    counts = np.array([(samples == k).sum() for k in support], dtype=np.float64)
    expected = n * pmf
    rest_obs, rest_exp = n - counts.sum(), n - expected.sum()
    stat = float(np.sum((counts - expected) ** 2 / expected))
    if rest_exp > 5:
        stat += (rest_obs - rest_exp) ** 2 / rest_exp
    return stat, len(support)


def _chi2_ok(stat: float, dof: int) -> bool:
    return stat < stats.chi2.ppf(1 - 1e-4, dof)


# --------------------------------------------------------------------------------------------------
# The source: key size, freshness, AES-CTR, fork, test hook
# --------------------------------------------------------------------------------------------------


def test_key_has_at_least_128_bits_from_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    real = os.urandom

    def spy(n: int) -> bytes:
        asked.append(n)
        return real(n)

    monkeypatch.setattr(noise_source_module.os, "urandom", spy)
    src = CryptoNoiseSource()
    assert KEY_BITS == 256 and src.key_bits == 256 >= 128
    assert asked == [32]  # one 256-bit key, nothing shorter
    assert not src.fixed and not isinstance(src, FixedNoiseSource)


def test_two_fresh_sources_give_different_draws() -> None:
    a, b = noise_source(), noise_source()
    assert a is not b
    assert not np.array_equal(a.words(size=8), b.words(size=8))
    x = np.zeros(1000)
    assert not np.array_equal(
        add_gaussian_noise(values=x, sigma=1.0), add_gaussian_noise(values=x, sigma=1.0)
    )


def test_keystream_is_aes256_ctr_of_zeros_and_high_key_bits_matter() -> None:
    """Known answer: the words are AES-256-CTR of zero bytes (counter block 0) under the key."""
    key = os.urandom(32)
    src = CryptoNoiseSource()
    src._rekey(key)  # white-box: pin the key to check the construction
    expected = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(8 * 1000))
    got = np.concatenate([src.words(size=1), src.words(size=999)])  # the stream continues across calls
    assert got.tobytes() == expected
    # MT19937 (torch.manual_seed) keeps only the low 32 bits of a seed: the old noise had 32 bits.
    g1, g2 = torch.Generator().manual_seed(0x123456789ABCDEF0), torch.Generator().manual_seed(0x9ABCDEF0)
    assert torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))
    # Keys that differ only in their high bytes give unrelated streams here.
    low = bytes(16)
    a, b = CryptoNoiseSource(), CryptoNoiseSource()
    a._rekey(b"\x01" * 16 + low)
    b._rekey(b"\x02" * 16 + low)
    assert not np.array_equal(a.words(size=4), b.words(size=4))


def test_words_and_uniforms_are_uniform() -> None:
    src = FixedNoiseSource(seed="uniform")
    w = src.words(size=200_000)
    bits = ((w[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 6 * 0.5 / math.sqrt(w.size))
    u = src.uniform(size=200_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert src.uniform_open0(size=100_000).min() > 0.0


def test_bernoulli_probabilities_and_edges() -> None:
    src = FixedNoiseSource(seed="coins")
    for p in (0.0, 1e-30, 0.01, 0.3, 0.5, 0.9999, 1.0):
        c = src.bernoulli(p=np.full(100_000, p))
        assert c.dtype == bool
        assert abs(c.mean() - p) < 6 * math.sqrt(max(p * (1 - p), 1e-12) / c.size) + 1e-9
    assert not src.bernoulli(p=np.full(10, -0.5)).any() and src.bernoulli(p=np.full(10, 2.0)).all()


class _ScriptedSource(NoiseSource):
    """Hands out the given words (to reach the coin's tie branch deterministically)."""

    def __init__(self, words: list[int]) -> None:
        super().__init__()
        self._queue = [np.uint64(w) for w in words]

    def words(self, *, size: int) -> np.ndarray:
        out, self._queue = self._queue[:size], self._queue[size:]
        return np.array(out, dtype=np.uint64)


def test_coin_tie_is_settled_by_a_second_word() -> None:
    p = 2.0**-70 * 3  # p·2^64 < 1: the first word ties at 0, the fraction (3/64) decides
    assert _ScriptedSource([0, 0]).bernoulli(p=np.array([p])).tolist() == [True]
    assert _ScriptedSource([0, 2**63]).bernoulli(p=np.array([p])).tolist() == [False]
    assert _ScriptedSource([1]).bernoulli(p=np.array([p])).tolist() == [False]
    x = np.array([-math.log(p)])
    assert noise._coin_exp(x, _ScriptedSource([0, 0])).tolist() == [True]
    assert noise._coin_exp(x, _ScriptedSource([0, 2**63])).tolist() == [False]


def test_fork_rekeys_the_child() -> None:
    src = CryptoNoiseSource()
    src.words(size=3)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: draw and report, then leave without running pytest's teardown
        try:
            os.write(write_end, src.words(size=4).tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    child = np.frombuffer(os.read(read_end, 64), dtype=np.uint64)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child.size == 4
    assert not np.array_equal(child, src.words(size=4))  # the parent's next words differ


def test_fixed_noise_source_hook_is_test_only_and_scoped() -> None:
    assert not noise_source().fixed
    with fixed_noise_source(seed=5) as fixed:
        assert noise_source() is fixed and fixed.fixed
        first = add_gaussian_noise(values=np.zeros(64), sigma=2.0)
        with fixed_noise_source(seed=6) as inner:
            assert noise_source() is inner
        assert noise_source() is fixed
    assert not noise_source().fixed
    with fixed_noise_source(seed=5):
        assert np.array_equal(add_gaussian_noise(values=np.zeros(64), sigma=2.0), first)
    with pytest.raises(InvalidInputError):
        FixedNoiseSource(seed=1.5)  # type: ignore[arg-type]
    # Production code never uses the fixed source in code (docstrings may mention the hook).
    users = []
    for package in ("privacy", "secfed", "protocols", "attacks", "evaluations"):
        for path in (REPO / package).rglob("*.py"):
            if path in (REPO / "privacy" / "noise.py", REPO / "privacy" / "noise_source.py"):
                continue  # the hook's module and the module that re-exports it
            names = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Name):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.ImportFrom | ast.Import):
                    names.update(alias.name.split(".")[-1] for alias in node.names)
            if names & {"FixedNoiseSource", "fixed_noise_source"}:
                users.append(str(path.relative_to(REPO)))
    assert users == []


# --------------------------------------------------------------------------------------------------
# Samplers: pmf, mean, variance, tails
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 1.5, 4.0])
def test_discrete_gaussian_pmf_small_sigma(sigma: float) -> None:
    n = 200_000
    samples = sample_discrete_gaussian(sigma=sigma, size=n, source=FixedNoiseSource(seed=f"dg{sigma}"))
    assert samples.dtype == np.int64 and samples.shape == (n,)
    top = int(6 * sigma) + 2
    grid = np.arange(-60 - top, 61 + top)
    norm = np.exp(-(grid.astype(float) ** 2) / (2 * sigma**2)).sum()
    support = np.arange(-top, top + 1)
    pmf = np.exp(-(support.astype(float) ** 2) / (2 * sigma**2)) / norm
    keep = n * pmf > 5
    stat, dof = _chi2(samples, support[keep], pmf[keep])
    assert _chi2_ok(stat, dof), (stat, dof)
    assert samples.var() == pytest.approx(discrete_gaussian_variance(sigma=sigma), rel=0.02)
    assert abs(samples.mean()) < 5 * sigma / math.sqrt(n) + 1e-3


def test_discrete_gaussian_large_sigma_moments_and_tails() -> None:
    sigma, n = 2.0**20 * 1.37, 400_000
    z = sample_discrete_gaussian(sigma=sigma, size=n, source=FixedNoiseSource(seed="big")) / sigma
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))
    for k in (1.0, 2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(k)
        assert abs(np.mean(np.abs(z) > k) - p) < 6 * math.sqrt(p * (1 - p) / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert abs(stats.skew(z)) < 6 * math.sqrt(6 / n) and abs(stats.kurtosis(z)) < 6 * math.sqrt(24 / n)


@pytest.mark.parametrize("scale", [1, 3, 40, 2**33 + 5])
def test_discrete_laplace_pmf(scale: int) -> None:
    n = 200_000
    y = sample_discrete_laplace(scale=scale, size=n, source=FixedNoiseSource(seed=f"lap{scale}"))
    r = math.exp(-1 / scale)
    if scale <= 40:
        support = np.arange(-5 * scale, 5 * scale + 1)
        pmf = (1 - r) / (1 + r) * r ** np.abs(support)
        keep = n * pmf > 5
        stat, dof = _chi2(y, support[keep], pmf[keep])
        assert _chi2_ok(stat, dof), (stat, dof)
    var = 2 * r / (1 - r) ** 2
    assert y.astype(np.float64).var() == pytest.approx(var, rel=0.03)
    assert abs(y.mean()) < 6 * math.sqrt(var / n)
    # |Y|/t is close to Exp(1) for large t: check the tail P(|Y| > 3t) = r^(3t+1)·2/(1+r)
    if scale > 40:
        p = 2 * r ** (3 * scale + 1) / (1 + r)
        assert abs(np.mean(np.abs(y) > 3 * scale) - p) < 6 * math.sqrt(p / n)


def test_discrete_laplace_fine_structure_within_blocks() -> None:
    """|y| = Q·M + R: the offset R inside a block of M = t/16 values must decay like exp(-R/t).

    A sampler that drops the in-block rejection (R uniform) passes moment checks but moves the
    mean of R by ~18 standard errors here.
    """
    t, n = 1024, 1_000_000
    block = 1 << (t.bit_length() - 1 - noise._BLOCK_SHIFT)
    y = sample_discrete_laplace(scale=t, size=n, source=FixedNoiseSource(seed="blocks"))
    m = np.arange(0, 60 * t)
    weight = np.where(m == 0, 1.0, 2.0) * np.exp(-m / t)  # law of |y|
    r = m % block
    expected = float((weight * r).sum() / weight.sum())
    sd = float(np.sqrt((weight * r**2).sum() / weight.sum() - expected**2))
    got = float((np.abs(y) % block).mean())
    assert abs(got - expected) < 5 * sd / math.sqrt(n), (got, expected)


@pytest.mark.parametrize("lam", [0.2, 3.0, 9.99, 10.0, 50.0, 1234.5])
def test_poisson_pmf(lam: float) -> None:
    n = 200_000
    k = sample_poisson(lam=lam, size=n, source=FixedNoiseSource(seed=f"poi{lam}"))
    assert k.min() >= 0
    support = np.arange(max(0, int(lam - 6 * math.sqrt(lam))), int(lam + 6 * math.sqrt(lam)) + 3)
    pmf = stats.poisson.pmf(support, lam)
    keep = n * pmf > 5
    stat, dof = _chi2(k, support[keep], pmf[keep])
    assert _chi2_ok(stat, dof), (stat, dof)
    assert k.mean() == pytest.approx(lam, abs=6 * math.sqrt(lam / n))


def test_poisson_and_skellam_at_the_largest_mean() -> None:
    lam, n = 5e11, 200_000
    k = sample_poisson(lam=lam, size=n, source=FixedNoiseSource(seed="huge")).astype(np.float64)
    assert k.mean() == pytest.approx(lam, abs=6 * math.sqrt(lam / n))
    assert k.var() == pytest.approx(lam, rel=6 * math.sqrt(2 / n))
    z = (k - lam) / math.sqrt(lam)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    sk = sample_skellam(variance=6.0, size=n, source=FixedNoiseSource(seed="sk"))
    support = np.arange(-8, 9)
    stat, dof = _chi2(sk, support, special.ive(np.abs(support), 6.0))
    assert _chi2_ok(stat, dof)


def test_samplers_are_vectorised() -> None:
    """Work per draw is a handful of numpy rounds, never a Python loop per coordinate."""
    calls = {"n": 0}

    class Counting(FixedNoiseSource):
        def words(self, *, size: int) -> np.ndarray:
            calls["n"] += 1
            return super().words(size=size)

    src = Counting(seed="count")
    add_gaussian_noise(values=np.zeros(300_000), sigma=1.0, source=src)
    assert calls["n"] < 200
    calls["n"] = 0
    sample_poisson(lam=77.0, size=300_000, source=src)
    assert calls["n"] < 200


# --------------------------------------------------------------------------------------------------
# The Gaussian mechanism on a lattice: no floating-point leak
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "dim"), [(1.0, 1), (0.37, 10), (3.0, 113_000), (1e-3, 7), (250.0, 10**8)])
def test_lattice_spacing_and_sensitivity_bound(sigma: float, dim: int) -> None:
    g = lattice_spacing(sigma=sigma, dim=dim)
    assert math.frexp(g)[0] == 0.5  # a power of two
    s = sigma / g
    assert 2.0**20 * math.sqrt(dim) <= s < 2.0**21 * math.sqrt(dim)
    assert lattice_sensitivity_inflation(sigma=sigma, dim=dim) == pytest.approx(g * math.sqrt(dim))
    assert lattice_sensitivity_inflation(sigma=sigma, dim=dim) <= sigma * 2.0**-20


def test_release_is_on_the_lattice_and_ignores_the_low_bits_of_the_input() -> None:
    """An observer of the release cannot tell inputs apart that round to the same lattice point.

    Mironov (2012) / Jin et al. (2022): with textbook float noise the set of reachable outputs
    depends on the input's low bits. Here the release with a fixed noise source is *identical* for
    two inputs that differ below g/2, lies on gℤ, and moves by exactly the lattice shift otherwise.
    """
    sigma, d = 0.8, 5000
    rng = np.random.default_rng(0)
    g = lattice_spacing(sigma=sigma, dim=d)
    x = np.rint(rng.normal(size=d) * 3 / g) * g  # on the lattice
    wiggle = x + rng.uniform(-0.45, 0.45, size=d) * g  # differs only in bits below g/2
    y1 = add_gaussian_noise(values=x, sigma=sigma, source=FixedNoiseSource(seed="lsb"))
    y2 = add_gaussian_noise(values=wiggle, sigma=sigma, source=FixedNoiseSource(seed="lsb"))
    assert np.array_equal(y1, y2)
    assert np.array_equal(y1 / g, np.rint(y1 / g))  # every output is an exact multiple of g
    shifted = x.copy()
    shifted[:10] += 7 * g
    y3 = add_gaussian_noise(values=shifted, sigma=sigma, source=FixedNoiseSource(seed="lsb"))
    assert np.array_equal(y3 - y1, shifted - x)  # the noise does not depend on the input
    # The same check has teeth: the textbook float sampler leaks the low bits.
    t1 = x + np.random.default_rng(1).normal(0, sigma, size=d)
    t2 = wiggle + np.random.default_rng(1).normal(0, sigma, size=d)
    assert not np.array_equal(t1, t2)


def test_gaussian_release_has_mean_zero_and_std_sigma() -> None:
    d = 300_000
    x = np.random.default_rng(3).normal(size=d).astype(np.float32)
    for sigma in (0.05, 1.0, 37.0):
        y = add_gaussian_noise(values=x, sigma=sigma, source=FixedNoiseSource(seed=f"mech{sigma}"))
        assert y.dtype == np.float64 and y.shape == x.shape
        err = y - x.astype(np.float64)
        assert err.std() == pytest.approx(sigma, rel=6 * math.sqrt(0.5 / d))
        assert abs(err.mean()) < 6 * sigma / math.sqrt(d)
    assert add_gaussian_noise(values=np.zeros((3, 4)), sigma=1.0).shape == (3, 4)
    assert add_gaussian_noise(values=np.zeros(0), sigma=1.0).shape == (0,)


def test_tensor_release_keeps_shapes_dtypes_and_noises_jointly() -> None:
    tensors = [torch.zeros(3, 4), torch.zeros(5, dtype=torch.float64), torch.zeros(2, 2, 2)]
    out = add_gaussian_noise_to_tensors(tensors=tensors, sigma=1.0, source=FixedNoiseSource(seed="t"))
    assert [o.shape for o in out] == [t.shape for t in tensors]
    assert [o.dtype for o in out] == [t.dtype for t in tensors]
    flat = torch.cat([o.double().reshape(-1) for o in out])
    ref = add_gaussian_noise(values=np.zeros(25), sigma=1.0, source=FixedNoiseSource(seed="t"))
    np.testing.assert_allclose(flat.numpy(), ref, rtol=1e-6)  # one vector, one lattice
    assert add_gaussian_noise_to_tensors(tensors=[], sigma=1.0) == []
    with pytest.raises(InvalidInputError):
        add_gaussian_noise_to_tensors(tensors=[torch.zeros(3, dtype=torch.int64)], sigma=1.0)


def test_bad_inputs_raise_typed_errors() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InvalidPrivacyConfigError):
            add_gaussian_noise(values=np.zeros(3), sigma=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidPrivacyConfigError):
            sample_discrete_gaussian(sigma=bad, size=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        add_gaussian_noise(values=np.array([1.0, np.nan]), sigma=1.0)
    with pytest.raises(InvalidInputError):
        add_gaussian_noise(values=np.array(["a"]), sigma=1.0)
    with pytest.raises(InvalidInputError, match="too large"):
        add_gaussian_noise(values=np.array([1e30]), sigma=1.0)
    with pytest.raises(InvalidInputError):
        add_gaussian_noise(values=np.zeros(3), sigma=1.0, source=np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        sample_discrete_gaussian(sigma=1.0, size=-1)
    with pytest.raises(InvalidPrivacyConfigError):
        sample_discrete_laplace(scale=0, size=3)
    with pytest.raises(InvalidPrivacyConfigError):
        sample_poisson(lam=0.0, size=3)
    with pytest.raises(InvalidPrivacyConfigError):
        sample_discrete_gaussian(sigma=2.0**53, size=1)


# --------------------------------------------------------------------------------------------------
# Every noise path draws from the new source (and from nothing else)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Count keystream draws of production sources; make torch's and numpy's samplers explode."""
    seen: dict[str, Any] = {"words": 0, "sources": set()}
    real = CryptoNoiseSource.words

    def counting(self: CryptoNoiseSource, *, size: int) -> np.ndarray:
        seen["words"] += 1
        seen["sources"].add(id(self))
        return real(self, size=size)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a noise path used torch's or numpy's non-cryptographic sampler")

    monkeypatch.setattr(CryptoNoiseSource, "words", counting)
    for name in ("normal", "randn", "rand", "randn_like", "normal_"):
        if hasattr(torch, name):
            monkeypatch.setattr(torch, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "normal_", forbidden)
    monkeypatch.setattr(np.random, "default_rng", forbidden)
    return seen


def _linear_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.Generator(np.random.PCG64(0))  # test data (not noise)
    x = torch.from_numpy(rng.normal(size=(n, 30)).astype(np.float32))
    return x, torch.from_numpy(rng.integers(0, 3, size=n))


def test_per_sample_dpsgd_draws_from_the_crypto_source(draws: dict[str, Any]) -> None:
    x, y = _linear_data()
    dp = per_sample_dpsgd(nn.Linear(30, 3), x=x, y=y, sample_rate=0.5, expected_batch_size=8)
    assert isinstance(dp.optimizer.noise_source, CryptoNoiseSource) and not dp.optimizer.noise_source.fixed
    dp.step()
    assert draws["words"] > 0 and id(dp.optimizer.noise_source) in draws["sources"]
    dp.finish()


def test_episodic_dpsgd_draws_from_the_crypto_source(draws: dict[str, Any]) -> None:
    model = nn.Linear(20, 5, bias=False)

    def loss(params: Any, buffers: Any, episode: torch.Tensor) -> torch.Tensor:
        return (params["weight"] ** 2).sum() * episode.sum()

    dp = episodic_dpsgd(model, sample_rate=0.1, expected_episodes=2)
    assert isinstance(dp.optimizer.noise_source, CryptoNoiseSource)
    before = model.weight.detach().clone()
    dp.step(episodes=[torch.ones(2)], loss_fn=loss, params=dict(model.named_parameters()), buffers={})
    assert draws["words"] > 0 and id(dp.optimizer.noise_source) in draws["sources"]
    assert not torch.equal(before, model.weight.detach())


def test_client_level_aggregator_and_distributed_encoder_draw_from_the_crypto_source(
    draws: dict[str, Any],
) -> None:
    agg = DPFedAvgAggregator(
        config=DPFedAvgConfig(clip_norm=1.0, noise_multiplier=1.0, sample_rate=0.5, num_clients=4)
    )
    out = agg.noisy_sum(updates=[np.ones(100)], dim=100)
    assert draws["words"] > 0 and out.shape == (100,)
    cfg = plan_distributed_dp(
        mechanism="skellam", dim=32, clip_norm=1.0, noise_multiplier=1.0, expected_clients=2, bits=20
    )
    draws["words"] = 0
    DistributedDPEncoder(config=cfg, rotation_seed=b"\x01" * 32).encode(x=np.full(32, 0.1))
    assert draws["words"] >= 3  # rounding coins and two Poisson draws


def test_server_central_noise_draws_from_the_crypto_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secfed.config import config_from_dict
    from secfed.dp import ServerPrivacy
    from secfed.dp.modes import client as client_mode

    cfg = config_from_dict(
        {
            "experiment": {"rounds": 2, "eval_every": 0, "seed": 3},
            "data": {"dataset": "digits"},
            "partition": {"scheme": "class_disjoint", "num_sites": 4},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
            "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
            "learner": {"name": "protonet", "local_steps": 1},
            "privacy": {"mode": "client", "noise_multiplier": 1.0, "max_grad_norm": 1.0},
        },
        base_dir=REPO,
    )
    sp = ServerPrivacy(config=cfg, run_dir=tmp_path)
    calls = {"n": 0}
    real = noise.add_gaussian_noise

    def spy(**kwargs: Any) -> np.ndarray:
        calls["n"] += 1
        assert isinstance(kwargs["source"], CryptoNoiseSource) and not kwargs["source"].fixed
        return real(**kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("central noise used numpy's or torch's sampler")

    monkeypatch.setattr(client_mode, "add_gaussian_noise", spy)
    monkeypatch.setattr(torch, "normal", forbidden)
    monkeypatch.setattr(np.random, "default_rng", forbidden)
    noisy = sp.central_noise(np.zeros(1000), 3, 1)
    assert calls["n"] == 1 and noisy.std() == pytest.approx(1.0, rel=0.15)
    g = lattice_spacing(sigma=1.0, dim=1000)
    assert np.array_equal(noisy / g, np.rint(noisy / g))  # a lattice release, not a float draw


def _low_bits_fixed_urandom(n: int) -> bytes:
    """os.urandom whose every 8-byte little-endian word has its low 32 bits zero."""
    raw = bytearray(_REAL_URANDOM(n))
    for i in range(0, n - n % 8, 8):
        raw[i : i + 4] = b"\x00\x00\x00\x00"
    return bytes(raw)


_REAL_URANDOM = os.urandom


def test_step_noise_is_not_determined_by_32_bits_of_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old per-step seed (64 urandom bits into MT19937) kept only the low 32 bits. With those
    bits pinned and the high bits still random, two identical DP steps must still get different
    noise (they got identical noise before: the attack of issue 16, finding 3)."""
    monkeypatch.setattr(os, "urandom", _low_bits_fixed_urandom)
    x, y = _linear_data()
    updates = [_one_dp_step(x=x, y=y) for _ in range(2)]
    assert not torch.equal(updates[0], updates[1])


def _one_dp_step(*, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The weight update of one full-batch PerSampleDPSGD step from a fixed initial model."""
    torch.manual_seed(0)
    model = nn.Linear(30, 3)
    before = model.weight.detach().clone()
    per_sample_dpsgd(model, x=x, y=y, sample_rate=1.0, expected_batch_size=16, lr=1.0).step()
    return model.weight.detach() - before


def test_fixed_hook_makes_dp_steps_reproducible_and_nothing_else_does() -> None:
    x, y = _linear_data()

    def one_step() -> torch.Tensor:
        return _one_dp_step(x=x, y=y)

    with fixed_noise_source(seed="repro"):
        a = one_step()
    with fixed_noise_source(seed="repro"):
        b = one_step()
    assert torch.equal(a, b)
    assert not torch.equal(one_step(), one_step())  # the torch seed alone fixes nothing


# --------------------------------------------------------------------------------------------------
# Source scan: no noise path seeds or uses a short-seeded / non-cryptographic generator
# --------------------------------------------------------------------------------------------------

#: Modules on a noise path (they draw, add or simulate DP noise).
NOISE_PATHS = (
    "privacy/noise.py",
    "privacy/noise_source.py",
    "privacy/dpsgd.py",
    "privacy/trainer_common.py",
    "privacy/episodic.py",
    "privacy/clipping.py",
    "privacy/client_dp.py",
    "privacy/distributed.py",
    "privacy/distributed_config.py",
    "privacy/hadamard.py",
    "secfed/dp/server.py",
    "secfed/dp/planning.py",
    "secfed/dp/modes/client.py",
    "secfed/dp/modes/distributed.py",
    "secfed/dp/modes/record.py",
    "secfed/dp/distributed.py",
    "secfed/dp/sharing.py",
    "attacks/secfed_observe.py",
)
#: Calls that build a seeded generator or draw from a non-cryptographic one.
FORBIDDEN_CALLS = {
    "manual_seed", "seed", "default_rng", "RandomState", "Generator", "PCG64", "PCG64DXSM", "MT19937",
    "Philox", "SFC64", "SeedSequence", "Random", "normal", "normal_", "randn", "randn_like", "rand",
    "poisson", "geometric", "gauss", "laplace", "exponential", "binomial",
}  # fmt: skip


def _public_seeded(node: ast.Call) -> bool:
    """``default_rng(derive_seed(...))``: public randomness replayed from the experiment seed (e.g.
    the public task-class plan); allowed, since draws that could be noise are forbidden anyway."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name != "default_rng" or len(node.args) != 1 or not isinstance(node.args[0], ast.Call):
        return False
    inner = node.args[0].func
    return (inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")) == "derive_seed"


def _rng_violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in FORBIDDEN_CALLS and not _public_seeded(node):
            found.append(f"{where}:{node.lineno} calls {name}()")
        if name == "urandom" and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            if isinstance(value, int) and value < 16:
                found.append(f"{where}:{node.lineno} reads only {value} bytes of os.urandom")
    return found


def test_no_noise_path_uses_a_seeded_or_non_cryptographic_generator() -> None:
    bad = []
    for rel in NOISE_PATHS:
        path = REPO / rel
        assert path.exists(), rel
        bad += _rng_violations(path.read_text(encoding="utf-8"), rel)
    assert bad == []


def test_the_scan_catches_the_old_noise_code() -> None:
    old = (
        "def fresh_noise_generator(*, device):\n"
        "    generator = torch.Generator(device=device)\n"
        "    generator.manual_seed(int.from_bytes(os.urandom(8), 'little'))\n"
        "    return generator\n"
        "noisy = arr + self._rng.normal(0.0, std, size=d)\n"
        "rng = np.random.default_rng(int.from_bytes(os.urandom(32), 'little'))\n"
        "ok = np.random.default_rng(derive_seed(seed, 'tasks', 1, 0))\n"
    )
    found = _rng_violations(old, "old")
    assert any("Generator" in f for f in found) and any("manual_seed" in f for f in found)
    assert any("urandom" in f for f in found) and any("normal" in f for f in found)
    assert [f for f in found if "default_rng" in f] == ["old:6 calls default_rng()"]  # not line 7
