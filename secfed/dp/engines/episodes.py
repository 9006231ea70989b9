"""Record-level DP for the episodic learners (ProtoNet, MAML, FOMAML): a unit is one episode.

* :func:`episode_task` and :class:`PrivateEpisodes`: the episodes of a
  :class:`privacy.sampling.RecordEpisodeSampler` step (public slots, per-record keyed slot and role)
  as the learner's tasks.
* :class:`EpisodeDPEngineFactory`: per-episode DP-SGD (:class:`privacy.episodic.EpisodicDPSGD`):
  each episode's full meta-gradient of the learner's own episode loss (``torch.func``, second order
  for MAML) clipped to ``C``, summed, noise ``N(0, (2zC)^2 I)`` added (sensitivity ``2C``: removing a
  record changes only its own episode; :mod:`privacy.episodic`), divided by the public number of
  slots per step, ``privacy.episodes_per_step`` (:func:`~secfed.dp.engines.steps.step_normaliser`).
* Augmentation multiplicity (De et al. 2022): :class:`AugmultEpisodeDPEngineFactory` clips the mean
  gradient of ``K`` augmented copies of one episode once (:func:`augment_episode`,
  :func:`augmult_loss`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privacy.dpsgd import StepAccountant
from privacy.episodic import EpisodicDPSGD
from privacy.sampling import EpisodeIndices, RecordEpisodeSampler
from secfed.dp.engines.steps import dp_optimizer, drop_grad_samples
from secfed.errors import ConfigError
from secfed.learners.engine import EpisodeLossFn, StepStats
from secfed.tasks.augment import shift_task
from secfed.tasks.base import Task

__all__ = [
    "AugmentedEpisode",
    "AugmultEpisodeDPEngineFactory",
    "EpisodeDPEngineFactory",
    "PrivateEpisodes",
    "augment_episode",
    "augmult_loss",
    "episode_task",
]


def episode_task(*, x: torch.Tensor, episode: EpisodeIndices) -> Task | None:
    """Materialise one sampled episode as a :class:`~secfed.tasks.base.Task` (or ``None``).

    Queries whose class has no support record are dropped, and the classes that have support
    records are relabelled ``0..k-1`` in slot order, so the task is valid for every learner
    (each class has a prototype / an adapted output). Both rules are functions of the episode's
    own content, so the per-episode sensitivity argument of :mod:`privacy.episodic` holds.

    Args:
        x: The site's inputs, shape ``(n, *input_shape)``.
        episode: One episode of a :class:`privacy.sampling.StepAssignment`.

    Returns:
        The task, or ``None`` when the episode has no support or no (usable) query record; such an
        episode contributes a zero gradient.
    """
    kept = episode.drop_queries_without_support()
    if not kept.usable:
        return None
    present = np.unique(kept.support_label)
    remap = np.full(kept.n_way, -1, dtype=np.int64)
    remap[present] = np.arange(present.size, dtype=np.int64)
    s_idx = torch.from_numpy(kept.support_index.astype(np.int64))
    q_idx = torch.from_numpy(kept.query_index.astype(np.int64))
    return Task(
        support_x=x[s_idx],
        support_y=torch.from_numpy(remap[kept.support_label]),
        query_x=x[q_idx],
        query_y=torch.from_numpy(remap[kept.query_label]),
        n_way=int(present.size),
    )


class PrivateEpisodes:
    """The episode source of record-level DP: one :class:`RecordEpisodeSampler` step per learner step.

    Implements :class:`secfed.learners.engine.EpisodeSource`; the learner's generator is not used
    (the slots come from the sampler's public seed, the records' coins from its secret key).

    Args:
        sampler: The site's sampler (its step counter persists across rounds).
        x: The site's inputs.
    """

    def __init__(self, *, sampler: RecordEpisodeSampler, x: torch.Tensor) -> None:
        self._sampler = sampler
        self._x = x
        #: Public class plan of every step drawn (for class-aware accounting).
        self.plans: list[frozenset[int]] = []

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        """The next step's usable episodes as tasks (possibly none)."""
        del rng
        assignment = self._sampler.sample()
        self.plans.append(frozenset(int(c) for c in np.asarray(assignment.slots).ravel()))
        return [t for t in (episode_task(x=self._x, episode=e) for e in assignment.episodes) if t is not None]


