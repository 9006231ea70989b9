"""Supervised evaluation of the global classifier on the test split: accuracy, ROC AUC,
sensitivity and specificity with 95 % intervals, pooled and per held-out site.

This is the evaluation MedMNIST and clinical readers use (Yang et al. 2023, "MedMNIST v2",
Scientific Data: ACC and AUC of the model as trained, on the official test split). It sits beside
the client-as-task evaluation of :mod:`secfed.experiment` (which fine-tunes on half of a held-out
site and scores the other half) and answers a different question: how good is the *global* model,
used as is, with no adaptation?

It applies to a learner whose model outputs logits over the dataset's own classes (FedAvg: the
head has one output per class of the training split) on a dataset whose test split holds those
classes (MedMNIST). Episodic learners relabel classes per task and ProtoNet has no head, so their
outputs are not class scores; digits and Omniglot test on classes never trained on.

Metrics (every one from the model's class log-probabilities, computed in float64 so that saturated
probabilities do not become spurious ties):

* **accuracy**: the predicted class (arg-max) equals the label; Wilson score interval
  (Wilson 1927).
* **ROC AUC**: binary data (two classes): the AUC of the positive class's probability (label 1;
  for PneumoniaMNIST 1 = pneumonia), i.e. the Mann–Whitney statistic with ties counted 1/2,
  computed from mid-ranks. More classes: the one-vs-rest macro average over the classes present
  (each class's probability against all other records). 95 % interval: DeLong, DeLong &
  Clarke-Pearson (1988) variance from the placement values (the fast mid-rank form of Sun & Xu
  2014); for the macro average the same placement values are averaged over the classes and their
  variance taken within each true class. The interval is formed on the logit scale and mapped back,
  so it stays inside [0, 1]. When the AUC is exactly 0 or 1 the DeLong variance is 0 and the
  interval collapses to the point: no analytic interval exists there; read it with the record
  counts.
* **sensitivity** (recall of the positive class, true-positive rate) and **specificity** (recall
  of the negative class, true-negative rate) of the arg-max prediction (for two classes the same as
  thresholding the positive probability at 1/2, as MedMNIST does); binary data only; Wilson
  intervals.

A metric that is undefined on a split (an AUC without both classes, a sensitivity without
positives) is ``None``.

The test and validation splits are public evaluation data held by the server: scoring the
released model on them costs no privacy (post-processing of the released model; no training
record is read), which is why these metrics are written and shown under DP too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from secfed.config import supervised_eval_applies
from secfed.data.dataset import ImageDataset
from secfed.errors import ConfigError, DataError

if TYPE_CHECKING:
    from secfed.config import ExperimentConfig

__all__ = [
    "Z95",
    "POSITIVE_LABEL",
    "SUPERVISED_EVAL_CHOICES",
    "AucResult",
    "SupervisedEvaluation",
    "midranks",
    "roc_auc",
    "auc_interval",
    "wilson_interval",
    "score_predictions",
    "predict_log_probs",
    "supervised_eval_applies",
    "supervised_eval_enabled",
    "build_supervised_evaluation",
]

#: Two-sided 95 % normal quantile.
Z95 = 1.959963984540054
#: The positive class of binary data (PneumoniaMNIST: 1 = pneumonia, 0 = normal).
POSITIVE_LABEL = 1
#: Values of ``experiment.supervised_eval``.
SUPERVISED_EVAL_CHOICES: tuple[str, ...] = ("auto", "on", "off")

#: How the keys of :func:`score_predictions` are named in ``metrics.jsonl`` / ``summary.json``
#: (after the ``test_`` or ``val_`` prefix). ``accuracy`` becomes ``supervised_accuracy`` so that
#: it is never confused with the client-as-task ``test_accuracy``.
_KEY_NAMES = {
    "records": "supervised_records",
    "positives": "supervised_positives",
    "accuracy": "supervised_accuracy",
    "accuracy_ci95": "supervised_accuracy_ci95",
    "auc": "auc",
    "auc_ci95": "auc_ci95",
    "sensitivity": "sensitivity",
    "sensitivity_ci95": "sensitivity_ci95",
    "specificity": "specificity",
    "specificity_ci95": "specificity_ci95",
}


# --------------------------------------------------------------------------------------------------
# Statistics (numpy only)
# --------------------------------------------------------------------------------------------------


def _as_scores(scores: Any, *, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} must be finite; found NaN or infinity")
    return arr


def midranks(values: Any) -> np.ndarray:
    """1-based ranks with ties given the average of the ranks they span (mid-ranks).

    Args:
        values: A one-dimensional array of finite numbers.

    Returns:
        float64 ranks, same shape as ``values``.

    Raises:
        DataError: If ``values`` is not one-dimensional or holds NaN / infinity.
    """
    x = _as_scores(values, name="values")
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.concatenate(([True], xs[1:] != xs[:-1]))
    starts = np.flatnonzero(new_group)
    ends = np.concatenate((starts[1:], [n]))
    mid = (starts + ends + 1) / 2.0  # average of the 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mid[np.cumsum(new_group) - 1]
    return ranks


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values from mid-ranks (Sun & Xu 2014).

    ``v10[i]``: fraction of negatives scored below positive ``i`` (ties 1/2); ``v01[j]``: fraction
    of positives scored above negative ``j`` (ties 1/2). Their means are both the AUC.
    """
    m, n = int(positive.sum()), int((~positive).sum())
    r_all = midranks(scores)
    v10 = (r_all[positive] - midranks(scores[positive])) / n
    v01 = 1.0 - (r_all[~positive] - midranks(scores[~positive])) / m
    return v10, v01


