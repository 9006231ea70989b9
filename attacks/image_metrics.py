"""Image-quality metrics for reconstructions: MSE, PSNR, SSIM, and optimal matching.

SSIM follows Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004): local statistics under a
Gaussian window (default 11x11, sigma 1.5, shrunk to the image for tiny inputs), constants
``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, averaged over the valid region and over channels.
Reconstructions are matched to originals by the Hungarian algorithm on pairwise MSE, since a
batch reconstruction has no defined order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from attacks.errors import AttackInputError

__all__ = [
    "PSNR_CAP_DB",
    "mse",
    "psnr",
    "ssim",
    "pairwise_mse",
    "match_reconstructions",
    "label_accuracy",
    "as_images",
]

#: PSNR of identical images is infinite; it is capped here so results stay finite (valid JSON).
PSNR_CAP_DB = 100.0


def _t(x: ArrayLike | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _same(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise AttackInputError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")


def as_images(*, batch: ArrayLike | torch.Tensor, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Reshape a batch to ``(N, C, H, W)`` float64.

    Args:
        batch: Records ``(N, ...)``.
        image_shape: ``(C, H, W)`` or ``(H, W)``; default: the records' own shape when it is 2-D or 3-D.

    Returns:
        A float64 tensor of shape ``(N, C, H, W)``.

    Raises:
        AttackInputError: If the records cannot be viewed as images.
    """
    t = _t(batch)
    shape = tuple(image_shape) if image_shape is not None else tuple(t.shape[1:])
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(t.shape[1:]):
        raise AttackInputError(f"records of shape {tuple(t.shape[1:])} cannot be viewed as images {shape}")
    return t.reshape(t.shape[0], *shape)


def mse(*, x: ArrayLike | torch.Tensor, y: ArrayLike | torch.Tensor) -> float:
    """Mean squared error between two arrays of the same shape.

    Args:
        x: First array.
        y: Second array.

    Returns:
        The MSE.

    Raises:
        AttackInputError: If the shapes differ.
    """
    a, b = _t(x), _t(y)
    _same(a, b)
    return float(((a - b) ** 2).mean().item())


def psnr(*, x: ArrayLike | torch.Tensor, y: ArrayLike | torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(L^2 / MSE)`` in dB, capped at :data:`PSNR_CAP_DB`.

    Args:
        x: Reconstruction.
        y: Original.
        data_range: ``L``, the dynamic range of the data (1 for images in [0, 1]).

    Returns:
        PSNR in dB.

    Raises:
        AttackInputError: If the shapes differ or ``data_range <= 0``.
    """
    if not data_range > 0:
        raise AttackInputError(f"data_range must be > 0, got {data_range}")
    m = mse(x=x, y=y)
    if m <= 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * math.log10(data_range**2 / m)))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(
    *,
    x: ArrayLike | torch.Tensor,
    y: ArrayLike | torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> float:
    """Structural similarity of two images (Wang et al. 2004), mean over the valid region and channels.

    The window is shrunk to the largest odd size that fits the image (e.g. 7 for 8x8 images).

    Args:
        x: Image ``(H, W)`` or ``(C, H, W)``.
        y: Image of the same shape.
        data_range: Dynamic range ``L`` of the data.
        window_size: Gaussian window size (odd).
        sigma: Gaussian window standard deviation.

    Returns:
        SSIM in ``[-1, 1]`` (1 for identical images).

    Raises:
        AttackInputError: On shape mismatch, non-image shapes, or bad window parameters.
    """
    a, b = _t(x), _t(y)
    _same(a, b)
    if a.ndim == 2:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.ndim != 3:
        raise AttackInputError(f"ssim expects (H, W) or (C, H, W) images, got shape {tuple(a.shape)}")
    if window_size < 1 or window_size % 2 == 0 or not sigma > 0 or not data_range > 0:
        raise AttackInputError(
            "need an odd window_size >= 1, sigma > 0, data_range > 0; "
            f"got {window_size}, {sigma}, {data_range}"
        )
    h, w = a.shape[-2:]
    size = min(window_size, h if h % 2 else h - 1, w if w % 2 else w - 1)
    if size < 1:
        raise AttackInputError(f"image {h}x{w} too small for SSIM")
    win = _gaussian_window(size, sigma).reshape(1, 1, size, size)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a4, b4 = a.unsqueeze(1), b.unsqueeze(1)  # channels as batch

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win)

    mu_a, mu_b = filt(a4), filt(b4)
    s_aa = filt(a4 * a4) - mu_a**2
    s_bb = filt(b4 * b4) - mu_b**2
    s_ab = filt(a4 * b4) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    return float((num / den).mean().item())


def pairwise_mse(
    *, reconstructions: ArrayLike | torch.Tensor, originals: ArrayLike | torch.Tensor
) -> np.ndarray:
    """Matrix of MSE between every reconstruction (rows) and every original (columns).

    Args:
        reconstructions: ``(M, ...)``.
        originals: ``(N, ...)`` with the same record shape.

    Returns:
        ``(M, N)`` float64 array.

    Raises:
        AttackInputError: If record shapes differ.
    """
    r, o = _t(reconstructions), _t(originals)
    if r.shape[1:] != o.shape[1:]:
        raise AttackInputError(f"record shapes differ: {tuple(r.shape[1:])} vs {tuple(o.shape[1:])}")
    rf, of = r.reshape(r.shape[0], -1), o.reshape(o.shape[0], -1)
    return (((rf.unsqueeze(1) - of.unsqueeze(0)) ** 2).mean(dim=-1)).numpy()


def match_reconstructions(
    *, reconstructions: ArrayLike | torch.Tensor, originals: ArrayLike | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of reconstructions to originals (Hungarian algorithm on MSE).

    Args:
        reconstructions: ``(M, ...)``.
        originals: ``(N, ...)``.

    Returns:
        ``(rows, cols)``: reconstruction ``rows[i]`` is matched to original ``cols[i]``
        (``min(M, N)`` pairs).

    Raises:
        AttackInputError: If record shapes differ.
    """
    cost = pairwise_mse(reconstructions=reconstructions, originals=originals)
    rows, cols = linear_sum_assignment(cost)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def label_accuracy(
    *, predicted: ArrayLike | torch.Tensor, true: ArrayLike | torch.Tensor, rows: np.ndarray, cols: np.ndarray
) -> float:
    """Fraction of matched pairs whose labels agree.

    Args:
        predicted: Labels of the reconstructions.
        true: Labels of the originals.
        rows: Reconstruction indices of the matching.
        cols: Original indices of the matching.

    Returns:
        Accuracy over the matched pairs, in ``[0, 1]``.

    Raises:
        AttackInputError: If the matching is empty or indices are out of range.
    """
    p = np.asarray(_t(predicted).numpy()).astype(np.int64).reshape(-1)
    t = np.asarray(_t(true).numpy()).astype(np.int64).reshape(-1)
    if len(rows) == 0 or len(rows) != len(cols):
        raise AttackInputError("the matching must hold at least one pair and equal-length rows/cols")
    if rows.max() >= len(p) or cols.max() >= len(t):
        raise AttackInputError("matching indices out of range for the label arrays")
    return float(np.mean(p[rows] == t[cols]))
