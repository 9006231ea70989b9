"""MedMNIST reader on the shared PneumoniaMNIST file and on malformed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secfed.data import DatasetFormatError, DatasetNotFoundError, load_medmnist, load_medmnist_splits

# class counts of the shared file (README): train reduced to 388 / 3494, val and test official
EXPECTED = {"train": (3882, [388, 3494]), "val": (524, [135, 389]), "test": (624, [234, 390])}


def test_pneumonia_splits(pneumonia_npz: Path) -> None:
    splits = load_medmnist_splits(path=pneumonia_npz)
    assert set(splits) == {"train", "val", "test"}
    for split, (n, counts) in EXPECTED.items():
        ds = splits[split]
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int64
        assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
        np.testing.assert_array_equal(ds.class_counts(), counts)
        assert ds.class_names == ("normal", "pneumonia") and ds.name == f"pneumoniamnist-{split}"
    with np.load(pneumonia_npz, allow_pickle=False) as raw:
        np.testing.assert_allclose(splits["val"].images[:, 0] * 255, raw["val_images"], atol=1e-3)


def test_single_split(pneumonia_npz: Path) -> None:
    ds = load_medmnist(path=pneumonia_npz, split="test")
    assert ds.num_records == 624
    with pytest.raises(DatasetFormatError, match="splits must be"):
        load_medmnist(path=pneumonia_npz, split="validation")


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "absent.npz")):
        load_medmnist(path=tmp_path / "absent.npz", split="train")


def test_malformed_files(tmp_path: Path) -> None:
    imgs = np.zeros((4, 28, 28), np.uint8)
    lbls = np.array([[0], [1], [2], [1]], np.uint8)
    only_train = _write(tmp_path / "a.npz", train_images=imgs, train_labels=lbls)
    with pytest.raises(DatasetFormatError, match=r"missing keys \['test_images', 'test_labels'\]"):
        load_medmnist(path=only_train, split="test")
    ds = load_medmnist(path=only_train, split="train")
    assert ds.num_classes == 3 and ds.class_names == ("class0", "class1", "class2")
    rgb = _write(tmp_path / "rgb.npz", train_images=np.zeros((4, 28, 28, 3), np.uint8), train_labels=lbls)
    assert load_medmnist(path=rgb, split="train").input_shape == (3, 28, 28)
    multi = _write(tmp_path / "m.npz", train_images=imgs, train_labels=np.zeros((4, 14), np.uint8))
    with pytest.raises(DatasetFormatError, match="multi-label"):
        load_medmnist(path=multi, split="train")
    mismatch = _write(tmp_path / "n.npz", train_images=imgs, train_labels=lbls[:3])
    with pytest.raises(DatasetFormatError, match="4 records but train_labels has 3"):
        load_medmnist(path=mismatch, split="train")
    floats = _write(tmp_path / "f.npz", train_images=imgs.astype(np.float64), train_labels=lbls)
    with pytest.raises(DatasetFormatError, match="uint8"):
        load_medmnist(path=floats, split="train")
    with pytest.raises(DatasetFormatError, match="only 2 class names"):
        load_medmnist(path=only_train, split="train", class_names=("a", "b"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetFormatError, match="not a readable"):
        load_medmnist(path=tmp_path / "junk.npz", split="train")
    np.save(tmp_path / "single.npy", imgs)
    with pytest.raises(DatasetFormatError, match="single .npy"):
        load_medmnist(path=tmp_path / "single.npy", split="train")