@dataclass(frozen=True)
class AucResult:
    """A ROC AUC with its DeLong standard error.

    Attributes:
        auc: The AUC (binary) or the one-vs-rest macro average (more classes).
        se: Its DeLong standard error, or ``None`` when a class has fewer than two records (the
            variance cannot be estimated).
        classes: The classes averaged over (binary: the positive class only).
    """

    auc: float
    se: float | None
    classes: tuple[int, ...]


def _check_labels(labels: Any, *, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise DataError(f"labels must have shape ({n},) to match the scores, got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def roc_auc(*, scores: Any, labels: Any, positive_label: int | None = POSITIVE_LABEL) -> AucResult | None:
    """ROC AUC with DeLong's standard error; binary or one-vs-rest macro.

    Binary (``scores`` one-dimensional): the Mann–Whitney statistic P(score of a record with
    ``labels == positive_label`` > score of another record) + 1/2 P(tie), and DeLong, DeLong &
    Clarke-Pearson (1988)'s variance ``s10^2 / m + s01^2 / n`` of it.

    Multi-class (``scores`` of shape ``(N, K)``, column ``k`` scoring class ``k``): the unweighted
    mean over the classes present in ``labels`` (with at least one record outside them) of the
    one-vs-rest AUC of column ``k``. Its variance: each record's placement values, divided by its
    class-``k`` positive or negative count, are averaged over ``k``; records of the same true class
    are independent and identically distributed given the labels, so the variance is the sum over
    true classes of the within-class sample variance times the class size (for two classes this
    is exactly DeLong's formula).

    Args:
        scores: ``(N,)`` scores of the positive class, or ``(N, K)`` per-class scores (any monotone
            transform of a probability, e.g. its logarithm, gives the same AUC).
        labels: ``(N,)`` integer labels.
        positive_label: The positive class of one-dimensional scores (ignored for ``(N, K)``).

    Returns:
        The AUC and its standard error, or ``None`` when it is undefined (binary: no positive or no
        negative record; multi-class: fewer than two classes present).

    Raises:
        DataError: On mismatched shapes, non-integer or negative labels, non-finite scores, or
            labels beyond the ``K`` columns.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2):
        raise DataError(f"scores must have shape (N,) or (N, K), got {s.shape}")
    y = _check_labels(labels, n=s.shape[0])
    if s.ndim == 1:
        if positive_label is None:
            raise DataError("one-dimensional scores need a positive_label")
        columns = [(_as_scores(s, name="scores"), y == positive_label)]
        classes: tuple[int, ...] = (int(positive_label),)
    else:
        if y.size and int(y.max()) >= s.shape[1]:
            raise DataError(f"label {int(y.max())} has no score column (scores have {s.shape[1]} columns)")
        present = [k for k in range(s.shape[1]) if 0 < int((y == k).sum()) < y.size]
        if len(present) < 2:
            return None
        columns = [(_as_scores(s[:, k], name=f"scores[:, {k}]"), y == k) for k in present]
        classes = tuple(present)
    phi = np.zeros(y.size, dtype=np.float64)
    aucs = []
    for col, pos in columns:
        m, n = int(pos.sum()), int((~pos).sum())
        if m == 0 or n == 0:
            return None
        v10, v01 = _placements(col, pos)
        auc_k = float(v10.mean())
        aucs.append(auc_k)
        phi[pos] += (v10 - auc_k) / m
        phi[~pos] += (v01 - auc_k) / n
    phi /= len(columns)
    strata = [phi[y == c] for c in np.unique(y)] if s.ndim == 2 else [phi[columns[0][1]], phi[~columns[0][1]]]
    se: float | None
    if any(g.size < 2 for g in strata):
        se = None
    else:
        var = sum(g.size / (g.size - 1) * float(((g - g.mean()) ** 2).sum()) for g in strata)
        se = math.sqrt(max(var, 0.0))
    return AucResult(auc=float(np.mean(aucs)), se=se, classes=classes)


def auc_interval(*, auc: float, se: float | None, z: float = Z95) -> tuple[float, float] | None:
    """A 95 % interval for an AUC from its standard error, formed on the logit scale.

    ``logit(AUC) ± z · se / (AUC (1 − AUC))`` mapped back with the logistic function (delta method),
    so the interval stays inside (0, 1) and is asymmetric near 1, where the AUCs of useful
    classifiers lie. At AUC 0 or 1 (the DeLong variance is then 0) it is the point itself.

    Args:
        auc: The AUC, in [0, 1].
        se: Its standard error (``None``: no interval).
        z: The normal quantile (default two-sided 95 %).

    Returns:
        ``(low, high)``, or ``None`` when ``se`` is ``None``.

    Raises:
        DataError: If ``auc`` is outside [0, 1] or ``se`` is negative.
    """
    if not 0.0 <= auc <= 1.0:
        raise DataError(f"auc must be in [0, 1], got {auc}")
    if se is None:
        return None
    if se < 0 or not math.isfinite(se):
        raise DataError(f"se must be a finite number >= 0, got {se}")
    if auc in (0.0, 1.0) or se == 0.0:
        return (auc, auc)
    centre = math.log(auc / (1.0 - auc))
    half = z * se / (auc * (1.0 - auc))

    def expit(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))

    return (expit(centre - half), expit(centre + half))


def wilson_interval(*, successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (Wilson 1927; Brown, Cai & DasGupta 2001).

    Args:
        successes: Count of successes, ``0 <= successes <= trials``.
        trials: Count of trials.
        z: The normal quantile (default two-sided 95 %).

    Returns:
        ``(low, high)``, or ``None`` when ``trials`` is 0.

    Raises:
        DataError: If the counts are negative, not integers, or ``successes > trials``.
    """
    for name, v in (("successes", successes), ("trials", trials)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise DataError(f"{name} must be an integer >= 0, got {v!r}")
    if successes > trials:
        raise DataError(f"successes ({successes}) exceed trials ({trials})")
    if trials == 0:
        return None
    n, p = float(trials), successes / trials
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score_predictions(*, log_probs: Any, labels: Any, positive_label: int = POSITIVE_LABEL) -> dict[str, Any]:
    """Accuracy, ROC AUC, sensitivity and specificity (with 95 % intervals) of class scores.

    Args:
        log_probs: ``(N, K)`` class log-probabilities (or any per-row monotone class scores whose
            arg-max is the prediction and whose column ``k`` ranks records for class ``k``).
        labels: ``(N,)`` integer labels in ``[0, K)``.
        positive_label: The positive class when ``K == 2``.

    Returns:
        ``records``, ``accuracy`` and ``accuracy_ci95`` (``[low, high]``), ``auc`` and
        ``auc_ci95``; for ``K == 2`` also ``positives``, ``sensitivity``, ``specificity`` and
        their ``_ci95``. Undefined values are ``None``.

    Raises:
        DataError: On bad shapes or labels (see :func:`roc_auc`), or ``K < 2``.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] < 2:
        raise DataError(f"log_probs must have shape (N, K) with K >= 2 classes, got {lp.shape}")
    y = _check_labels(labels, n=lp.shape[0])
    if y.size and int(y.max()) >= lp.shape[1]:
        raise DataError(f"label {int(y.max())} is outside the model's {lp.shape[1]} classes")
    pred = np.argmax(lp, axis=1)
    n = int(y.size)
    correct = int((pred == y).sum())
    out: dict[str, Any] = {
        "records": n,
        "accuracy": _ratio(correct, n),
        "accuracy_ci95": _pair(wilson_interval(successes=correct, trials=n)),
    }
    binary = lp.shape[1] == 2
    if binary:
        if positive_label not in (0, 1):
            raise DataError(f"positive_label must be 0 or 1 for two classes, got {positive_label}")
        auc = roc_auc(scores=lp[:, positive_label], labels=y, positive_label=positive_label)
    else:
        auc = roc_auc(scores=lp, labels=y)
    out["auc"] = auc.auc if auc is not None else None
    out["auc_ci95"] = _pair(auc_interval(auc=auc.auc, se=auc.se)) if auc is not None else None
    if binary:
        pos = y == positive_label
        tp, p = int((pred[pos] == positive_label).sum()), int(pos.sum())
        tn, neg = int((pred[~pos] != positive_label).sum()), int((~pos).sum())
        out.update(
            {
                "positives": p,
                "sensitivity": _ratio(tp, p),
                "sensitivity_ci95": _pair(wilson_interval(successes=tp, trials=p)),
                "specificity": _ratio(tn, neg),
                "specificity_ci95": _pair(wilson_interval(successes=tn, trials=neg)),
            }
        )
    return out


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return [float(interval[0]), float(interval[1])] if interval is not None else None


# --------------------------------------------------------------------------------------------------
# The model on a split
# --------------------------------------------------------------------------------------------------


def predict_log_probs(*, model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's class log-probabilities on ``images``, no adaptation, in evaluation mode.

    The model is put in ``eval()`` mode (BatchNorm uses its running statistics, as FedAvg's
    client-as-task evaluation does) and restored afterwards; no gradient is kept and torch's RNG
    is not used.

    Args:
        model: The global model (its ``forward`` returns ``(B, K)`` logits).
        images: ``(N, C, H, W)`` float32 images.
        batch_size: Records per forward pass.

    Returns:
        ``(N, K)`` float64 log-softmax of the logits.

    Raises:
        DataError: If the model does not return ``(B, K)`` logits with ``K >= 2``.
    """
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.array(images[start : start + batch_size], dtype=np.float32))
                logits = model(x)
                if logits.ndim != 2 or logits.shape[1] < 2:
                    raise DataError(
                        f"the supervised evaluation needs (batch, classes) logits with >= 2 classes; "
                        f"{type(model).__name__} returned shape {tuple(logits.shape)}"
                    )
                chunks.append(torch.log_softmax(logits.to(torch.float64), dim=1).numpy())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 2), dtype=np.float64)
    return np.concatenate(chunks)


