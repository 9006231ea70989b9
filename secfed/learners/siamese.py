"""Siamese networks (Koch, Zemel & Salakhutdinov 2015, "Siamese Neural Networks for One-shot Image
Recognition", ICML Deep Learning Workshop).

Twin encoders with shared weights (the embedding network, built with ``num_classes=None``) map two
images to ``h_1, h_2``; the weighted L1 distance head scores the pair (Koch et al., eq. 1)::

    p(same | x_1, x_2) = sigmoid( sum_j alpha_j |h_1j - h_2j| + b )

The head (``alpha``, ``b``) is the learner's own trainable module, ``model.pair_head`` (a
``Linear(D, 1)``, added by :meth:`SiameseNet.extend_model`), so it is federated, checkpointed,
clipped and noised with the encoder. It starts at ``alpha = -1/D``, ``b = 0``: closer pairs score
higher from the first step.

Training: the pairs of an episode are every (query, support) pair, labelled *same* when the two
records share a class. The loss over the pair scores is ``learner.pair_loss``:

* ``"bce"`` (default, Koch et al.): the binary cross-entropy of the pair scores, with the same and
  different pairs weighted equally (``0.5 * mean BCE(same) + 0.5 * mean BCE(different)``: an
  ``N``-way episode has ``N - 1`` different pairs per same pair, and Koch et al. train on balanced
  pairs).
* ``"softmax"``: the multi-class N-pair loss (Sohn 2016, "Improved Deep Metric Learning with
  Multi-class N-pair Loss Objective", NeurIPS, eq. 3 with the pair score as the similarity): for
  every same pair ``(q, s+)``, ``log(1 + sum_{s-} exp(score(q, s-) - score(q, s+)))`` over the
  query's different pairs ``s-`` in the episode, averaged over the same pairs. With one shot it is
  the cross-entropy of a softmax over the query's pair scores against all supports, i.e. of the
  one-shot classification below. The network, its pair scores and the one-shot rule are
  unchanged; only the training signal compares a query's pairs with each other instead of scoring
  each pair against a fixed 0/1 target.

One-shot classification (Koch et al., Sec. 4.3) picks the support image most similar to the
query: the logit of class ``k`` is the highest pair score (pre-sigmoid) between the query and
class ``k``'s support records, so with one shot the arg-max is the most similar support image.

Record-level DP — the privacy unit and the sensitivity
------------------------------------------------------
A pair couples two records, so per-record clipping is not valid (as for ProtoNet,
:mod:`privacy.episodic`). This learner uses **per-episode** units: pairs are formed
only *within* an episode, the episode's loss is a function of that episode's records alone, and the
site trains with the per-episode clipping engine of the episodic learners unchanged
(:class:`secfed.dp.engines.EpisodeDPEngineFactory`, episodes from the record-level episode sampler,
whose assignment of a record to a slot and a role does not depend on the other records).

**Sensitivity: 2C** under add/remove one record. Removing record ``r`` changes at most one episode,
``r``'s own: every pair containing ``r`` lies in that episode, and every other episode keeps its
records, roles and therefore its gradient. That episode's clipped gradient goes from ``u`` to
``u'`` (or to nothing, when the episode becomes unusable) with ``||u||, ||u'|| <= C``, so the
clipped sum moves by at most ``||u - u'|| <= 2C`` — however many pairs ``r`` is in, and whichever
``pair_loss`` is used: both are functions of the episode's pair scores only (the N-pair loss
compares a query's pairs with each other, but only pairs of the same episode). (The per-pair
alternative would give ``2 m C`` for a record in ``m`` pairs and needs a cap on ``m``.) The noise is
therefore ``N(0, (2zC)^2 I)``, as for ProtoNet; ``tests/secfed/learners/test_siamese.py`` measures
the change of the released clipped sum over many removals, including removing the only record of
a class, through the production DP engine, for both pair losses.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from secfed.errors import ConfigError
from secfed.learners.base import FunctionalModel, LearnerConfig, SupportSet
from secfed.learners.common import PAIR_LOSSES, add_embedding_module, training_mode
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.episodic import EpisodicLearner
from secfed.tasks.base import Task

__all__ = [
    "PAIR_HEAD",
    "PAIR_LOSSES",
    "SiameseNet",
    "npair_loss",
    "pair_scores",
    "siamese_class_logits",
    "siamese_pair_loss",
]

#: Name of the distance-head submodule on the model.
PAIR_HEAD = "pair_head"
#: Logit given to a class without support records (finite, so gradients stay finite).
_ABSENT = -1e9


def pair_scores(
    *, query_emb: torch.Tensor, support_emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Pre-sigmoid scores ``alpha . |f(q) - f(s)| + b`` of every (query, support) pair.

    Args:
        query_emb: ``(Q, D)``.
        support_emb: ``(S, D)``.
        weight: ``(1, D)`` head weights ``alpha``.
        bias: ``(1,)`` head bias ``b``.

    Returns:
        ``(Q, S)`` scores.
    """
    dist = (query_emb.unsqueeze(1) - support_emb.unsqueeze(0)).abs()  # (Q, S, D)
    return dist @ weight.reshape(-1) + bias.reshape(())


