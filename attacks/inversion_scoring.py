"""Scoring a gradient-inversion reconstruction against the private batch (the scoring side only).

:func:`score_inversion` matches reconstructions to originals (Hungarian matching) and reports
MSE, PSNR, SSIM and label accuracy; :func:`save_inversion_grid` draws the matched pairs. Only this
side reads the :class:`~attacks.inversion_types.GroundTruth`; the attack (:mod:`attacks.inversion`)
never does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.errors import AttackInputError
from attacks.image_metrics import as_images, label_accuracy, match_reconstructions, psnr, ssim
from attacks.image_metrics import mse as mse_metric
from attacks.inversion_types import GroundTruth, InversionResult
from attacks.plots import save_image_grid

__all__ = ["InversionScore", "score_inversion", "save_inversion_grid"]


@dataclass
class InversionScore:
    """How close a reconstruction came to the private batch (scoring side only).

    Attributes:
        mse: Mean MSE over matched pairs.
        psnr: Mean PSNR (dB) over matched pairs.
        ssim: Mean SSIM over matched pairs (``None`` when records are not images).
        label_accuracy: Label agreement over matched pairs (``None`` when labels were public).
        flat_baseline_psnr: Mean PSNR of the best flat image (each original's own mean value): a
            reconstruction below this carries no more than the average brightness.
        per_record: Per matched pair: reconstruction index, original index, mse, psnr, ssim.
        num_reconstructed: Records reconstructed.
        num_original: Records in the ground truth.
    """

    mse: float
    psnr: float
    ssim: float | None
    label_accuracy: float | None
    flat_baseline_psnr: float
    per_record: list[dict[str, Any]] = field(default_factory=list)
    num_reconstructed: int = 0
    num_original: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


def _pairs(result: InversionResult, truth: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    if tuple(result.reconstruction.shape[1:]) != tuple(truth.inputs.shape[1:]):
        raise AttackInputError(
            f"reconstruction records {tuple(result.reconstruction.shape[1:])} differ from ground truth "
            f"{tuple(truth.inputs.shape[1:])}"
        )
    return match_reconstructions(reconstructions=result.reconstruction, originals=truth.inputs)


def score_inversion(
    *, result: InversionResult, truth: GroundTruth, image_shape: tuple[int, ...] | None = None
) -> InversionScore:
    """Score a reconstruction against the private batch after optimal (Hungarian) matching.

    Args:
        result: Output of :func:`run_inversion`.
        truth: The private batch.
        image_shape: ``(C, H, W)`` to view flat records as images for SSIM (default: the record shape
            when it is 2-D or 3-D; otherwise SSIM is skipped).

    Returns:
        The score.

    Raises:
        AttackInputError: If shapes are inconsistent.
    """
    if not isinstance(result, InversionResult) or not isinstance(truth, GroundTruth):
        raise AttackInputError("score_inversion needs an InversionResult and a GroundTruth")
    rows, cols = _pairs(result, truth)
    rng = float(result.box[1] - result.box[0])
    rec = result.reconstruction.detach().double()
    org = truth.inputs.detach().double()
    images = None
    try:
        images = (
            as_images(batch=rec, image_shape=image_shape),
            as_images(batch=org, image_shape=image_shape),
        )
    except AttackInputError:
        if image_shape is not None:
            raise
    per: list[dict[str, Any]] = []
    base: list[float] = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        entry: dict[str, Any] = {
            "reconstruction": int(r),
            "original": int(c),
            "mse": mse_metric(x=rec[r], y=org[c]),
            "psnr": psnr(x=rec[r], y=org[c], data_range=rng),
            "ssim": None,
        }
        if images is not None:
            entry["ssim"] = ssim(x=images[0][r], y=images[1][c], data_range=rng)
        per.append(entry)
        base.append(psnr(x=torch.full_like(org[c], float(org[c].mean())), y=org[c], data_range=rng))
    lab = None
    if result.label_source != "known":
        lab = label_accuracy(predicted=result.labels, true=truth.labels, rows=rows, cols=cols)
    return InversionScore(
        mse=float(np.mean([p["mse"] for p in per])),
        psnr=float(np.mean([p["psnr"] for p in per])),
        ssim=float(np.mean([p["ssim"] for p in per])) if images is not None else None,
        label_accuracy=lab,
        flat_baseline_psnr=float(np.mean(base)),
        per_record=per,
        num_reconstructed=int(result.reconstruction.shape[0]),
        num_original=int(truth.inputs.shape[0]),
    )


def save_inversion_grid(
    *,
    path: str | Path,
    result: InversionResult,
    truth: GroundTruth,
    image_shape: tuple[int, ...] | None = None,
) -> Path:
    """PNG with the originals in the top row and their matched reconstructions below (scoring side).

    Args:
        path: Output ``.png`` path.
        result: Output of :func:`run_inversion`.
        truth: The private batch.
        image_shape: ``(C, H, W)`` to view flat records as images.

    Returns:
        The written path.

    Raises:
        AttackInputError: If records cannot be viewed as images.
    """
    rows, cols = _pairs(result, truth)
    rec = as_images(batch=result.reconstruction, image_shape=image_shape)[rows]
    org = as_images(batch=truth.inputs, image_shape=image_shape)[cols]
    return save_image_grid(
        path=path,
        rows=[("original", org), (f"{result.config.method} reconstruction", rec)],
        value_range=result.box,
    )
