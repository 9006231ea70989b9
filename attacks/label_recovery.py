"""Analytic label recovery from the last layer of an observed gradient or update.

For softmax cross-entropy, the gradient of one record's loss w.r.t. the last layer's bias is
``p - onehot(y)`` and w.r.t. its weight rows ``(p_i - y_i) h`` with ``h`` the penultimate features.
Only the true class has a negative entry (``p_y - 1 < 0``); with non-negative features (ReLU) the
whole true row is non-positive. iDLG (Zhao et al. 2020, "iDLG: Improved Deep Leakage from
Gradients") reads a single record's label from this sign. For a batch, the classes with negative
entries are the labels present (Yin et al. 2021, "See through Gradients"); we spread the batch over
them in proportion to the negative mass (a heuristic; exact when labels are distinct).

For a multi-step update of a single record, every step's bias gradient has the same sign pattern,
so the label is still exact; the observation's ``sign`` (``-1`` for ``new - old``) is undone first.

The negative-entry rule fails for batches with repeated labels (with two classes at most one bias
entry is negative, since the entries sum to zero). :func:`label_counts_by_simulation` estimates the
label counts instead, in the spirit of Geng et al. 2021 ("Towards General Deep Leakage in Federated
Learning"): the bias observation is (close to) linear in the labels, ``b = b_0 - w (n - B/C)``,
where the unknown mean prediction ``b_0`` and per-record weight ``w`` are measured by replaying the
public observation model on random inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from attacks.errors import AttackInputError
from attacks.observation import ObservationModel

__all__ = ["find_last_layer", "idlg_label", "batch_labels_from_last_layer", "label_counts_by_simulation"]


def find_last_layer(*, observed: Mapping[str, Tensor], num_classes: int) -> tuple[str, str | None]:
    """Name of the last classification layer's weight (and bias) in an observation.

    Picks the last 2-D entry whose first dimension is ``num_classes`` (dict order follows
    ``named_parameters``), and the bias as the following 1-D entry of length ``num_classes``.

    Args:
        observed: Observation by parameter name.
        num_classes: Number of output classes.

    Returns:
        ``(weight_name, bias_name or None)``.

    Raises:
        AttackInputError: If there is no such layer (e.g. a ProtoNet embedding network).
    """
    names = list(observed)
    w_idx = None
    for i, n in enumerate(names):
        t = observed[n]
        if t.ndim == 2 and t.shape[0] == num_classes:
            w_idx = i
    if w_idx is None:
        raise AttackInputError(
            f"no 2-D parameter with {num_classes} output rows in the observation: "
            "cannot recover labels analytically"
        )
    bias = None
    if w_idx + 1 < len(names):
        t = observed[names[w_idx + 1]]
        if t.ndim == 1 and t.shape[0] == num_classes:
            bias = names[w_idx + 1]
    return names[w_idx], bias


def _class_signal(observed: Mapping[str, Tensor], num_classes: int, sign: float, source: str) -> Tensor:
    if source not in ("auto", "bias", "weight"):
        raise AttackInputError(f"source must be 'auto', 'bias' or 'weight', got {source!r}")
    w_name, b_name = find_last_layer(observed=observed, num_classes=num_classes)
    if source == "bias" and b_name is None:
        raise AttackInputError("source='bias' but the last layer has no bias in the observation")
    if b_name is not None and source in ("auto", "bias"):
        sig = observed[b_name].detach().double()
    else:
        sig = observed[w_name].detach().double().sum(dim=1)
    return float(sign) * sig


def idlg_label(
    *, observed: Mapping[str, Tensor], num_classes: int, sign: float = 1.0, source: str = "auto"
) -> int:
    """Recover a single record's label from the sign of the last-layer gradient (iDLG, Zhao et al. 2020).

    Args:
        observed: Observation (gradient or update) by parameter name.
        num_classes: Number of output classes.
        sign: ``+1`` for gradients, ``-1`` for ``new - old`` updates.
        source: ``"bias"``, ``"weight"`` (row sums, the iDLG rule; needs non-negative features) or
            ``"auto"`` (bias when present).

    Returns:
        The recovered class index.

    Raises:
        AttackInputError: If no classification layer is found.
    """
    sig = _class_signal(observed, num_classes, sign, source)
    return int(torch.argmin(sig).item())


def batch_labels_from_last_layer(
    *,
    observed: Mapping[str, Tensor],
    num_classes: int,
    num_records: int,
    sign: float = 1.0,
    source: str = "auto",
) -> Tensor:
    """Recover a batch's multiset of labels from the negative entries of the last layer (Yin et al. 2021).

    Classes with a negative entry are present. When there are at least as many such classes as
    records, the ``num_records`` most negative ones are returned; otherwise records are allotted
    to the present classes in proportion to their negative mass (largest remainder, each present
    class at least once). With one record this is iDLG.

    Args:
        observed: Observation by parameter name.
        num_classes: Number of output classes.
        num_records: Records in the batch.
        sign: ``+1`` for gradients, ``-1`` for ``new - old`` updates.
        source: See :func:`idlg_label`.

    Returns:
        Int64 tensor of ``num_records`` labels (sorted by class; order is arbitrary).

    Raises:
        AttackInputError: If no classification layer is found or ``num_records < 1``.
    """
    if num_records < 1:
        raise AttackInputError(f"num_records must be >= 1, got {num_records}")
    sig = _class_signal(observed, num_classes, sign, source).cpu().numpy()
    order = np.argsort(sig, kind="stable")
    neg = [int(c) for c in order if sig[c] < 0]
    if not neg:
        neg = [int(order[0])]
    if len(neg) >= num_records:
        return torch.tensor(sorted(neg[:num_records]), dtype=torch.long)
    mass = np.array([-sig[c] for c in neg], dtype=np.float64)
    mass = mass / mass.sum() if mass.sum() > 0 else np.full(len(neg), 1.0 / len(neg))
    extra = num_records - len(neg)
    raw = mass * extra
    counts = np.floor(raw).astype(np.int64)
    rem = extra - int(counts.sum())
    for j in np.argsort(-(raw - counts), kind="stable")[:rem]:
        counts[j] += 1
    labels: list[int] = []
    for c, k in zip(neg, counts, strict=True):
        labels.extend([c] * (1 + int(k)))
    return torch.tensor(sorted(labels), dtype=torch.long)


def _round_counts(raw: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to ``total`` closest to ``raw`` (largest remainder)."""
    x = np.clip(raw, 0.0, None)
    x = x / x.sum() * total if x.sum() > 0 else np.full(raw.shape, total / raw.size)
    counts = np.floor(x).astype(np.int64)
    for j in np.argsort(-(x - counts), kind="stable")[: total - int(counts.sum())]:
        counts[j] += 1
    return counts


