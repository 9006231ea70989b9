"""Distributed DP under secure aggregation: the per-round encoders, and the public facts they need.

With ``privacy.mode = "distributed"`` the server only ever sees the SecAgg sum, so the noise comes
from the sites: each encodes its (clipped) update with :class:`privacy.distributed.DistributedDPEncoder`
— clip to ``C = privacy.max_grad_norm``, randomised Hadamard rotation, scaling by ``1/γ``,
conditional randomised rounding, its share of discrete Gaussian (Kairouz, Liu & Steinke, ICML 2021,
arXiv 2102.06387) or Skellam (Agarwal, Kairouz & Liu, NeurIPS 2021, arXiv 2110.04995) noise,
reduction mod ``2^privacy.bits`` — and the server decodes the modular sum.

Planning (:func:`distributed_dp_config`): the target total noise std in the sum is ``z·C`` with
``z = privacy.noise_multiplier``; each client adds ``1/n`` of that variance, ``n`` being the
*expected* number of participants per round (:func:`expected_participants`). When fewer clients'
noise reaches the sum (dropouts), the sum carries less noise and the server's accountant, told the
actual survivors, reports a larger ε. ``γ`` is chosen so that the sum of the *largest* possible number
of participants (:func:`max_participants`) does not wrap modulo ``2^bits`` with high probability.

Randomness: the rotation of round ``r`` is derived from ``(experiment.seed, r)`` (:func:`rotation_seed`)
— public by design, the server must undo it. Rounding and noise use a generator seeded from
``os.urandom`` inside every encoder, so nobody can subtract a site's noise share.

Every site and the server build the same :class:`~privacy.distributed.DistributedDPConfig` from the
configuration alone; its vector length is the flat state of the configured model
(:func:`model_dim`), found once per process by building the model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

from privacy.distributed import (
    SKELLAM_MAX_LOCAL_VARIANCE,
    DistributedDPConfig,
    DistributedDPEncoder,
    plan_distributed_dp,
)
from privacy.errors import PrivacyError
from secfed.builders import RunShape, run_shape
from secfed.config import ExperimentConfig, max_sites_per_round
from secfed.errors import ConfigError

__all__ = [
    "ROTATION_DOMAIN",
    "client_sample_rate",
    "client_sampling_note",
    "distributed_dp_config",
    "expected_participants",
    "make_distributed_encoder_factory",
    "max_participants",
    "model_dim",
    "rotation_seed",
]

#: Domain separator of the public per-round rotation seeds.
ROTATION_DOMAIN = b"secfed.dp.distributed.rotation.v1"


def _check_config(config: object) -> ExperimentConfig:
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    return config


# --------------------------------------------------------------------------------------------------
# Public facts of the federation plan
# --------------------------------------------------------------------------------------------------
def client_sample_rate(*, config: ExperimentConfig) -> float:
    """The per-round probability that a given site is sampled (public).

    ``federation.sample_rate`` for Poisson sampling; ``clients_per_round / num_sites`` for fixed-size
    sampling (1 when every site takes part).

    Args:
        config: The experiment configuration.

    Returns:
        q_client in (0, 1].

    Raises:
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
    """
    f = _check_config(config).federation
    if f.sampling == "poisson":
        return float(f.sample_rate)
    n = config.partition.num_sites
    m = f.clients_per_round or n
    return float(m) / float(n)


def client_sampling_note(*, config: ExperimentConfig) -> str:
    """How client sampling is accounted, in words (stored in the ledger and the summary).

    Fixed-size sampling without replacement of ``m < N`` sites is accounted with the
    Poisson-subsampled analysis at ``q = m/N``: an approximation, not a proven bound (the sampled
    Gaussian RDP of Mironov, Talwar & Zhang 2019 assumes Poisson sampling). Use
    ``federation.sampling = "poisson"`` for a proven client-level guarantee.

    Args:
        config: The experiment configuration.

    Returns:
        ``"poisson"``, ``"all sites every round"`` or a note on the fixed-size approximation.
    """
    f = _check_config(config).federation
    if f.sampling == "poisson":
        return "poisson"
    if (f.clients_per_round or config.partition.num_sites) == config.partition.num_sites:
        return "all sites every round"
    return "fixed-size without replacement, accounted as Poisson at q=m/N (approximation)"


def expected_participants(*, config: ExperimentConfig) -> int:
    """Expected number of sampled sites per round: ``round(q·N)`` (Poisson, at least 1) or ``m``."""
    f = _check_config(config).federation
    n = config.partition.num_sites
    if f.sampling == "poisson":
        return max(1, int(round(f.sample_rate * n)))
    return f.clients_per_round or n


def max_participants(*, config: ExperimentConfig) -> int:
    """Largest number of sites whose encodings may be summed in a round (``N`` or ``m``)."""
    return max_sites_per_round(_check_config(config))


def rotation_seed(*, config: ExperimentConfig, round_idx: int) -> bytes:
    """The public 32-byte rotation seed of round ``round_idx`` (SHA-256 of the seed and the round).

    Args:
        config: The experiment configuration (its ``experiment.seed``).
        round_idx: The round (>= 1).

    Returns:
        32 bytes, identical on every site and the server.

    Raises:
        ConfigError: If ``round_idx`` is not an integer >= 1.
    """
    cfg = _check_config(config)
    if isinstance(round_idx, bool) or not isinstance(round_idx, int) or round_idx < 1:
        raise ConfigError(f"round_idx must be an integer >= 1, got {round_idx!r}")
    payload = f"{cfg.experiment.seed}/{round_idx}".encode()
    return hashlib.sha256(ROTATION_DOMAIN + b"/" + payload).digest()


def model_dim(*, config: ExperimentConfig, shape: RunShape | None = None) -> int:
    """Length of the flat federated state of the configured model.

    Args:
        config: The experiment configuration.
        shape: The run's shape when the caller holds it (``Experiment.run``); ``None`` finds it
            from the configuration (:func:`secfed.builders.run_shape`: loads the splits and builds
            the model once per configuration, without touching the caller's torch RNG).

    Returns:
        The number of values in a flat update.

    Raises:
        secfed.errors.DataError: If the data cannot be loaded.
    """
    cfg = _check_config(config)
    return (shape or run_shape(config=cfg)).dim


# --------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------
def distributed_dp_config(*, config: ExperimentConfig, dim: int) -> DistributedDPConfig:
    """The encoding shared by every site and the server (see the module docstring).

    Args:
        config: The experiment configuration (``privacy.mode = "distributed"``).
        dim: Length of the flat update (:func:`model_dim`).

    Returns:
        The validated :class:`~privacy.distributed.DistributedDPConfig`.

    Raises:
        ConfigError: If the mode is not distributed, the noise multiplier is 0, or no encoding fits
            the bit width (message from :func:`privacy.distributed.plan_distributed_dp`; when Skellam
            noise would be too large to sample accurately, it names a bit width that works).
    """
    cfg = _check_config(config)
    p = cfg.privacy
    if p.mode != "distributed":
        raise ConfigError(f"privacy.mode = {p.mode!r}: distributed-DP encoders need 'distributed'")
    if not p.noise_multiplier > 0:
        raise ConfigError(
            f"privacy.noise_multiplier = {p.noise_multiplier!r} is invalid: distributed DP needs noise > 0"
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an integer >= 1, got {dim!r}")

    def plan(bits: int) -> DistributedDPConfig:
        return plan_distributed_dp(
            mechanism=p.mechanism,
            dim=dim,
            clip_norm=p.max_grad_norm,
            noise_multiplier=p.noise_multiplier,
            expected_clients=expected_participants(config=cfg),
            bits=bits,
            max_clients=max_participants(config=cfg),
        )

    try:
        return plan(p.bits)
    except PrivacyError as exc:
        advice = ""
        if p.mechanism == "skellam":
            # The Skellam sampler is accurate only up to SKELLAM_MAX_LOCAL_VARIANCE per client; fewer
            # bits mean a coarser gamma and a smaller integer variance.
            for bits in range(p.bits - 1, 7, -1):
                try:
                    plan(bits)
                except PrivacyError:
                    continue
                advice = (
                    f"; privacy.bits = {bits} or fewer keeps each client's Skellam variance within "
                    f"{SKELLAM_MAX_LOCAL_VARIANCE:g}, the accurate range of its sampler"
                )
                break
        raise ConfigError(
            f"privacy.bits = {p.bits} / privacy.noise_multiplier = {p.noise_multiplier}: "
            f"cannot plan distributed DP: {exc}{advice}"
        ) from exc


def make_distributed_encoder_factory(
    *, config: ExperimentConfig, dim: int | None = None
) -> Callable[[int], DistributedDPEncoder]:
    """``round_idx -> encoder`` for :class:`~secfed.federation.secure.SecureClientAggregator` and the server.

    Every call returns a fresh encoder with the round's public rotation and its own
    ``os.urandom``-seeded rounding/noise generator.

    Args:
        config: The experiment configuration (``privacy.mode = "distributed"``).
        dim: Flat update length; ``None`` finds it with :func:`model_dim` on the first call.

    Returns:
        The factory.

    Raises:
        ConfigError: If the mode is not distributed or the noise multiplier is 0 (checked now);
            the factory raises ConfigError for a bad round index or an infeasible bit width.
    """
    cfg = _check_config(config)
    if cfg.privacy.mode != "distributed":
        raise ConfigError(f"privacy.mode = {cfg.privacy.mode!r}: distributed-DP encoders need 'distributed'")
    if not cfg.privacy.noise_multiplier > 0 or not math.isfinite(cfg.privacy.noise_multiplier):
        raise ConfigError(
            f"privacy.noise_multiplier = {cfg.privacy.noise_multiplier!r} is invalid: "
            "distributed DP needs finite noise > 0"
        )
    planned: list[DistributedDPConfig] = []
    if dim is not None:
        planned.append(distributed_dp_config(config=cfg, dim=dim))

    def factory(round_idx: int) -> DistributedDPEncoder:
        if not planned:
            planned.append(distributed_dp_config(config=cfg, dim=model_dim(config=cfg)))
        return DistributedDPEncoder(
            config=planned[0], rotation_seed=rotation_seed(config=cfg, round_idx=round_idx)
        )

    return factory
