"""The Omniglot copy embedded in the package: counts, fidelity to the archives, size, config use."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from secfed import components
from secfed.config import config_from_dict, config_to_toml
from secfed.data.errors import DatasetFormatError, DatasetNotFoundError
from secfed.data.omniglot import load_omniglot, load_omniglot_split
from secfed.data.omniglot_embedded import (
    EMBEDDED_ARCHIVES,
    embedded_drawers,
    embedded_omniglot_path,
    load_embedded_omniglot,
    load_embedded_omniglot_split,
)
from secfed.data.pack_omniglot import PACK_KEYS, pack_omniglot
from secfed.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SMALL1, SMALL2 = EMBEDDED_ARCHIVES
SMALL1_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
SMALL2_ALPHABETS = ("Greek", "Japanese_(katakana)", "Latin", "Sanskrit", "Tagalog")
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
REPO = Path(__file__).resolve().parents[3]


def test_counts_of_each_archive_and_the_union() -> None:
    small1 = load_embedded_omniglot(archives=[SMALL1])
    small2 = load_embedded_omniglot(archives=[SMALL2])
    union = load_embedded_omniglot()
    assert tuple(sorted(set(small1.class_groups))) == SMALL1_ALPHABETS
    assert tuple(sorted(set(small2.class_groups))) == SMALL2_ALPHABETS
    assert (small1.num_classes, small1.num_records) == (136, 2720)
    assert (small2.num_classes, small2.num_records) == (156, 3120)
    assert (len(set(union.class_groups)), union.num_classes, union.num_records) == (8, 242, 4840)
    for ds in (small1, small2, union):
        np.testing.assert_array_equal(ds.class_counts(), np.full(ds.num_classes, 20))
        assert ds.images.dtype == np.float32 and ds.images.shape[1:] == (1, 28, 28)
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    # strokes are 1, background 0 (as the archive reader returns them)
    assert float(union.images.mean()) < 0.3


def test_standard_split_is_alphabet_disjoint() -> None:
    train, test = load_embedded_omniglot_split()
    assert tuple(sorted(set(train.class_groups))) == SMALL1_ALPHABETS
    assert tuple(sorted(set(test.class_groups))) == TEST_ALPHABETS
    assert (train.num_classes, test.num_classes) == (136, 106)
    assert not set(train.class_groups) & set(test.class_groups)
    rot, _ = load_embedded_omniglot_split(train_rotations=True)
    assert rot.num_classes == 544 and rot.class_names[1] == "Balinese/character01/rot090"


def test_drawer_ids_are_kept() -> None:
    union = load_embedded_omniglot()
    drawers = embedded_drawers(dataset=union)
    for c in range(union.num_classes):
        np.testing.assert_array_equal(np.sort(drawers[union.labels == c]), np.arange(1, 21))
    with np.load(embedded_omniglot_path(), allow_pickle=False) as npz:
        files = [str(f) for f in npz["files"]]
    assert files == sorted(files) and len(files) == 4840
    assert all(f.count("/") == 2 and f.rsplit("_", 1)[1][:2].isdigit() for f in files)


def test_file_is_small_and_ships_licence_and_provenance() -> None:
    path = embedded_omniglot_path()
    assert path.stat().st_size < 2_000_000
    folder = path.parent
    licence = (folder / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Brenden Lake" in licence
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "Lake" in readme and "Salakhutdinov" in readme and "Tenenbaum" in readme and "Science" in readme
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(PACK_KEYS)


def test_pyproject_ships_the_embedded_files_as_package_data() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["secfed.data"]
    shipped = {p for pattern in patterns for p in (REPO / "secfed" / "data").glob(pattern)}
    folder = embedded_omniglot_path().parent
    assert {folder / "omniglot28.npz", folder / "LICENSE", folder / "README.md"} <= shipped


# ----------------------------------------------------------------- fidelity to the archives
def _same(a, b) -> None:
    assert a.images.tobytes() == b.images.tobytes()  # bit-identical float32 pixels
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_names == b.class_names and a.class_groups == b.class_groups and a.name == b.name


def test_matches_the_archive_reader_bit_for_bit(omniglot_root: Path, omniglot_cache: Path) -> None:
    for archives in ([SMALL1], [SMALL2], [SMALL1, SMALL2]):
        _same(
            load_embedded_omniglot(archives=archives),
            load_omniglot(root=omniglot_root, archives=archives, cache_dir=omniglot_cache),
        )
    for rotations in (False, True):
        embedded = load_embedded_omniglot_split(train_rotations=rotations, test_rotations=rotations)
        official = load_omniglot_split(
            root=omniglot_root,
            train_archives=[SMALL1],
            test_archives=[SMALL2],
            train_rotations=rotations,
            test_rotations=rotations,
            cache_dir=omniglot_cache,
        )
        for a, b in zip(embedded, official, strict=True):
            _same(a, b)


def test_packer_reproduces_the_embedded_file(omniglot_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "omniglot28.npz"
    counts = pack_omniglot(root=omniglot_root, out=out)
    assert counts["alphabets"] == 8 and counts["characters"] == 242 and counts["images"] == 4840
    with (
        np.load(out, allow_pickle=False) as new,
        np.load(embedded_omniglot_path(), allow_pickle=False) as old,
    ):
        assert set(new.files) == set(old.files)
        for key in PACK_KEYS:
            np.testing.assert_array_equal(new[key], old[key], err_msg=key)
    # fixed timestamps and member order: packing twice gives the same bytes
    again = tmp_path / "again.npz"
    pack_omniglot(root=omniglot_root, out=again)
    assert again.read_bytes() == out.read_bytes()


# ----------------------------------------------------------------- bad input
def test_bad_requests_and_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="28x28 only"):
        load_embedded_omniglot(image_size=32)
    with pytest.raises(DatasetNotFoundError, match="images_background'"):
        load_embedded_omniglot(archives=["images_background"])
    with pytest.raises(DatasetFormatError, match="no alphabet beyond"):
        load_embedded_omniglot_split(train_archives=[SMALL2], test_archives=[SMALL1, SMALL2][1:])
    truncated = tmp_path / "bad.npz"
    truncated.write_bytes(embedded_omniglot_path().read_bytes()[:50_000])
    with pytest.raises(DatasetFormatError, match="bad.npz"):
        load_embedded_omniglot(path=truncated)
    wrong_keys = tmp_path / "keys.npz"
    np.savez(wrong_keys, images=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetFormatError, match="keys"):
        load_embedded_omniglot(path=wrong_keys)
    assert zipfile.is_zipfile(embedded_omniglot_path())


# ----------------------------------------------------------------- configuration
def _config(**data: object):
    return config_from_dict(
        {"data": {"dataset": "omniglot", **data}, "partition": {"num_sites": 5}}, base_dir="/nowhere"
    )


@pytest.mark.parametrize("root", [None, "", "embedded"])
def test_config_without_a_path_selects_the_embedded_copy(root: str | None) -> None:
    cfg = _config() if root is None else _config(root=root)
    assert cfg.data.embedded
    train, test = components.load_splits(config=cfg)
    assert (train.num_classes, test.num_classes) == (4 * 136, 106)  # rotations on by default
    assert "omniglot28.npz" in test.source
    # the resolved configuration written to a run directory keeps the name, not a path
    resolved = tomllib.loads(config_to_toml(cfg))["data"]["root"]
    assert resolved == cfg.data.root
    assert config_from_dict(tomllib.loads(config_to_toml(cfg)), base_dir="/elsewhere").data.embedded


def test_config_validation_alphabets_on_the_embedded_copy() -> None:
    cfg = _config(root="embedded", val_alphabets=["Greek"])
    train, _ = components.load_splits(config=cfg)
    val = components.load_validation(config=cfg)
    assert "Greek" not in set(train.class_groups) and set(val.class_groups) == {"Greek"}
    assert val.num_classes == 24  # unrotated, as the test classes (test_rotations = false)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"image_size": 32}, "data.image_size"),
        ({"train_archives": ["images_background"]}, "data.train_archives"),
        ({"test_archives": ["images_evaluation"]}, "data.test_archives"),
    ],
)
def test_config_rejects_what_the_embedded_copy_cannot_serve(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _config(**data)


def test_medmnist_still_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="data.root"):
        config_from_dict({"data": {"dataset": "medmnist"}}, base_dir=".")
