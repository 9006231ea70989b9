"""Omniglot reader for the official archive layout (Lake, Salakhutdinov & Tenenbaum, Science 2015).

The official archives (``images_background.zip``, ``images_evaluation.zip`` and the small
subsets ``images_background_small1.zip`` / ``images_background_small2.zip``) all share one layout::

    <archive>/<Alphabet>/characterNN/<id>_<drawer>.png      (105x105, 1-bit)

An archive is read straight from ``<root>/<archive>.zip`` or, if there is no zip, from the
extracted folder ``<root>/<archive>/``. Each PNG is converted to greyscale, area-resized
(PIL ``BOX`` filter) to ``image_size x image_size`` and **inverted so that strokes are 1 and
the background 0**, giving float32 values in ``[0, 1]``.

A class is one character of one alphabet (``class_names[c] = "Alphabet/characterNN"``,
``class_groups[c] = "Alphabet"``). With ``rotations=True`` every character yields four classes,
rotated by 0/90/180/270 degrees counter-clockwise (``"Alphabet/characterNN/rot090"``), the
augmentation of Santoro et al. (2016) and Vinyals et al. (2016) used by Snell et al. (2017).

When several archives hold an alphabet of the same name (Greek and Latin are in both small
archives) it is taken once, from the first archive listed; the copies must hold the same files
and pixels or a :class:`~secfed.data.errors.DatasetFormatError` is raised.

Decoded archives are cached (never pickled: ``np.savez`` / ``np.load(allow_pickle=False)``) under
``$SECFED_CACHE/omniglot`` or ``~/.cache/secfed/omniglot``, keyed by the sha256 of the archive's
bytes, the image size and a format version, so the data directory may be read-only. A cache
that cannot be read is rebuilt; one that cannot be written only costs a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = [
    "SMALL_TRAIN_ARCHIVES",
    "SMALL_TEST_ARCHIVES",
    "FULL_TRAIN_ARCHIVES",
    "FULL_TEST_ARCHIVES",
    "default_cache_dir",
    "find_omniglot_archives",
    "load_omniglot",
    "load_omniglot_split",
    "load_omniglot_standard_split",
]

SMALL_TRAIN_ARCHIVES: tuple[str, ...] = ("images_background_small1",)
"""Meta-train archives of the project's small split (5 alphabets, 136 characters)."""
SMALL_TEST_ARCHIVES: tuple[str, ...] = ("images_background_small2",)
"""Meta-test archives of the small split (only its alphabets absent from small1 are used)."""
FULL_TRAIN_ARCHIVES: tuple[str, ...] = ("images_background",)
"""Meta-train archives of Lake et al.'s background/evaluation split (30 alphabets)."""
FULL_TEST_ARCHIVES: tuple[str, ...] = ("images_evaluation",)
"""Meta-test archives of Lake et al.'s background/evaluation split (20 alphabets)."""

_CACHE_VERSION = "omniglot-v1"
_LAYOUT = "<archive>/<Alphabet>/characterNN/<id>_<drawer>.png"
_CACHE_KEYS = ("images", "char_index", "alphabets", "characters", "files")


@dataclass(frozen=True)
class _Decoded:
    """One archive decoded at one image size (no rotations, no filtering)."""

    images: np.ndarray  # float32 (N, S, S), strokes 1
    char_index: np.ndarray  # int64 (N,), index into alphabets/characters
    alphabets: tuple[str, ...]  # per character
    characters: tuple[str, ...]  # per character
    files: tuple[str, ...]  # per image, "Alphabet/characterNN/file.png"


_Chosen = dict[str, tuple[Path, np.ndarray, list[str], tuple[str, ...]]]
"""alphabet -> (archive path, images (n, S, S), per-image character name, per-image file)."""


# ---------------------------------------------------------------------------------- locating
def default_cache_dir() -> Path:
    """The cache root: ``$SECFED_CACHE`` if set and non-empty, else ``~/.cache/secfed``."""
    env = os.environ.get("SECFED_CACHE", "")
    return Path(env) if env else Path.home() / ".cache" / "secfed"


def _archive_stem(name: str) -> str:
    return name[: -len(".zip")] if name.endswith(".zip") else name


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Omniglot root {root} is not a directory; it must contain the official archives "
            f"(e.g. images_background.zip) or their extracted folders"
        )
    return root


