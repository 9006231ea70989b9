"""Functional losses an attacker replays inside autograd.

Every loss here has the generic signature ``loss_fn(params, buffers, inputs, labels) -> Tensor``
(:data:`LossFn`) so that secfed learners, or any caller, can plug their own loss in. Labels may be
hard (int64, shape ``(N,)``) or soft (float probabilities, shape ``(N, C)``): gradient-inversion
attacks that optimise labels jointly with the inputs (DLG, Zhu et al. 2019) need soft labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from attacks.errors import AttackConfigError, AttackInputError

__all__ = [
    "LossFn",
    "soft_cross_entropy",
    "classification_loss",
    "protonet_episode_labels",
    "protonet_episode_loss",
]

#: ``loss_fn(params, buffers, inputs, labels) -> scalar Tensor``; differentiable in all tensor arguments.
LossFn = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Tensor, Tensor], Tensor]


def soft_cross_entropy(*, logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy with hard (class index) or soft (probability vector) targets.

    Args:
        logits: Shape ``(N, C)``.
        labels: Int64 ``(N,)`` class indices, or float ``(N, C)`` probabilities.
        reduction: ``"mean"`` or ``"sum"`` over the N records.

    Returns:
        A scalar tensor.

    Raises:
        AttackInputError: If shapes disagree.
        AttackConfigError: If ``reduction`` is unknown.
    """
    if reduction not in ("mean", "sum"):
        raise AttackConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if logits.ndim != 2:
        raise AttackInputError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    logp = F.log_softmax(logits, dim=-1)
    if labels.is_floating_point():
        if labels.shape != logits.shape:
            raise AttackInputError(
                f"soft labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
            )
        per = -(labels * logp).sum(dim=-1)
    else:
        if labels.shape != logits.shape[:1]:
            raise AttackInputError(
                f"hard labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}"
            )
        per = -logp.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return per.mean() if reduction == "mean" else per.sum()


def _call(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    # Buffers are cloned so that train-mode BatchNorm does not update the caller's running statistics.
    state = {**dict(params), **{k: v.clone() for k, v in buffers.items()}}
    return functional_call(model, state, (x,))


def classification_loss(*, model: nn.Module, reduction: str = "mean") -> LossFn:
    """Supervised cross-entropy of ``model`` as a functional :data:`LossFn`.

    This is the loss of FedAvg local steps and of Reptile / MAML inner steps.

    Args:
        model: The module whose structure is used (its own parameter values are ignored).
        reduction: ``"mean"`` (the usual choice, a public hyperparameter) or ``"sum"``.

    Returns:
        ``loss_fn(params, buffers, inputs, labels)``.

    Raises:
        AttackConfigError: If ``reduction`` is unknown.
    """
    if reduction not in ("mean", "sum"):
        raise AttackConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}")

    def loss_fn(
        params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> Tensor:
        return soft_cross_entropy(
            logits=_call(model, params, buffers, inputs), labels=labels, reduction=reduction
        )

    return loss_fn


def protonet_episode_labels(*, n_way: int, k_shot: int, n_query: int) -> Tensor:
    """Canonical relabelled labels of a ProtoNet episode: support first, then query, class-sorted.

    An episode's labels are relabelled to ``0 .. n_way-1`` and the episode loss is invariant to
    permuting records within the support (or query) set together with their labels, and to
    permuting the class indices. An attacker who knows ``n_way``, ``k_shot`` and ``n_query``
    therefore knows the label layout up to these symmetries, and this canonical layout is
    without loss of generality.

    Args:
        n_way: Classes per episode.
        k_shot: Support records per class.
        n_query: Query records per class.

    Returns:
        Int64 tensor of shape ``(n_way * (k_shot + n_query),)``.

    Raises:
        AttackConfigError: If any count is not positive.
    """
    for name, v in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
        if int(v) < 1:
            raise AttackConfigError(f"{name} must be >= 1, got {v}")
    support = torch.arange(n_way).repeat_interleave(k_shot)
    query = torch.arange(n_way).repeat_interleave(n_query)
    return torch.cat([support, query]).long()


def protonet_episode_loss(*, model: nn.Module, n_way: int, k_shot: int, n_query: int) -> LossFn:
    """The ProtoNet episode loss (Snell et al. 2017) as a functional :data:`LossFn`.

    ``inputs`` holds the ``n_way * k_shot`` support records followed by the ``n_way * n_query``
    query records; ``labels`` holds their episode labels in the same order (hard or soft).
    Prototypes are the (label-weighted) mean support embeddings; logits are negative squared
    Euclidean distances from query embeddings to prototypes; the loss is the mean cross-entropy
    over queries.

    Args:
        model: The embedding network (output flattened to ``(N, D)``).
        n_way: Classes per episode.
        k_shot: Support records per class.
        n_query: Query records per class.

    Returns:
        ``loss_fn(params, buffers, inputs, labels)``.

    Raises:
        AttackConfigError: If any count is not positive.
    """
    protonet_episode_labels(n_way=n_way, k_shot=k_shot, n_query=n_query)  # validates the counts
    n_support = n_way * k_shot
    n_total = n_way * (k_shot + n_query)

    def loss_fn(
        params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> Tensor:
        if inputs.shape[0] != n_total or labels.shape[0] != n_total:
            raise AttackInputError(
                f"a {n_way}-way {k_shot}-shot episode with {n_query} queries per class "
                f"has {n_total} records; "
                f"got {inputs.shape[0]} inputs and {labels.shape[0]} labels"
            )
        emb = _call(model, params, buffers, inputs).flatten(1)
        e_s, e_q = emb[:n_support], emb[n_support:]
        y = labels if labels.is_floating_point() else F.one_hot(labels.long(), n_way).to(emb.dtype)
        y_s, y_q = y[:n_support], y[n_support:]
        protos = (y_s.t() @ e_s) / y_s.sum(dim=0).clamp_min(1e-8).unsqueeze(1)
        logits = -((e_q.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)
        return soft_cross_entropy(logits=logits, labels=y_q, reduction="mean")

    return loss_fn
