"""ImageDataset: validation, subsets, class selection, summary."""

from __future__ import annotations

import re

import numpy as np
import pytest

from secfed.data import DatasetFormatError, ImageDataset
from secfed.errors import DataError


def _arrays(n: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).random((n, 1, 2, 2)).astype(np.float32)
    labels = (np.arange(n) % classes).astype(np.int64)
    return images, labels


def _names(k: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(k))


def test_properties_and_summary(make_dataset) -> None:
    ds = make_dataset([3, 5, 0, 2])
    assert ds.num_classes == 4 and ds.num_records == 10 and len(ds) == 10
    assert ds.input_shape == (1, 4, 4)
    np.testing.assert_array_equal(ds.class_counts(), [3, 5, 0, 2])
    summary = ds.summary()
    assert summary["records"] == 10 and summary["classes"] == 4
    assert summary["min_per_class"] == 0 and summary["max_per_class"] == 5
    assert summary["groups"] == 2 and summary["input_shape"] == [1, 4, 4]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda im, lb: (im.astype(np.float64), lb), "float32"),
        (lambda im, lb: (im[:, 0], lb), "float32"),
        (lambda im, lb: (im, lb.astype(np.int32)), "int64"),
        (lambda im, lb: (im, lb[:-1]), "must be equal"),
        (lambda im, lb: (im, np.where(lb == 2, 3, lb)), "labels must lie in [0, 3)"),
        (lambda im, lb: (im, np.where(lb == 2, -1, lb)), "labels must lie in [0, 3)"),
    ],
)
def test_construction_validates(mutate, fragment) -> None:
    images, labels = mutate(*_arrays())
    with pytest.raises(DatasetFormatError, match=re.escape(fragment)) as info:
        ImageDataset(images=images, labels=labels, class_names=_names(3), class_groups=_names(3), name="bad")
    assert "dataset 'bad'" in str(info.value)


def test_names_and_groups_must_agree() -> None:
    images, labels = _arrays()
    with pytest.raises(DataError, match="3 class names but 2 class groups"):
        ImageDataset(images=images, labels=labels, class_names=_names(3), class_groups=_names(2), name="x")
    with pytest.raises(DataError, match="unique"):
        ImageDataset(
            images=images, labels=labels, class_names=("a", "a", "b"), class_groups=_names(3), name="x"
        )


def test_arrays_are_read_only_but_callers_arrays_are_not() -> None:
    images, labels = _arrays()
    ds = ImageDataset(images=images, labels=labels, class_names=_names(3), class_groups=_names(3), name="x")
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        ds.labels[0] = 0
    images[0, 0, 0, 0] = 0.5  # the caller's own array stays writable
    assert images.flags.writeable


def test_subset_keeps_classes_and_order(make_dataset) -> None:
    ds = make_dataset([2, 2, 2])
    sub = ds.subset(indices=np.array([5, 0, 3]))
    np.testing.assert_array_equal(sub.labels, [2, 0, 1])
    np.testing.assert_array_equal(sub.images[:, 0, 0, 0], ds.images[[5, 0, 3], 0, 0, 0])
    assert sub.class_names == ds.class_names and sub.num_classes == 3
    assert sub.subset(indices=np.array([], dtype=np.int64)).num_records == 0
    with pytest.raises(DatasetFormatError, match=r"\[0, 6\)"):
        ds.subset(indices=[0, 6])
    with pytest.raises(DatasetFormatError, match="1-D integer"):
        ds.subset(indices=np.array([0.5]))


def test_select_classes_relabels_densely(make_dataset) -> None:
    ds = make_dataset([1, 2, 3, 4])
    sel = ds.select_classes(classes=[3, 1])
    assert sel.class_names == ("c3", "c1") and sel.class_groups == ("g1", "g1")
    np.testing.assert_array_equal(sel.class_counts(), [4, 2])
    # records of old class 3 are now label 0, old class 1 label 1, pixels carried along
    old = ds.images[:, 0, 0, 0]
    for new_label, old_label in enumerate([3, 1]):
        np.testing.assert_array_equal(
            np.sort(sel.images[sel.labels == new_label, 0, 0, 0]), np.sort(old[ds.labels == old_label])
        )
    with pytest.raises(DatasetFormatError, match="repeated"):
        ds.select_classes(classes=[1, 1])
    with pytest.raises(DatasetFormatError, match=r"\[4\] are not in \[0, 4\)"):
        ds.select_classes(classes=[4])
    with pytest.raises(DatasetFormatError, match="at least one"):
        ds.select_classes(classes=[])


def test_select_groups(make_dataset) -> None:
    ds = make_dataset([1, 2, 3, 4])
    sel = ds.select_groups(groups=["g0"])
    assert sel.class_names == ("c0", "c2")
    np.testing.assert_array_equal(sel.class_counts(), [1, 3])
    with pytest.raises(DatasetFormatError, match=r"\['nope'\] not found"):
        ds.select_groups(groups=["nope"])