def siamese_pair_loss(
    *, scores: torch.Tensor, query_y: torch.Tensor, support_y: torch.Tensor
) -> torch.Tensor:
    """Balanced binary cross-entropy of the pair scores (same = 1, different = 0).

    Static shapes only (works under ``torch.func.vmap``).

    Args:
        scores: ``(Q, S)`` pre-sigmoid scores.
        query_y: ``(Q,)`` labels.
        support_y: ``(S,)`` labels.

    Returns:
        ``0.5 * mean BCE over same pairs + 0.5 * mean BCE over different pairs`` (a side with no
        pair contributes 0).
    """
    same = (query_y.unsqueeze(1) == support_y.unsqueeze(0)).to(scores.dtype)
    bce = F.binary_cross_entropy_with_logits(scores, same, reduction="none")
    diff = 1.0 - same
    return 0.5 * (bce * same).sum() / same.sum().clamp(min=1.0) + 0.5 * (bce * diff).sum() / diff.sum().clamp(
        min=1.0
    )


def npair_loss(*, scores: torch.Tensor, query_y: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
    """Multi-class N-pair loss of the pair scores (Sohn 2016, eq. 3).

    For every same pair ``(q, s+)``: ``softplus(logsumexp_{s-} score(q, s-) - score(q, s+))`` =
    ``log(1 + sum_{s-} exp(score(q, s-) - score(q, s+)))``, the negatives ``s-`` being the
    query's different pairs; the mean over the same pairs. With one support record per class it
    is the cross-entropy of the softmax over a query's pair scores. Static shapes only (works
    under ``torch.func.vmap``).

    Args:
        scores: ``(Q, S)`` pre-sigmoid scores.
        query_y: ``(Q,)`` labels.
        support_y: ``(S,)`` labels.

    Returns:
        The mean over same pairs (0 when there is none; a query without different pairs
        contributes about 0).
    """
    same = query_y.unsqueeze(1) == support_y.unsqueeze(0)
    negatives = torch.where(same, torch.full_like(scores, _ABSENT), scores)
    neg_lse = torch.logsumexp(negatives, dim=1, keepdim=True)  # (Q, 1)
    terms = F.softplus(neg_lse - scores)
    weight = same.to(scores.dtype)
    return (terms * weight).sum() / weight.sum().clamp(min=1.0)


def siamese_class_logits(*, scores: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Per class, the highest pair score between the query and the class's support records.

    Args:
        scores: ``(Q, S)`` pre-sigmoid scores.
        support_y: ``(S,)`` labels in ``[0, n_way)``.
        n_way: Number of classes.

    Returns:
        ``(Q, n_way)`` logits (``-1e9`` for a class without support records).
    """
    classes = torch.arange(n_way, device=support_y.device)
    member = support_y.unsqueeze(-1) == classes  # (S, n_way)
    masked = torch.where(
        member.unsqueeze(0), scores.unsqueeze(-1), torch.full_like(scores.unsqueeze(-1), _ABSENT)
    )
    return masked.amax(dim=1)


class SiameseNet(EpisodicLearner):
    """Siamese networks learner; see the module docstring."""

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["siamese"]

    @classmethod
    def extend_model(cls, *, model: nn.Module, config: LearnerConfig) -> nn.Module:
        """Add the weighted L1 distance head ``model.pair_head`` (``Linear(D, 1)``).

        Raises:
            ConfigError: If the model has no ``embedding_dim`` or already has a ``pair_head``.
        """
        del config

        def pair_head(dim: int) -> nn.Module:
            head = nn.Linear(dim, 1)
            with torch.no_grad():
                head.weight.fill_(-1.0 / dim)
                head.bias.zero_()
            return head

        return add_embedding_module(
            model=model, name=PAIR_HEAD, build=pair_head, needs="a Siamese network needs"
        )

    @staticmethod
    def _head(model: nn.Module, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return params[f"{PAIR_HEAD}.weight"], params[f"{PAIR_HEAD}.bias"]
        except KeyError:
            raise ConfigError(
                "a Siamese network needs a model built with SiameseNet.extend_model (model.pair_head); "
                "build it with secfed.components.build_model"
            ) from None

    def _scores(
        self, *, net: FunctionalModel, support_x: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        weight, bias = self._head(net.module, net.params)
        n_support = support_x.shape[0]
        emb = net(torch.cat([support_x, query_x], dim=0))
        emb = emb.reshape(emb.shape[0], -1)
        return pair_scores(query_emb=emb[n_support:], support_emb=emb[:n_support], weight=weight, bias=bias)

    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """The episode's pair loss (``learner.pair_loss``) and the one-shot class logits; see the
        module docstring."""
        scores = self._scores(net=net, support_x=task.support_x, query_x=task.query_x)
        loss_fn = npair_loss if self.config.pair_loss == "softmax" else siamese_pair_loss
        loss = loss_fn(scores=scores, query_y=task.query_y, support_y=task.support_y)
        return loss, siamese_class_logits(scores=scores, support_y=task.support_y, n_way=task.n_way)

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """Class logits = the best pair score per class (model in eval mode, no gradients); see
        :meth:`Learner.predict`.

        Raises:
            ConfigError: If the model has no distance head.
        """
        net = FunctionalModel.detached(model)
        with training_mode(model, train=False), torch.no_grad():
            scores = self._scores(net=net, support_x=support.x, query_x=query_x)
            return siamese_class_logits(scores=scores, support_y=support.y, n_way=support.n_way)
