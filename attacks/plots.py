"""PNG figures for attack reports (matplotlib's Agg canvas; no global pyplot state is touched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attacks.errors import AttackInputError

__all__ = ["save_image_grid", "save_roc_plot"]


def save_image_grid(
    *,
    path: str | Path,
    rows: Sequence[tuple[str, np.ndarray | torch.Tensor]],
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Save labelled rows of images (e.g. originals above their reconstructions) as one PNG.

    Args:
        path: Output file (``.png``); parent folders are created.
        rows: ``(row title, images (N, C, H, W) or (N, H, W))``; all rows must have the same N.
        value_range: Display range of pixel values.

    Returns:
        The written path.

    Raises:
        AttackInputError: If rows are empty or of different lengths or not images.
    """
    if len(rows) == 0:
        raise AttackInputError("save_image_grid needs at least one row")
    arrays = []
    for title, imgs in rows:
        a = imgs.detach().cpu().numpy() if isinstance(imgs, torch.Tensor) else np.asarray(imgs)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[1] not in (1, 3):
            raise AttackInputError(f"row {title!r}: images must be (N, H, W), (N, 1, H, W) or (N, 3, H, W)")
        arrays.append((title, a))
    n = arrays[0][1].shape[0]
    if any(a.shape[0] != n for _, a in arrays) or n == 0:
        raise AttackInputError("all rows must hold the same, non-zero number of images")
    fig = Figure(figsize=(1.2 * n + 1.0, 1.3 * len(arrays)))
    FigureCanvasAgg(fig)
    lo, hi = value_range
    for r, (title, a) in enumerate(arrays):
        for c in range(n):
            ax = fig.add_subplot(len(arrays), n, r * n + c + 1)
            img = a[c]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=lo, vmax=hi)
            else:
                ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo), 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def save_roc_plot(
    *,
    path: str | Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "Membership inference ROC",
) -> Path:
    """Save ROC curves on log-log axes (Carlini et al. 2022 recommend the low-FPR regime).

    Args:
        path: Output file (``.png``).
        curves: Name to ``(fpr, tpr)`` arrays.
        title: Figure title.

    Returns:
        The written path.

    Raises:
        AttackInputError: If no curve is given or arrays differ in length.
    """
    if len(curves) == 0:
        raise AttackInputError("save_roc_plot needs at least one curve")
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    floor = 1e-5
    for name, (fpr, tpr) in curves.items():
        f, t = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
        if f.shape != t.shape:
            raise AttackInputError(f"curve {name!r}: fpr and tpr differ in length")
        floor = min(floor, float(np.min(f[f > 0])) if np.any(f > 0) else floor)
        ax.plot(np.maximum(f, 1e-12), np.maximum(t, 1e-12), label=name)
    grid = np.logspace(np.log10(floor), 0, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
