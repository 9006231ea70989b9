"""One entry point that loads any supported dataset by name (called by the config layer).

=============  ==============================================  =====================================
name           ``root``                                        ``split``
=============  ==============================================  =====================================
``digits``     ignored (embedded in scikit-learn)              ``"all"``, ``"train"`` or ``"test"``:
                                                               **all three return all 1,797
                                                               records**; digits has no predefined
                                                               split, the caller picks classes
                                                               (``select_classes``) or partitions.
``omniglot``   folder with the official archives (zips or      ``"train"``: meta-train alphabets,
               extracted folders); ``None``, ``""`` or         ``"test"``: the disjoint meta-test
               ``"embedded"``: the copy embedded in secfed     alphabets of the standard split
               (small archives, 28x28 only; see                (see ``load_omniglot_standard_split``)
               :mod:`secfed.data.omniglot_embedded`)
``medmnist``   a MedMNIST ``.npz`` file, or the folder         ``"train"``, ``"val"``, ``"test"``
               holding ``medmnist_file``
=============  ==============================================  =====================================

Optional requirements ``min_classes`` / ``min_per_class`` are checked on the loaded split, so a
run fails at load time, naming the data path, rather than when the first task is drawn.
"""

from __future__ import annotations

from pathlib import Path

from secfed.data.dataset import ImageDataset
from secfed.data.digits import load_digits_dataset
from secfed.data.errors import DatasetFormatError, DatasetNotFoundError, InsufficientDataError
from secfed.data.medmnist import MEDMNIST_SPLITS, load_medmnist
from secfed.data.omniglot import load_omniglot_standard_split
from secfed.data.omniglot_embedded import EMBEDDED_ROOT, load_embedded_omniglot_split

__all__ = ["DATASET_NAMES", "load_dataset", "require_classes"]

DATASET_NAMES: tuple[str, ...] = ("digits", "omniglot", "medmnist")


def require_classes(*, dataset: ImageDataset, min_classes: int, min_per_class: int) -> None:
    """Check that ``dataset`` has ``min_classes`` classes with ``min_per_class`` records each.

    Args:
        dataset: The dataset to check.
        min_classes: Classes that must each have at least ``min_per_class`` records.
        min_per_class: Records required per counted class.

    Raises:
        InsufficientDataError: Naming the dataset, its source, the requirement and the counts.
    """
    counts = dataset.class_counts()
    eligible = int((counts >= min_per_class).sum())
    if eligible < min_classes:
        raise InsufficientDataError(
            f"{dataset.describe()}: needs at least {min_classes} classes with >= {min_per_class} "
            f"records each, but only {eligible} of its {dataset.num_classes} classes qualify "
            f"(records per class: min {int(counts.min())}, max {int(counts.max())})"
        )


def load_dataset(
    *,
    name: str,
    root: str | Path | None,
    split: str,
    rotations: bool = False,
    image_size: int = 28,
    omniglot_variant: str = "auto",
    medmnist_file: str = "pneumoniamnist.npz",
    min_classes: int = 1,
    min_per_class: int = 1,
    cache: bool = True,
) -> ImageDataset:
    """Load a dataset split by name.

    Args:
        name: ``"digits"``, ``"omniglot"`` or ``"medmnist"``.
        root: Data location (see the module table); ``None`` for digits and for the embedded
            Omniglot (also ``""`` or ``"embedded"``).
        split: The split (see the module table).
        rotations: Omniglot only: add rotated classes (x4) to the split.
        image_size: Omniglot only: output image side.
        omniglot_variant: Omniglot only: ``"auto"``, ``"small"`` or ``"full"``.
        medmnist_file: MedMNIST only: the file name inside ``root`` when ``root`` is a folder.
        min_classes: Require at least this many classes with ``min_per_class`` records.
        min_per_class: Records required per counted class.
        cache: Omniglot only: cache decoded archives.

    Returns:
        The split as an :class:`ImageDataset` (float32 ``(N, C, H, W)`` in ``[0, 1]``).

    Raises:
        DatasetFormatError: If the name or split is unknown, or the data is malformed.
        DatasetNotFoundError: If ``root`` is missing (or ``None`` where a path is required).
        InsufficientDataError: If the split has too few classes or records per class.
    """
    if name not in DATASET_NAMES:
        raise DatasetFormatError(f"unknown dataset {name!r}; known datasets: {DATASET_NAMES}")
    if name == "digits":
        if split not in ("all", "train", "test"):
            raise DatasetFormatError(f"digits split must be 'all', 'train' or 'test', got {split!r}")
        dataset = load_digits_dataset()
    elif name == "omniglot" and (root is None or str(root) in ("", EMBEDDED_ROOT)):
        if split not in ("train", "test"):
            raise DatasetFormatError(f"omniglot split must be 'train' or 'test', got {split!r}")
        if omniglot_variant not in ("auto", "small"):
            raise DatasetFormatError(
                f"the embedded Omniglot copy holds the 'small' split only, got variant {omniglot_variant!r}; "
                f"give root= a folder with the official archives for the full split"
            )
        train, test = load_embedded_omniglot_split(
            train_rotations=rotations and split == "train",
            test_rotations=rotations and split == "test",
            image_size=image_size,
        )
        dataset = train if split == "train" else test
    elif root is None:
        raise DatasetNotFoundError(f"dataset {name!r} needs a data root (got root=None)")
    elif name == "omniglot":
        if split not in ("train", "test"):
            raise DatasetFormatError(f"omniglot split must be 'train' or 'test', got {split!r}")
        train, test = load_omniglot_standard_split(
            root=Path(root),
            variant=omniglot_variant,
            train_rotations=rotations and split == "train",
            test_rotations=rotations and split == "test",
            image_size=image_size,
            cache=cache,
        )
        dataset = train if split == "train" else test
    else:
        if split not in MEDMNIST_SPLITS:
            raise DatasetFormatError(f"medmnist split must be one of {MEDMNIST_SPLITS}, got {split!r}")
        path = Path(root)
        if path.is_dir():
            path = path / medmnist_file
        dataset = load_medmnist(path=path, split=split)
    require_classes(dataset=dataset, min_classes=min_classes, min_per_class=min_per_class)
    return dataset
