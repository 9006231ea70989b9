"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").

Local step ``s`` (of ``local_steps``): for each of ``meta_batch`` sampled tasks, copy the current
parameters ``theta``, run ``inner_steps`` steps of the inner optimiser (``inner_optimizer``: SGD or
Adam, fresh state per task, ``inner_lr``) on the task's records (support and query together;
``reptile_inner_batch`` records per step drawn without replacement from a random permutation, 0 =
all of them), and record ``phi_task - theta``. The mean difference ``D`` is then applied as an
outer step by the local optimiser on the pseudo-gradient ``-D``: with ``local_optimizer="sgd"``
this is ``theta <- theta + local_lr * D``, the Reptile update with outer step size
``epsilon = local_lr``. With ``proximal_mu > 0`` (FedProx, Li et al. 2020) the outer steps carry
the proximal gradient ``mu (theta - theta_global)`` (:func:`~secfed.learners.engine.proximal_term`);
the inner steps on the task copy do not (they adapt to one task, the outer step is the local
optimisation of the site's meta-objective).

The returned delta is ``theta_final - theta_initial`` like every learner's. In particular with
``local_steps=1``, ``local_optimizer="sgd"`` and ``local_lr=1.0`` the delta is exactly the mean
task difference ``D`` and the server's learning rate plays the role of Reptile's ``epsilon``.

With ``head_init="zero"`` the copy's linear head is set to zero before every task (training and
test time; Kao, Chiu & Chen 2022): the head's difference is not applied, so only the body is
meta-learned and training episodes may have more ways than test episodes. With
``head_init="proto"`` (Proto-MAML's initialisation, Triantafillou et al. 2020) the copy's head is
set from the task's support prototypes instead (``W_k = 2 c_k``, ``b_k = -||c_k||^2``,
:func:`~secfed.learners.common.set_proto_head`; at test time from the support set), so the copy
starts as the ProtoNet classifier; its difference is discarded as with the zeroed head. That head
couples the records of a task, so it is refused with a custom inner trainer (record-level DP's
per-record DP-SGD, whose unit is one record); DP Reptile keeps ``"zero"`` or ``"learned"``.

The inner loop is a hook (:class:`InnerTrainer`, default :class:`TaskFineTune`); everything else
(task sampling, resetting the copy, the head zeroing, the differences, the outer step, the
buffers) is this module's loop whatever the inner trainer. Record-level DP
(:mod:`secfed.dp.engines`) passes a per-record DP-SGD inner trainer and a source of public class
sets, so DP Reptile is this same loop (and zeroes the head exactly as above).

