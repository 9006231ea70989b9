"""load_dataset dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from secfed.data import (
    DATASET_NAMES,
    DatasetFormatError,
    DatasetNotFoundError,
    InsufficientDataError,
    load_dataset,
)
from secfed.errors import DataError


def test_digits_returns_everything_for_any_split() -> None:
    for split in ("all", "train", "test"):
        ds = load_dataset(name="digits", root=None, split=split)
        assert ds.num_records == 1797 and ds.num_classes == 10


def test_omniglot_splits(omniglot_root: Path, omniglot_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECFED_CACHE", str(omniglot_cache))
    train = load_dataset(name="omniglot", root=str(omniglot_root), split="train", rotations=True)
    test = load_dataset(name="omniglot", root=omniglot_root, split="test", rotations=False)
    assert train.num_classes == 544 and test.num_classes == 106
    assert not set(train.class_groups) & set(test.class_groups)
    with pytest.raises(InsufficientDataError, match=r"needs at least 5 classes with >= 21 records"):
        load_dataset(name="omniglot", root=omniglot_root, split="test", min_classes=5, min_per_class=21)


def test_medmnist_from_folder_or_file(pneumonia_npz: Path) -> None:
    by_folder = load_dataset(name="medmnist", root=pneumonia_npz.parent, split="val")
    by_file = load_dataset(name="medmnist", root=pneumonia_npz, split="val")
    assert by_folder.num_records == by_file.num_records == 524
    with pytest.raises(InsufficientDataError, match=r"3 classes .* only 2 of its 2 classes qualify"):
        load_dataset(name="medmnist", root=pneumonia_npz, split="val", min_classes=3)
    with pytest.raises(InsufficientDataError) as info:
        load_dataset(name="medmnist", root=pneumonia_npz, split="val", min_classes=2, min_per_class=200)
    assert str(pneumonia_npz) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": "cifar", "root": None, "split": "train"}, DatasetFormatError, "unknown dataset 'cifar'"),
        ({"name": "digits", "root": None, "split": "val"}, DatasetFormatError, "digits split"),
        ({"name": "medmnist", "root": None, "split": "train"}, DatasetNotFoundError, "needs a data root"),
        ({"name": "omniglot", "root": None, "split": "val"}, DatasetFormatError, "omniglot split"),
        (
            {"name": "omniglot", "root": "embedded", "split": "train", "image_size": 32},
            DatasetFormatError,
            "28x28 only",
        ),
        (
            {"name": "omniglot", "root": "", "split": "test", "omniglot_variant": "full"},
            DatasetFormatError,
            "'small' split only",
        ),
        (
            {"name": "omniglot", "root": "/nonexistent/omni", "split": "train"},
            DatasetNotFoundError,
            "/nonexistent/omni",
        ),
        ({"name": "omniglot", "root": "/tmp", "split": "val"}, DatasetFormatError, "omniglot split"),
        (
            {"name": "medmnist", "root": "/nonexistent/x.npz", "split": "train"},
            DatasetNotFoundError,
            "/nonexistent/x.npz",
        ),
        ({"name": "medmnist", "root": "/tmp", "split": "dev"}, DatasetFormatError, "medmnist split"),
    ],
)
def test_bad_requests(kwargs: dict, error: type[DataError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        load_dataset(**kwargs)


def test_names_constant() -> None:
    assert DATASET_NAMES == ("digits", "omniglot", "medmnist")


def test_medmnist_missing_file_in_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "pneumoniamnist.npz")):
        load_dataset(name="medmnist", root=tmp_path, split="train")
