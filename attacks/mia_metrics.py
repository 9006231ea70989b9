"""Membership-inference metrics: ROC, AUC, balanced accuracy, TPR at low FPR (Carlini et al. 2022).

Scores follow one convention everywhere in :mod:`attacks`: higher means "more likely a member".
Carlini et al. ("Membership Inference Attacks From First Principles", IEEE S&P 2022) argue that
average-case metrics hide what matters and that TPR at a low FPR (0.1 %, 1 %) on log-log ROC
curves must be reported; a TPR at FPR ``f`` is only resolvable with at least ``1/f`` non-members
(:attr:`MIAMetrics.fpr_resolution` says how fine the measured FPR grid is).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from attacks.errors import AttackInputError
from attacks.plots import save_roc_plot

__all__ = ["MIAMetrics", "roc_curve", "tpr_at_fpr", "mia_metrics", "save_mia_roc"]


def _scores_and_labels(scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member)
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise AttackInputError("is_member must be boolean or 0/1")
        m = m.astype(bool)
    m = m.reshape(-1)
    if s.shape != m.shape:
        raise AttackInputError(f"scores ({s.size}) and is_member ({m.size}) differ in length")
    if not np.isfinite(s).all():
        raise AttackInputError("scores must be finite (map +-inf to large finite values first)")
    if m.all() or not m.any():
        raise AttackInputError("need at least one member and one non-member")
    return s, m


def roc_curve(*, scores: ArrayLike, is_member: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of the rule "member iff score >= t" over every distinct score t (ties handled exactly).

    Args:
        scores: One score per record (higher = member).
        is_member: Ground-truth membership.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` with threshold ``+inf`` and ending at ``(1, 1)``.

    Raises:
        AttackInputError: On length mismatch, non-finite scores, or a single class.
    """
    s, m = _scores_and_labels(scores, is_member)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, m_sorted = s[order], m[order]
    tp = np.cumsum(m_sorted)
    fp = np.cumsum(~m_sorted)
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]  # last index of each tie group
    tpr = np.r_[0.0, tp[last] / m.sum()]
    fpr = np.r_[0.0, fp[last] / (~m).sum()]
    thr = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thr


def tpr_at_fpr(*, fpr: ArrayLike, tpr: ArrayLike, target: float) -> float:
    """Largest TPR among ROC points whose FPR does not exceed ``target``.

    Args:
        fpr: ROC false-positive rates.
        tpr: ROC true-positive rates.
        target: The FPR budget, in ``[0, 1]``.

    Returns:
        The TPR.

    Raises:
        AttackInputError: If ``target`` is outside ``[0, 1]`` or arrays differ in length.
    """
    f, t = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if f.shape != t.shape:
        raise AttackInputError("fpr and tpr differ in length")
    if not 0.0 <= target <= 1.0:
        raise AttackInputError(f"target FPR must lie in [0, 1], got {target}")
    ok = f <= target + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


@dataclass
class MIAMetrics:
    """Summary of one membership-inference attack.

    Attributes:
        auc: Area under the ROC curve (0.5 = chance; ties count one half).
        balanced_accuracy: ``max_t (TPR + TNR) / 2`` over thresholds.
        best_threshold: The threshold attaining it.
        tpr_at_fpr: TPR at each FPR budget, keyed by the budget as a string (e.g. ``"0.001"``).
        num_members: Members scored.
        num_nonmembers: Non-members scored.
        fpr_resolution: ``1 / num_nonmembers``: smaller FPR budgets cannot be resolved.
        fpr: ROC false-positive rates (not in :meth:`to_dict` unless asked).
        tpr: ROC true-positive rates.
    """

    auc: float
    balanced_accuracy: float
    best_threshold: float
    tpr_at_fpr: dict[str, float]
    num_members: int
    num_nonmembers: int
    fpr_resolution: float
    fpr: np.ndarray = dataclasses.field(repr=False, default_factory=lambda: np.zeros(0))
    tpr: np.ndarray = dataclasses.field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self, *, include_curve: bool = False) -> dict[str, Any]:
        """JSON-serialisable form.

        Args:
            include_curve: Also include the ROC arrays.

        Returns:
            A dict of plain Python values.
        """
        out: dict[str, Any] = {
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "best_threshold": self.best_threshold if np.isfinite(self.best_threshold) else None,
            "tpr_at_fpr": dict(self.tpr_at_fpr),
            "num_members": self.num_members,
            "num_nonmembers": self.num_nonmembers,
            "fpr_resolution": self.fpr_resolution,
        }
        if include_curve:
            out["fpr"] = self.fpr.tolist()
            out["tpr"] = self.tpr.tolist()
        return out


def mia_metrics(
    *, scores: ArrayLike, is_member: ArrayLike, fpr_targets: Sequence[float] = (0.001, 0.01)
) -> MIAMetrics:
    """ROC AUC, balanced accuracy and TPR at low FPR of a membership score (Carlini et al. 2022).

    Args:
        scores: One score per record (higher = member).
        is_member: Ground-truth membership (scoring side only).
        fpr_targets: FPR budgets at which to report the TPR.

    Returns:
        The metrics (with the ROC arrays attached for plotting).

    Raises:
        AttackInputError: On malformed inputs.
    """
    fpr, tpr, thr = roc_curve(scores=scores, is_member=is_member)
    m = np.asarray(is_member).astype(bool).reshape(-1)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoid rule: ties count one half
    bal = (1.0 + tpr - fpr) / 2.0
    best = int(np.argmax(bal))
    return MIAMetrics(
        auc=auc,
        balanced_accuracy=float(bal[best]),
        best_threshold=float(thr[best]),
        tpr_at_fpr={repr(float(f)): tpr_at_fpr(fpr=fpr, tpr=tpr, target=float(f)) for f in fpr_targets},
        num_members=int(m.sum()),
        num_nonmembers=int((~m).sum()),
        fpr_resolution=1.0 / float((~m).sum()),
        fpr=fpr,
        tpr=tpr,
    )


def save_mia_roc(
    *, path: str | Path, results: Mapping[str, MIAMetrics], title: str = "Membership inference ROC"
) -> Path:
    """Log-log ROC plot of several attacks, the AUC and TPR@0.1 % in the legend.

    Args:
        path: Output ``.png`` path.
        results: Attack name to metrics (from :func:`mia_metrics`).
        title: Figure title.

    Returns:
        The written path.

    Raises:
        AttackInputError: If ``results`` is empty.
    """
    curves = {}
    for name, r in results.items():
        low = r.tpr_at_fpr.get("0.001")
        label = f"{name} (AUC {r.auc:.3f}" + (f", TPR@0.1% {100 * low:.1f}%)" if low is not None else ")")
        curves[label] = (r.fpr, r.tpr)
    return save_roc_plot(path=path, curves=curves, title=title)
