"""Datasets, loaders and federated partitioners.

Every loader returns an :class:`ImageDataset` (float32 ``(N, C, H, W)`` in ``[0, 1]``, int64
labels); every data problem raises a subclass of :class:`secfed.errors.DataError`.
"""

from secfed.data.dataset import ImageDataset
from secfed.data.digits import load_digits_dataset
from secfed.data.errors import (
    DatasetFormatError,
    DatasetNotFoundError,
    InsufficientDataError,
    PartitionError,
)
from secfed.data.medmnist import MEDMNIST_SPLITS, load_medmnist, load_medmnist_splits
from secfed.data.omniglot import (
    FULL_TEST_ARCHIVES,
    FULL_TRAIN_ARCHIVES,
    SMALL_TEST_ARCHIVES,
    SMALL_TRAIN_ARCHIVES,
    default_cache_dir,
    find_omniglot_archives,
    load_omniglot,
    load_omniglot_split,
    load_omniglot_standard_split,
)
from secfed.data.partition import (
    PARTITION_SCHEMES,
    class_disjoint_partition,
    dirichlet_partition,
    iid_partition,
    partition_dataset,
    partition_summary,
    quantity_skew_partition,
)
from secfed.data.registry import DATASET_NAMES, load_dataset, require_classes

__all__ = [
    "ImageDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "InsufficientDataError",
    "PartitionError",
    "load_digits_dataset",
    "MEDMNIST_SPLITS",
    "load_medmnist",
    "load_medmnist_splits",
    "SMALL_TRAIN_ARCHIVES",
    "SMALL_TEST_ARCHIVES",
    "FULL_TRAIN_ARCHIVES",
    "FULL_TEST_ARCHIVES",
    "default_cache_dir",
    "find_omniglot_archives",
    "load_omniglot",
    "load_omniglot_split",
    "load_omniglot_standard_split",
    "PARTITION_SCHEMES",
    "iid_partition",
    "dirichlet_partition",
    "class_disjoint_partition",
    "quantity_skew_partition",
    "partition_dataset",
    "partition_summary",
    "DATASET_NAMES",
    "load_dataset",
    "require_classes",
]
