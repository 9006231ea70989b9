"""Record-level DP at the site for Reptile and FedAvg: per-sample DP-SGD through the learner's loop.

See :class:`PerSampleSitePrivacy` and :mod:`secfed.dp.site` (mechanism ``"per-sample-gaussian"``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from secfed.dp.engines.accounting import StepCounter
from secfed.dp.engines.records import (
    ClassTask,
    PlannedClassTasks,
    PoissonClassTrainer,
    PoissonRecordBatches,
    RecordDPEngineFactory,
    draw_class_tasks,
)
from secfed.dp.site.base import MECHANISM_PER_SAMPLE
from secfed.dp.site.record import RecordSitePrivacy
from secfed.errors import ConfigError
from secfed.learners.base import Learner, LocalUpdate
from secfed.learners.fedavg import FedAvgLearner
from secfed.learners.reptile import Reptile

__all__ = ["PerSampleSitePrivacy"]


class PerSampleSitePrivacy(RecordSitePrivacy):
    """Record-level DP for Reptile and FedAvg: per-sample DP-SGD through the learner's own loop.

    * FedAvg: the learner's ``local_update`` with a per-record DP-SGD engine
      (:class:`~secfed.dp.engines.RecordDPEngineFactory`: :class:`~privacy.dpsgd.PerSampleDPSGD`,
      ``local_optimizer``, ``local_lr``, noisy sum divided by ``privacy.expected_batch``) and a
      Poisson batch source over the site's records: ``local_steps`` DP steps, every class in each.
    * Reptile: the learner's ``local_update`` with a source of tasks that are ``task.n_way``
      classes drawn from the site's public class list with the runtime's public generator (drawn
      before the round, so the class-aware cost is known in advance) and a DP inner trainer
      (:class:`~secfed.dp.engines.PoissonClassTrainer`): ``inner_steps`` DP-SGD steps per task
      (``inner_optimizer``, ``inner_lr``, fresh state) on Poisson-sampled records of the task's
      classes. The head zeroing, the differences and the outer step are the learner's
      (post-processing). Accounting is class-aware over the task class sets.
    """

    @property
    def _plans_tasks(self) -> bool:
        """Whether the learner's public plan is class tasks drawn every round (its ``dp_plan``:
        Reptile), else every class in every step (FedAvg)."""
        return self._params.dp_plan == "tasks"

    def _prepare(self) -> None:
        if self._plans_tasks:
            self._require_n_way(n_way=self._params.n_way)
        self._round_tasks: list[ClassTask] = []

    @property
    def mechanism(self) -> str:
        """``"per-sample-gaussian"``."""
        return MECHANISM_PER_SAMPLE

    @property
    def steps_per_round(self) -> int:
        """``local_steps`` (FedAvg) or ``local_steps * meta_batch * inner_steps`` (Reptile).

        For Reptile an upper bound on the class-aware steps a round adds. The planned count of
        :class:`~secfed.dp.params.DPParams` (the learner's ``dp_steps_per_local_step``).
        """
        return int(self._dp.steps_per_round)

    @property
    def _public_num_tasks(self) -> int:
        sp = self._params
        return sp.local_steps * sp.meta_batch if self._plans_tasks else sp.local_steps

    def _engine(self, *, counter: StepCounter) -> RecordDPEngineFactory:
        return RecordDPEngineFactory(
            x=self._x,
            y=self._y,
            noise_multiplier=self.engine_noise_multiplier,
            max_grad_norm=self._dp.max_grad_norm,
            sample_rate=self._dp.sample_rate,
            normaliser=self._params.normaliser,
            accountant=counter,
            record_ids=self._record_ids,
        )

    def _check_head(self, *, model: nn.Module, needed: int) -> None:
        with torch.no_grad():
            outputs = model(self._x[:1])
        if outputs.ndim != 2 or outputs.shape[-1] < needed:
            raise ConfigError(
                f"{self._params.learner} under record-level DP needs a classification head with >= "
                f"{needed} outputs, got model outputs of shape {tuple(outputs.shape)}"
            )

    def _check_learner(self, *, learner: Learner, model: nn.Module) -> None:
        if isinstance(learner, FedAvgLearner):
            self._check_head(model=model, needed=max(self._classes) + 1)
        elif isinstance(learner, Reptile):
            self._check_head(model=model, needed=self._params.n_way)
        else:
            raise ConfigError(f"per-sample DP-SGD supports reptile and fedavg, got {learner.name!r}")

    def _plan_round(self, *, rng: np.random.Generator) -> list[frozenset[int]]:
        """Reptile: draw the round's class tasks (public generator); FedAvg: every class, every step."""
        if not self._plans_tasks:
            self._round_tasks = []
            return [frozenset(self._classes)] * self.steps_per_round
        self._round_tasks = draw_class_tasks(
            classes=self._classes, n_way=self._params.n_way, count=self._public_num_tasks, rng=rng
        )
        return [frozenset(t.classes) for t in self._round_tasks for _ in range(self._params.inner_steps)]

    def _train(
        self, *, learner: Learner, model: nn.Module, rng: np.random.Generator, counter: StepCounter
    ) -> tuple[LocalUpdate, list[frozenset[int]]]:
        engine = self._engine(counter=counter)
        if isinstance(learner, FedAvgLearner):
            source = PoissonRecordBatches(
                x=self._x,
                y=self._y,
                sample_rate=self._dp.sample_rate,
                record_ids=self._record_ids,
            )
            update = learner.local_update(model=model, tasks=source, rng=rng, engine=engine)
            return update, [frozenset(self._classes)] * counter.steps
        assert isinstance(learner, Reptile)
        inner = PoissonClassTrainer(
            x=self._x,
            y=self._y,
            sample_rate=self._dp.sample_rate,
            record_ids=self._record_ids,
            engine=engine,
        )
        tasks = PlannedClassTasks(plan=self._round_tasks)
        update = learner.local_update(model=model, tasks=tasks, rng=rng, inner=inner)  # type: ignore[arg-type]
        taken = [frozenset(t.classes) for t in tasks.drawn for _ in range(int(learner.config.inner_steps))]
        return update, taken
