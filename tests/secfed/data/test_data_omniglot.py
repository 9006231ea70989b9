"""Omniglot reader on the shared small archives, extracted folders and malformed inputs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from secfed.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    find_omniglot_archives,
    load_omniglot,
    load_omniglot_split,
    load_omniglot_standard_split,
)
from secfed.errors import DataError

SMALL1 = "images_background_small1"
SMALL2 = "images_background_small2"
SMALL1_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")


@pytest.fixture(scope="module")
def small1(omniglot_root: Path, omniglot_cache: Path):
    return load_omniglot(root=omniglot_root, archives=[SMALL1], cache_dir=omniglot_cache)


def test_small1_counts_and_layout(small1) -> None:
    assert small1.images.shape == (2720, 1, 28, 28) and small1.images.dtype == np.float32
    assert small1.num_classes == 136
    np.testing.assert_array_equal(small1.class_counts(), np.full(136, 20))
    assert tuple(sorted(set(small1.class_groups))) == SMALL1_ALPHABETS
    assert small1.class_names[0] == "Balinese/character01"
    assert all(
        name.split("/")[0] == group
        for name, group in zip(small1.class_names, small1.class_groups, strict=True)
    )


def test_small1_pixels_are_inverted_strokes(small1) -> None:
    images = small1.images
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    # strokes are 1 and the background 0: the ink covers a minority of each image and the
    # image border (background in Omniglot) is empty
    ink = images.mean(axis=(1, 2, 3))
    assert 0.01 < float(np.median(ink)) < 0.3
    border = np.concatenate(
        [images[:, 0, 0, :], images[:, 0, -1, :], images[:, 0, :, 0], images[:, 0, :, -1]], 1
    )
    assert float(border.mean()) < 0.02


def test_rotations_add_rotated_classes(omniglot_root: Path, omniglot_cache: Path, small1) -> None:
    rot = load_omniglot(root=omniglot_root, archives=[SMALL1], rotations=True, cache_dir=omniglot_cache)
    assert rot.num_classes == 544 and rot.num_records == 4 * 2720
    np.testing.assert_array_equal(rot.class_counts(), np.full(544, 20))
    assert rot.class_names[:4] == tuple(f"Balinese/character01/rot{a:03d}" for a in (0, 90, 180, 270))
    base = small1.images[small1.labels == 0][:, 0]
    for k in range(4):
        np.testing.assert_array_equal(rot.images[rot.labels == k][:, 0], np.rot90(base, k=k, axes=(1, 2)))


def test_union_dedupes_shared_alphabets(omniglot_root: Path, omniglot_cache: Path) -> None:
    both = load_omniglot(root=omniglot_root, archives=[SMALL1, SMALL2], cache_dir=omniglot_cache)
    assert len(set(both.class_groups)) == 8 and both.num_classes == 242 and both.num_records == 4840
    assert len(set(both.class_names)) == 242
    assert find_omniglot_archives(root=omniglot_root) == (SMALL1, SMALL2)


def test_standard_split_is_alphabet_disjoint(omniglot_root: Path, omniglot_cache: Path) -> None:
    train, test = load_omniglot_standard_split(root=omniglot_root, cache_dir=omniglot_cache)
    assert tuple(sorted(set(test.class_groups))) == TEST_ALPHABETS
    assert test.num_classes == 106 and test.num_records == 2120
    assert train.num_classes == 136 and tuple(sorted(set(train.class_groups))) == SMALL1_ALPHABETS
    assert not set(train.class_groups) & set(test.class_groups)
    assert (train.name, test.name) == ("omniglot-train", "omniglot-test")
    rot_train, rot_test = load_omniglot_standard_split(
        root=omniglot_root, variant="small", train_rotations=True, cache_dir=omniglot_cache
    )
    assert rot_train.num_classes == 544 and rot_test.num_classes == 106


def test_alphabet_filters(omniglot_root: Path, omniglot_cache: Path) -> None:
    greek = load_omniglot(
        root=omniglot_root, archives=[SMALL1], alphabets=["Greek"], cache_dir=omniglot_cache
    )
    assert set(greek.class_groups) == {"Greek"} and greek.num_classes == 24
    rest = load_omniglot(
        root=omniglot_root, archives=[SMALL1], exclude_alphabets=["Greek"], cache_dir=omniglot_cache
    )
    assert "Greek" not in rest.class_groups and rest.num_classes == 136 - 24
    with pytest.raises(DatasetFormatError, match=r"\['Klingon'\] are not in .*available"):
        load_omniglot(root=omniglot_root, archives=[SMALL1], alphabets=["Klingon"], cache_dir=omniglot_cache)
    with pytest.raises(DatasetFormatError, match="leave no alphabet"):
        load_omniglot(
            root=omniglot_root, archives=[SMALL1], alphabets=["Greek"], exclude_alphabets=["Greek"],
            cache_dir=omniglot_cache,
        )  # fmt: skip


def _extract(zip_path: Path, dest: Path, alphabets: tuple[str, ...]) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        members = [m for m in zf.namelist() if m.split("/")[1:2] and m.split("/")[1] in alphabets]
        zf.extractall(dest, members=members)


def test_reads_extracted_folder_like_the_zip(omniglot_root: Path, tmp_path: Path, small1) -> None:
    _extract(omniglot_root / f"{SMALL1}.zip", tmp_path, ("Greek", "Latin"))
    folder = load_omniglot(root=tmp_path, cache=False)
    assert folder.source == str(tmp_path / SMALL1)
    expected = small1.select_groups(groups=["Greek", "Latin"])
    assert folder.class_names == expected.class_names and folder.num_classes == 24 + 26
    np.testing.assert_array_equal(folder.labels, expected.labels)
    np.testing.assert_array_equal(folder.images, expected.images)


def test_cache_is_written_reused_and_rebuilt_when_corrupt(
    omniglot_root: Path, tmp_path: Path, png_bytes
) -> None:
    # work on a copy in a folder of its own so the test controls the only archive
    _extract(omniglot_root / f"{SMALL1}.zip", tmp_path / "data", ("Greek",))
    cache = tmp_path / "cache"
    first = load_omniglot(root=tmp_path / "data", cache_dir=cache)
    files = list((cache / "omniglot").glob("*.npz"))
    assert len(files) == 1
    second = load_omniglot(root=tmp_path / "data", cache_dir=cache)
    np.testing.assert_array_equal(first.images, second.images)
    files[0].write_bytes(b"not an npz")
    third = load_omniglot(root=tmp_path / "data", cache_dir=cache)
    np.testing.assert_array_equal(first.images, third.images)
    with np.load(files[0], allow_pickle=False) as npz:  # rebuilt, pickle-free
        assert npz["images"].shape == (first.num_records, 28, 28)
    # changing a file changes the key: a new cache entry, not stale data
    png = sorted((tmp_path / "data" / SMALL1 / "Greek" / "character01").glob("*.png"))[0]
    png.write_bytes(png_bytes(np.zeros((105, 105), np.uint8)))
    load_omniglot(root=tmp_path / "data", cache_dir=cache)
    assert len(list((cache / "omniglot").glob("*.npz"))) == 2


def test_no_cache_writes_nothing(
    omniglot_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _extract(omniglot_root / f"{SMALL1}.zip", tmp_path / "data", ("Latin",))
    monkeypatch.setenv("SECFED_CACHE", str(tmp_path / "envcache"))
    load_omniglot(root=tmp_path / "data", cache=False)
    assert not (tmp_path / "envcache").exists()
    load_omniglot(root=tmp_path / "data")  # default cache root comes from SECFED_CACHE
    assert len(list((tmp_path / "envcache" / "omniglot").glob("*.npz"))) == 1


def test_image_size_option(tmp_path: Path, omniglot_root: Path) -> None:
    _extract(omniglot_root / f"{SMALL1}.zip", tmp_path, ("Latin",))
    full = load_omniglot(root=tmp_path, image_size=105, cache=False)
    assert full.input_shape == (1, 105, 105)
    assert set(np.unique(full.images)) <= {0.0, 1.0}  # 1-bit originals, no resampling
    with pytest.raises(DataError, match="image_size"):
        load_omniglot(root=tmp_path, image_size=0, cache=False)


# ------------------------------------------------------------------------------ malformed inputs
def test_missing_root_and_archive_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nowhere")):
        load_omniglot(root=tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="no Omniglot archives"):
        load_omniglot(root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"images_evaluation\.zip"):
        load_omniglot(root=tmp_path, archives=["images_evaluation"])


def test_wrong_layout_in_zip(tmp_path: Path, png_bytes) -> None:
    with zipfile.ZipFile(tmp_path / "images_flat.zip", "w") as zf:
        zf.writestr("images_flat/Alphabet/0001_01.png", png_bytes(np.zeros((105, 105), np.uint8)))
    with pytest.raises(DatasetFormatError, match="wrong layout.*images_flat/Alphabet/0001_01.png") as info:
        load_omniglot(root=tmp_path, cache=False)
    assert str(tmp_path / "images_flat.zip") in str(info.value)


def test_wrong_layout_in_folder_and_empty_archive(tmp_path: Path, png_bytes) -> None:
    deep = tmp_path / "images_deep" / "A" / "character01" / "extra"
    deep.mkdir(parents=True)
    (deep / "x.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    with pytest.raises(DatasetFormatError, match="wrong layout"):
        load_omniglot(root=tmp_path, archives=["images_deep"], cache=False)
    (tmp_path / "images_empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no PNG images"):
        load_omniglot(root=tmp_path, archives=["images_empty"], cache=False)


def test_corrupt_zip_and_png(tmp_path: Path) -> None:
    (tmp_path / "images_bad.zip").write_bytes(b"definitely not a zip")
    with pytest.raises(DatasetFormatError, match="not a readable zip"):
        load_omniglot(root=tmp_path, cache=False)
    (tmp_path / "images_bad.zip").unlink()
    char = tmp_path / "images_png" / "A" / "character01"
    char.mkdir(parents=True)
    (char / "0001_01.png").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="cannot decode PNG"):
        load_omniglot(root=tmp_path, cache=False)


def test_conflicting_duplicate_alphabet(tmp_path: Path, png_bytes) -> None:
    for archive, value in (("images_a", 0), ("images_b", 255)):
        char = tmp_path / archive / "Shared" / "character01"
        char.mkdir(parents=True)
        (char / "0001_01.png").write_bytes(png_bytes(np.full((8, 8), value, np.uint8)))
    with pytest.raises(DatasetFormatError, match="'Shared' is in both"):
        load_omniglot(root=tmp_path, cache=False, image_size=8)
    # the split helper refuses test archives that add no new alphabet
    (tmp_path / "images_b" / "Shared" / "character01" / "0001_01.png").write_bytes(
        png_bytes(np.zeros((8, 8), np.uint8))
    )
    with pytest.raises(DatasetFormatError, match="add no alphabet"):
        load_omniglot_split(
            root=tmp_path, train_archives=["images_a"], test_archives=["images_b"], image_size=8, cache=False
        )


def test_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="variant"):
        load_omniglot_standard_split(root=tmp_path, variant="medium")


def test_config_test_rotations_reach_the_test_split(omniglot_root) -> None:
    """``data.test_rotations`` (the standard Omniglot protocol) rotates the meta-test classes too."""
    from secfed import components
    from secfed.config import config_from_dict

    base = {"dataset": "omniglot", "root": str(omniglot_root), "rotations": True}
    _, plain = components.load_splits(config=config_from_dict({"data": base}))
    train, rotated = components.load_splits(
        config=config_from_dict({"data": {**base, "test_rotations": True}})
    )
    assert plain.num_classes == 106 and rotated.num_classes == 4 * 106
    assert train.num_classes == 4 * 136
    first = rotated.images[rotated.labels == 0][0, 0]
    quarter = rotated.images[rotated.labels == 1][0, 0]
    np.testing.assert_array_equal(np.rot90(first), quarter)
    np.testing.assert_array_equal(first, plain.images[plain.labels == 0][0, 0])


def test_validation_alphabets_are_held_out_of_training(omniglot_root) -> None:
    """``data.val_alphabets``: whole training alphabets leave meta-train and form meta-validation,
    rotated as the test classes are."""
    from secfed import components
    from secfed.config import config_from_dict
    from secfed.errors import ConfigError

    base = {"dataset": "omniglot", "root": str(omniglot_root), "rotations": True}
    cfg = config_from_dict({"data": {**base, "val_alphabets": ["Latin"]}})
    train, test = components.load_splits(config=cfg)
    val = components.load_validation(config=cfg)
    assert set(val.class_groups) == {"Latin"} and "Latin" not in set(train.class_groups)
    assert train.num_classes == 4 * (136 - 26) and test.num_classes == 106
    assert val.num_classes == 26  # unrotated: the test classes are unrotated here
    assert all(name.endswith("/rot000") for name in val.class_names)
    assert not set(val.class_names) & set(train.class_names)
    rotated = components.load_validation(
        config=config_from_dict({"data": {**base, "val_alphabets": ["Latin"], "test_rotations": True}})
    )
    assert rotated.num_classes == 4 * 26
    unrotated_training = config_from_dict(
        {"data": {**base, "rotations": False, "test_rotations": True, "val_alphabets": ["Latin"]}}
    )
    assert components.load_validation(config=unrotated_training).num_classes == 4 * 26
    # an alphabet that is not a training alphabet, or holding out all of them, is refused
    with pytest.raises(DataError, match=r"\['Tagalog'\] are not training alphabets"):
        components.load_splits(config=config_from_dict({"data": {**base, "val_alphabets": ["Tagalog"]}}))
    every = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    with pytest.raises(DataError, match="keep at least one"):
        components.load_splits(config=config_from_dict({"data": {**base, "val_alphabets": every}}))
    with pytest.raises(ConfigError, match="val_alphabets is empty"):
        components.load_validation(config=config_from_dict({"data": base}))
    with pytest.raises(ConfigError, match="data.val_alphabets"):
        config_from_dict({"data": {"dataset": "digits", "val_alphabets": ["Latin"]}})
    with pytest.raises(ConfigError, match="distinct"):
        config_from_dict({"data": {**base, "val_alphabets": ["Latin", "Latin"]}})