def _prefixed(split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{split}_{_KEY_NAMES[k]}": v for k, v in metrics.items()}


class SupervisedEvaluation:
    """Scores the global model on the test split (pooled and per held-out site) and validation split."""

    def __init__(
        self,
        *,
        test: ImageDataset,
        sites: Sequence[ImageDataset] = (),
        val: ImageDataset | None = None,
        positive_label: int = POSITIVE_LABEL,
        batch_size: int = 256,
    ) -> None:
        """Hold the evaluation data (public, server-side).

        Args:
            test: The test split (pooled evaluation).
            sites: The held-out sites the test split is partitioned into (the client-as-task
                partition, ``partition.test_sites``); empty = no per-site table.
            val: The validation split, if the dataset has one.
            positive_label: The positive class of binary data.
            batch_size: Records per forward pass.

        Raises:
            DataError: If the splits disagree on the classes or a split is empty.
        """
        for d in (*sites, *([val] if val is not None else [])):
            if d.class_names != test.class_names:
                raise DataError(
                    f"{d.name} has classes {list(d.class_names)}, the test split {list(test.class_names)}"
                )
        if test.num_records == 0:
            raise DataError("the supervised evaluation needs a non-empty test split")
        self.test, self.sites, self.val = test, list(sites), val
        self.positive_label = positive_label
        self.batch_size = batch_size

    @property
    def positive_class(self) -> str | None:
        """Name of the positive class for binary data (else ``None``)."""
        names = self.test.class_names
        return names[self.positive_label] if len(names) == 2 else None

    def _score(self, model: nn.Module, dataset: ImageDataset) -> dict[str, Any]:
        lp = predict_log_probs(model=model, images=dataset.images, batch_size=self.batch_size)
        if lp.shape[1] != self.test.num_classes:
            raise DataError(
                f"the model has {lp.shape[1]} outputs but {dataset.name} has {self.test.num_classes} "
                "classes: the supervised evaluation needs a head over the dataset's classes"
            )
        return score_predictions(log_probs=lp, labels=dataset.labels, positive_label=self.positive_label)

    def evaluate(self, *, model: nn.Module, per_site: bool = True) -> dict[str, Any]:
        """Score ``model`` (unchanged; no adaptation).

        Args:
            model: The global model.
            per_site: Also score each held-out site (``test_supervised_sites``).

        Returns:
            Flat keys for ``metrics.jsonl`` / ``summary.json``: ``test_supervised_accuracy``,
            ``test_auc``, ``test_sensitivity``, ``test_specificity`` (each with ``_ci95`` =
            ``[low, high]``), ``test_supervised_records`` / ``_positives``, the same with ``val_``
            when there is a validation split, and with ``per_site`` a list
            ``test_supervised_sites`` of per-site dicts (``site``, ``records``, ``accuracy``, ...).
        """
        out: dict[str, Any] = _prefixed("test", self._score(model, self.test))
        if self.val is not None:
            out.update(_prefixed("val", self._score(model, self.val)))
        if per_site and self.sites:
            out["test_supervised_sites"] = [{"site": d.name, **self._score(model, d)} for d in self.sites]
        return out

    def description(self) -> dict[str, Any]:
        """Static facts for ``summary.json``: the positive class and the number of classes."""
        return {"supervised_positive_class": self.positive_class, "supervised_classes": self.test.num_classes}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def supervised_eval_enabled(*, config: ExperimentConfig) -> bool:
    """Whether a run computes the supervised evaluation.

    ``experiment.supervised_eval``: ``"auto"`` (the default) = when it applies (FedAvg on MedMNIST,
    see :func:`supervised_eval_applies`), ``"on"`` = always (a configuration where it does not
    apply is refused when loaded), ``"off"`` = never.

    Args:
        config: An :class:`~secfed.config.ExperimentConfig`.

    Returns:
        True when the run computes it.

    Raises:
        ConfigError: If the value is not one of :data:`SUPERVISED_EVAL_CHOICES`, or it is ``"on"``
            where the evaluation does not apply.
    """
    mode = config.experiment.supervised_eval
    if mode not in SUPERVISED_EVAL_CHOICES:
        raise ConfigError(
            f"experiment.supervised_eval = {mode!r} is not allowed; choose one of: "
            f"{', '.join(SUPERVISED_EVAL_CHOICES)}"
        )
    if mode == "off":
        return False
    reason = supervised_eval_applies(learner=config.learner.name, dataset=config.data.dataset)
    if mode == "on" and reason is not None:
        raise ConfigError(f"experiment.supervised_eval = 'on' does not apply: {reason}")
    return reason is None


def _validation_split(path: Path) -> ImageDataset | None:
    from secfed.data.medmnist import load_medmnist

    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
    if not {"val_images", "val_labels"} <= keys:
        return None
    return load_medmnist(path=path, split="val")


def build_supervised_evaluation(
    *, config: ExperimentConfig, test: ImageDataset, test_source: Any
) -> SupervisedEvaluation | None:
    """The run's supervised evaluation, or ``None`` when ``experiment.supervised_eval`` is off for it.

    Args:
        config: The run's :class:`~secfed.config.ExperimentConfig`.
        test: The test split.
        test_source: The client-as-task test source; its held-out sites (``.sites``, one per
            ``partition.test_sites``) give the per-site table.

    Returns:
        The evaluation, or ``None``.

    Raises:
        ConfigError: See :func:`supervised_eval_enabled`.
        secfed.errors.DataError: If the data cannot be read.
    """
    if not supervised_eval_enabled(config=config):
        return None
    sites = [s.dataset for s in getattr(test_source, "sites", [])]
    val = _validation_split(Path(config.data_root())) if config.data.dataset == "medmnist" else None
    return SupervisedEvaluation(test=test, sites=sites, val=val)
