"""Federated partitioners: split a dataset's record indices among sites.

Every partitioner returns ``list[np.ndarray]``: one sorted int64 index array per site. Together
the arrays cover every record exactly once (for class-disjoint partitions: every record of the
classes that occur). All randomness comes from ``numpy.random.default_rng(seed)``, so a
partition is reproducible from its seed. (Partitioning simulates how data happens to be spread
over sites; it is not a security mechanism, so a seeded non-cryptographic generator is right.)

Schemes:

* ``"iid"``: a uniformly random split into near-equal parts.
* ``"dirichlet"``: label skew; for every class, site shares are drawn from
  ``Dirichlet(alpha * 1)`` (Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification"; redrawn until every site holds
  ``min_size`` records, as in Yurochkin et al. 2019). Small ``alpha`` -> few classes per site.
* ``"class_disjoint"``: each site owns whole classes and no two sites share a class: the
  few-shot consortium case where sites hold different categories.
* ``"quantity_skew"``: label-agnostic, site sizes drawn from ``Dirichlet(alpha * 1)`` on top
  of ``min_size`` records each (Li, Diao, Chen & He 2022, "Federated Learning on Non-IID Data
  Silos: An Experimental Study", ICDE).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import PartitionError

__all__ = [
    "PARTITION_SCHEMES",
    "iid_partition",
    "dirichlet_partition",
    "class_disjoint_partition",
    "quantity_skew_partition",
    "partition_dataset",
    "partition_summary",
    "site_class_lists",
]

PARTITION_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "class_disjoint", "quantity_skew")


# ---------------------------------------------------------------------------------- validation
def _check_int(value: Any, *, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise PartitionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
    value = float(alpha)
    if not math.isfinite(value) or value <= 0.0:
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
    return value


def _check_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise PartitionError(
            f"labels must be a 1-D integer array, got dtype {arr.dtype} with shape {arr.shape}"
        )
    arr = arr.astype(np.int64)
    if arr.size and int(arr.min()) < 0:
        raise PartitionError(f"labels must be >= 0, got minimum {int(arr.min())}")
    return arr


def _check_enough(num_records: int, num_sites: int, min_size: int) -> None:
    if num_records < num_sites * min_size:
        raise PartitionError(
            f"{num_records} records cannot give {num_sites} sites at least {min_size} record(s) each "
            f"(need num_records >= num_sites * min_size = {num_sites * min_size})"
        )


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ---------------------------------------------------------------------------------- schemes
def iid_partition(*, num_records: int, num_sites: int, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """Split ``range(num_records)`` uniformly at random into near-equal parts.

    Args:
        num_records: Number of records.
        num_sites: Number of sites (>= 1).
        seed: Seed of the generator.
        min_size: Minimum records per site (>= 0).

    Returns:
        One sorted int64 index array per site; sizes differ by at most one.

    Raises:
        PartitionError: If an argument is invalid or there are too few records.
    """
    num_records = _check_int(num_records, name="num_records", minimum=0)
    num_sites = _check_int(num_sites, name="num_sites", minimum=1)
    seed = _check_int(seed, name="seed", minimum=0)
    min_size = _check_int(min_size, name="min_size", minimum=0)
    _check_enough(num_records, num_sites, min_size)
    rng = np.random.default_rng(seed)
    return _finish(np.array_split(rng.permutation(num_records), num_sites))


def dirichlet_partition(
    *,
    labels: Sequence[int] | np.ndarray,
    num_sites: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Label-skewed split: every class is spread over sites with ``Dirichlet(alpha)`` shares.

    Args:
        labels: Label of each record.
        num_sites: Number of sites (>= 1).
        alpha: Dirichlet concentration (> 0); ``alpha -> inf`` approaches IID, small ``alpha``
            gives each site few classes.
        seed: Seed of the generator.
        min_size: Minimum records per site; draws are repeated until it holds.
        max_attempts: Number of draws before giving up.

    Returns:
        One sorted int64 index array per site.

    Raises:
        PartitionError: If an argument is invalid, there are too few records, or no draw in
            ``max_attempts`` gave every site ``min_size`` records.
    """
    y = _check_labels(labels)
    num_sites = _check_int(num_sites, name="num_sites", minimum=1)
    conc = _check_alpha(alpha)
    seed = _check_int(seed, name="seed", minimum=0)
    min_size = _check_int(min_size, name="min_size", minimum=0)
    max_attempts = _check_int(max_attempts, name="max_attempts", minimum=1)
    _check_enough(int(y.size), num_sites, min_size)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for idx in by_class:
            shuffled = rng.permutation(idx)
            shares = rng.dirichlet(np.full(num_sites, conc))
            cuts = np.floor(np.cumsum(shares)[:-1] * shuffled.size).astype(np.int64)
            for site, piece in enumerate(np.split(shuffled, cuts)):
                parts[site].append(piece)
        merged = [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]
        if min(m.size for m in merged) >= min_size:
            return _finish(merged)
    raise PartitionError(
        f"dirichlet partition with alpha={conc} could not give each of {num_sites} sites at least "
        f"{min_size} record(s) in {max_attempts} draws ({y.size} records, {classes.size} classes); "
        f"raise alpha, lower min_size or use fewer sites"
    )


