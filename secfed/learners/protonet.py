"""Prototypical Networks (Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning").

The model is an embedding network. A class prototype is the mean embedding of the class's support
records; a query's logits are the negative squared Euclidean distances to the prototypes, and the
meta-loss is the query cross-entropy. Test-time adaptation is just computing the prototypes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from secfed.learners.base import FunctionalModel, SupportSet
from secfed.learners.common import training_mode
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.episodic import EpisodicLearner
from secfed.tasks.base import Task

__all__ = ["ProtoNet", "prototype_logits"]


def prototype_logits(
    *, support_emb: torch.Tensor, support_y: torch.Tensor, n_way: int, query_emb: torch.Tensor
) -> torch.Tensor:
    """Negative squared Euclidean distances from queries to class prototypes.

    Written with static shapes only, so it works under ``torch.func.vmap``.

    Args:
        support_emb: ``(S, D)`` support embeddings.
        support_y: ``(S,)`` labels in ``[0, n_way)``.
        n_way: Number of classes.
        query_emb: ``(Q, D)`` query embeddings.

    Returns:
        ``(Q, n_way)`` logits ``-||q - c_k||^2``.
    """
    classes = torch.arange(n_way, device=support_y.device)
    onehot = (support_y.unsqueeze(-1) == classes).to(support_emb.dtype)  # (S, n_way)
    counts = onehot.sum(dim=0).clamp(min=1.0)
    prototypes = (onehot.transpose(0, 1) @ support_emb) / counts.unsqueeze(-1)  # (n_way, D)
    diff = query_emb.unsqueeze(-2) - prototypes  # (Q, n_way, D)
    return -(diff * diff).sum(dim=-1)


class ProtoNet(EpisodicLearner):
    """ProtoNet learner. Uses whatever the model outputs as the embedding (build it with
    ``num_classes=None``). Support and query are embedded in one forward pass (in training mode
    BatchNorm statistics are those of the whole episode, as in Snell et al.'s implementation).
    """

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["protonet"]

    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Query cross-entropy under prototype logits; see :meth:`EpisodicLearner.episode`."""
        logits = self._logits(embed=net, support=SupportSet.of(task), query_x=task.query_x)
        return F.cross_entropy(logits, task.query_y), logits

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """Prototype logits for the queries (model in eval mode, no gradients); see
        :meth:`Learner.predict`."""
        with training_mode(model, train=False), torch.no_grad():
            return self._logits(embed=model, support=support, query_x=query_x)

    @staticmethod
    def _logits(
        *, embed: Callable[[torch.Tensor], torch.Tensor], support: SupportSet, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Prototype logits, support and queries embedded in one forward pass of ``embed``."""
        n_support = support.x.shape[0]
        emb = embed(torch.cat([support.x, query_x], dim=0))
        emb = emb.reshape(emb.shape[0], -1)
        return prototype_logits(
            support_emb=emb[:n_support], support_y=support.y, n_way=support.n_way, query_emb=emb[n_support:]
        )
