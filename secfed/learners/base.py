"""The learner interface every federated meta-learner implements.

A learner turns the global parameters and a stream of tasks drawn from one site's data into a
local update (the parameter difference), adapts a model to a support set, and evaluates on a
query set. Learners never see other sites' data; the federation layer only ever sees the
``LocalUpdate`` they return.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from secfed.tasks.base import Task, TaskSource

__all__ = ["LearnerConfig", "LocalUpdate", "Learner"]


@dataclass(frozen=True)
class LearnerConfig:
    """Hyperparameters shared by all learners (each learner reads the ones it needs).

    Attributes:
        local_steps: Outer (meta) steps a site takes per round.
        meta_batch: Tasks per local meta step.
        local_lr: Learning rate of the local (outer) optimiser.
        local_optimizer: ``"adam"`` or ``"sgd"``.
        inner_steps: Inner adaptation steps during training (MAML/FOMAML/Reptile).
        inner_lr: Inner learning rate during training.
        test_inner_steps: Adaptation steps at test time (MAML/FOMAML/Reptile/FedAvg fine-tuning).
        test_inner_lr: Adaptation learning rate at test time.
        inner_optimizer: Reptile inner optimiser, ``"sgd"`` or ``"adam"``.
        reptile_inner_batch: Records per Reptile inner step (0 = the whole task).
        batch_size: Records per FedAvg local step when FedAvg draws from a
            ``SupervisedBatchSource`` (added for FedAvg; ignored by the episodic learners).
        head_init: Where MAML/FOMAML/Reptile start each task's linear head: ``"learned"`` (the
            meta-learned head, Finn et al. 2017) or ``"zero"`` (weights and bias set to zero
            before every task's inner loop, in training and at test time: the "zeroing trick"
            of Kao, Chiu & Chen 2022, "MAML is a Noisy Contrastive Learner in Classification",
            ICLR), or ``"proto"`` (set before every task from the task's support prototypes,
            ``W_k = 2 c_k``, ``b_k = -||c_k||^2``: Proto-MAML, Triantafillou et al. 2020,
            "Meta-Dataset", ICLR; before any inner step the model is the ProtoNet classifier).
            With ``"zero"`` or ``"proto"`` the head is the same for every class, so the training
            and test ways may differ.
        fce: Matching Networks only: full context embeddings (Vinyals et al. 2016, appendix):
            a bidirectional LSTM over the support embeddings and an attention LSTM for each query.
        fce_steps: Processing steps ``K`` of the attention LSTM (with ``fce``).
        cosine_scale: Matching Networks only: ``tau`` in ``softmax_i(tau * cos(f(x), g(x_i)))``;
            1 is the paper's kernel (Vinyals et al. 2016). A cosine lies in [-1, 1], so with
            ``tau = 1`` a 20-way episode can give its correct class at most ``P = e / (e + 19/e)
            = 0.28``; scaling the metric (Oreshkin, Rodriguez & Lacoste 2018, "TADAM", NeurIPS)
            lets the attention sharpen.
        pair_loss: Siamese networks only: the loss over an episode's pair scores, ``"bce"`` (the
            balanced binary cross-entropy of Koch et al. 2015) or ``"softmax"`` (the multi-class
            N-pair loss, Sohn 2016: a softmax over a query's pair scores against the episode's
            supports); see :mod:`secfed.learners.siamese`.
        proximal_mu: FedProx's ``mu`` (Li et al. 2020): every local optimiser step on the model's
            parameters adds the gradient of ``mu / 2 * ||w - w_global||^2``
            (:func:`secfed.learners.engine.proximal_term`); 0 is plain local training (FedAvg).
    """

    local_steps: int = 10
    meta_batch: int = 1
    local_lr: float = 1e-3
    local_optimizer: str = "adam"
    inner_steps: int = 1
    inner_lr: float = 0.4
    test_inner_steps: int = 3
    test_inner_lr: float = 0.4
    inner_optimizer: str = "sgd"
    reptile_inner_batch: int = 0
    batch_size: int = 32
    head_init: str = "learned"
    fce: bool = False
    fce_steps: int = 1
    cosine_scale: float = 1.0
    pair_loss: str = "bce"
    proximal_mu: float = 0.0


@dataclass
class LocalUpdate:
    """What a site's local training produced.

    Attributes:
        delta: ``new - global`` for every trainable parameter (float32, same names as
            ``model.named_parameters()``). Buffers (e.g. BatchNorm statistics) are returned
            separately in ``buffers`` and averaged like parameters.
        train_loss: Mean training loss over the local steps.
        num_tasks: Tasks consumed.
        num_examples: Records touched (support + query over all tasks).
        buffers: Final values of floating-point buffers (may be empty).
        extra: Learner-specific scalars for the metrics (e.g. ``train_accuracy``).
    """

    delta: dict[str, torch.Tensor]
    train_loss: float
    num_tasks: int
    num_examples: int
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


class Learner(ABC):
    """Base class of MAML, FOMAML, Reptile, ProtoNet and FedAvg.

    Subclasses set :attr:`name` and implement :meth:`local_update` and :meth:`predict`.
    Episodic learners (ProtoNet, MAML, FOMAML) also implement :meth:`task_loss`, the
    ``torch.func``-compatible loss of one episode, which the privacy layer uses to compute
    per-episode meta-gradients.
    """

    name: ClassVar[str] = "base"
    #: True when the meta-objective is a per-episode loss usable with ``torch.func`` (ProtoNet, MAML).
    episodic: ClassVar[bool] = False
    #: Whether adaptation needs a support record of every class (prototype learners). Learners
    #: with a shared head accept support sets missing classes (client-as-task under label skew).
    needs_every_class: ClassVar[bool] = False
    #: What the model's linear head must be (:func:`secfed.components.model_num_classes` reads it):
    #: ``"none"`` (an embedding network: ProtoNet, Matching Networks, Siamese networks), ``"n_way"``
    #: (task-local logits: MAML, FOMAML, Reptile) or ``"global"`` (one output per training class:
    #: FedAvg).
    head: ClassVar[str] = "none"
    #: How the DP planner replays a site's public record-level plan to count the steps of its
    #: most exposed class (:func:`secfed.dp.planning.record_class_aware_steps`): ``"slots"`` (the
    #: site's public slot plan, one episodic DP step per local step: ProtoNet, MAML, FOMAML),
    #: ``"tasks"`` (the public class tasks drawn every sampled round: Reptile) or ``"every_step"``
    #: (no replay, every planned step counts for every record: an upper bound; FedAvg, and
    #: Matching and Siamese networks, whose plans the planner does not replay).
    dp_plan: ClassVar[str] = "every_step"
    #: Whether noise sharing (:mod:`secfed.dp.sharing`) supports the learner: one DP step per
    #: round makes its update an affine function of the clipped sum plus the noise share
    #: (ProtoNet, MAML, FOMAML, FedAvg; :func:`secfed.config.check_noise_sharing_config`).
    noise_sharing: ClassVar[bool] = False

    @classmethod
    def dp_steps_per_local_step(cls, *, meta_batch: int, inner_steps: int) -> int:
        """Record-level DP-SGD steps one local step takes (:func:`secfed.dp.params.record_steps_per_round`).

        Args:
            meta_batch: Tasks per local step (``learner.meta_batch``).
            inner_steps: Inner steps per task (``learner.inner_steps``).

        Returns:
            1: one episodic (per-episode) or per-sample DP-SGD step per local step.
        """
        del meta_batch, inner_steps
        return 1

    @classmethod
    def extend_model(cls, *, model: nn.Module, config: LearnerConfig) -> nn.Module:
        """Add the learner's own trainable modules to a freshly built model (default: none).

        The added modules are submodules of ``model``, so their parameters are federated,
        checkpointed, clipped and noised with the others. Called by
        :func:`secfed.components.build_model` right after the architecture is built.

        Args:
            model: The model (an embedding network for the metric learners).
            config: The learner's hyperparameters.

        Returns:
            ``model`` (possibly with new submodules).
        """
        del config
        return model

    def __init__(self, *, config: LearnerConfig) -> None:
        self.config = config

    def task_loss(
        self,
        *,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        task: Task,
    ) -> torch.Tensor:
        """Functional meta-loss of one task (query loss after adaptation on the support set).

        Must be differentiable w.r.t. ``params`` with ``torch.func.grad`` (use
        ``torch.func.functional_call(model, (params, buffers), x)``).

        Args:
            model: The module whose structure is used.
            params: Parameter tensors by name.
            buffers: Buffer tensors by name.
            task: The episode.

        Returns:
            A scalar loss tensor.

        Raises:
            NotImplementedError: For non-episodic learners (Reptile, FedAvg).
        """
        raise NotImplementedError(f"learner {self.name!r} has no per-episode meta-loss")

    @abstractmethod
    def local_update(self, *, model: nn.Module, tasks: TaskSource, rng: np.random.Generator) -> LocalUpdate:
        """Train locally from the model's current (global) parameters.

        The model is modified in place; the returned delta is relative to its parameters on entry.

        Args:
            model: The model, loaded with the global parameters.
            tasks: The site's task source.
            rng: Source of randomness for task sampling (torch randomness must be seeded by the caller).

        Returns:
            The local update.
        """

    @abstractmethod
    def predict(
        self,
        *,
        model: nn.Module,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_way: int,
        query_x: torch.Tensor,
    ) -> torch.Tensor:
        """Adapt to a support set and return logits for the query inputs.

        Must not modify ``model``'s parameters.

        Args:
            model: The (global) model.
            support_x: Support inputs.
            support_y: Support labels in ``[0, n_way)``.
            n_way: Number of classes.
            query_x: Query inputs.

        Returns:
            Logits of shape ``(Q, n_way)``.
        """

    def evaluate(self, *, model: nn.Module, task: Task) -> float:
        """Accuracy on the task's query set after adapting on its support set.

        Args:
            model: The (global) model.
            task: The evaluation task.

        Returns:
            Fraction of correctly classified query records.
        """
        logits = self.predict(
            model=model,
            support_x=task.support_x,
            support_y=task.support_y,
            n_way=task.n_way,
            query_x=task.query_x,
        )
        return float((logits.argmax(dim=-1) == task.query_y).float().mean().item())
