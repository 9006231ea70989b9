"""Record-level DP at the site for ProtoNet, MAML and FOMAML: per-episode clipping.

See :class:`EpisodicSitePrivacy` and :mod:`secfed.dp.site` (mechanism ``"episodic-gaussian"``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from privacy import sampling
from privacy.sampling import RecordEpisodeSampler
from secfed.dp.engines.accounting import StepCounter
from secfed.dp.engines.episodes import AugmultEpisodeDPEngineFactory, EpisodeDPEngineFactory, PrivateEpisodes
from secfed.dp.engines.steps import DPEngineError
from secfed.dp.site.base import MECHANISM_EPISODIC
from secfed.dp.site.record import RecordSitePrivacy
from secfed.errors import ConfigError
from secfed.learners.base import Learner, LocalUpdate
from secfed.learners.episodic import EpisodicLearner
from secfed.seeding import derive_seed

__all__ = ["EpisodicSitePrivacy"]

#: Probability that a sampled record is a support record of its episode.
_SUPPORT_PROB = 0.5


class EpisodicSitePrivacy(RecordSitePrivacy):
    """Record-level DP for ProtoNet, MAML and FOMAML: per-episode clipping (notes §1).

    Each round runs the learner's own ``local_update`` with a per-episode DP engine
    (:class:`~secfed.dp.engines.EpisodeDPEngineFactory`: :class:`~privacy.episodic.EpisodicDPSGD`,
    noisy sum divided by the public ``privacy.episodes_per_step``) and the episodes of a
    :class:`~privacy.sampling.RecordEpisodeSampler` whose step counter persists across rounds (no
    ``(secret seed, step)`` reuse): ``learner.local_steps`` DP steps. The episode loss is the
    learner's own, on a :class:`~secfed.tasks.base.Task` built per episode (:func:`episode_task`);
    gradients are computed episode by episode (``torch.func.grad``). Accounting is class-aware
    over each step's public slot plan.
    """

    def _prepare(self) -> None:
        sp = self._params
        self._require_n_way(n_way=sp.n_way, why="record-level DP slots need n_way of the site's classes")
        self._public_seed = derive_seed(sp.seed, "dp-episode-slots", self.site_id)
        self._sampler = RecordEpisodeSampler(
            labels=self._y.numpy(),
            classes=self._classes,
            num_slots=sp.episodes_per_step,
            n_way=sp.n_way,
            sample_rate=self._dp.sample_rate,
            support_prob=_SUPPORT_PROB,
            secret_seed=os.urandom(32),
            public_seed=self._public_seed,
            record_ids=self._record_ids,
        )

    @property
    def mechanism(self) -> str:
        """``"episodic-gaussian"``."""
        return MECHANISM_EPISODIC

    @property
    def steps_per_round(self) -> int:
        """``learner.local_steps`` (an upper bound on the class-aware steps a round adds)."""
        return self._params.local_steps

    @property
    def _public_num_tasks(self) -> int:
        return self.steps_per_round * self._params.episodes_per_step

    @property
    def sampler(self) -> RecordEpisodeSampler:
        """The site's episode sampler (its step counter persists across rounds)."""
        return self._sampler

    def describe(self) -> dict[str, Any]:
        """See :meth:`SitePrivacy.describe`; adds ``episodes_per_step`` and ``n_way``."""
        out = super().describe()
        out["episodes_per_step"] = self._params.episodes_per_step
        out["n_way"] = self._params.n_way
        return out

    def _check_learner(self, *, learner: Learner, model: nn.Module) -> None:
        if not isinstance(learner, EpisodicLearner):
            raise ConfigError(f"learner {learner.name!r} has no per-episode meta-loss")

    def _plan_round(self, *, rng: np.random.Generator) -> list[frozenset[int]]:
        """The public slot plans of the next ``local_steps`` sampler steps (what the sampler will draw)."""
        start = self._sampler.step
        return [
            frozenset(
                int(c)
                for c in np.asarray(
                    sampling.draw_slots(
                        classes=self._classes,
                        num_slots=self._params.episodes_per_step,
                        n_way=self._params.n_way,
                        public_seed=self._public_seed,
                        step=start + i,
                    )
                ).ravel()
            )
            for i in range(self.steps_per_round)
        ]

    def _train(
        self, *, learner: Learner, model: nn.Module, rng: np.random.Generator, counter: StepCounter
    ) -> tuple[LocalUpdate, list[frozenset[int]]]:
        assert isinstance(learner, EpisodicLearner)
        sp, dp = self._params, self._dp
        units = PrivateEpisodes(sampler=self._sampler, x=self._x)
        engine = EpisodeDPEngineFactory(
            noise_multiplier=self.engine_noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            sample_rate=dp.sample_rate,
            normaliser=sp.normaliser,
            accountant=counter,
        )
        if sp.augmult > 1:  # augmentation multiplicity: K augmented copies per episode, clipped once
            engine = AugmultEpisodeDPEngineFactory(base=engine, multiplicity=sp.augmult)  # type: ignore[assignment]
        # The learner's task source is not used: the private sampler supplies every step's units.
        update = learner.local_update(model=model, tasks=_NoTasks(), rng=rng, engine=engine, units=units)
        return update, units.plans


class _NoTasks:
    """A task source that refuses to be sampled (the DP unit source replaces it)."""

    def sample(self, *, rng: np.random.Generator) -> Any:
        raise DPEngineError("record-level DP draws its units from the private sampler, not the task source")
