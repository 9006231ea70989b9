"""An in-memory labelled image dataset: the one data type every loader returns.

Conventions (shared by every loader in :mod:`secfed.data`):

* ``images`` is float32 ``(N, C, H, W)`` with values **scaled to [0, 1]** (not standardised;
  models that want zero-mean inputs normalise themselves). For stroke data such as Omniglot the
  stroke is 1 and the background 0.
* ``labels`` is int64 ``(N,)`` in ``[0, num_classes)``; ``class_names[c]`` names label ``c`` and
  ``class_groups[c]`` names the group it belongs to (the alphabet for Omniglot, the digit for
  digits, the diagnosis for MedMNIST). Classes may have zero records (e.g. after :meth:`subset`).
* The arrays are stored as read-only views so that the frozen dataclass is frozen in fact: the
  caller's own arrays stay writable, but nobody can write through the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from secfed.data.errors import DatasetFormatError

__all__ = ["ImageDataset"]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes:
        images: float32 ``(N, C, H, W)`` in ``[0, 1]``.
        labels: int64 ``(N,)`` in ``[0, num_classes)``.
        class_names: Name of each class (``len == num_classes``), unique.
        class_groups: Group of each class (``len == num_classes``), e.g. the Omniglot alphabet.
        name: Short human-readable dataset name used in messages.
        source: Path (or other description) the data was read from, used in error messages.

    Raises:
        DatasetFormatError: (on construction) if dtypes, shapes, value ranges or name lists
            are inconsistent.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    class_groups: tuple[str, ...]
    name: str
    source: str = ""

    def __post_init__(self) -> None:
        where = f"dataset '{self.name}'" + (f" (from {self.source})" if self.source else "")
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4:
            raise DatasetFormatError(
                f"{where}: images must be a float32 array of shape (N, C, H, W), got "
                f"{getattr(images, 'dtype', type(images))} with shape {getattr(images, 'shape', None)}"
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
            raise DatasetFormatError(
                f"{where}: labels must be an int64 array of shape (N,), got "
                f"{getattr(labels, 'dtype', type(labels))} with shape {getattr(labels, 'shape', None)}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DatasetFormatError(
                f"{where}: {images.shape[0]} images but {labels.shape[0]} labels (must be equal)"
            )
        names, groups = tuple(self.class_names), tuple(self.class_groups)
        if len(names) == 0:
            raise DatasetFormatError(f"{where}: at least one class name is required")
        if len(groups) != len(names):
            raise DatasetFormatError(
                f"{where}: {len(names)} class names but {len(groups)} class groups (must be equal)"
            )
        if len(set(names)) != len(names):
            raise DatasetFormatError(f"{where}: class names must be unique")
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(names)):
            raise DatasetFormatError(
                f"{where}: labels must lie in [0, {len(names)}), got range "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        object.__setattr__(self, "images", _read_only(images))
        object.__setattr__(self, "labels", _read_only(labels))
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "class_groups", groups)

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of classes (including classes with no records)."""
        return len(self.class_names)

    @property
    def num_records(self) -> int:
        """Number of records ``N``."""
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one record, ``(C, H, W)``."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return self.num_records

    def class_counts(self) -> np.ndarray:
        """Records per class.

        Returns:
            int64 array of length ``num_classes``.
        """
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def describe(self) -> str:
        """``"dataset 'NAME' (from SOURCE)"`` for use in error messages."""
        return f"dataset '{self.name}'" + (f" (from {self.source})" if self.source else "")

    # ------------------------------------------------------------------ derived datasets
    def subset(self, *, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ImageDataset:
        """The records at ``indices`` (in that order); classes and their names are kept.

        Args:
            indices: 1-D integer indices into this dataset (repeats allowed).
            name: Name of the new dataset (default: this one's).

        Returns:
            A new dataset sharing no writable memory with this one.

        Raises:
            DatasetFormatError: If ``indices`` is not 1-D integer or is out of range.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DatasetFormatError(
                f"{self.describe()}: subset indices must be a 1-D integer array, got dtype "
                f"{idx.dtype} with shape {idx.shape}"
            )
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_records):
            raise DatasetFormatError(
                f"{self.describe()}: subset indices must lie in [0, {self.num_records}), got range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return ImageDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            class_groups=self.class_groups,
            name=self.name if name is None else name,
            source=self.source,
        )

    def select_classes(self, *, classes: Sequence[int], name: str | None = None) -> ImageDataset:
        """Keep only the records of ``classes`` and relabel them densely.

        Class ``classes[i]`` becomes label ``i``; its name and group move with it.

        Args:
            classes: Distinct class labels of this dataset, in the order of the new labels.
            name: Name of the new dataset (default: this one's).

        Returns:
            A dataset with ``len(classes)`` classes.

        Raises:
            DatasetFormatError: If ``classes`` is empty, has repeats or is out of range.
        """
        chosen = [int(c) for c in classes]
        if not chosen:
            raise DatasetFormatError(f"{self.describe()}: select_classes needs at least one class")
        if len(set(chosen)) != len(chosen):
            raise DatasetFormatError(f"{self.describe()}: select_classes got repeated classes {chosen}")
        bad = [c for c in chosen if not 0 <= c < self.num_classes]
        if bad:
            raise DatasetFormatError(f"{self.describe()}: classes {bad} are not in [0, {self.num_classes})")
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[np.asarray(chosen, dtype=np.int64)] = np.arange(len(chosen), dtype=np.int64)
        new_labels = mapping[self.labels]
        keep = np.flatnonzero(new_labels >= 0)
        return ImageDataset(
            images=self.images[keep],
            labels=new_labels[keep],
            class_names=tuple(self.class_names[c] for c in chosen),
            class_groups=tuple(self.class_groups[c] for c in chosen),
            name=self.name if name is None else name,
            source=self.source,
        )

    def select_groups(self, *, groups: Sequence[str], name: str | None = None) -> ImageDataset:
        """Keep the classes whose group is in ``groups`` (e.g. some Omniglot alphabets).

        Classes keep their relative order and are relabelled densely.

        Args:
            groups: Group names to keep; each must occur in ``class_groups``.
            name: Name of the new dataset (default: this one's).

        Returns:
            The selected dataset.

        Raises:
            DatasetFormatError: If a requested group does not exist.
        """
        wanted = list(groups)
        missing = sorted(set(wanted) - set(self.class_groups))
        if missing:
            raise DatasetFormatError(
                f"{self.describe()}: groups {missing} not found; available: {sorted(set(self.class_groups))}"
            )
        keep = set(wanted)
        classes = [c for c, g in enumerate(self.class_groups) if g in keep]
        return self.select_classes(classes=classes, name=name)

    # ------------------------------------------------------------------ reporting
    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary.

        Returns:
            ``{"name", "source", "records", "classes", "groups", "input_shape",
            "min_per_class", "max_per_class"}`` (per-class counts over all classes).
        """
        counts = self.class_counts()
        return {
            "name": self.name,
            "source": self.source,
            "records": self.num_records,
            "classes": self.num_classes,
            "groups": len(set(self.class_groups)),
            "input_shape": list(self.input_shape),
            "min_per_class": int(counts.min()),
            "max_per_class": int(counts.max()),
        }
