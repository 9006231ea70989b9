"""Durable, atomic replacement of a small text file: the one helper every package uses.

It lives in ``privacy/``, the lowest package that needs it (the privacy ledger rewrites its file
through it); ``secfed`` (run directory files: configuration, metrics, checkpoints, summary) and
``evaluations`` (reports) import it from here, since ``privacy`` may import nothing of ours.

A reader sees either the old content or the new one, never a part: the text goes to
``<name>.tmp`` beside the file, is flushed and fsync'ed, renamed over the file (POSIX ``rename``
is atomic within a filesystem) and the folder is fsync'ed so the rename itself survives a crash.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_text", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk, where the platform allows.

    Args:
        path: The folder.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(*, path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path``'s content with ``text`` (UTF-8) atomically and durably.

    Args:
        path: Destination (its folder must exist).
        text: Content.

    Raises:
        OSError: If the folder does not exist or cannot be written (the file is left as it was).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
