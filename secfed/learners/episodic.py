"""The local-update loop shared by the episodic meta-learners (ProtoNet, MAML, FOMAML).

For each of ``local_steps`` outer steps: sample ``meta_batch`` tasks, back-propagate the mean of
their meta-losses (one backward per task, so only one task's graph is alive at a time), and take
one step of the local optimiser (Adam or SGD with ``local_lr``, state fresh every round). The
update is ``final - initial`` parameters; BatchNorm running statistics (if any) are updated by
every training-mode forward pass and returned in ``LocalUpdate.buffers``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from secfed.learners.base import Learner, LearnerConfig, LocalUpdate
from secfed.learners.common import (
    check_config,
    check_task,
    make_optimizer,
    params_delta,
    snapshot_params,
    trainable_params,
    training_mode,
)
from secfed.models.params import floating_buffers
from secfed.tasks.base import Task, TaskSource

__all__ = ["EpisodicLearner"]


class EpisodicLearner(Learner):
    """Base of learners whose meta-objective is a per-episode loss (``task_loss``)."""

    episodic: ClassVar[bool] = True

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
    def episode(
        self,
        *,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        task: Task,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-loss of one task and the query logits it was computed from.

        Args:
            model: The module whose structure is used.
            params: Parameter tensors by name.
            buffers: Buffer tensors by name.
            task: The episode.

        Returns:
            ``(loss, query_logits)``; ``loss`` is a scalar, ``query_logits`` is ``(Q, n_way)``.
        """

    def task_loss(
        self,
        *,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        task: Task,
    ) -> torch.Tensor:
        """Functional meta-loss of one task; see :meth:`Learner.task_loss`.

        Composable with ``torch.func.grad`` and ``torch.func.vmap`` (over same-shaped tasks)
        for models without BatchNorm in training mode (use GroupNorm under vmap). No data
        validation happens here (it would break ``vmap``); :meth:`local_update` validates.
        """
        return self.episode(model=model, params=params, buffers=buffers, task=task)[0]

    def local_update(self, *, model: nn.Module, tasks: TaskSource, rng: np.random.Generator) -> LocalUpdate:
        """Train locally; see :meth:`Learner.local_update` and the module docstring.

        Raises:
            DataError: If a sampled task is malformed.
            ConfigError: If the model's outputs do not fit the tasks.
        """
        cfg = self.config
        params = trainable_params(model)
        initial = snapshot_params(model)
        buffers = dict(model.named_buffers())
        optimizer = make_optimizer(name=cfg.local_optimizer, params=params.values(), lr=cfg.local_lr)
        total_loss, correct, queries, num_tasks, num_examples = 0.0, 0, 0, 0, 0
        with training_mode(model, train=True):
            for _ in range(cfg.local_steps):
                optimizer.zero_grad(set_to_none=True)
                for _ in range(cfg.meta_batch):
                    task = tasks.sample(rng=rng)
                    check_task(task=task, require_all_classes=self.needs_every_class)
                    loss, logits = self.episode(model=model, params=dict(params), buffers=buffers, task=task)
                    (loss / cfg.meta_batch).backward()
                    total_loss += float(loss.detach().item())
                    correct += int((logits.detach().argmax(dim=-1) == task.query_y).sum().item())
                    queries += int(task.query_y.shape[0])
                    num_tasks += 1
                    num_examples += task.num_examples
                optimizer.step()
        return LocalUpdate(
            delta=params_delta(model=model, initial=initial),
            train_loss=total_loss / num_tasks,
            num_tasks=num_tasks,
            num_examples=num_examples,
            buffers=floating_buffers(model=model),
            extra={"train_accuracy": correct / max(queries, 1)},
        )
