"""The learner interface every federated meta-learner implements.

A learner turns the global parameters and a stream of tasks drawn from one site's data into a
local update (the parameter difference), adapts a model to a support set, and evaluates on a
query set. Learners never see other sites' data; the federation layer only ever sees the
``LocalUpdate`` they return.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from secfed.learners.declarations import LearnerDeclaration
from secfed.learners.settings import LearnerSettings, setting_names
from secfed.learners.support import SupportSet, check_support_query
from secfed.tasks.base import Task, TaskSource

__all__ = ["FunctionalModel", "LearnerConfig", "LocalUpdate", "Learner", "SupportSet"]


@dataclass(frozen=True)
class LearnerConfig(LearnerSettings):
    """A learner's hyperparameters: the settings of :class:`~secfed.learners.settings.LearnerSettings`
    (each learner reads the ones it needs) and FedProx's ``mu``.

    Attributes:
        proximal_mu: FedProx's ``mu`` (Li et al. 2020; ``federation.proximal_mu``): every local
            optimiser step on the model's parameters adds the gradient of
            ``mu / 2 * ||w - w_global||^2`` (:func:`secfed.learners.engine.proximal_term`); 0 is
            plain local training (FedAvg).
    """

    proximal_mu: float = 0.0

    @classmethod
    def from_settings(cls, settings: LearnerSettings, *, proximal_mu: float) -> LearnerConfig:
        """The config of some settings (e.g. a configuration's ``[learner]`` section).

        Args:
            settings: The settings (any :class:`~secfed.learners.settings.LearnerSettings`; extra
                fields such as ``learner.name`` are not copied).
            proximal_mu: FedProx's ``mu``.

        Returns:
            The config (``cosine_scale`` and ``proximal_mu`` as floats).
        """
        values = {name: getattr(settings, name) for name in setting_names()}
        values["cosine_scale"] = float(settings.cosine_scale)
        return cls(**values, proximal_mu=float(proximal_mu))


@dataclass(frozen=True)
class FunctionalModel:
    """A module evaluated at given parameter and buffer tensors (``torch.func.functional_call``).

    What an episodic learner's :meth:`Learner.episode` computes with: calling it is differentiable
    with respect to ``params`` with ``backward()`` and with ``torch.func.grad``, and composes with
    ``torch.func.vmap``.

    Attributes:
        module: The module whose structure is used (its own tensors fill any name missing from
            ``params``/``buffers``).
        params: Parameter tensors by name, as in ``module.named_parameters()``.
        buffers: Buffer tensors by name.
    """

    module: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]

    @classmethod
    def detached(cls, module: nn.Module) -> FunctionalModel:
        """The module at its own tensors, parameters detached (for predictions without gradients).

        Args:
            module: The module.

        Returns:
            The functional model (parameters detached, buffers as they are).
        """
        return cls(
            module=module,
            params={n: p.detach() for n, p in module.named_parameters()},
            buffers=dict(module.named_buffers()),
        )

    def with_params(self, params: dict[str, torch.Tensor]) -> FunctionalModel:
        """The same module and buffers at other parameters.

        Args:
            params: Parameter tensors by name.

        Returns:
            A new functional model.
        """
        return replace(self, params=params)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` at :attr:`params` and :attr:`buffers`.

        Args:
            x: The module's input.

        Returns:
            The module's output.
        """
        out: torch.Tensor = functional_call(self.module, (self.params, self.buffers), (x,))
        return out


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

    Subclasses set :attr:`declaration` (:data:`secfed.learners.declarations.DECLARATIONS`) and
    implement :meth:`local_update` and :meth:`_predict` (the hook :meth:`predict` calls once the
    support set and queries are validated).
    Episodic learners (:class:`~secfed.learners.episodic.EpisodicLearner`) also implement
    :meth:`episode`, the ``torch.func``-compatible loss of one episode behind :meth:`task_loss`,
    which the privacy layer uses to compute per-episode meta-gradients.
    """

    #: What the rest of secfed reads about the learner (:mod:`secfed.learners.declarations`).
    #: A concrete learner sets it; the class attributes below are copied from it when the class
    #: is created, so they never disagree with what the configuration reads.
    declaration: ClassVar[LearnerDeclaration | None] = None
    #: ``learner.name`` (:attr:`LearnerDeclaration.name`).
    name: ClassVar[str] = "base"
    #: True when the meta-objective is a per-episode loss usable with ``torch.func``
    #: (:attr:`LearnerDeclaration.episodic`).
    episodic: ClassVar[bool] = False
    #: Whether adaptation needs a support record of every class
    #: (:attr:`LearnerDeclaration.needs_every_class`).
    needs_every_class: ClassVar[bool] = False
    #: What the model's linear head must be: ``"none"``, ``"n_way"`` or ``"global"``
    #: (:attr:`LearnerDeclaration.head`; :func:`secfed.components.model_num_classes` reads it).
    head: ClassVar[str] = "none"
    #: How the DP planner replays a site's public record-level plan (:attr:`LearnerDeclaration.dp_plan`,
    #: read by :func:`secfed.dp.planning.record_class_aware_steps`).
    dp_plan: ClassVar[str] = "every_step"
    #: Whether noise sharing (:mod:`secfed.dp.sharing`) supports the learner
    #: (:attr:`LearnerDeclaration.noise_sharing`).
    noise_sharing: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Copy a concrete learner's declaration into its class attributes."""
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("declaration")
        if declared is not None:
            cls.name = declared.name
            cls.episodic = declared.episodic
            cls.needs_every_class = declared.needs_every_class
            cls.head = declared.head
            cls.dp_plan = declared.dp_plan
            cls.noise_sharing = declared.noise_sharing

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

        The loss of :meth:`episode` at ``model`` evaluated at ``params``/``buffers``;
        differentiable w.r.t. ``params`` with ``torch.func.grad``, and composable with
        ``torch.func.vmap`` (over same-shaped tasks) for models without BatchNorm in training mode
        (use GroupNorm under vmap). No data validation happens here (it would break ``vmap``);
        :meth:`local_update` validates.

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
        return self.episode(net=FunctionalModel(module=model, params=params, buffers=buffers), task=task)[0]

    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta-loss of one task and the query logits it was computed from (episodic learners).

        Args:
            net: The model at the parameters and buffers to differentiate.
            task: The episode.

        Returns:
            ``(loss, query_logits)``; ``loss`` is a scalar, ``query_logits`` is ``(Q, n_way)``.

        Raises:
            NotImplementedError: For non-episodic learners (Reptile, FedAvg).
        """
        del net, task
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

        Validates the support set and the queries (:func:`~secfed.learners.support.check_support_query`,
        a support record of every class when the learner :attr:`needs_every_class`), then calls
        the learner's :meth:`_predict`. Does not modify ``model``'s parameters.

        Args:
            model: The (global) model.
            support_x: Support inputs.
            support_y: Support labels in ``[0, n_way)``.
            n_way: Number of classes.
            query_x: Query inputs.

        Returns:
            Logits of shape ``(Q, n_way)``.

        Raises:
            DataError: If the support/query data is malformed, or a class has no support record
                and the learner needs every class.
            ConfigError: If the model does not fit the learner (see each learner's :meth:`_predict`).
        """
        check_support_query(
            support_x=support_x,
            support_y=support_y,
            n_way=n_way,
            query_x=query_x,
            require_all_classes=self.needs_every_class,
        )
        return self._predict(
            model=model, support=SupportSet(x=support_x, y=support_y, n_way=n_way), query_x=query_x
        )

    @abstractmethod
    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """The learner's adaptation and prediction, on inputs :meth:`predict` has validated.

        Must not modify ``model``'s parameters.

        Args:
            model: The (global) model.
            support: The validated support set.
            query_x: Query inputs (records shaped as the support records).

        Returns:
            Logits of shape ``(Q, support.n_way)``.
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
