"""MedMNIST ``.npz`` reader (Yang et al., "MedMNIST v2", Scientific Data 2023).

A MedMNIST file holds ``train_images``/``train_labels``, ``val_*`` and ``test_*``: uint8 images
``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB) and integer labels ``(N, 1)``. Only
single-label (multi-class) files are supported; multi-label files such as ChestMNIST raise a
:class:`~secfed.data.errors.DatasetFormatError`. Images become float32 ``(N, C, H, W)`` in
``[0, 1]`` (pixel / 255). The file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["MEDMNIST_SPLITS", "load_medmnist", "load_medmnist_splits"]

MEDMNIST_SPLITS: tuple[str, ...] = ("train", "val", "test")

_KNOWN_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    # MedMNIST v2 PneumoniaMNIST: 0 = normal, 1 = pneumonia (Kermany et al., Cell 2018).
    "pneumoniamnist": ("normal", "pneumonia"),
}


def _labels(raw: np.ndarray, *, where: str) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise DatasetFormatError(
            f"{where}: labels must have shape (N,) or (N, 1) (single-label); got {raw.shape} "
            f"(multi-label MedMNIST files are not supported)"
        )
    if not np.issubdtype(raw.dtype, np.integer):
        raise DatasetFormatError(f"{where}: labels must be integers, got dtype {raw.dtype}")
    if raw.size and int(raw.min()) < 0:
        raise DatasetFormatError(f"{where}: labels must be >= 0, got minimum {int(raw.min())}")
    return raw.astype(np.int64)


def _images(raw: np.ndarray, *, where: str) -> np.ndarray:
    if raw.ndim == 3:
        raw = raw[:, None, :, :]
    elif raw.ndim == 4 and raw.shape[-1] in (1, 3):
        raw = np.transpose(raw, (0, 3, 1, 2))
    else:
        raise DatasetFormatError(
            f"{where}: images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), got {raw.shape}"
        )
    if raw.dtype != np.uint8:
        raise DatasetFormatError(f"{where}: images must be uint8 (0..255), got dtype {raw.dtype}")
    return np.ascontiguousarray(raw, dtype=np.float32) / np.float32(255.0)


def load_medmnist_splits(
    *, path: Path, splits: Sequence[str] = MEDMNIST_SPLITS, class_names: Sequence[str] | None = None
) -> dict[str, ImageDataset]:
    """Read several splits of one MedMNIST file.

    Args:
        path: The ``.npz`` file, e.g. ``pneumoniamnist.npz``.
        splits: Splits to return, each of ``"train"``, ``"val"``, ``"test"``.
        class_names: Names of the classes; default: known names for the file (PneumoniaMNIST:
            ``("normal", "pneumonia")``), else ``"class0"``, ``"class1"``, ... The number of
            classes is ``len(class_names)`` or one more than the largest label in the file.

    Returns:
        ``{split: dataset}`` named ``"<file stem>-<split>"``; class groups equal class names.

    Raises:
        DatasetNotFoundError: If ``path`` is not a file.
        DatasetFormatError: If the file cannot be read, a key is missing, shapes or dtypes are
            wrong, labels exceed ``class_names``, or a split name is unknown.
    """
    path = Path(path)
    bad = [s for s in splits if s not in MEDMNIST_SPLITS]
    if bad or not splits:
        raise DatasetFormatError(
            f"MedMNIST splits must be a non-empty subset of {MEDMNIST_SPLITS}, got {list(splits)}"
        )
    if not path.is_file():
        raise DatasetNotFoundError(f"MedMNIST file {path} does not exist (expected a MedMNIST .npz file)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetFormatError(f"{path}: is a single .npy array, expected a MedMNIST .npz archive")
        with loaded as npz:
            arrays = {key: np.asarray(npz[key]) for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable MedMNIST .npz file ({exc})") from exc

    needed = [f"{s}_{kind}" for s in splits for kind in ("images", "labels")]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise DatasetFormatError(
            f"{path}: missing keys {missing}; a MedMNIST file needs <split>_images and <split>_labels "
            f"(found keys {sorted(arrays)})"
        )
    all_labels = {
        s: _labels(arrays[f"{s}_labels"], where=f"{path}:{s}_labels")
        for s in MEDMNIST_SPLITS
        if f"{s}_labels" in arrays
    }
    max_label = max((int(v.max()) for v in all_labels.values() if v.size), default=0)
    stem = path.stem
    names: tuple[str, ...]
    if class_names is None:
        known = _KNOWN_CLASS_NAMES.get(stem.lower(), ())
        names = known if len(known) > max_label else tuple(f"class{c}" for c in range(max_label + 1))
    else:
        names = tuple(class_names)
        if len(names) <= max_label:
            raise DatasetFormatError(
                f"{path}: labels go up to {max_label} but only {len(names)} class names were given"
            )

    result: dict[str, ImageDataset] = {}
    for split in splits:
        images = _images(arrays[f"{split}_images"], where=f"{path}:{split}_images")
        labels = all_labels[split]
        if images.shape[0] != labels.shape[0]:
            raise DatasetFormatError(
                f"{path}: {split}_images has {images.shape[0]} records but {split}_labels has "
                f"{labels.shape[0]} (must be equal)"
            )
        result[split] = ImageDataset(
            images=images,
            labels=labels,
            class_names=names,
            class_groups=names,
            name=f"{stem}-{split}",
            source=str(path),
        )
    return result


def load_medmnist(*, path: Path, split: str, class_names: Sequence[str] | None = None) -> ImageDataset:
    """Read one split of a MedMNIST file (see :func:`load_medmnist_splits`).

    Args:
        path: The ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_names: Optional class names.

    Returns:
        The split as float32 ``(N, C, H, W)`` in ``[0, 1]`` with int64 labels.

    Raises:
        DatasetNotFoundError: If ``path`` is not a file.
        DatasetFormatError: If the split is unknown or the file is malformed.
    """
    return load_medmnist_splits(path=path, splits=(split,), class_names=class_names)[split]