def find_omniglot_archives(*, root: Path) -> tuple[str, ...]:
    """Names of the Omniglot archives under ``root`` (``images_*.zip`` files or ``images_*`` folders).

    Args:
        root: Directory holding the archives.

    Returns:
        Sorted archive names without ``.zip`` (a zip and its extracted folder count once).

    Raises:
        DatasetNotFoundError: If ``root`` is not a directory.
    """
    root = _check_root(root)
    names = set()
    for entry in root.iterdir():
        if not entry.name.startswith("images_"):
            continue
        if entry.is_file() and entry.name.endswith(".zip"):
            names.add(_archive_stem(entry.name))
        elif entry.is_dir():
            names.add(entry.name)
    return tuple(sorted(names))


def _resolve_archive(root: Path, name: str) -> Path:
    stem = _archive_stem(name)
    zip_path, dir_path = root / f"{stem}.zip", root / stem
    if zip_path.is_file():
        return zip_path
    if dir_path.is_dir():
        return dir_path
    raise DatasetNotFoundError(
        f"Omniglot archive '{stem}' not found: neither {zip_path} nor the folder {dir_path} exists "
        f"(archives present in {root}: {list(find_omniglot_archives(root=root)) or 'none'})"
    )


# ---------------------------------------------------------------------------------- listing
def _skip(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _layout_error(path: Path, bad: list[str], found: int) -> DatasetFormatError:
    example = ", ".join(bad[:3])
    if found == 0 and not bad:
        return DatasetFormatError(f"{path}: contains no PNG images; expected the layout {_LAYOUT}")
    return DatasetFormatError(
        f"{path}: wrong layout, expected every PNG at {_LAYOUT}; "
        f"{len(bad)} PNG(s) are elsewhere, e.g. {example}"
    )


def _list_zip(path: Path, zf: zipfile.ZipFile) -> list[tuple[str, str]]:
    """``(relative "Alphabet/character/file.png", member name)`` sorted by relative name."""
    good: list[tuple[str, str]] = []
    bad: list[str] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = info.filename.split("/")
        if _skip(parts) or not parts[-1].lower().endswith(".png"):
            continue
        if len(parts) != 4 or not all(parts):
            bad.append(info.filename)
            continue
        good.append(("/".join(parts[1:]), info.filename))
    if bad or not good:
        raise _layout_error(path, bad, len(good))
    return sorted(good)


def _list_dir(path: Path) -> list[tuple[str, Path]]:
    good: list[tuple[str, Path]] = []
    bad: list[str] = []
    for file in path.rglob("*"):
        rel = file.relative_to(path).parts
        if _skip(rel) or not file.is_file() or not file.name.lower().endswith(".png"):
            continue
        if len(rel) != 3:
            bad.append(str(file))
            continue
        good.append(("/".join(rel), file))
    if bad or not good:
        raise _layout_error(path, bad, len(good))
    return sorted(good)


def _iter_bytes(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(relative name, PNG bytes)`` of every image of an archive, sorted by relative name."""
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                for rel, member in _list_zip(path, zf):
                    yield rel, zf.read(member)
        except zipfile.BadZipFile as exc:
            raise DatasetFormatError(f"{path}: not a readable zip archive ({exc})") from exc
    else:
        for rel, file in _list_dir(path):
            yield rel, file.read_bytes()


def _source_digest(path: Path) -> str:
    """sha256 of a zip's bytes, or of a folder's sorted relative names and PNG bytes."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    else:
        for rel, data in _iter_bytes(path):
            digest.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- decoding
def _decode_png(data: bytes, *, image_size: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            grey = img.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"{where}: cannot decode PNG ({exc})") from exc
    if grey.size != (image_size, image_size):
        grey = grey.resize((image_size, image_size), Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.float32) / np.float32(255.0)
    return np.float32(1.0) - pixels  # strokes (black in the PNG) become 1


def _decode_archive(path: Path, *, image_size: int) -> _Decoded:
    images: list[np.ndarray] = []
    files: list[str] = []
    char_keys: dict[tuple[str, str], int] = {}
    char_index: list[int] = []
    for rel, data in _iter_bytes(path):
        alphabet, character, _ = rel.split("/")
        images.append(_decode_png(data, image_size=image_size, where=f"{path}:{rel}"))
        files.append(rel)
        char_index.append(char_keys.setdefault((alphabet, character), len(char_keys)))
    keys = list(char_keys)
    return _Decoded(
        images=np.stack(images).astype(np.float32, copy=False),
        char_index=np.asarray(char_index, dtype=np.int64),
        alphabets=tuple(a for a, _ in keys),
        characters=tuple(c for _, c in keys),
        files=tuple(files),
    )


# ---------------------------------------------------------------------------------- caching
def _cache_file(cache_dir: Path, path: Path, image_size: int) -> Path:
    key = hashlib.sha256(f"{_CACHE_VERSION}|{_source_digest(path)}|size={image_size}".encode()).hexdigest()
    return cache_dir / "omniglot" / f"{_archive_stem(path.name)}-{image_size}-{key[:24]}.npz"


def _read_cache(file: Path, image_size: int) -> _Decoded | None:
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as npz:
            if set(npz.files) != set(_CACHE_KEYS):
                return None
            decoded = _Decoded(
                images=np.asarray(npz["images"], dtype=np.float32),
                char_index=np.asarray(npz["char_index"], dtype=np.int64),
                alphabets=tuple(str(a) for a in npz["alphabets"]),
                characters=tuple(str(c) for c in npz["characters"]),
                files=tuple(str(f) for f in npz["files"]),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    n = decoded.images.shape[0]
    ok = (
        decoded.images.shape[1:] == (image_size, image_size)
        and decoded.char_index.shape == (n,)
        and len(decoded.files) == n
        and len(decoded.alphabets) == len(decoded.characters)
        and n > 0
        and int(decoded.char_index.max()) < len(decoded.alphabets)
    )
    return decoded if ok else None


def _write_cache(file: Path, decoded: _Decoded) -> None:
    tmp_name: str | None = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(
                tmp,
                images=decoded.images,
                char_index=decoded.char_index,
                alphabets=np.asarray(decoded.alphabets, dtype=np.str_),
                characters=np.asarray(decoded.characters, dtype=np.str_),
                files=np.asarray(decoded.files, dtype=np.str_),
            )
        os.replace(tmp_name, file)
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        warnings.warn(f"could not write the Omniglot cache {file}: {exc}", RuntimeWarning, stacklevel=3)


def _load_archive(path: Path, *, image_size: int, cache: bool, cache_dir: Path | None) -> _Decoded:
    if not cache:
        return _decode_archive(path, image_size=image_size)
    file = _cache_file(default_cache_dir() if cache_dir is None else Path(cache_dir), path, image_size)
    decoded = _read_cache(file, image_size)
    if decoded is None:
        decoded = _decode_archive(path, image_size=image_size)
        _write_cache(file, decoded)
    return decoded


# ---------------------------------------------------------------------------------- public API
def load_omniglot(
    *,
    root: Path,
    archives: Sequence[str] | None = None,
    alphabets: Sequence[str] | None = None,
    exclude_alphabets: Sequence[str] = (),
    rotations: bool = False,
    image_size: int = 28,
    name: str = "omniglot",
    cache: bool = True,
    cache_dir: Path | None = None,
) -> ImageDataset:
    """Read Omniglot archives into one :class:`ImageDataset`.

    Args:
        root: Directory holding ``<archive>.zip`` files and/or extracted ``<archive>/`` folders.
        archives: Archive names (with or without ``.zip``), in priority order for duplicated
            alphabets. ``None`` reads every ``images_*`` archive in ``root`` (sorted by name).
        alphabets: Alphabets to keep (``None`` keeps all); each must exist in the archives.
        exclude_alphabets: Alphabets to drop; each must exist in the archives.
        rotations: Add 90/180/270-degree rotations of every character as extra classes (x4).
        image_size: Side of the square output images (105 keeps the original resolution).
        name: Dataset name used in messages.
        cache: Cache decoded archives (see the module docstring).
        cache_dir: Cache root overriding ``$SECFED_CACHE`` / ``~/.cache/secfed``.

    Returns:
        float32 images ``(N, 1, image_size, image_size)`` in ``[0, 1]`` (strokes 1), classes
        sorted by (alphabet, character[, rotation]), records by class then drawer file name.

    Raises:
        DatasetNotFoundError: If ``root`` or an archive is missing.
        DatasetFormatError: If an archive has the wrong layout, a PNG cannot be decoded, two
            archives disagree about an alphabet, an alphabet filter names an unknown alphabet,
            the filters leave nothing, or an argument is invalid.
    """
    chosen, paths = _collect(
        root=root, archives=archives, image_size=image_size, cache=cache, cache_dir=cache_dir
    )
    selected = _select(chosen, paths, alphabets=alphabets, exclude_alphabets=exclude_alphabets)
    return _build(chosen, paths, selected=selected, rotations=rotations, name=name)


def _collect(
    *,
    root: Path,
    archives: Sequence[str] | None,
    image_size: int,
    cache: bool,
    cache_dir: Path | None,
) -> tuple[_Chosen, list[Path]]:
    """Decode the archives and keep each alphabet once (first archive wins, copies must agree)."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 1 <= image_size <= 1024:
        raise DatasetFormatError(f"Omniglot image_size must be an int in [1, 1024], got {image_size!r}")
    root = _check_root(root)
    names = find_omniglot_archives(root=root) if archives is None else tuple(archives)
    if not names:
        raise DatasetNotFoundError(f"no Omniglot archives (images_*.zip or images_* folders) found in {root}")
    paths = [_resolve_archive(root, n) for n in names]
    chosen: _Chosen = {}
    for path in paths:
        decoded = _load_archive(path, image_size=image_size, cache=cache, cache_dir=cache_dir)
        char_alpha = np.asarray(decoded.alphabets)[decoded.char_index]
        for alphabet in dict.fromkeys(decoded.alphabets):
            rows = np.flatnonzero(char_alpha == alphabet)
            imgs = decoded.images[rows]
            files = tuple(decoded.files[r] for r in rows)
            chars = [decoded.characters[decoded.char_index[r]] for r in rows]
            if alphabet in chosen:
                first_path, first_imgs, _, first_files = chosen[alphabet]
                if first_files != files or not np.array_equal(first_imgs, imgs):
                    raise DatasetFormatError(
                        f"alphabet '{alphabet}' is in both {first_path} and {path} with different "
                        f"files or pixels; an alphabet may only be duplicated across archives "
                        f"if the copies are identical"
                    )
                continue
            chosen[alphabet] = (path, imgs, chars, files)
    return chosen, paths


def _select(
    chosen: _Chosen,
    paths: list[Path],
    *,
    alphabets: Sequence[str] | None,
    exclude_alphabets: Sequence[str],
) -> list[str]:
    available = sorted(chosen)
    keep = list(available) if alphabets is None else list(dict.fromkeys(alphabets))
    unknown = sorted((set(keep) | set(exclude_alphabets)) - set(available))
    if unknown:
        raise DatasetFormatError(
            f"Omniglot alphabets {unknown} are not in {[str(p) for p in paths]}; available: {available}"
        )
    selected = sorted(set(keep) - set(exclude_alphabets))
    if not selected:
        raise DatasetFormatError(
            f"Omniglot alphabet filters leave no alphabet (alphabets={alphabets}, "
            f"exclude_alphabets={list(exclude_alphabets)}); available: {available}"
        )
    return selected


def _build(
    chosen: _Chosen, paths: list[Path], *, selected: list[str], rotations: bool, name: str
) -> ImageDataset:
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    class_names: list[str] = []
    class_groups: list[str] = []
    n_rot = 4 if rotations else 1
    for alphabet in selected:
        _, imgs, chars, _ = chosen[alphabet]
        char_array = np.asarray(chars)
        for character in sorted(set(chars)):
            rows = np.flatnonzero(char_array == character)
            base = len(class_names)
            for k in range(n_rot):
                blocks.append(np.rot90(imgs[rows], k=k, axes=(1, 2)))
                labels.append(np.full(rows.size, base + k, dtype=np.int64))
                suffix = f"/rot{90 * k:03d}" if rotations else ""
                class_names.append(f"{alphabet}/{character}{suffix}")
                class_groups.append(alphabet)
    images = np.ascontiguousarray(np.concatenate(blocks)[:, None, :, :], dtype=np.float32)
    return ImageDataset(
        images=images,
        labels=np.concatenate(labels),
        class_names=tuple(class_names),
        class_groups=tuple(class_groups),
        name=name,
        source=", ".join(str(p) for p in paths),
    )


def load_omniglot_split(
    *,
    root: Path,
    train_archives: Sequence[str],
    test_archives: Sequence[str],
    train_rotations: bool = False,
    test_rotations: bool = False,
    image_size: int = 28,
    cache: bool = True,
    cache_dir: Path | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """An alphabet-disjoint meta-train / meta-test pair.

    The test set holds the alphabets of ``test_archives`` that are not in ``train_archives``
    (alphabets are identified by name), so the two never share an alphabet.

    Args:
        root: Directory holding the archives.
        train_archives: Archives whose alphabets form the meta-training set.
        test_archives: Archives whose remaining alphabets form the meta-test set.
        train_rotations: Add rotated classes to the training set.
        test_rotations: Add rotated classes to the test set (usually off).
        image_size: Output image side.
        cache: Cache decoded archives.
        cache_dir: Cache root override.

    Returns:
        ``(train, test)`` named ``"omniglot-train"`` and ``"omniglot-test"``.

    Raises:
        DatasetNotFoundError: If an archive is missing.
        DatasetFormatError: If an archive is malformed or the test archives add no new alphabet.
    """
    train_chosen, train_paths = _collect(
        root=root, archives=train_archives, image_size=image_size, cache=cache, cache_dir=cache_dir
    )
    test_chosen, test_paths = _collect(
        root=root, archives=test_archives, image_size=image_size, cache=cache, cache_dir=cache_dir
    )
    return _alphabet_disjoint_split(
        train=(train_chosen, train_paths),
        test=(test_chosen, test_paths),
        train_rotations=train_rotations,
        test_rotations=test_rotations,
        where=f"{list(test_archives)} in {root} vs {list(train_archives)}",
    )


def _alphabet_disjoint_split(
    *,
    train: tuple[_Chosen, list[Path]],
    test: tuple[_Chosen, list[Path]],
    train_rotations: bool,
    test_rotations: bool,
    where: str,
) -> tuple[ImageDataset, ImageDataset]:
    """Meta-train on every training alphabet, meta-test on the test archives' other alphabets.

    Shared by the archive reader and the embedded copy (:mod:`secfed.data.omniglot_embedded`).

    Args:
        train: ``(chosen, paths)`` of the training archives, as ``_collect`` returns them.
        test: The same for the test archives.
        train_rotations: Add rotated classes to the training set.
        test_rotations: Add rotated classes to the test set.
        where: The archives (and folder), for the error message.

    Returns:
        ``(train, test)`` named ``"omniglot-train"`` and ``"omniglot-test"``.

    Raises:
        DatasetFormatError: If the test archives add no alphabet beyond the training ones.
    """
    (train_chosen, train_paths), (test_chosen, test_paths) = train, test
    test_only = sorted(set(test_chosen) - set(train_chosen))
    if not test_only:
        raise DatasetFormatError(
            f"test archives {where}: they add no alphabet beyond the training archives; an "
            "alphabet-disjoint split needs at least one"
        )
    train_set = _build(
        train_chosen,
        train_paths,
        selected=sorted(train_chosen),
        rotations=train_rotations,
        name="omniglot-train",
    )
    test_set = _build(
        test_chosen, test_paths, selected=test_only, rotations=test_rotations, name="omniglot-test"
    )
    return train_set, test_set


def load_omniglot_standard_split(
    *,
    root: Path,
    variant: str = "auto",
    train_rotations: bool = False,
    test_rotations: bool = False,
    image_size: int = 28,
    cache: bool = True,
    cache_dir: Path | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """The project's standard alphabet-disjoint split.

    * ``"small"``: meta-train on ``images_background_small1`` (Balinese, Early_Aramaic, Greek,
      Korean, Latin: 136 characters), meta-test on the alphabets only in
      ``images_background_small2`` (Japanese_(katakana), Sanskrit, Tagalog: 106 characters).
    * ``"full"``: Lake et al.'s split, ``images_background`` (30 alphabets, 964 characters) vs
      ``images_evaluation`` (20 alphabets, 659 characters).
    * ``"auto"``: ``"full"`` if both full archives are in ``root``, else ``"small"``.

    Args:
        root: Directory holding the archives.
        variant: ``"small"``, ``"full"`` or ``"auto"``.
        train_rotations: Add rotated classes to the training set.
        test_rotations: Add rotated classes to the test set.
        image_size: Output image side.
        cache: Cache decoded archives.
        cache_dir: Cache root override.

    Returns:
        ``(train, test)``.

    Raises:
        DatasetFormatError: If ``variant`` is unknown or an archive is malformed.
        DatasetNotFoundError: If the archives of the variant are missing.
    """
    if variant not in ("auto", "small", "full"):
        raise DatasetFormatError(f"Omniglot split variant must be 'auto', 'small' or 'full', got {variant!r}")
    if variant == "auto":
        present = set(find_omniglot_archives(root=root))
        variant = "full" if set(FULL_TRAIN_ARCHIVES + FULL_TEST_ARCHIVES) <= present else "small"
    train_archives, test_archives = (
        (FULL_TRAIN_ARCHIVES, FULL_TEST_ARCHIVES)
        if variant == "full"
        else (SMALL_TRAIN_ARCHIVES, SMALL_TEST_ARCHIVES)
    )
    return load_omniglot_split(
        root=root,
        train_archives=train_archives,
        test_archives=test_archives,
        train_rotations=train_rotations,
        test_rotations=test_rotations,
        image_size=image_size,
        cache=cache,
        cache_dir=cache_dir,
    )