def class_disjoint_partition(
    *,
    labels: Sequence[int] | np.ndarray,
    num_sites: int,
    seed: int,
    min_classes_per_site: int = 1,
) -> list[np.ndarray]:
    """Give each site whole classes; no two sites share a class.

    The classes that occur in ``labels`` are shuffled and dealt into ``num_sites`` near-equal
    groups; a site receives every record of its classes.

    Args:
        labels: Label of each record.
        num_sites: Number of sites (>= 1).
        seed: Seed of the generator.
        min_classes_per_site: Classes each site must own (e.g. the ``n_way`` of its tasks).

    Returns:
        One sorted int64 index array per site.

    Raises:
        PartitionError: If an argument is invalid or there are fewer than
            ``num_sites * min_classes_per_site`` classes.
    """
    y = _check_labels(labels)
    num_sites = _check_int(num_sites, name="num_sites", minimum=1)
    seed = _check_int(seed, name="seed", minimum=0)
    min_classes = _check_int(min_classes_per_site, name="min_classes_per_site", minimum=1)
    classes = np.unique(y)
    if classes.size < num_sites * min_classes:
        raise PartitionError(
            f"class-disjoint partition needs at least num_sites * min_classes_per_site = "
            f"{num_sites} * {min_classes} = {num_sites * min_classes} classes, but the labels hold "
            f"{classes.size}"
        )
    groups = _deal_classes(classes=classes, num_sites=num_sites, seed=seed)
    return _finish([np.flatnonzero(np.isin(y, g)) for g in groups])


def _deal_classes(*, classes: np.ndarray, num_sites: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``classes`` with the seed and deal them into ``num_sites`` near-equal groups."""
    rng = np.random.default_rng(seed)
    return np.array_split(rng.permutation(classes), num_sites)


def quantity_skew_partition(
    *, num_records: int, num_sites: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Label-agnostic split with site sizes ``min_size + Dirichlet(alpha)`` shares of the rest.

    Args:
        num_records: Number of records.
        num_sites: Number of sites (>= 1).
        alpha: Dirichlet concentration (> 0); small ``alpha`` gives very unequal sizes.
        seed: Seed of the generator.
        min_size: Records every site gets before the skewed share.

    Returns:
        One sorted int64 index array per site.

    Raises:
        PartitionError: If an argument is invalid or there are too few records.
    """
    num_records = _check_int(num_records, name="num_records", minimum=0)
    num_sites = _check_int(num_sites, name="num_sites", minimum=1)
    conc = _check_alpha(alpha)
    seed = _check_int(seed, name="seed", minimum=0)
    min_size = _check_int(min_size, name="min_size", minimum=0)
    _check_enough(num_records, num_sites, min_size)
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(num_sites, conc))
    rest = num_records - num_sites * min_size
    exact = shares * rest
    extra = np.floor(exact).astype(np.int64)
    leftover = rest - int(extra.sum())
    if leftover > 0:  # largest remainders get the last few records
        extra[np.argsort(-(exact - extra), kind="stable")[:leftover]] += 1
    sizes = extra + min_size
    cuts = np.cumsum(sizes)[:-1]
    return _finish(np.split(rng.permutation(num_records), cuts))


