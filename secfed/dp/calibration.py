"""The noise multiplier that meets ``privacy.target_epsilon`` over the planned run.

:func:`calibrated_config` is what the assembly of a run calls once, before the configuration is
written to the run directory (:class:`secfed.experiment.Experiment`); :func:`calibrated_noise_multiplier`
is the number itself. Both are pure functions of the configuration and the run's shape, over the
plan of :mod:`secfed.dp.planning`, and use the one calibration front end of the accounting library
(:func:`privacy.calibration.calibrate_noise`, :func:`privacy.distributed.calibrate_distributed_dp`).
"""

from __future__ import annotations

import dataclasses
import math

from privacy.calibration import calibrate_noise
from privacy.distributed import calibrate_distributed_dp
from privacy.errors import PrivacyError
from secfed.builders import RunShape
from secfed.config import ExperimentConfig
from secfed.dp.distributed import model_dim
from secfed.dp.params import dp_params, expected_participants, max_participants
from secfed.dp.planning import client_rounds, record_class_aware_steps, record_planned_noise_multiplier
from secfed.errors import ConfigError

__all__ = ["calibrated_config", "calibrated_noise_multiplier"]


def _replace_noise(config: ExperimentConfig, noise_multiplier: float) -> ExperimentConfig:
    return config.replace(
        privacy=dataclasses.replace(config.privacy, noise_multiplier=float(noise_multiplier))
    )


def calibrated_noise_multiplier(*, config: ExperimentConfig, shape: RunShape | None = None) -> float:
    """The smallest noise multiplier meeting ``privacy.target_epsilon`` over the planned run.

    * ``record``: Poisson-subsampled Gaussian, ``q = privacy.sample_rate``, over the class-aware
      steps of the most exposed record (:func:`record_class_aware_steps`; at most
      ``record_rounds * record_steps_per_round``, the rounds of the site sampled most often). With
      noise sharing the counted noise is ``z·√((s − c)/(m − c))`` at the planning survivors
      (:func:`secfed.dp.sharing.planning_survivors`), so the returned ``z`` is the calibrated
      counted multiplier divided by that factor.
    * ``client``: Gaussian rounds without client-sampling amplification (``q = 1``; the sample is
      public), one per round of the site sampled most often (:func:`client_rounds`).
    * ``distributed``: :func:`privacy.distributed.calibrate_distributed_dp` with the expected number
      of participants all surviving, over :func:`client_rounds` rounds without amplification;
      returns ``z`` with the sum's noise std ``z·C``.

    Args:
        config: The configuration (``privacy.target_epsilon > 0``, mode not ``none``).
        shape: The run's shape (:class:`secfed.builders.RunShape`) when the caller holds it;
            ``None`` finds it from the configuration (:func:`secfed.builders.run_shape`) when needed.

    Returns:
        z, with ε(z) <= target at ``privacy.delta`` for the planned run.

    Raises:
        ConfigError: If no target is set, the mode is ``none`` or the target cannot be reached.
    """
    p = config.privacy
    if p.mode == "none" or not p.target_epsilon > 0:
        raise ConfigError("calibration needs privacy.mode != 'none' and privacy.target_epsilon > 0")
    rounds = client_rounds(config=config)
    try:
        if p.mode == "record":
            z_counted = calibrate_noise(
                target_epsilon=p.target_epsilon,
                delta=p.delta,
                sample_rate=p.sample_rate,
                steps=record_class_aware_steps(config=config, shape=shape),
                accountant=p.accountant,
            )
            if p.noise_sharing:
                # z_eff / z at the planning survivors: the parameters of the run at z = 1
                factor = record_planned_noise_multiplier(params=dp_params(config=_replace_noise(config, 1.0)))
                return z_counted / factor
            return z_counted
        if p.mode == "client":
            return calibrate_noise(
                target_epsilon=p.target_epsilon,
                delta=p.delta,
                sample_rate=1.0,
                steps=rounds,
                accountant=p.accountant,
            )
        n_exp = expected_participants(config=config)
        planned = calibrate_distributed_dp(
            mechanism=p.mechanism,
            target_epsilon=p.target_epsilon,
            delta=p.delta,
            rounds=rounds,
            sample_rate=1.0,
            dim=model_dim(config=config, shape=shape),
            clip_norm=p.max_grad_norm,
            expected_clients=n_exp,
            bits=p.bits,
            max_clients=max_participants(config=config),
        )
        return planned.local_stddev * math.sqrt(n_exp) / p.max_grad_norm
    except PrivacyError as exc:
        raise ConfigError(f"privacy.target_epsilon = {p.target_epsilon!r} cannot be met: {exc}") from exc


def calibrated_config(*, config: ExperimentConfig, shape: RunShape | None = None) -> ExperimentConfig:
    """The configuration with ``privacy.noise_multiplier`` calibrated for ``privacy.target_epsilon``.

    Returns ``config`` unchanged when privacy is off or no target is set. Deterministic and
    idempotent (the target, not the current multiplier, decides), so a resumed run recomputes the
    same value. Call it before the configuration is written to the run directory.

    Args:
        config: The configuration.
        shape: The run's shape (:class:`secfed.builders.RunShape`) when the caller holds it;
            ``None`` finds it from the configuration when calibration needs it.

    Returns:
        The (re-validated) configuration to run.

    Raises:
        ConfigError: If the target cannot be reached.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if config.privacy.mode == "none" or not config.privacy.target_epsilon > 0:
        return config
    return _replace_noise(config, calibrated_noise_multiplier(config=config, shape=shape))
