"""Per-record statistics of secfed models for membership inference and canary audits.

A membership attack needs, for each record of interest, how confidently a model classifies it
(Carlini et al. 2022: the logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` and the true-class
probability ``p_y``). What "classifies" means depends on the learner:

* FedAvg (global head over the training classes): the model's own logits on the record, with its
  global label. One query per record.
* Few-shot learners (ProtoNet, MAML, FOMAML, Reptile; and FedAvg at the client level, whose
  test-time classifier is a head fitted on support embeddings): the record is a **query of a
  few-shot episode** whose support set comes from *other* records: ``n_way`` classes including the
  record's own class, ``shots`` support records per class drawn from a support pool that never
  contains the record itself. The learner's own ``predict`` adapts on the support set (ProtoNet:
  the prototypes are the support means, so the record is scored by its distance to the mean of
  ``shots`` other records of its class; MAML / Reptile: ``test_inner_steps`` fine-tuning steps)
  and returns the record's ``n_way`` logits. Each record is queried in ``passes`` independent
  episodes (the query axis of :func:`attacks.mia.lira`).

The episodes are drawn once from a public seed (:func:`plan_query_episodes`) and reused for every
model (target and references), so differences between models are not differences of episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.errors import AttackConfigError, AttackInputError
from attacks.mia import logit_scaled_confidence, true_class_probability
from secfed.learners.base import Learner
from secfed.learners.common import training_mode

__all__ = ["QueryEpisode", "RecordStats", "plan_query_episodes", "episode_statistics", "head_statistics"]


@dataclass(frozen=True)
class QueryEpisode:
    """One scoring episode.

    Attributes:
        pass_index: Which pass (query column) the episode fills.
        classes: The episode's global classes in episode-label order.
        support: Indices into the support pool, ``shots`` per class in class order.
        queries: Indices into the query set (records of the episode's own classes).
    """

    pass_index: int
    classes: tuple[int, ...]
    support: np.ndarray
    queries: np.ndarray


@dataclass
class RecordStats:
    """Statistics of the query records under one model.

    Attributes:
        phi: Logit-scaled confidence ``(N, passes)``.
        prob: True-class probability ``(N, passes)``.
    """

    phi: np.ndarray
    prob: np.ndarray

    @property
    def loss(self) -> np.ndarray:
        """Cross-entropy ``-log p_y`` ``(N, passes)`` (probabilities floored at 1e-30)."""
        return -np.log(np.maximum(self.prob, 1e-30))


def _classes_with(labels: np.ndarray, exclude: set[int]) -> list[int]:
    return sorted({int(c) for c in np.unique(labels)} - exclude)


def plan_query_episodes(
    *,
    query_labels: np.ndarray,
    support_labels: np.ndarray,
    query_in_support: np.ndarray | None,
    n_way: int,
    shots: int,
    passes: int,
    seed: int,
) -> list[QueryEpisode]:
    """Episodes in which every query record is queried exactly once per pass, never supporting itself.

    Per pass the query classes are shuffled into groups of ``n_way`` (the last group is filled
    with other support classes as distractors, whose records are not queried there); each class
    gets ``shots`` support records. A query record drawn as support of its own episode is queried
    in a repair episode with the same classes and a support set drawn without it.

    Args:
        query_labels: Global labels of the query records ``(N,)``.
        support_labels: Global labels of the support pool ``(S,)``.
        query_in_support: For each query record, its index in the support pool, or -1 (``None``:
            the sets are disjoint).
        n_way: Classes per episode.
        shots: Support records per class.
        passes: Queries per record.
        seed: Seed of the episode draw (public; non-cryptographic is fine).

    Returns:
        The episodes.

    Raises:
        AttackConfigError: If counts are not positive or the pool has too few classes/records.
    """
    ql = np.asarray(query_labels, dtype=np.int64)
    sl = np.asarray(support_labels, dtype=np.int64)
    if n_way < 2 or shots < 1 or passes < 1:
        raise AttackConfigError(f"need n_way >= 2, shots >= 1, passes >= 1; got {n_way}, {shots}, {passes}")
    self_idx = (
        np.full(ql.size, -1, dtype=np.int64)
        if query_in_support is None
        else np.asarray(query_in_support, dtype=np.int64)
    )
    if self_idx.shape != ql.shape:
        raise AttackInputError("query_in_support must have one entry per query record")
    pool_classes = _classes_with(sl, set())
    q_classes = _classes_with(ql, set())
    missing = sorted(set(q_classes) - set(pool_classes))
    if missing:
        raise AttackInputError(f"query classes {missing[:5]} have no records in the support pool")
    if len(pool_classes) < n_way:
        raise AttackConfigError(
            f"scoring episodes need {n_way} classes but the support pool holds {len(pool_classes)}"
        )
    by_class = {c: np.flatnonzero(sl == c) for c in pool_classes}
    thin = [c for c, idx in by_class.items() if idx.size < shots + 1]
    if thin:
        raise AttackConfigError(
            f"classes {thin[:5]} have fewer than shots + 1 = {shots + 1} support-pool records; "
            "lower the shots"
        )
    rng = np.random.default_rng(seed)
    episodes: list[QueryEpisode] = []

    def draw(classes: tuple[int, ...], avoid: set[int]) -> np.ndarray:
        parts = []
        for c in classes:
            cand = np.array([i for i in by_class[c] if int(i) not in avoid], dtype=np.int64)
            parts.append(rng.choice(cand, size=shots, replace=False))
        return np.concatenate(parts)

    for p in range(passes):
        order = [int(c) for c in rng.permutation(np.asarray(q_classes))]
        for g in range(0, len(order), n_way):
            own = order[g : g + n_way]
            others = [c for c in pool_classes if c not in own]
            fill = (
                [int(c) for c in rng.choice(others, size=n_way - len(own), replace=False)]
                if len(own) < n_way
                else []
            )
            classes = tuple(int(c) for c in rng.permutation(np.asarray(own + fill)))
            support = draw(classes, set())
            chosen = {int(i) for i in support}
            queries = np.flatnonzero(np.isin(ql, own))
            clash = np.array([q for q in queries if int(self_idx[q]) in chosen], dtype=np.int64)
            keep = np.setdiff1d(queries, clash)
            if keep.size:
                episodes.append(QueryEpisode(pass_index=p, classes=classes, support=support, queries=keep))
            if clash.size:
                avoid = {int(self_idx[q]) for q in clash}
                episodes.append(
                    QueryEpisode(pass_index=p, classes=classes, support=draw(classes, avoid), queries=clash)
                )
    return episodes


def episode_statistics(
    *,
    learner: Learner,
    model: nn.Module,
    support_x: torch.Tensor,
    support_labels: np.ndarray,
    query_x: torch.Tensor,
    query_labels: np.ndarray,
    episodes: list[QueryEpisode],
    passes: int,
) -> RecordStats:
    """Score every query record as a query of its few-shot episodes with the learner's ``predict``.

    Args:
        learner: The run's learner.
        model: The model to score.
        support_x: Support-pool inputs ``(S, *input_shape)``.
        support_labels: Global labels of the support pool.
        query_x: Query inputs ``(N, *input_shape)``.
        query_labels: Global labels of the queries.
        episodes: From :func:`plan_query_episodes` (with the same labels).
        passes: Number of passes in ``episodes``.

    Returns:
        ``phi`` and ``prob`` of shape ``(N, passes)``.

    Raises:
        AttackInputError: If a query record is not covered by every pass.
    """
    n = int(query_x.shape[0])
    phi = np.full((n, passes), np.nan)
    prob = np.full((n, passes), np.nan)
    sl = np.asarray(support_labels, dtype=np.int64)
    ql = np.asarray(query_labels, dtype=np.int64)
    for ep in episodes:
        local = {c: i for i, c in enumerate(ep.classes)}
        s_idx = torch.from_numpy(ep.support)
        s_y = torch.tensor([local[int(c)] for c in sl[ep.support]], dtype=torch.int64)
        q_y = np.array([local[int(c)] for c in ql[ep.queries]], dtype=np.int64)
        logits = learner.predict(
            model=model,
            support_x=support_x[s_idx],
            support_y=s_y,
            n_way=len(ep.classes),
            query_x=query_x[torch.from_numpy(ep.queries)],
        )
        z = logits.detach().double().cpu().numpy()
        phi[ep.queries, ep.pass_index] = logit_scaled_confidence(logits=z, labels=q_y)
        prob[ep.queries, ep.pass_index] = true_class_probability(logits=z, labels=q_y)
    if np.isnan(phi).any():
        raise AttackInputError("some query records were not scored in every pass")
    return RecordStats(phi=phi, prob=prob)


def head_statistics(
    *, model: nn.Module, x: torch.Tensor, labels: np.ndarray, batch: int = 512
) -> RecordStats:
    """Score records by the model's own classification head (FedAvg's global classes), eval mode.

    Args:
        model: A model whose outputs are logits over the global classes.
        x: Inputs ``(N, *input_shape)``.
        labels: Global labels ``(N,)``.
        batch: Records per forward pass.

    Returns:
        ``phi`` and ``prob`` of shape ``(N, 1)``.

    Raises:
        AttackInputError: If a label exceeds the head.
    """
    y = np.asarray(labels, dtype=np.int64)
    outs = []
    with training_mode(model, train=False), torch.no_grad():
        for i in range(0, int(x.shape[0]), batch):
            outs.append(model(x[i : i + batch]).double().cpu().numpy())
    z = np.concatenate(outs) if outs else np.zeros((0, 1))
    if z.ndim != 2 or (y.size and int(y.max()) >= z.shape[1]):
        raise AttackInputError(f"labels up to {int(y.max()) if y.size else -1} do not fit {z.shape} logits")
    return RecordStats(
        phi=logit_scaled_confidence(logits=z, labels=y)[:, None],
        prob=true_class_probability(logits=z, labels=y)[:, None],
    )
