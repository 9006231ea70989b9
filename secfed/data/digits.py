"""scikit-learn's embedded handwritten digits (no download).

1,797 greyscale 8x8 images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak 1998), shipped inside scikit-learn. Pixel values 0..16 are scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from secfed.data.dataset import ImageDataset

__all__ = ["load_digits_dataset"]

_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits_dataset() -> ImageDataset:
    """Load the digits as an :class:`ImageDataset`.

    Class ``c`` is the digit ``c``: ``class_names[c] == str(c)`` and ``class_groups[c]`` is the
    digit's English name (``"zero"`` ...). There is no predefined train/test split; callers split
    by class with :meth:`ImageDataset.select_classes` (few-shot) or by record.

    Returns:
        Dataset with images float32 ``(1797, 1, 8, 8)`` in ``[0, 1]`` (pixel / 16) and labels
        int64 in ``[0, 10)``.
    """
    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageDataset(
        images=np.ascontiguousarray(images),
        labels=labels,
        class_names=tuple(str(d) for d in range(10)),
        class_groups=_DIGIT_NAMES,
        name="digits",
        source="sklearn.datasets.load_digits",
    )
