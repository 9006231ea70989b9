"""scikit-learn digits loader."""

from __future__ import annotations

import numpy as np

from secfed.data import load_digits_dataset


def test_digits_shape_range_and_classes() -> None:
    ds = load_digits_dataset()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.float32
    assert ds.labels.shape == (1797,) and ds.labels.dtype == np.int64
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0  # pixel / 16
    assert ds.num_classes == 10 and ds.class_names == tuple(str(d) for d in range(10))
    assert ds.class_groups[3] == "three"
    counts = ds.class_counts()
    assert counts.sum() == 1797 and counts.min() >= 170
    # values are multiples of 1/16 (the original 0..16 grid)
    np.testing.assert_allclose(ds.images * 16, np.round(ds.images * 16))