@dataclass(frozen=True)
class EpisodeDPEngineFactory:
    """Builds :class:`privacy.episodic.EpisodicDPSGD` engines (per-episode clipping, notes §1).

    Attributes:
        noise_multiplier: ``z`` (noise std ``2zC`` on the sum of clipped episode gradients).
        max_grad_norm: ``C``.
        sample_rate: ``q`` (what the accountant is told per step).
        normaliser: Public divisor of the noisy sum (the site uses ``privacy.episodes_per_step``).
        accountant: Receives one ``step(z, q)`` per DP step.
        grad_mode: ``"loop"`` (episodes are tasks of different sizes) or ``"auto"``.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    normaliser: int
    accountant: StepAccountant
    grad_mode: str = "loop"

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _EpisodeDPEngine:
        """Build the engine of one round; see :class:`secfed.learners.engine.EpisodeEngineFactory`."""
        engine = EpisodicDPSGD(
            model=model,
            noise_multiplier=float(self.noise_multiplier),
            max_grad_norm=float(self.max_grad_norm),
            sample_rate=float(self.sample_rate),
            expected_episodes=int(self.normaliser),
            lr=float(lr),
            accountant=self.accountant,
            params=dict(params),
            optimizer=dp_optimizer(optimizer),
            grad_mode="loop" if self.grad_mode == "loop" else "auto",
        )
        return _EpisodeDPEngine(engine=engine, params=dict(params))


class _EpisodeDPEngine:
    """One round's per-episode DP engine (see :class:`EpisodeDPEngineFactory`); with ``augment``, each
    step's units are the augmented episodes (:class:`AugmultEpisodeDPEngineFactory`)."""

    def __init__(
        self,
        *,
        engine: EpisodicDPSGD,
        params: dict[str, nn.Parameter],
        augment: Callable[[Task], AugmentedEpisode] | None = None,
    ) -> None:
        self._engine = engine
        self._params = params
        self._augment = augment

    def augmented(self, augment: Callable[[Task], AugmentedEpisode]) -> _EpisodeDPEngine:
        """This engine with units ``augment(task)`` and their copies' mean loss (:func:`augmult_loss`)."""
        return _EpisodeDPEngine(engine=self._engine, params=self._params, augment=augment)

    def step(
        self,
        *,
        tasks: Sequence[Task],
        loss_fn: EpisodeLossFn,
        params: Mapping[str, nn.Parameter],
        buffers: Mapping[str, torch.Tensor],
    ) -> StepStats:
        """Clip every episode's meta-gradient, sum, add noise, divide, step (noise also without episodes)."""
        units: list[Any] = list(tasks)
        unit_loss: Any = loss_fn
        if self._augment is not None:
            units = [self._augment(t) for t in tasks]
            unit_loss = augmult_loss(loss_fn)

        def loss(prm: dict[str, torch.Tensor], buf: dict[str, torch.Tensor], task: Any) -> torch.Tensor:
            return unit_loss(prm, buf, task)[0]

        info = self._engine.step(episodes=units, loss_fn=loss, params=params, buffers=buffers)
        num = len(units)
        return StepStats(
            loss_sum=info["private/mean_loss"] * num if num else 0.0, units=num, predictions=0, steps=1
        )

    def finish(self) -> None:
        """Remove the per-episode gradients left on the parameters."""
        drop_grad_samples(self._params.values())


# --------------------------------------------------------------------------------------------------
# Augmentation multiplicity for episodic units (De et al. 2022)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentedEpisode:
    """``K`` augmented copies of one privacy unit (an episode); one unit for clipping.

    Attributes:
        copies: The augmented copies, each a :class:`~secfed.tasks.base.Task` with the episode's
            records (same labels, independently augmented inputs).
    """

    copies: tuple[Task, ...]


def augment_episode(
    *, task: Task, multiplicity: int, max_shift: int, generator: torch.Generator
) -> AugmentedEpisode:
    """``multiplicity`` copies of one episode, every record of every copy independently augmented.

    Args:
        task: The episode.
        multiplicity: ``K >= 1``.
        max_shift: See :func:`shift_records`.
        generator: Augmentation randomness.

    Returns:
        The augmented unit.

    Raises:
        ConfigError: If ``multiplicity < 1``.
    """
    if multiplicity < 1:
        raise ConfigError(f"augmentation multiplicity must be >= 1, got {multiplicity}")
    return AugmentedEpisode(
        copies=tuple(
            shift_task(task=task, max_shift=max_shift, generator=generator) for _ in range(multiplicity)
        )
    )


def augmult_loss(loss_fn: EpisodeLossFn) -> Any:
    """The per-unit loss of an :class:`AugmentedEpisode`: the mean of ``loss_fn`` over its copies.

    The gradient of the mean is the mean of the copies' gradients, so the DP engine clips the
    average of the ``K`` augmented gradients of ONE unit (De et al. 2022, "Unlocking
    High-Accuracy Differentially Private Image Classification through Scale", § augmentation
    multiplicity). All copies are functions of the unit's own records: adding or removing a record
    still changes only its own unit, whose clipped gradient has norm ``<= C`` before and after, so
    the per-unit sensitivity (``2C`` for an episode under add/remove) is unchanged.

    Args:
        loss_fn: The learner's per-episode loss ``(params, buffers, task) -> (loss, logits)``.

    Returns:
        ``(params, buffers, unit) -> (mean loss, logits of the first copy)``.
    """

    def loss(
        params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], unit: AugmentedEpisode
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [loss_fn(params, buffers, t) for t in unit.copies]
        return torch.stack([o[0] for o in outs]).mean(), outs[0][1]

    return loss


@dataclass(frozen=True)
class AugmultEpisodeDPEngineFactory:
    """Per-episode DP-SGD with augmentation multiplicity: wraps an :class:`EpisodeDPEngineFactory`.

    Each step's episodes become :class:`AugmentedEpisode` units (``privacy.augmult`` copies with
    random shifts of up to ``max_shift`` pixels); the wrapped engine clips each unit's averaged
    gradient once, so its noise, normaliser and accounting are unchanged.

    Attributes:
        base: The per-episode DP engine factory.
        multiplicity: ``K``.
        max_shift: Largest random shift in pixels.
        seed: Seed of the augmentation randomness (tests); ``None`` draws one from ``os.urandom``
            per round. The guarantee holds for every fixed choice of augmentations: they are drawn
            independently of the data.
    """

    base: EpisodeDPEngineFactory
    multiplicity: int
    max_shift: int = 2
    seed: int | None = None

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _EpisodeDPEngine:
        """Build the engine of one round; see :class:`secfed.learners.engine.EpisodeEngineFactory`."""
        generator = torch.Generator()
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        generator.manual_seed(int(seed))
        k, shift = int(self.multiplicity), int(self.max_shift)
        base = self.base(model=model, params=params, optimizer=optimizer, lr=lr)
        return base.augmented(
            lambda t: augment_episode(task=t, multiplicity=k, max_shift=shift, generator=generator)
        )