def label_counts_by_simulation(
    *,
    observation: ObservationModel,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    observed: Mapping[str, Tensor],
    num_records: int,
    num_classes: int,
    input_shape: tuple[int, ...],
    box: tuple[float, float] = (0.0, 1.0),
    draws: int = 4,
    seed: int = 0,
) -> Tensor:
    """Estimate a batch's label multiset from the last-layer bias by replaying the observation model.

    With uniform soft labels on random inputs the replay gives ``b_0`` (the bias observation when
    every class is equally likely); with every record labelled ``c`` it gives the response to the
    labels. Assuming equal per-record weight, ``n = B/C + (b_0 - b_obs) / w``, rounded to
    non-negative integers summing to B. Averaged over ``draws`` random input batches. Works for
    gradients, multi-step updates (sign and scale are replayed) and equal-size aggregates.

    Args:
        observation: The public observation model.
        params: Global parameters.
        buffers: Global buffers.
        observed: The observation.
        num_records: B.
        num_classes: C.
        input_shape: Shape of one record.
        box: Input domain for the random inputs.
        draws: Random input batches to average over.
        seed: Seed of the random inputs.

    Returns:
        Int64 tensor of B labels, sorted by class.

    Raises:
        AttackInputError: If the last layer has no bias in the observation.
    """
    _, b_name = find_last_layer(observed=observed, num_classes=num_classes)
    if b_name is None:
        raise AttackInputError("label counting needs the last layer's bias in the observation")
    gen = torch.Generator().manual_seed(int(seed))
    dev = observed[b_name].device
    lo, hi = box
    b0 = torch.zeros(num_classes, dtype=torch.float64)
    w = 0.0
    for _ in range(draws):
        x = (lo + (hi - lo) * torch.rand((num_records, *input_shape), generator=gen)).to(dev)
        uniform = torch.full((num_records, num_classes), 1.0 / num_classes, device=dev)
        base = (
            observation.observe(params=params, buffers=buffers, inputs=x, labels=uniform)[b_name]
            .double()
            .cpu()
        )
        resp = torch.zeros(num_classes, dtype=torch.float64)
        for c in range(num_classes):
            onehot = torch.zeros((num_records, num_classes), device=dev)
            onehot[:, c] = 1.0
            out = observation.observe(params=params, buffers=buffers, inputs=x, labels=onehot)[b_name]
            # All B records move from 1/C to 1 on class c: response per record and unit of label mass.
            resp[c] = (out.double().cpu()[c] - base[c]) / (num_records * (1.0 - 1.0 / num_classes))
        b0 += base / draws
        w += float(resp.mean()) / draws
    if w == 0.0:
        raise AttackInputError("the bias observation does not respond to the labels: cannot count labels")
    raw = num_records / num_classes + (observed[b_name].detach().double().cpu() - b0) / w
    counts = _round_counts(raw.numpy(), num_records)
    return torch.tensor(np.repeat(np.arange(num_classes), counts), dtype=torch.long)
