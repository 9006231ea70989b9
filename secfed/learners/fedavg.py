"""FedAvg baseline (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): ordinary supervised local training, no meta-learning.

Episodic tasks relabel their classes ``0..n_way-1`` per task, which is meaningless for a supervised
head over the global classes. FedAvg therefore prefers a :class:`SupervisedBatchSource` that
yields records with their *global* labels; each local step trains on one batch of
``batch_size`` records (the model's head has ``num_classes`` = number of global training
classes). If it is given an ordinary :class:`~secfed.tasks.base.TaskSource` instead, it falls back
to training on each sampled task's support and query records with the task-local labels (first
``n_way`` logits), ``meta_batch`` tasks per step; this is a degraded baseline, documented for
completeness. With ``proximal_mu > 0`` the local objective carries FedProx's proximal term
(Li et al. 2020; :func:`~secfed.learners.engine.proximal_term`).

Test time (novel classes): the trained body is frozen and a fresh ``n_way`` linear head is fitted
on the support embeddings. The head is initialised from the class prototypes (``w_k = 2 c_k``,
``b_k = -||c_k||^2``, so it starts as a ProtoNet classifier; Triantafillou et al. 2020,
"Meta-Dataset", Proto-MAML initialisation) and then trained for ``test_inner_steps`` full-batch
gradient steps with ``test_inner_lr`` using ``inner_optimizer``. The initialisation is
deterministic, so predictions do not depend on torch's RNG.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from secfed.errors import ConfigError, DataError
from secfed.learners.base import Learner, LearnerConfig, LocalUpdate, SupportSet
from secfed.learners.common import (
    check_config,
    check_task,
    make_optimizer,
    params_delta,
    snapshot_params,
    trainable_params,
    training_mode,
)
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.engine import (
    MeanRecordEngine,
    RecordBatch,
    RecordEngineFactory,
    StepStats,
    cross_entropy_records,
    proximal_term,
)
from secfed.models.params import floating_buffers
from secfed.tasks.base import TaskSource

__all__ = ["SupervisedBatchSource", "FedAvgLearner", "fit_linear_head"]


@runtime_checkable
class SupervisedBatchSource(Protocol):
    """Anything that draws labelled records from a site's own data with their global labels."""

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one minibatch using ``rng`` as the only source of randomness.

        Args:
            rng: The generator to draw from.
            batch_size: Number of records.

        Returns:
            ``(x, y)``: float inputs ``(B, *input_shape)`` and int64 global labels ``(B,)``.
        """
        ...


#: Initial bias magnitude of a class absent from the support set (see :func:`fit_linear_head`).
ABSENT_CLASS_BIAS = 1e4


def fit_linear_head(
    *, support_emb: torch.Tensor, support_y: torch.Tensor, n_way: int, steps: int, lr: float, optimizer: str
) -> nn.Linear:
    """Fit an ``n_way`` linear classifier on fixed embeddings, starting from prototypes.

    Args:
        support_emb: ``(S, D)`` embeddings (no gradient needed).
        support_y: ``(S,)`` labels in ``[0, n_way)``. A class without support records (client
            tasks under label skew) starts with a zero weight and a bias of ``-ABSENT_CLASS_BIAS``,
            so the head predicts it only if the support data pushes it there.
        n_way: Number of classes.
        steps: Full-batch optimiser steps.
        lr: Learning rate.
        optimizer: ``"sgd"`` or ``"adam"``.

    Returns:
        The fitted head.
    """
    emb = support_emb.detach()
    onehot = (support_y.unsqueeze(-1) == torch.arange(n_way, device=emb.device)).to(emb.dtype)
    counts = onehot.sum(dim=0)
    prototypes = (onehot.T @ emb) / counts.clamp(min=1.0).unsqueeze(-1)
    head = nn.Linear(emb.shape[1], n_way).to(dtype=emb.dtype, device=emb.device)
    with torch.no_grad():
        head.weight.copy_(2.0 * prototypes)
        bias = -(prototypes * prototypes).sum(dim=-1)
        head.bias.copy_(torch.where(counts > 0, bias, torch.full_like(bias, -ABSENT_CLASS_BIAS)))
    if steps > 0:
        opt = make_optimizer(name=optimizer, params=head.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(head(emb), support_y).backward()
                opt.step()
    return head


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    embed = getattr(model, "embed", None)
    if not callable(embed):
        raise ConfigError(
            "FedAvg test-time adaptation needs a model with an embed(x) method (Conv4, MLP); "
            f"got {type(model).__name__}"
        )
    out = embed(x)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{type(model).__name__}.embed must return a tensor")
    return out.reshape(out.shape[0], -1)


class FedAvgLearner(Learner):
    """Supervised local training (FedAvg); see the module docstring."""

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["fedavg"]

    def __init__(self, *, config: LearnerConfig) -> None:
        """Validate the config and store it.

        Args:
            config: Hyperparameters (``local_steps``, ``local_lr``, ``local_optimizer``,
                ``batch_size``; ``meta_batch`` for the task fallback; ``test_inner_*`` and
                ``inner_optimizer`` at test time).

        Raises:
            ConfigError: If any field is invalid.
        """
        check_config(config=config)
        super().__init__(config=config)

    def local_update(
        self,
        *,
        model: nn.Module,
        tasks: TaskSource | SupervisedBatchSource,
        rng: np.random.Generator,
        engine: RecordEngineFactory | None = None,
    ) -> LocalUpdate:
        """Supervised local training from a :class:`SupervisedBatchSource` (preferred) or tasks.

        Args:
            model: The model with a ``num_classes``-way head, loaded with the global parameters.
            tasks: The site's supervised batch source, or its task source (fallback). Record-level
                DP passes a Poisson batch source over the site's records.
            rng: Source of randomness for sampling.
            engine: How each local step's update is formed from its records (default
                :class:`~secfed.learners.engine.MeanRecordEngine`: the mean loss is
                back-propagated). Record-level DP passes a per-record DP-SGD engine
                (:mod:`secfed.dp.engines`).

        Returns:
            The local update (``num_tasks`` counts batches or tasks; ``num_examples`` records).

        Raises:
            DataError: If a batch or task is malformed (e.g. a label outside the head's range).
            ConfigError: If ``tasks`` is neither kind of source.
        """
        if not isinstance(tasks, SupervisedBatchSource) and not callable(getattr(tasks, "sample", None)):
            raise ConfigError(
                "FedAvg needs a SupervisedBatchSource (sample_batch) or a TaskSource (sample), "
                f"got {type(tasks).__name__}"
            )
        cfg = self.config
        params = trainable_params(model)
        initial = snapshot_params(model)
        build = engine if engine is not None else MeanRecordEngine
        stats = StepStats()
        num_tasks, step_loss = 0, 0.0
        with training_mode(model, train=True), proximal_term(params=params, mu=cfg.proximal_mu):
            stepper = build(model=model, params=params, optimizer=cfg.local_optimizer, lr=cfg.local_lr)
            try:
                for _ in range(cfg.local_steps):
                    batches: list[RecordBatch] = []
                    if isinstance(tasks, SupervisedBatchSource):
                        x, y = tasks.sample_batch(rng=rng, batch_size=cfg.batch_size)
                        self._check_batch(x=x, y=y)
                        batches.append(RecordBatch(x=x, y=y, n_way=None))
                    else:
                        for _ in range(cfg.meta_batch):
                            task = tasks.sample(rng=rng)
                            check_task(task=task, require_all_classes=self.needs_every_class)
                            x = torch.cat([task.support_x, task.query_x], dim=0)
                            y = torch.cat([task.support_y, task.query_y], dim=0)
                            batches.append(RecordBatch(x=x, y=y, n_way=task.n_way))
                    num_tasks += len(batches)
                    step = stepper.step(batches=batches, loss_fn=self._record_losses)
                    step_loss += step.loss_sum / max(step.units, 1)
                    stats.add(step)
            finally:
                stepper.finish()
        return LocalUpdate(
            delta=params_delta(model=model, initial=initial),
            train_loss=step_loss / cfg.local_steps,
            num_tasks=num_tasks,
            num_examples=stats.predictions,
            buffers=floating_buffers(model=model),
            extra={"train_accuracy": stats.correct / max(stats.predictions, 1)},
        )

    @staticmethod
    def _record_losses(
        outputs: torch.Tensor, y: torch.Tensor, n_way: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-record cross-entropy (global labels if ``n_way`` is None) and the logits."""
        if outputs.ndim != 2:
            raise ConfigError(
                f"FedAvg needs a model with a classification head, got outputs {tuple(outputs.shape)}"
            )
        if n_way is None and y.numel() > 0:
            top = int(y.max().item())
            if top >= outputs.shape[-1]:
                raise DataError(f"batch label {top} is outside the model head's {outputs.shape[-1]} classes")
        return cross_entropy_records(outputs, y, n_way)

    @staticmethod
    def _check_batch(*, x: torch.Tensor, y: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise DataError("sample_batch must return a pair of tensors (x, y)")
        if not x.is_floating_point() or x.ndim < 2:
            raise DataError(
                f"batch x must be a floating tensor (B, *input_shape), got {x.dtype} {tuple(x.shape)}"
            )
        if y.dtype != torch.int64 or y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"batch y must be an int64 (B,) tensor matching x's {x.shape[0]} records, "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        # An empty batch is refused by the plain engine; a DP engine takes a noise-only step.
        if y.numel() > 0 and int(y.min().item()) < 0:
            raise DataError(f"batch labels must be >= 0, got {int(y.min().item())}")

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """Fit a fresh ``n_way`` head on frozen support embeddings and return query logits; see
        :meth:`Learner.predict`.

        Raises:
            ConfigError: If the model has no ``embed`` method.
        """
        with training_mode(model, train=False), torch.no_grad():
            emb = _embed(model, torch.cat([support.x, query_x], dim=0))
        n_support = support.x.shape[0]
        head = fit_linear_head(
            support_emb=emb[:n_support],
            support_y=support.y,
            n_way=support.n_way,
            steps=self.config.test_inner_steps,
            lr=self.config.test_inner_lr,
            optimizer=self.config.inner_optimizer,
        )
        with torch.no_grad():
            return head(emb[n_support:]).detach()
