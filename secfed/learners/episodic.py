"""The local-update loop shared by the episodic meta-learners (ProtoNet, MAML, FOMAML, Matching
Networks, Siamese networks).

For each of ``local_steps`` outer steps: sample ``meta_batch`` tasks, back-propagate the mean of
their meta-losses (one backward per task, so only one task's graph is alive at a time), and take
one step of the local optimiser (Adam or SGD with ``local_lr``, state fresh every round; with
``proximal_mu > 0`` every step also carries FedProx's proximal gradient,
:func:`~secfed.learners.engine.proximal_term`). How a
step's update is formed from its episodes, and where the episodes come from, are hooks
(:mod:`secfed.learners.engine`): record-level DP runs this same loop with a per-episode clipping
engine and a Poisson episode sampler (:mod:`secfed.dp.engines`). The
update is ``final - initial`` parameters; BatchNorm running statistics (if any) are updated by
every training-mode forward pass and returned in ``LocalUpdate.buffers``.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from secfed.learners.base import FunctionalModel, Learner, LearnerConfig, LocalUpdate
from secfed.learners.common import (
    check_config,
    check_task,
    params_delta,
    snapshot_params,
    trainable_params,
    training_mode,
)
from secfed.learners.engine import (
    EpisodeEngineFactory,
    EpisodeSource,
    MeanEpisodeEngine,
    StepStats,
    TaskSourceEpisodes,
    proximal_term,
)
from secfed.models.params import floating_buffers
from secfed.tasks.base import Task, TaskSource

__all__ = ["EpisodicLearner"]


class EpisodicLearner(Learner):
    """Base of learners whose meta-objective is a per-episode loss (:meth:`episode`, behind
    ``task_loss``); their declarations say ``episodic=True`` (a test checks it)."""

    def __init__(self, *, config: LearnerConfig) -> None:
        """Validate the config and store it.

        Args:
            config: Hyperparameters.

        Raises:
            ConfigError: If any field is invalid.
        """
        check_config(config=config)
        super().__init__(config=config)

    @abstractmethod
    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """The learner's meta-loss of one task (behind ``task_loss`` and :meth:`local_update`),
        which every episodic learner implements; arguments and result as in :meth:`Learner.episode`."""

    def local_update(
        self,
        *,
        model: nn.Module,
        tasks: TaskSource,
        rng: np.random.Generator,
        engine: EpisodeEngineFactory | None = None,
        units: EpisodeSource | None = None,
    ) -> LocalUpdate:
        """Train locally; see :meth:`Learner.local_update` and the module docstring.

        Args:
            model: The model, loaded with the global parameters (trained in place).
            tasks: The site's task source (the default unit source draws from it).
            rng: Public randomness for task sampling.
            engine: How each step's update is formed from its episodes (default
                :class:`~secfed.learners.engine.MeanEpisodeEngine`: the mean meta-loss is
                back-propagated). Record-level DP passes a per-episode clipping engine
                (:mod:`secfed.dp.engines`).
            units: Where each step's episodes come from (default: ``meta_batch`` tasks from
                ``tasks``). Record-level DP passes its Poisson episode sampler.

        Returns:
            The local update.

        Raises:
            DataError: If a sampled task is malformed.
            ConfigError: If the model's outputs do not fit the tasks.
        """
        cfg = self.config
        params = trainable_params(model)
        initial = snapshot_params(model)
        buffers = dict(model.named_buffers())
        source = units if units is not None else TaskSourceEpisodes(tasks=tasks, meta_batch=cfg.meta_batch)
        build = engine if engine is not None else MeanEpisodeEngine
        stepper = build(model=model, params=params, optimizer=cfg.local_optimizer, lr=cfg.local_lr)

        def loss_fn(
            prm: dict[str, torch.Tensor], buf: dict[str, torch.Tensor], task: Task
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return self.episode(net=FunctionalModel(module=model, params=prm, buffers=buf), task=task)

        stats = StepStats()
        num_examples = 0
        try:
            with training_mode(model, train=True), proximal_term(params=params, mu=cfg.proximal_mu):
                for _ in range(cfg.local_steps):
                    step_tasks = source.step_tasks(rng=rng)
                    for task in step_tasks:
                        check_task(task=task, require_all_classes=self.needs_every_class)
                        num_examples += task.num_examples
                    stats.add(stepper.step(tasks=step_tasks, loss_fn=loss_fn, params=params, buffers=buffers))
        finally:
            stepper.finish()
        return LocalUpdate(
            delta=params_delta(model=model, initial=initial),
            train_loss=stats.loss_sum / stats.units if stats.units else float("nan"),
            num_tasks=stats.units,
            num_examples=num_examples,
            buffers=floating_buffers(model=model),
            extra={"train_accuracy": stats.correct / max(stats.predictions, 1)},
        )
