"""MAML (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning") and its first-order variant.

Inner loop: ``inner_steps`` steps of plain gradient descent with ``inner_lr`` on the support
cross-entropy, applied functionally to a parameter dictionary. Meta-loss: the query cross-entropy
at the adapted parameters.

* Second-order MAML builds the inner gradients with ``create_graph=True`` so that the meta-gradient
  back-propagates through them (Hessian-vector products).
* FOMAML (first-order MAML, Finn et al. 2017 Sec. 5.2) treats the inner gradients as constants,
  so the meta-gradient is the query gradient at the adapted parameters.

The inner gradients use ``torch.autograd.grad``, which composes with ``torch.func.grad`` and
``torch.func.vmap`` (checked in the tests for GroupNorm models) as well as with ordinary
``backward()`` on BatchNorm models. The model needs a linear head with ``num_classes == n_way``;
with more outputs the first ``n_way`` logits are used.

With ``head_init="zero"`` the linear head's weights and bias are replaced by zeros before every
task's inner loop, in training and at test time (Kao, Chiu & Chen 2022, "MAML is a Noisy
Contrastive Learner in Classification", ICLR): one inner step from a zero head sets class ``k``'s
weights to ``inner_lr`` times the centred mean support embedding of class ``k``, so the query
loss is a contrastive loss and only the body is meta-learned. The head is then the same for
every class, so training episodes may have more ways than test episodes.

With ``head_init="proto"`` (Proto-MAML, Triantafillou et al. 2020, "Meta-Dataset", ICLR) the head
is set before every task's inner loop, in training and at test time, from the task's support
prototypes ``c_k`` (mean support embeddings): ``W_k = 2 c_k``, ``b_k = -||c_k||^2``
(:func:`~secfed.learners.common.proto_head`). Before any inner step the model is then exactly the
ProtoNet classifier (same softmax); the inner steps refine it. The meta-gradient flows through the
prototypes into the body (in FOMAML too: only the inner gradients are constants); the stored head
gets none. A function of the episode's own support records, so per-episode record-level DP keeps
sensitivity 2C. Training and test ways may differ, as with the zeroed head.

Test time: ``test_inner_steps`` first-order steps with ``test_inner_lr`` on the support set, then
logits of the queries. BatchNorm uses batch statistics, as in training (transductive batch norm,
see :meth:`MAML.predict`); the running statistics are neither used nor changed.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from secfed.learners.base import FunctionalModel, SupportSet
from secfed.learners.common import (
    head_logits,
    head_names,
    proto_head,
    training_mode,
    zero_head,
)
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.episodic import EpisodicLearner
from secfed.tasks.base import Task

__all__ = ["MAML", "FOMAML", "inner_adapt"]


def inner_adapt(
    *, net: FunctionalModel, support: SupportSet, steps: int, lr: float, create_graph: bool
) -> dict[str, torch.Tensor]:
    """Functional gradient-descent adaptation on a support set.

    Args:
        net: The model at the starting parameters (which must require grad, or be tracked by
            ``torch.func``) and its buffers (BatchNorm running statistics are updated in training
            mode); the module's own tensors are not modified.
        support: The records ``(x, y)`` to adapt on; the first ``support.n_way`` logits are used.
        steps: Number of gradient steps.
        lr: Step size.
        create_graph: True for second-order MAML (differentiate through the inner gradients);
            False treats the inner gradients as constants (first order).

    Returns:
        The adapted parameters (a new dict; ``net.params`` itself is not modified).
    """
    params = net.params
    names = list(params)
    # Plain tensors (e.g. when only evaluating the meta-loss) become leaves so that the inner
    # gradients exist; tensors already tracked by autograd or torch.func are used as they are.
    current = {n: (p if p.requires_grad else p.detach().requires_grad_(True)) for n, p in params.items()}
    for _ in range(steps):
        logits = head_logits(outputs=net.with_params(current)(support.x), n_way=support.n_way)
        loss = F.cross_entropy(logits, support.y)
        # retain_graph: a head computed from the parameters (head_init="proto") is part of this
        # graph and of the query loss's, which back-propagates through it after this call
        grads = torch.autograd.grad(
            loss,
            [current[n] for n in names],
            create_graph=create_graph,
            retain_graph=True,
            allow_unused=True,
        )
        new: dict[str, torch.Tensor] = {}
        for name, g in zip(names, grads, strict=True):
            if g is None:
                new[name] = current[name]
            else:
                new[name] = current[name] - lr * (g if create_graph else g.detach())
        current = new
    return current


class MAML(EpisodicLearner):
    """Second-order MAML (set ``first_order = True`` in a subclass for FOMAML)."""

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["maml"]
    #: Treat inner gradients as constants (FOMAML).
    first_order: ClassVar[bool] = False

    def _start(self, *, net: FunctionalModel, support: SupportSet) -> dict[str, torch.Tensor]:
        """The parameters a task's inner loop starts from: ``net.params`` with the head zeroed
        (``head_init="zero"``) or set from the support prototypes (``"proto"``)."""
        if self.config.head_init == "zero":
            return zero_head(params=net.params, names=head_names(net.module))
        if self.config.head_init == "proto":
            return proto_head(net=net, support=support)
        return net.params

    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss after ``inner_steps`` adaptation steps; see :meth:`EpisodicLearner.episode`."""
        support = SupportSet.of(task)
        params = self._start(net=net, support=support)
        with torch.enable_grad():
            adapted = inner_adapt(
                net=net.with_params(params),
                support=support,
                steps=self.config.inner_steps,
                lr=self.config.inner_lr,
                create_graph=not self.first_order,
            )
        logits = head_logits(outputs=net.with_params(adapted)(task.query_x), n_way=task.n_way)
        return F.cross_entropy(logits, task.query_y), logits

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """Adapt a copy of the parameters on the support set, then return query logits; see
        :meth:`Learner.predict`.

        BatchNorm layers use batch statistics here, as in training: the support batch's during
        adaptation and the query batch's for the predictions (transductive batch norm, as in Finn
        et al. 2017's reference implementation; the running statistics are never used or changed).
        Meta-learned BatchNorm parameters are adapted to batch statistics, and with running
        statistics the adapted model collapses (measured on the Omniglot split: 20.0 % vs 75.4 %,
        5-way 1-shot, 100 episodes). GroupNorm models are unaffected. With ``head_init="proto"``
        and ``test_inner_steps = 0`` the predictions are ProtoNet's (the logits differ from
        ProtoNet's by ``||q||^2`` per query).

        Raises:
            ConfigError: If the model has fewer than ``n_way`` outputs.
        """
        net = FunctionalModel(
            module=model,
            params=_leaves({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}),
            buffers={name: b.detach().clone() for name, b in model.named_buffers()},
        )
        with training_mode(model, train=True), torch.enable_grad():
            with torch.no_grad():
                net = net.with_params(_leaves(self._start(net=net, support=support)))
            for _ in range(self.config.test_inner_steps):
                stepped = inner_adapt(
                    net=net, support=support, steps=1, lr=self.config.test_inner_lr, create_graph=False
                )
                net = net.with_params(_leaves(stepped))
            with torch.no_grad():
                logits = head_logits(outputs=net(query_x), n_way=support.n_way)
        return logits.detach()


def _leaves(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of ``params`` that require grad (the start of a first-order step)."""
    return {name: p.detach().requires_grad_(True) for name, p in params.items()}


class FOMAML(MAML):
    """First-order MAML: the inner gradients are constants in the meta-gradient."""

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["fomaml"]
    first_order: ClassVar[bool] = True
