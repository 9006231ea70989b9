"""Every membership-inference variant on one level's replica statistics (:mod:`attacks.secfed_mia` uses it).

The replicas of a run (records or sites as candidates, :func:`independent_masks` deciding who is in
which replica) give per-candidate statistics (:class:`LevelStats`); :func:`evaluate_level` runs
each attack of :mod:`attacks.mia` with every replica as the target in turn and the others as its
references, and pools the scores: loss and confidence thresholds (Yeom et al. 2018), LiRA online
and offline with global and per-example variance (Carlini et al. 2022), RMIA offline (Zarifzadeh
et al. 2024, ``a =`` :data:`RMIA_OFFLINE_A`). Nothing here touches the secfed runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.errors import AttackConfigError
from attacks.mia import confidence_attack, lira, loss_attack, rmia
from attacks.mia_metrics import MIAMetrics, mia_metrics

__all__ = ["LevelStats", "RMIA_OFFLINE_A", "evaluate_level", "independent_masks"]

#: RMIA's offline approximation parameter (the paper tunes it; here fixed).
RMIA_OFFLINE_A = 0.3


@dataclass
class LevelStats:
    """Statistics of every replica (model) on every candidate, with known membership.

    Attributes:
        masks: Boolean ``(K, N)``: candidate n was in replica k's training data.
        phi: Logit-scaled confidences ``(K, N, A)`` (A queries per candidate).
        prob: True-class probabilities ``(K, N, A)``.
        pop_prob: Probabilities of the population records ``(K, Z)`` (mean over queries), or None.
    """

    masks: np.ndarray
    phi: np.ndarray
    prob: np.ndarray
    pop_prob: np.ndarray | None


def _need(mask_refs: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    return (mask_refs.sum(axis=0) >= n_in) & ((~mask_refs).sum(axis=0) >= n_out)


def _variants() -> dict[str, tuple[int, int]]:
    """Attack name -> (IN, OUT) reference models every record needs."""
    return {
        "loss": (0, 0),
        "confidence": (0, 0),
        "lira_online_global": (1, 1),
        "lira_online_per_example": (2, 2),
        "lira_offline_global": (0, 1),
        "lira_offline_per_example": (0, 2),
        "lira_offline_global_logpdf": (0, 1),
        "rmia_offline": (0, 1),
    }


def _score(name: str, level: LevelStats, t: int, refs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    phi_t = level.phi[t][keep]
    phi_r = level.phi[refs][:, keep]
    m_r = level.masks[refs][:, keep]
    if name == "loss":
        return loss_attack(losses=-np.log(np.maximum(level.prob[t][keep], 1e-30)))
    if name == "confidence":
        return confidence_attack(confidences=level.prob[t][keep])
    if name.startswith("lira"):
        mode = "online" if "online" in name else "offline"
        variance = "per_example" if "per_example" in name else "global"
        offline_score = "logpdf" if name.endswith("logpdf") else "one_sided"
        return lira(
            target_stats=phi_t,
            reference_stats=phi_r,
            reference_in_mask=m_r,
            mode=mode,
            variance=variance,
            offline_score=offline_score,
        )
    assert level.pop_prob is not None
    return rmia(
        target_probs=level.prob[t][keep].mean(axis=1),
        reference_probs=level.prob[refs][:, keep].mean(axis=2),
        reference_in_mask=m_r,
        population_target_probs=level.pop_prob[t],
        population_reference_probs=level.pop_prob[refs],
        mode="offline",
        offline_a=RMIA_OFFLINE_A,
    )


def evaluate_level(level: LevelStats, *, rmia_ok: bool) -> tuple[dict[str, MIAMetrics], dict[str, Any]]:
    """Every attack with every replica as the target in turn (the others as references), pooled.

    A candidate enters a variant for a target only when the target's references include the IN /
    OUT models the variant needs; with independent masks (:func:`independent_masks`) that
    selection does not depend on the candidate's membership in the target.

    Args:
        level: The replicas' statistics and masks.
        rmia_ok: Whether population probabilities exist for RMIA.

    Returns:
        ``(metrics by attack, {"skipped": reasons, "evaluated": candidates per target})``.
    """
    k = level.masks.shape[0]
    metrics: dict[str, MIAMetrics] = {}
    info: dict[str, Any] = {"skipped": {}, "evaluated": {}}
    for name, (n_in, n_out) in _variants().items():
        if name == "rmia_offline" and not rmia_ok:
            info["skipped"][name] = "no population of known non-members at this level"
            continue
        scores, labels, counts = [], [], []
        for t in range(k):
            refs = np.array([r for r in range(k) if r != t])
            keep = _need(level.masks[refs], n_in, n_out)
            counts.append(int(keep.sum()))
            if not keep.any():
                continue
            scores.append(_score(name, level, t, refs, keep))
            labels.append(level.masks[t][keep])
        pooled = np.concatenate(labels) if labels else np.zeros(0, dtype=bool)
        if pooled.size == 0 or pooled.all() or not pooled.any():
            info["skipped"][name] = (
                f"no target has records with {n_in} IN and {n_out} OUT reference models; "
                "train more references"
            )
            continue
        s = np.concatenate(scores)
        s = np.nan_to_num(s, nan=0.0, posinf=1e300, neginf=-1e300)
        metrics[name] = mia_metrics(scores=s, is_member=pooled)
        info["evaluated"][name] = counts
    return metrics, info


def independent_masks(
    *, num_models: int, labels: np.ndarray, seed: int, min_in: int = 1, max_tries: int = 1000
) -> np.ndarray:
    """Inclusion masks: every candidate joins every replica independently with probability 1/2.

    Each row (replica) is redrawn until it keeps every class of ``labels`` and at least ``min_in``
    candidates, independently of the other rows. Rows are therefore independent, so with every
    replica serving in turn as the target, its reference models' IN/OUT counts for a record do not
    depend on whether the record is in the target. Per-record balanced masks (each record IN for
    exactly half of the models, as LiRA's training script draws them) would tie the two together
    under leave-one-out evaluation: a member of the target then has one IN reference fewer and one
    OUT reference more than a non-member, which with a handful of references biases the fitted
    Gaussians (measured here: online LiRA AUC 0.44 on a model trained at epsilon = 1).

    Args:
        num_models: Replicas.
        labels: Class of every candidate (records), or any constant array (sites).
        seed: Seed (the attacker's own choice, non-cryptographic).
        min_in: Fewest candidates a replica keeps.
        max_tries: Redraws per row before giving up.

    Returns:
        Boolean ``(num_models, len(labels))``.

    Raises:
        AttackConfigError: If some row cannot satisfy the constraints.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    rows = []
    for _ in range(num_models):
        for _ in range(max_tries):
            row = rng.random(labels.size) < 0.5
            if row.sum() >= min_in and np.unique(labels[row]).size == classes.size:
                rows.append(row)
                break
        else:
            raise AttackConfigError("could not draw inclusion masks that keep every class in every replica")
    return np.stack(rows)