# ---------------------------------------------------------------------------------- helpers
def partition_dataset(
    *,
    dataset: ImageDataset,
    scheme: str,
    num_sites: int,
    seed: int,
    alpha: float = 0.5,
    min_size: int = 1,
    min_classes_per_site: int = 1,
) -> list[np.ndarray]:
    """Partition ``dataset`` with the named scheme.

    Args:
        dataset: The dataset to split (its ``labels`` drive the label-aware schemes).
        scheme: One of :data:`PARTITION_SCHEMES`.
        num_sites: Number of sites.
        seed: Seed of the generator.
        alpha: Dirichlet concentration for ``"dirichlet"`` and ``"quantity_skew"``.
        min_size: Minimum records per site (``"iid"``, ``"dirichlet"``, ``"quantity_skew"``).
        min_classes_per_site: Minimum classes per site (``"class_disjoint"``).

    Returns:
        One sorted int64 index array per site; ``dataset.subset(indices=...)`` materialises a
        site's data.

    Raises:
        PartitionError: If the scheme is unknown or the request cannot be met (the message names
            the dataset and the requirement).
    """
    if scheme not in PARTITION_SCHEMES:
        raise PartitionError(f"partition scheme must be one of {PARTITION_SCHEMES}, got {scheme!r}")
    try:
        if scheme == "iid":
            return iid_partition(
                num_records=dataset.num_records, num_sites=num_sites, seed=seed, min_size=min_size
            )
        if scheme == "dirichlet":
            return dirichlet_partition(
                labels=dataset.labels, num_sites=num_sites, alpha=alpha, seed=seed, min_size=min_size
            )
        if scheme == "class_disjoint":
            return class_disjoint_partition(
                labels=dataset.labels,
                num_sites=num_sites,
                seed=seed,
                min_classes_per_site=min_classes_per_site,
            )
        return quantity_skew_partition(
            num_records=dataset.num_records, num_sites=num_sites, alpha=alpha, seed=seed, min_size=min_size
        )
    except PartitionError as exc:
        raise PartitionError(f"{dataset.describe()}, scheme '{scheme}': {exc}") from exc


def site_class_lists(*, scheme: str, num_classes: int, num_sites: int, seed: int) -> list[tuple[int, ...]]:
    """Each site's *public* class list.

    It is a function of the configuration and the dataset's public description (its number of
    classes), never of the records a site holds.

    Under record-level DP the class list drives the public episode slot plans and task classes,
    so it must not change when one record is added or removed (removing the only record of a
    class must not remove the class from the list; see :mod:`secfed.dp.site`). For
    ``"class_disjoint"`` it is the group of classes the partition deals to the site (the same
    shuffle as :func:`class_disjoint_partition`, which equals it whenever every class has at
    least one record); for every other scheme a site may hold any class, so the list is every
    class of the dataset.

    Args:
        scheme: One of :data:`PARTITION_SCHEMES`.
        num_classes: Classes in the dataset's public description (``>= 1``).
        num_sites: Number of sites (``>= 1``).
        seed: The partition seed.

    Returns:
        One sorted tuple of class ids per site.

    Raises:
        PartitionError: If an argument is invalid or a class-disjoint partition has fewer classes
            than sites.
    """
    if scheme not in PARTITION_SCHEMES:
        raise PartitionError(f"partition scheme must be one of {PARTITION_SCHEMES}, got {scheme!r}")
    num_classes = _check_int(num_classes, name="num_classes", minimum=1)
    num_sites = _check_int(num_sites, name="num_sites", minimum=1)
    seed = _check_int(seed, name="seed", minimum=0)
    everything = np.arange(num_classes, dtype=np.int64)
    if scheme != "class_disjoint":
        return [tuple(int(c) for c in everything)] * num_sites
    if num_classes < num_sites:
        raise PartitionError(f"class-disjoint partition of {num_classes} classes over {num_sites} sites")
    groups = _deal_classes(classes=everything, num_sites=num_sites, seed=seed)
    return [tuple(sorted(int(c) for c in g)) for g in groups]


def partition_summary(
    *, labels: Sequence[int] | np.ndarray, partition: Sequence[np.ndarray]
) -> list[dict[str, int | float]]:
    """Per-site statistics of a partition.

    Args:
        labels: Label of each record of the partitioned dataset.
        partition: Index arrays, one per site.

    Returns:
        One dict per site: ``site``, ``records``, ``classes`` (distinct labels held),
        ``effective_classes`` (``exp`` of the entropy of the site's label distribution; equals
        ``classes`` when balanced, near 1 when one class dominates; 0 for an empty site) and
        ``largest_class_fraction``.

    Raises:
        PartitionError: If an index is out of range.
    """
    y = _check_labels(labels)
    rows: list[dict[str, int | float]] = []
    for site, part in enumerate(partition):
        idx = np.asarray(part, dtype=np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= y.size):
            raise PartitionError(f"site {site}: indices must lie in [0, {y.size})")
        counts = np.bincount(y[idx]) if idx.size else np.zeros(0, np.int64)
        counts = counts[counts > 0]
        if counts.size:
            p = counts / counts.sum()
            effective = float(np.exp(-(p * np.log(p)).sum()))
            largest = float(p.max())
        else:
            effective, largest = 0.0, 0.0
        rows.append(
            {
                "site": site,
                "records": int(idx.size),
                "classes": int(counts.size),
                "effective_classes": effective,
                "largest_class_fraction": largest,
            }
        )
    return rows
