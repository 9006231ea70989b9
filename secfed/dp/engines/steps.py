"""One record-level DP step's public constants, the engines' error, and a step's release.

* :func:`step_normaliser` / :func:`step_noise_multiplier`: the public divisor of a step's noisy sum
  and its noise std over ``C`` (``2z`` per episode, ``z`` per record).
* :func:`release_step`: the normalised noisy sum of one DP step from per-unit gradients, through the
  engines' own DP optimiser; the attack replays (:mod:`attacks.secfed_observe`) use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from privacy.clipping import CryptoNoiseDPOptimizer
from privacy.noise import NoiseSource
from secfed.config import ExperimentConfig
from secfed.errors import ConfigError, SecfedError
from secfed.learners import episodic_learner_names

__all__ = [
    "EPISODIC_LEARNERS",
    "DPEngineError",
    "drop_grad_samples",
    "dp_optimizer",
    "release_step",
    "step_noise_multiplier",
    "step_normaliser",
]

#: Learners trained with per-episode clipping (those whose class declares ``episodic``).
EPISODIC_LEARNERS = episodic_learner_names()


# --------------------------------------------------------------------------------------------------
# Public constants of a DP step
# --------------------------------------------------------------------------------------------------
def step_normaliser(*, config: ExperimentConfig) -> int:
    """The public constant a record-level DP step divides its noisy sum by.

    Args:
        config: The experiment configuration.

    Returns:
        ``privacy.episodes_per_step`` (the slots of a step) for ProtoNet, MAML and FOMAML;
        ``privacy.expected_batch`` for Reptile and FedAvg.
    """
    p = config.privacy
    return int(p.episodes_per_step if config.learner.name in EPISODIC_LEARNERS else p.expected_batch)


def step_noise_multiplier(*, config: ExperimentConfig) -> float:
    """Noise std of a step's clipped sum divided by ``C``: ``2z`` (per episode) or ``z`` (per record).

    Args:
        config: The experiment configuration.

    Returns:
        The multiplier.
    """
    z = float(config.privacy.noise_multiplier)
    return 2.0 * z if config.learner.name in EPISODIC_LEARNERS else z


class DPEngineError(SecfedError, RuntimeError):
    """A DP engine or unit source was used in a way that would void the accounting."""


def dp_optimizer(name: str) -> Literal["sgd", "adam"]:
    """The DP engines' optimiser for a learner's optimiser name: ``"adam"``, else ``"sgd"``.

    Args:
        name: The learner's optimiser name.

    Returns:
        ``"adam"`` or ``"sgd"``.
    """
    return "adam" if name == "adam" else "sgd"


def drop_grad_samples(params: Iterable[nn.Parameter]) -> None:
    """Remove the per-unit gradients (``grad_sample``, ``summed_grad``) a DP step left on ``params``."""
    for p in params:
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)


def release_step(
    *,
    unit_grads: Sequence[Mapping[str, torch.Tensor]],
    max_grad_norm: float,
    noise_multiplier: float,
    normaliser: int,
    source: NoiseSource | None = None,
) -> dict[str, torch.Tensor]:
    """What one DP step applies, from its units' gradients: the engines' own DP optimiser.

    Runs :class:`privacy.clipping.CryptoNoiseDPOptimizer` — the optimiser inside
    :class:`privacy.episodic.EpisodicDPSGD` and (with a layout-aware clipping of the same
    arithmetic) :class:`privacy.dpsgd.PerSampleDPSGD` — on zero parameters with SGD at learning
    rate 1: each unit's gradient clipped to ``C``, summed, noise of std ``noise_multiplier * C``
    added, divided by ``normaliser``.

    Args:
        unit_grads: One gradient per unit (episode or record), tensors by parameter name.
        max_grad_norm: ``C``.
        noise_multiplier: Noise std divided by ``C`` (:func:`step_noise_multiplier`).
        normaliser: Public divisor (:func:`step_normaliser`).
        source: Noise source (default: a fresh :func:`privacy.noise.noise_source`).

    Returns:
        The normalised noisy sum, by parameter name.

    Raises:
        ConfigError: If there is no unit or the constants are invalid.
    """
    if not unit_grads:
        raise ConfigError("release_step needs at least one unit gradient")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(f"max_grad_norm must be finite and > 0, got {max_grad_norm}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if isinstance(normaliser, bool) or not isinstance(normaliser, int) or normaliser < 1:
        raise ConfigError(f"normaliser must be a positive int, got {normaliser!r}")
    names = list(unit_grads[0])
    params = {k: nn.Parameter(torch.zeros_like(unit_grads[0][k].detach())) for k in names}
    optimizer = CryptoNoiseDPOptimizer(
        torch.optim.SGD(list(params.values()), lr=1.0),
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        expected_batch_size=int(normaliser),
        loss_reduction="mean",
        noise_source=source,
    )
    for k, p in params.items():
        p.grad_sample = torch.stack([u[k].detach().to(p.dtype) for u in unit_grads])  # type: ignore[attr-defined]
    optimizer.step()
    out = {k: -p.detach() for k, p in params.items()}
    drop_grad_samples(params.values())
    return out
