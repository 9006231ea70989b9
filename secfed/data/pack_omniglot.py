"""Pack the official Omniglot archives into the compact file embedded in secfed.

Reproduces ``secfed/data/embedded/omniglot28.npz`` from the two small background archives of
Lake, Salakhutdinov & Tenenbaum (Science 2015; github.com/brendenlake/omniglot, MIT licence)::

    python -m secfed.data.pack_omniglot --root OMNIGLOT_ARCHIVES_DIR \
        --out secfed/data/embedded/omniglot28.npz

Every PNG is decoded exactly as :mod:`secfed.data.omniglot` decodes it (greyscale, PIL ``BOX``
area resize from 105x105 to ``image_size``) and its 8-bit grey values are stored unchanged, so
the embedded loader returns **bit-identical** float32 images to the archive reader at that size.
Measured on the two small archives at 28x28 (4,840 images): 8-bit grey in a deflated npz
447 KB (38 distinct grey levels); a 1-bit threshold would be 121 KB but would differ from the
reader's anti-aliased images, so the exact 8-bit form is kept.

Each alphabet is stored once (Greek and Latin are in both small archives with identical files;
the packer checks that the copies agree) together with the archives that hold it, so the
project's split logic (meta-train archives, meta-test = alphabets only in the test archives) runs
unchanged on the embedded copy.

The file is an ``.npz`` (zip of ``.npy`` arrays, no pickled objects) written with fixed member
timestamps, so packing twice gives the same bytes with the same zlib. Keys:

=================  ====================  =======================================================
key                dtype, shape          content
=================  ====================  =======================================================
``format``         str ``()``            :data:`PACK_FORMAT`
``image_size``     int64 ``()``          image side
``images``         uint8 ``(N, S, S)``   PIL ``"L"`` grey values after the resize (ink dark)
``files``          str ``(N,)``          ``"Alphabet/characterNN/<id>_<drawer>.png"``, sorted
``alphabets``      str ``(L,)``          alphabet names, sorted
``archives``       str ``(A,)``          archive names in the order given to the packer
``archive_sha256`` str ``(A,)``          sha256 of each source archive's bytes
``membership``     bool ``(L, A)``       whether alphabet ``l`` is in archive ``a``
=================  ====================  =======================================================
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from secfed.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["PACK_FORMAT", "PACK_KEYS", "DEFAULT_ARCHIVES", "pack_omniglot", "read_archive_grey", "main"]

PACK_FORMAT = "secfed-omniglot-packed-v1"
"""Format tag stored in every packed file."""
PACK_KEYS: tuple[str, ...] = (
    "format",
    "image_size",
    "images",
    "files",
    "alphabets",
    "archives",
    "archive_sha256",
    "membership",
)
"""The exact set of arrays in a packed file."""
DEFAULT_ARCHIVES: tuple[str, ...] = ("images_background_small1", "images_background_small2")
"""The archives packed into the embedded copy."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def read_archive_grey(*, path: Path, image_size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode one official archive to 8-bit grey images, as the archive reader does.

    Args:
        path: An official zip (``<archive>/<Alphabet>/characterNN/<id>_<drawer>.png`` inside).
        image_size: Output side (``BOX`` resize from 105x105).

    Returns:
        ``(images, files)``: uint8 ``(N, S, S)`` grey values and the relative names
        ``"Alphabet/characterNN/file.png"``, sorted by name.

    Raises:
        DatasetNotFoundError: If the zip does not exist.
        DatasetFormatError: If it is not a readable zip, has the wrong layout or a bad PNG.
    """
    if not Path(path).is_file():
        raise DatasetNotFoundError(f"Omniglot archive {path} not found")
    members: list[tuple[str, str]] = []
    images: list[np.ndarray] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or not parts[-1].lower().endswith(".png"):
                    continue
                if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    continue
                if len(parts) != 4 or not all(parts):
                    raise DatasetFormatError(
                        f"{path}: {info.filename} is not at <archive>/<Alphabet>/characterNN/<file>.png"
                    )
                members.append(("/".join(parts[1:]), info.filename))
            members.sort()
            for rel, member in members:
                try:
                    with Image.open(io.BytesIO(zf.read(member))) as img:
                        grey = img.convert("L")
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    raise DatasetFormatError(f"{path}:{rel}: cannot decode PNG ({exc})") from exc
                if grey.size != (image_size, image_size):
                    grey = grey.resize((image_size, image_size), Image.Resampling.BOX)
                images.append(np.asarray(grey, dtype=np.uint8))
    except zipfile.BadZipFile as exc:
        raise DatasetFormatError(f"{path}: not a readable zip archive ({exc})") from exc
    if not members:
        raise DatasetFormatError(f"{path}: contains no PNG images")
    return np.stack(images), tuple(rel for rel, _ in members)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_npz(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an npz with fixed timestamps and member order (reproducible bytes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for key in PACK_KEYS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(out)


def pack_omniglot(
    *, root: Path, out: Path, archives: Sequence[str] = DEFAULT_ARCHIVES, image_size: int = 28
) -> dict[str, int]:
    """Pack official Omniglot archives into one compact ``.npz`` (see the module docstring).

    Args:
        root: Folder holding ``<archive>.zip`` for every name in ``archives``.
        out: Output file (written atomically).
        archives: Archive names without ``.zip``.
        image_size: Output image side, in ``[4, 105]``.

    Returns:
        Counts: ``archives``, ``alphabets``, ``characters``, ``images`` and ``bytes`` (file size).

    Raises:
        DatasetNotFoundError: If an archive is missing.
        DatasetFormatError: If an archive is malformed, two archives hold different copies of
            one alphabet, or an argument is invalid.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 4 <= image_size <= 105:
        raise DatasetFormatError(f"image_size must be an int in [4, 105], got {image_size!r}")
    names = tuple(archives)
    if not names or len(set(names)) != len(names):
        raise DatasetFormatError(f"archives must be distinct names, got {names!r}")
    by_alphabet: dict[str, tuple[str, np.ndarray, tuple[str, ...]]] = {}
    member: dict[str, set[str]] = {}
    digests: list[str] = []
    for name in names:
        path = Path(root) / f"{name}.zip"
        images, files = read_archive_grey(path=path, image_size=image_size)
        digests.append(_sha256(path))
        alpha = np.asarray([f.split("/")[0] for f in files])
        for alphabet in sorted(set(alpha.tolist())):
            rows = np.flatnonzero(alpha == alphabet)
            block, block_files = images[rows], tuple(files[r] for r in rows)
            member.setdefault(alphabet, set()).add(name)
            if alphabet in by_alphabet:
                first, first_imgs, first_files = by_alphabet[alphabet]
                if first_files != block_files or not np.array_equal(first_imgs, block):
                    raise DatasetFormatError(
                        f"alphabet '{alphabet}' differs between {first} and {name}; "
                        f"a duplicated alphabet must be identical"
                    )
                continue
            by_alphabet[alphabet] = (name, block, block_files)
    alphabets = sorted(by_alphabet)
    images = np.concatenate([by_alphabet[a][1] for a in alphabets])
    all_files = [f for a in alphabets for f in by_alphabet[a][2]]
    order = np.argsort(np.asarray(all_files), kind="stable")
    files_sorted = np.asarray(all_files, dtype=np.str_)[order]
    membership = np.asarray([[n in member[a] for n in names] for a in alphabets], dtype=np.bool_)
    _write_npz(
        Path(out),
        {
            "format": np.asarray(PACK_FORMAT, dtype=np.str_),
            "image_size": np.asarray(image_size, dtype=np.int64),
            "images": np.ascontiguousarray(images[order], dtype=np.uint8),
            "files": files_sorted,
            "alphabets": np.asarray(alphabets, dtype=np.str_),
            "archives": np.asarray(names, dtype=np.str_),
            "archive_sha256": np.asarray(digests, dtype=np.str_),
            "membership": membership,
        },
    )
    characters = {f.rsplit("/", 1)[0] for f in all_files}
    return {
        "archives": len(names),
        "alphabets": len(alphabets),
        "characters": len(characters),
        "images": int(images.shape[0]),
        "bytes": Path(out).stat().st_size,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m secfed.data.pack_omniglot --root DIR --out FILE``.

    Args:
        argv: Arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding the official zips")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--archives", nargs="+", default=list(DEFAULT_ARCHIVES))
    parser.add_argument("--image-size", type=int, default=28)
    args = parser.parse_args(argv)
    counts = pack_omniglot(root=args.root, out=args.out, archives=args.archives, image_size=args.image_size)
    print(", ".join(f"{k} {v:,}" for k, v in counts.items()) + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
