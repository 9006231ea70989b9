"""A per-record cache of the scattering features (``model.cache_features``).

The scattering front-end (:mod:`secfed.models.scatter`) is a fixed, public function of each
record: no parameter, no batch statistic, nothing learnt. Computing it once per record when the
data is loaded, instead of at every forward pass, is therefore pure pre-processing: every
gradient, update, noise draw and privacy guarantee is that of the same run without the cache (up
to floating-point rounding: the transform of a record does not depend on what it is batched
with, but FFT libraries may round differently for different batch sizes). Tramèr & Boneh 2021
("Differentially Private Learning Needs Better Features (or Much More Data)", ICLR) train on
precomputed ScatterNet features in the same way.

Where it applies (:func:`featurize`): a site's training inputs (:func:`secfed.components.build_site`
keeps the raw records in ``Site.dataset`` and the features in ``Site.inputs``), the held-out
tasks (:func:`secfed.components.build_test_source`, so validation and test) and the public
pretraining data (:mod:`secfed.pretrain`). :class:`secfed.models.scatter.ScatterModel` accepts
raw records and cached features alike (told apart by shape), so the model, its state dict, its
checkpoints and everything that feeds it raw images (gradient-inversion attacks, the supervised
evaluation) are unchanged.

Pixel-level operations cannot run on features: configurations that need them
(``privacy.augmult > 1``, which shifts pixels) are refused by :func:`secfed.config.validate`.

Features are memoised in this process (a small LRU, bounded in bytes), keyed by a SHA-256 of
the raw images (bytes, dtype and shape) and by every setting the transform reads (``J``, ``L``,
the log scale, the image shape, a version), so different data or a different ``J``, ``L`` or
image size never reuses features.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from secfed.data.dataset import ImageDataset
from secfed.errors import ConfigError
from secfed.models.scatter import ScatterFeatures

__all__ = [
    "FeatureKey",
    "ScatterSettings",
    "clear_feature_memo",
    "feature_key",
    "featurize",
    "featurize_images",
]

#: Bumped whenever the transform's output changes (a stale memo entry can then never match).
_VERSION = 1
#: Records per no-grad batch of the transform.
_BATCH = 256
#: Bytes of features the process-wide memo keeps (least recently used entries are dropped).
_MEMO_BYTES = 1 << 30


@dataclass(frozen=True)
class FeatureKey:
    """What the cached features of a set of images depend on.

    Attributes:
        digest: SHA-256 of the raw images' dtype, shape and bytes.
        shape: Shape of one raw record ``(C, H, W)``.
        J: Scales of the scattering transform.
        L: Orientations.
        log_scale: ``scale`` of ``log(1 + scale |S x|)``.
        version: Version of the featurisation code.
    """

    digest: str
    shape: tuple[int, int, int]
    J: int
    L: int
    log_scale: float
    version: int = _VERSION


_MEMO: OrderedDict[FeatureKey, np.ndarray] = OrderedDict()


def feature_key(*, images: np.ndarray, J: int, L: int, log_scale: float = 10.0) -> FeatureKey:
    """The memo key of ``images`` featurised with ``(J, L, log_scale)``.

    Args:
        images: float32 ``(N, C, H, W)`` raw records.
        J: Scales.
        L: Orientations.
        log_scale: Log-compression scale.

    Returns:
        The key.

    Raises:
        ConfigError: If ``images`` is not a 4-D float32 array.
    """
    arr = np.ascontiguousarray(images)
    if arr.ndim != 4 or arr.dtype != np.float32:
        raise ConfigError(
            f"feature caching needs float32 images (N, C, H, W), got {arr.dtype} with shape {arr.shape}"
        )
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    c, hh, ww = (int(d) for d in arr.shape[1:])
    return FeatureKey(digest=h.hexdigest(), shape=(c, hh, ww), J=int(J), L=int(L), log_scale=float(log_scale))


def clear_feature_memo() -> None:
    """Forget every memoised feature array (tests; freeing memory)."""
    _MEMO.clear()


def featurize_images(*, images: np.ndarray, J: int, L: int, log_scale: float = 10.0) -> np.ndarray:
    """Scattering features of raw records, computed once per (data, settings) in this process.

    The features are exactly what :class:`secfed.models.scatter.ScatterFeatures` returns for
    the same records (it is the same module, run without gradients in batches of 256).

    Args:
        images: float32 ``(N, C, H, W)`` raw records.
        J: Scales of the scattering transform.
        L: Orientations.
        log_scale: Log-compression scale.

    Returns:
        float32 ``(N, C * K, H / 2^J, W / 2^J)``, read-only (shared with the memo).

    Raises:
        ConfigError: On invalid images, ``J``, ``L`` or an image size that is not a multiple of
            ``2^J``.
    """
    key = feature_key(images=images, J=J, L=L, log_scale=log_scale)
    hit = _MEMO.get(key)
    if hit is not None:
        _MEMO.move_to_end(key)
        return hit
    front = ScatterFeatures(input_shape=key.shape, J=key.J, L=key.L, log_scale=key.log_scale)
    out = np.empty((images.shape[0], *front.output_shape), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, images.shape[0], _BATCH):
            chunk = torch.from_numpy(np.array(images[start : start + _BATCH], dtype=np.float32))
            out[start : start + chunk.shape[0]] = front(chunk).numpy()
    out.flags.writeable = False
    _MEMO[key] = out
    while sum(a.nbytes for a in _MEMO.values()) > _MEMO_BYTES and len(_MEMO) > 1:
        _MEMO.popitem(last=False)
    return out


class ScatterSettings(Protocol):
    """The model settings :func:`featurize` reads (``secfed.config.ModelSection`` has them)."""

    @property
    def cache_features(self) -> bool: ...

    @property
    def frontend(self) -> str: ...

    @property
    def scatter_j(self) -> int: ...

    @property
    def scatter_l(self) -> int: ...


def featurize(*, model: ScatterSettings, dataset: ImageDataset) -> ImageDataset:
    """``dataset`` with its records replaced by their scattering features, when configured.

    Args:
        model: The model settings (``config.model``): features are computed when
            ``cache_features`` is true (which :func:`secfed.config.validate` allows only with
            ``frontend = "scatter"``), with ``scatter_j`` and ``scatter_l``.
        dataset: Raw records.

    Returns:
        ``dataset`` itself when caching is off; otherwise a dataset with the same labels,
        classes and groups whose ``images`` are the features ``(N, C * K, H / 2^J, W / 2^J)``
        (no longer pixels in ``[0, 1]``: give it only to task sources and DP samplers that feed
        a :class:`~secfed.models.scatter.ScatterModel`).

    Raises:
        ConfigError: If caching is asked for without the scattering front-end, or the images do
            not fit the transform.
    """
    m = model
    if not m.cache_features:
        return dataset
    if m.frontend != "scatter":
        raise ConfigError(
            f"model.cache_features caches the scattering front-end's output: it needs "
            f"model.frontend = 'scatter', got {m.frontend!r}"
        )
    feats = featurize_images(images=dataset.images, J=m.scatter_j, L=m.scatter_l)
    return ImageDataset(
        images=feats,
        labels=np.array(dataset.labels),
        class_names=dataset.class_names,
        class_groups=dataset.class_groups,
        name=f"{dataset.name}+scatter(J={m.scatter_j},L={m.scatter_l})",
        source=dataset.source,
    )
