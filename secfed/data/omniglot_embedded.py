"""Omniglot embedded in secfed: the two small background archives at 28x28, no download, no path.

``secfed/data/embedded/omniglot28.npz`` (447 KB) holds every image of
``images_background_small1`` and ``images_background_small2`` of Lake, Salakhutdinov &
Tenenbaum, "Human-level concept learning through probabilistic program induction", Science 350
(2015), github.com/brendenlake/omniglot, MIT licence (``embedded/LICENSE``): 8 alphabets, 242
characters x 20 drawers = 4,840 images. It was made by :mod:`secfed.data.pack_omniglot`, which
decodes the PNGs exactly as the archive reader :mod:`secfed.data.omniglot` does, so the datasets
returned here are **bit-identical** to reading the official zips at ``image_size=28``: same
pixels (float32, strokes 1), class order, class names (``"Alphabet/characterNN"``), groups
(the alphabet) and record order (by drawer file ``<id>_<drawer>.png``).

The archive structure is kept: each alphabet knows which archives hold it, so
:func:`load_embedded_omniglot_split` gives the project's small alphabet-disjoint split (meta-train
on small1's Balinese, Early_Aramaic, Greek, Korean, Latin: 136 characters; meta-test on the
alphabets only in small2, Japanese_(katakana), Sanskrit, Tagalog: 106 characters).

In a configuration, ``data.dataset = "omniglot"`` with ``data.root`` empty or ``"embedded"``
selects this copy. Other image sizes and the full background/evaluation archives need the
official zips (``data.root`` = their folder).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError, DatasetNotFoundError
from secfed.data.omniglot import _alphabet_disjoint_split, _build, _Chosen, _select
from secfed.data.pack_omniglot import PACK_FORMAT, PACK_KEYS

__all__ = [
    "EMBEDDED_ROOT",
    "EMBEDDED_ARCHIVES",
    "EMBEDDED_IMAGE_SIZE",
    "embedded_omniglot_path",
    "embedded_drawers",
    "load_embedded_omniglot",
    "load_embedded_omniglot_split",
]

EMBEDDED_ROOT = "embedded"
"""The ``data.root`` value (besides an empty root) that selects the embedded copy."""
EMBEDDED_ARCHIVES: tuple[str, ...] = ("images_background_small1", "images_background_small2")
"""Archives held by the embedded copy."""
EMBEDDED_IMAGE_SIZE = 28
"""Side of the embedded images."""


def embedded_omniglot_path() -> Path:
    """Path of the packed file inside the installed package.

    Returns:
        The path of ``secfed/data/embedded/omniglot28.npz``.

    Raises:
        DatasetNotFoundError: If the package was installed without its data file.
    """
    path = Path(__file__).resolve().with_name("embedded") / "omniglot28.npz"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"the embedded Omniglot file {path} is missing (secfed installed without its package "
            f"data); reinstall secfed, or set data.root to a folder with the official archives"
        )
    return path


class _Packed:
    """The decoded packed file (validated)."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if set(npz.files) != set(PACK_KEYS):
                    raise DatasetFormatError(
                        f"{path}: keys {sorted(npz.files)} are not the packed-Omniglot keys "
                        f"{sorted(PACK_KEYS)}"
                    )
                arrays = {k: npz[k] for k in PACK_KEYS}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetFormatError(f"{path}: not a readable packed Omniglot file ({exc})") from exc
        if str(arrays["format"]) != PACK_FORMAT:
            raise DatasetFormatError(f"{path}: format {str(arrays['format'])!r}, expected {PACK_FORMAT!r}")
        images, files = arrays["images"], arrays["files"]
        alphabets, archives, membership = arrays["alphabets"], arrays["archives"], arrays["membership"]
        size = int(arrays["image_size"])
        ok = (
            images.dtype == np.uint8
            and images.ndim == 3
            and images.shape[1:] == (size, size)
            and images.shape[0] > 0
            and files.shape == (images.shape[0],)
            and membership.dtype == np.bool_
            and membership.shape == (alphabets.shape[0], archives.shape[0])
            and arrays["archive_sha256"].shape == archives.shape
        )
        if not ok:
            raise DatasetFormatError(f"{path}: inconsistent array shapes or dtypes in a packed Omniglot file")
        self.path = path
        self.image_size = size
        images.flags.writeable = False
        self.grey = images
        self.files = tuple(str(f) for f in files)
        parts = [f.split("/") for f in self.files]
        if any(len(p) != 3 for p in parts):
            raise DatasetFormatError(f"{path}: file names must be 'Alphabet/characterNN/file.png'")
        self.file_alphabet = np.asarray([p[0] for p in parts])
        self.file_character = [p[1] for p in parts]
        self.alphabets = tuple(str(a) for a in alphabets)
        self.archives = tuple(str(a) for a in archives)
        if set(self.file_alphabet.tolist()) != set(self.alphabets):
            raise DatasetFormatError(f"{path}: the files' alphabets differ from the alphabet list")
        self.members = {
            archive: tuple(a for a, row in zip(self.alphabets, membership[:, j], strict=True) if row)
            for j, archive in enumerate(self.archives)
        }

    def chosen(self, archives: Sequence[str]) -> tuple[_Chosen, list[Path]]:
        """The reader's per-alphabet view of ``archives`` (first archive wins, as the reader)."""
        names = tuple(a[: -len(".zip")] if a.endswith(".zip") else a for a in archives)
        unknown = [a for a in names if a not in self.members]
        if not names or unknown:
            raise DatasetNotFoundError(
                f"Omniglot archives {unknown or list(names)} are not in the embedded copy {self.path}, "
                f"which holds {list(self.archives)}; set data.root to a folder with the official "
                f"archives to use others"
            )
        chosen: _Chosen = {}
        paths = [Path(f"{self.path}:{name}") for name in names]
        for name, path in zip(names, paths, strict=True):
            for alphabet in self.members[name]:
                if alphabet in chosen:
                    continue
                rows = np.flatnonzero(self.file_alphabet == alphabet)
                # the reader's decoding: strokes (black in the PNG) become 1
                pixels = self.grey[rows].astype(np.float32) / np.float32(255.0)
                chosen[alphabet] = (
                    path,
                    np.float32(1.0) - pixels,
                    [self.file_character[r] for r in rows],
                    tuple(self.files[r] for r in rows),
                )
        return chosen, paths


