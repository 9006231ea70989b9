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
run's privacy parameters alone (:class:`secfed.dp.params.DPParams`, built once from the calibrated
configuration); its vector length is the flat state of the configured model (:func:`model_dim`),
found once per process by building the model. The public facts of the federation plan
(:func:`client_sample_rate`, :func:`expected_participants`, :func:`max_participants`) live in
:mod:`secfed.dp.params` and are re-exported here.
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
from secfed.config import ExperimentConfig
from secfed.dp.params import (
    DistributedParams,
    DPParams,
    client_sample_rate,
    client_sampling_note,
    expected_participants,
    max_participants,
)
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


def _distributed(params: object) -> tuple[DPParams, DistributedParams]:
    if not isinstance(params, DPParams):
        raise ConfigError(f"params must be a DPParams, got {type(params).__name__}")
    if params.mode != "distributed" or params.distributed is None:
        raise ConfigError(f"privacy.mode = {params.mode!r}: distributed-DP encoders need 'distributed'")
    return params, params.distributed


def rotation_seed(*, params: DPParams, round_idx: int) -> bytes:
    """The public 32-byte rotation seed of round ``round_idx`` (SHA-256 of the seed and the round).

    Args:
        params: The run's privacy parameters (``distributed.rotation_seed``: ``experiment.seed``).
        round_idx: The round (>= 1).

    Returns:
        32 bytes, identical on every site and the server.

    Raises:
        ConfigError: If the mode is not distributed or ``round_idx`` is not an integer >= 1.
    """
    _, dist = _distributed(params)
    if isinstance(round_idx, bool) or not isinstance(round_idx, int) or round_idx < 1:
        raise ConfigError(f"round_idx must be an integer >= 1, got {round_idx!r}")
    payload = f"{dist.rotation_seed}/{round_idx}".encode()
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
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
        secfed.errors.DataError: If the data cannot be loaded.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    return (shape or run_shape(config=config)).dim


# --------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------
def distributed_dp_config(*, params: DPParams, dim: int) -> DistributedDPConfig:
    """The encoding shared by every site and the server (see the module docstring).

    Args:
        params: The run's privacy parameters (``mode = "distributed"``).
        dim: Length of the flat update (:func:`model_dim`).

    Returns:
        The validated :class:`~privacy.distributed.DistributedDPConfig`.

    Raises:
        ConfigError: If the mode is not distributed, the noise multiplier is 0, or no encoding fits
            the bit width (message from :func:`privacy.distributed.plan_distributed_dp`; when Skellam
            noise would be too large to sample accurately, it names a bit width that works).
    """
    p, dist = _distributed(params)
    if not p.noise_multiplier > 0:
        raise ConfigError(
            f"privacy.noise_multiplier = {p.noise_multiplier!r} is invalid: distributed DP needs noise > 0"
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an integer >= 1, got {dim!r}")

    def plan(bits: int) -> DistributedDPConfig:
        return plan_distributed_dp(
            mechanism=dist.mechanism,
            dim=dim,
            clip_norm=p.max_grad_norm,
            noise_multiplier=p.noise_multiplier,
            expected_clients=dist.expected_participants,
            bits=bits,
            max_clients=dist.max_participants,
        )

    try:
        return plan(dist.bits)
    except PrivacyError as exc:
        advice = ""
        if dist.mechanism == "skellam":
            # The Skellam sampler is accurate only up to SKELLAM_MAX_LOCAL_VARIANCE per client; fewer
            # bits mean a coarser gamma and a smaller integer variance.
            for bits in range(dist.bits - 1, 7, -1):
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
            f"privacy.bits = {dist.bits} / privacy.noise_multiplier = {p.noise_multiplier}: "
            f"cannot plan distributed DP: {exc}{advice}"
        ) from exc


def make_distributed_encoder_factory(
    *, params: DPParams, dim: int | Callable[[], int]
) -> Callable[[int], DistributedDPEncoder]:
    """``round_idx -> encoder`` for :class:`~secfed.federation.secure.SecureClientAggregator` and the server.

    Every call returns a fresh encoder with the round's public rotation and its own
    ``os.urandom``-seeded rounding/noise generator.

    Args:
        params: The run's privacy parameters (``mode = "distributed"``).
        dim: Flat update length, or a function that finds it on the first call (e.g.
            :func:`model_dim` of the run).

    Returns:
        The factory.

    Raises:
        ConfigError: If the mode is not distributed or the noise multiplier is 0 (checked now);
            the factory raises ConfigError for a bad round index or an infeasible bit width.
    """
    p, _ = _distributed(params)
    if not p.noise_multiplier > 0 or not math.isfinite(p.noise_multiplier):
        raise ConfigError(
            f"privacy.noise_multiplier = {p.noise_multiplier!r} is invalid: "
            "distributed DP needs finite noise > 0"
        )
    planned: list[DistributedDPConfig] = []
    if not callable(dim):
        planned.append(distributed_dp_config(params=p, dim=dim))

    def factory(round_idx: int) -> DistributedDPEncoder:
        if not planned:
            assert callable(dim)
            planned.append(distributed_dp_config(params=p, dim=dim()))
        return DistributedDPEncoder(
            config=planned[0], rotation_seed=rotation_seed(params=p, round_idx=round_idx)
        )

    return factory