Test time: fine-tune a copy of the model (training mode: transductive batch norm, see
:meth:`Reptile.predict`) on the support set for ``test_inner_steps`` steps of the inner optimiser
with ``test_inner_lr``, then return the query logits (first ``n_way`` outputs; build the model with
``num_classes == n_way``, or more outputs with ``head_init="zero"``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from secfed.errors import ConfigError
from secfed.learners.base import Learner, LearnerConfig, LocalUpdate, SupportSet
from secfed.learners.common import (
    REPLACED_HEADS,
    check_config,
    check_task,
    head_logits,
    head_names,
    make_optimizer,
    params_delta,
    set_proto_head,
    snapshot_params,
    trainable_params,
    training_mode,
)
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.engine import (
    MeanRecordEngine,
    RecordBatch,
    StepStats,
    cross_entropy_records,
    proximal_term,
    run_record_steps,
)
from secfed.models.params import floating_buffers
from secfed.tasks.base import TaskSource

__all__ = ["InnerTrainer", "Reptile", "TaskFineTune", "fine_tune"]


def _batches(*, n: int, batch: int, steps: int, rng: np.random.Generator) -> list[np.ndarray | None]:
    """Index batches for ``steps`` inner steps (``None`` = all ``n`` records)."""
    if batch == 0 or batch >= n:
        return [None] * steps
    out: list[np.ndarray | None] = []
    perm = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = rng.permutation(n), 0
        out.append(perm[pos : pos + batch])
        pos += batch
    return out


def fine_tune(
    *,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_way: int,
    steps: int,
    lr: float,
    optimizer: str,
    batches: list[np.ndarray | None] | None = None,
) -> tuple[float, int, int]:
    """Train ``model`` in place with cross-entropy on ``(x, y)`` (the plain record engine).

    Args:
        model: Model to train (its current train/eval mode is used).
        x: Inputs.
        y: Labels in ``[0, n_way)``.
        n_way: Number of classes (first ``n_way`` logits are used).
        steps: Optimiser steps.
        lr: Learning rate.
        optimizer: ``"sgd"`` or ``"adam"`` (fresh state).
        batches: Index batch per step (``None`` entries or ``None`` = full batch).

    Returns:
        ``(sum of pre-step losses, correct predictions, predictions)`` over the steps.
    """
    engine = MeanRecordEngine(model=model, params=trainable_params(model), optimizer=optimizer, lr=lr)

    def draw(step: int) -> RecordBatch:
        idx = None if batches is None else batches[step]
        if idx is None:
            return RecordBatch(x=x, y=y, n_way=n_way)
        index = torch.from_numpy(idx)
        return RecordBatch(x=x[index], y=y[index], n_way=n_way)

    stats = run_record_steps(engine=engine, draw=draw, steps=steps, loss_fn=cross_entropy_records)
    return stats.loss_sum, stats.correct, stats.predictions


class InnerTrainer(Protocol):
    """Reptile's inner loop on one task: trains a copy of the model in place.

    The default, :class:`TaskFineTune`, is :func:`fine_tune` on the task's records. Record-level DP
    (:mod:`secfed.dp.engines`) passes an inner trainer that runs the same record loop
    (:func:`~secfed.learners.engine.run_record_steps`) with a per-record DP-SGD engine on
    Poisson-sampled records of the task's classes.
    """

    def __call__(
        self, *, model: nn.Module, task: Any, steps: int, lr: float, optimizer: str, rng: np.random.Generator
    ) -> tuple[StepStats, int]:
        """Train ``model`` on ``task``.

        Args:
            model: The working copy (reset to the current parameters, head zeroed if configured).
            task: What the task source produced.
            steps: Inner steps (``inner_steps``).
            lr: Inner learning rate.
            optimizer: Inner optimiser name (fresh state per task).
            rng: The learner's generator (public randomness).

        Returns:
            ``(diagnostics, records touched)``.
        """
        ...


@dataclass(frozen=True)
class TaskFineTune:
    """The default inner trainer: :func:`fine_tune` on a task's support and query records.

    Attributes:
        batch: Records per inner step (``reptile_inner_batch``; 0 = the whole task), drawn without
            replacement from a random permutation.
        require_all_classes: Passed to :func:`~secfed.learners.common.check_task`.
    """

    batch: int
    require_all_classes: bool = False

    def __call__(
        self, *, model: nn.Module, task: Any, steps: int, lr: float, optimizer: str, rng: np.random.Generator
    ) -> tuple[StepStats, int]:
        """See :class:`InnerTrainer`.

        Raises:
            DataError: If ``task`` is not a well-formed :class:`~secfed.tasks.base.Task`.
        """
        check_task(task=task, require_all_classes=self.require_all_classes)
        x = torch.cat([task.support_x, task.query_x], dim=0)
        y = torch.cat([task.support_y, task.query_y], dim=0)
        batches = _batches(n=int(y.shape[0]), batch=self.batch, steps=steps, rng=rng)
        loss_sum, correct, seen = fine_tune(
            model=model, x=x, y=y, n_way=task.n_way, steps=steps, lr=lr, optimizer=optimizer, batches=batches
        )
        stats = StepStats(loss_sum=loss_sum, units=steps, correct=correct, predictions=seen, steps=steps)
        return stats, int(task.num_examples)


class Reptile(Learner):
    """Reptile learner (not episodic: there is no per-episode differentiable meta-loss)."""

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["reptile"]

    @classmethod
    def dp_steps_per_local_step(cls, *, meta_batch: int, inner_steps: int) -> int:
        """Per-sample DP-SGD runs in every inner step of every task of a local step.

        Args:
            meta_batch: Tasks per local step.
            inner_steps: Inner steps per task.

        Returns:
            ``meta_batch * inner_steps``.
        """
        return int(meta_batch * inner_steps)

    def __init__(self, *, config: LearnerConfig) -> None:
        """Validate the config (``inner_steps >= 1``) and store it.

        Args:
            config: Hyperparameters.

        Raises:
            ConfigError: If any field is invalid (also ``inner_steps < 2`` with a zeroed head).
        """
        check_config(config=config, min_inner_steps=self.declaration.min_inner_steps)
        least = self.declaration.zero_head_min_inner_steps
        if config.head_init == "zero" and config.inner_steps < least:
            # From a zero head the body's gradient is zero, so one step only trains the head,
            # whose difference is discarded: the update would always be zero.
            raise ConfigError(
                f"learner config inner_steps must be >= {least} for {self.name} with head_init='zero' "
                f"(the first step from a zero head moves only the head), got {config.inner_steps}"
            )
        super().__init__(config=config)

    def local_update(
        self,
        *,
        model: nn.Module,
        tasks: TaskSource,
        rng: np.random.Generator,
        inner: InnerTrainer | None = None,
    ) -> LocalUpdate:
        """Reptile local training; see the module docstring.

        ``train_loss`` is the mean inner-step loss (before each step) and ``train_accuracy`` the
        accuracy of those inner-step predictions.

        Args:
            model: The model, loaded with the global parameters (trained in place).
            tasks: Anything with ``sample(*, rng)``: the site's task source, or (record-level DP)
                a source of public class sets that ``inner`` understands.
            rng: Public randomness for task sampling.
            inner: The inner loop on one task (default :class:`TaskFineTune`). The head zeroing,
                the parameter differences, the outer step and the buffers stay here whatever
                the inner trainer.

        Returns:
            The local update.

        Raises:
            DataError: If a sampled task is malformed.
            ConfigError: If the model's outputs do not fit the tasks, or ``head_init="proto"`` is
                combined with a custom inner trainer (its unit is one record, and a head set from
                the task's support prototypes would make every record's gradient depend on the
                other records: the per-record sensitivity would no longer hold).
        """
        cfg = self.config
        if cfg.head_init == "proto" and inner is not None:
            raise ConfigError(
                "learner head_init='proto' cannot be used with reptile's record-level DP inner steps: "
                "the head would be a function of several records, so clipping each record's gradient "
                "no longer bounds one record's influence; use head_init='zero'"
            )
        train_task = (
            inner
            if inner is not None
            else TaskFineTune(batch=cfg.reptile_inner_batch, require_all_classes=self.needs_every_class)
        )
        params = trainable_params(model)
        initial = snapshot_params(model)
        outer = make_optimizer(name=cfg.local_optimizer, params=params.values(), lr=cfg.local_lr)
        work = copy.deepcopy(model)
        work_params = trainable_params(work)
        work_buffers = dict(work.named_buffers())
        buffers = dict(model.named_buffers())
        zeroed = head_names(model) if cfg.head_init in REPLACED_HEADS else ()
        stats = StepStats()
        num_tasks, num_examples = 0, 0
        with (
            training_mode(model, train=True),
            training_mode(work, train=True),
            proximal_term(params=params, mu=cfg.proximal_mu),
        ):
            for _ in range(cfg.local_steps):
                mean_diff = {name: torch.zeros_like(p) for name, p in params.items()}
                for _ in range(cfg.meta_batch):
                    task = tasks.sample(rng=rng)
                    with torch.no_grad():
                        for name, p in params.items():
                            work_params[name].copy_(p)
                        for name, b in buffers.items():
                            work_buffers[name].copy_(b)
                        for name in zeroed:
                            work_params[name].zero_()
                    if cfg.head_init == "proto":
                        check_task(task=task, require_all_classes=self.needs_every_class)
                        set_proto_head(model=work, support=SupportSet.of(task))
                    task_stats, examples = train_task(
                        model=work,
                        task=task,
                        steps=cfg.inner_steps,
                        lr=cfg.inner_lr,
                        optimizer=cfg.inner_optimizer,
                        rng=rng,
                    )
                    stats.add(task_stats)
                    with torch.no_grad():
                        for name, p in params.items():
                            if name not in zeroed:
                                mean_diff[name] += (work_params[name] - p) / cfg.meta_batch
                        # Running statistics carry on from the task just trained on.
                        for name, b in buffers.items():
                            b.copy_(work_buffers[name])
                    num_tasks += 1
                    num_examples += examples
                outer.zero_grad(set_to_none=True)
                for name, p in params.items():
                    p.grad = -mean_diff[name]
                outer.step()
                outer.zero_grad(set_to_none=True)
        return LocalUpdate(
            delta=params_delta(model=model, initial=initial),
            train_loss=stats.loss_sum / max(stats.steps, 1),
            num_tasks=num_tasks,
            num_examples=num_examples,
            buffers=floating_buffers(model=model),
            extra={"train_accuracy": stats.correct / max(stats.predictions, 1)},
        )

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """Fine-tune a copy on the support set and return query logits; see :meth:`Learner.predict`.

        The copy stays in training mode, so BatchNorm uses batch statistics (the support batch's
        while fine-tuning, the query batch's for the predictions: transductive batch norm, as in
        MAML's and Reptile's reference evaluations); the global model's running statistics are
        neither used nor changed. GroupNorm models are unaffected. With ``head_init="proto"`` the
        copy's head is first set from the support prototypes (with ``test_inner_steps = 0`` the
        predictions are ProtoNet's).

        Raises:
            ConfigError: If the model has fewer than ``n_way`` outputs.
        """
        work = copy.deepcopy(model)
        if self.config.head_init == "zero":
            with torch.no_grad():
                for name in head_names(work):
                    work.get_parameter(name).zero_()
        with training_mode(work, train=True), torch.enable_grad():
            if self.config.head_init == "proto":
                set_proto_head(model=work, support=support)
            fine_tune(
                model=work,
                x=support.x,
                y=support.y,
                n_way=support.n_way,
                steps=self.config.test_inner_steps,
                lr=self.config.test_inner_lr,
                optimizer=self.config.inner_optimizer,
            )
            with torch.no_grad():
                return head_logits(outputs=work(query_x), n_way=support.n_way).detach()