@lru_cache(maxsize=2)
def _packed(path: str) -> _Packed:
    return _Packed(Path(path))


def _load(path: Path | None, image_size: int) -> _Packed:
    if isinstance(image_size, bool) or image_size != EMBEDDED_IMAGE_SIZE:
        raise DatasetFormatError(
            f"the embedded Omniglot copy is {EMBEDDED_IMAGE_SIZE}x{EMBEDDED_IMAGE_SIZE} only, got "
            f"image_size={image_size!r}; set data.root to a folder with the official archives for "
            f"other sizes"
        )
    file = embedded_omniglot_path() if path is None else Path(path)
    if not file.is_file():
        raise DatasetNotFoundError(f"packed Omniglot file {file} not found")
    packed = _packed(str(file.resolve()))
    if packed.image_size != image_size:
        raise DatasetFormatError(
            f"{file}: images are {packed.image_size}x{packed.image_size}, not {image_size}"
        )
    return packed


def embedded_drawers(*, dataset: ImageDataset) -> np.ndarray:
    """Drawer id (1-20) of every record of a dataset loaded from the embedded copy.

    Records are ordered by drawer file name within each class, so without rotations the drawer
    of record ``i`` of a class with 20 records is ``i + 1``; this reads it from the packed file
    names instead of assuming it.

    Args:
        dataset: A dataset returned by :func:`load_embedded_omniglot` (any class subset).

    Returns:
        int64 ``(N,)`` drawer ids.

    Raises:
        DatasetFormatError: If a class name is not one of the embedded characters.
    """
    packed = _load(None, EMBEDDED_IMAGE_SIZE)
    by_char: dict[str, list[int]] = {}
    for f in packed.files:
        alphabet, character, file = f.split("/")
        by_char.setdefault(f"{alphabet}/{character}", []).append(int(file.rsplit("_", 1)[1].split(".")[0]))
    out = np.zeros(dataset.num_records, dtype=np.int64)
    for c, name in enumerate(dataset.class_names):
        key = name[: -len("/rot000")] if name[-7:-3] == "/rot" else name
        if key not in by_char:
            raise DatasetFormatError(f"class {name!r} is not an embedded Omniglot character")
        rows = np.flatnonzero(dataset.labels == c)
        drawers = np.asarray(by_char[key], dtype=np.int64)
        if rows.size != drawers.size:
            raise DatasetFormatError(
                f"class {name!r} has {rows.size} records, the embedded copy {drawers.size}"
            )
        out[rows] = drawers
    return out


def load_embedded_omniglot(
    *,
    archives: Sequence[str] | None = None,
    alphabets: Sequence[str] | None = None,
    exclude_alphabets: Sequence[str] = (),
    rotations: bool = False,
    image_size: int = EMBEDDED_IMAGE_SIZE,
    name: str = "omniglot",
    path: Path | None = None,
) -> ImageDataset:
    """The embedded copy as one dataset (the counterpart of :func:`~secfed.data.load_omniglot`).

    Args:
        archives: Archives to read, in priority order (``None``: both small archives).
        alphabets: Alphabets to keep (``None`` keeps all).
        exclude_alphabets: Alphabets to drop.
        rotations: Add 90/180/270-degree rotations as extra classes (x4).
        image_size: Must be 28.
        name: Dataset name used in messages.
        path: A packed file other than the embedded one (made by :mod:`secfed.data.pack_omniglot`).

    Returns:
        float32 images ``(N, 1, 28, 28)`` in ``[0, 1]`` (strokes 1), classes sorted by
        (alphabet, character[, rotation]), records by class then drawer file name.

    Raises:
        DatasetNotFoundError: If the file is missing or an archive is not in it.
        DatasetFormatError: If the file is malformed, ``image_size`` is not 28, or an alphabet
            filter names an unknown alphabet or leaves nothing.
    """
    packed = _load(path, image_size)
    chosen, paths = packed.chosen(packed.archives if archives is None else archives)
    selected = _select(chosen, paths, alphabets=alphabets, exclude_alphabets=exclude_alphabets)
    return _build(chosen, paths, selected=selected, rotations=rotations, name=name)


def load_embedded_omniglot_split(
    *,
    train_archives: Sequence[str] = EMBEDDED_ARCHIVES[:1],
    test_archives: Sequence[str] = EMBEDDED_ARCHIVES[1:],
    train_rotations: bool = False,
    test_rotations: bool = False,
    image_size: int = EMBEDDED_IMAGE_SIZE,
    path: Path | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """The alphabet-disjoint split on the embedded copy (as :func:`~secfed.data.load_omniglot_split`).

    Args:
        train_archives: Archives whose alphabets form the meta-training set.
        test_archives: Archives whose remaining alphabets form the meta-test set.
        train_rotations: Add rotated classes to the training set.
        test_rotations: Add rotated classes to the test set.
        image_size: Must be 28.
        path: A packed file other than the embedded one.

    Returns:
        ``(train, test)`` named ``"omniglot-train"`` and ``"omniglot-test"``.

    Raises:
        DatasetNotFoundError: If the file is missing or an archive is not in it.
        DatasetFormatError: If the file is malformed, ``image_size`` is not 28, or the test
            archives add no alphabet beyond the training ones.
    """
    packed = _load(path, image_size)
    train_chosen, train_paths = packed.chosen(train_archives)
    test_chosen, test_paths = packed.chosen(test_archives)
    return _alphabet_disjoint_split(
        train=(train_chosen, train_paths),
        test=(test_chosen, test_paths),
        train_rotations=train_rotations,
        test_rotations=test_rotations,
        where=f"{list(test_archives)} (embedded) vs {list(train_archives)}",
    )
