"""Federated partitioners: coverage, reproducibility, skew, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfed.data import (
    PARTITION_SCHEMES,
    PartitionError,
    class_disjoint_partition,
    dirichlet_partition,
    iid_partition,
    load_digits_dataset,
    partition_dataset,
    partition_summary,
    quantity_skew_partition,
)
from secfed.errors import DataError


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_every_scheme_covers_each_record_once_and_is_reproducible(digits, scheme: str) -> None:
    parts = partition_dataset(dataset=digits, scheme=scheme, num_sites=5, seed=7)
    assert len(parts) == 5 and all(p.size > 0 for p in parts)
    _assert_exact_cover(parts, digits.num_records)
    again = partition_dataset(dataset=digits, scheme=scheme, num_sites=5, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_dataset(dataset=digits, scheme=scheme, num_sites=5, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sizes_and_mixture(digits) -> None:
    parts = iid_partition(num_records=digits.num_records, num_sites=4, seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for row in partition_summary(labels=digits.labels, partition=parts):
        assert row["classes"] == 10 and row["effective_classes"] > 9.5


def test_class_disjoint_sites_share_no_class(digits) -> None:
    parts = class_disjoint_partition(labels=digits.labels, num_sites=3, seed=1)
    owned = [set(np.unique(digits.labels[p]).tolist()) for p in parts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not owned[i] & owned[j]
    assert set().union(*owned) == set(range(10))
    assert sorted(len(o) for o in owned) == [3, 3, 4]
    # a site owns *all* records of its classes
    for p, classes in zip(parts, owned, strict=True):
        assert p.size == int(np.isin(digits.labels, list(classes)).sum())


def test_class_disjoint_needs_enough_classes(digits) -> None:
    with pytest.raises(PartitionError, match="at least num_sites \\* min_classes_per_site = 11 \\* 1 = 11"):
        class_disjoint_partition(labels=digits.labels, num_sites=11, seed=0)
    with pytest.raises(PartitionError, match="4 \\* 3 = 12 classes, but the labels hold 10"):
        partition_dataset(
            dataset=digits, scheme="class_disjoint", num_sites=4, seed=0, min_classes_per_site=3
        )


def test_dirichlet_small_alpha_concentrates_labels(digits) -> None:
    def mean_effective(alpha: float) -> float:
        values = []
        for seed in range(5):
            parts = dirichlet_partition(labels=digits.labels, num_sites=5, alpha=alpha, seed=seed)
            values += [
                r["effective_classes"] for r in partition_summary(labels=digits.labels, partition=parts)
            ]
        return float(np.mean(values))

    skewed, mild, near_iid = mean_effective(0.05), mean_effective(1.0), mean_effective(1000.0)
    assert skewed < 3.0 < mild < near_iid
    assert near_iid > 9.5


def test_dirichlet_min_size_and_failure_message(digits) -> None:
    parts = dirichlet_partition(labels=digits.labels, num_sites=10, alpha=0.1, seed=0, min_size=20)
    assert min(p.size for p in parts) >= 20
    with pytest.raises(PartitionError, match="could not give each of 10 sites at least 170"):
        dirichlet_partition(
            labels=digits.labels, num_sites=10, alpha=0.01, seed=0, min_size=170, max_attempts=5
        )


def test_quantity_skew_sizes(digits) -> None:
    n = digits.num_records
    skewed = quantity_skew_partition(num_records=n, num_sites=8, alpha=0.1, seed=0, min_size=10)
    even = quantity_skew_partition(num_records=n, num_sites=8, alpha=1000.0, seed=0, min_size=10)
    assert min(p.size for p in skewed) >= 10
    assert np.std([p.size for p in skewed]) > 5 * np.std([p.size for p in even])
    # label-agnostic: a large site's label mix follows the data's
    big = max(skewed, key=lambda p: p.size)
    assert partition_summary(labels=digits.labels, partition=[big])[0]["classes"] == 10


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=300),
    sites=st.integers(min_value=1, max_value=12),
    alpha=st.floats(min_value=0.01, max_value=100.0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_size_partitions_cover_exactly(n: int, sites: int, alpha: float, seed: int) -> None:
    min_size = 1 if n >= sites else 0
    _assert_exact_cover(iid_partition(num_records=n, num_sites=sites, seed=seed, min_size=min_size), n)
    parts = quantity_skew_partition(num_records=n, num_sites=sites, alpha=alpha, seed=seed, min_size=min_size)
    assert len(parts) == sites and min(p.size for p in parts) >= min_size
    _assert_exact_cover(parts, n)


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(min_value=0, max_value=6), min_size=12, max_size=200),
    sites=st.integers(min_value=1, max_value=4),
    alpha=st.floats(min_value=0.05, max_value=50.0),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_dirichlet_covers_exactly(labels: list[int], sites: int, alpha: float, seed: int) -> None:
    y = np.asarray(labels)
    parts = dirichlet_partition(labels=y, num_sites=sites, alpha=alpha, seed=seed, min_size=0)
    _assert_exact_cover(parts, y.size)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be a finite number > 0, got 0.0"),
        ({"scheme": "dirichlet", "alpha": -1.0}, "alpha must be a finite number > 0"),
        ({"scheme": "quantity_skew", "alpha": float("nan")}, "alpha must be a finite number > 0"),
        ({"scheme": "iid", "num_sites": 0}, "num_sites must be an integer >= 1, got 0"),
        ({"scheme": "iid", "num_sites": 2000}, "1797 records cannot give 2000 sites"),
        ({"scheme": "iid", "seed": -1}, "seed must be an integer >= 0"),
        ({"scheme": "random", "num_sites": 2}, "partition scheme must be one of"),
    ],
)
def test_invalid_requests(digits, kwargs: dict, fragment: str) -> None:
    args = {"num_sites": 3, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")) as info:
        partition_dataset(dataset=digits, **args)
    assert isinstance(info.value, PartitionError)
    if kwargs["scheme"] != "random":
        assert "dataset 'digits'" in str(info.value)


def test_partition_summary_counts() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    rows = partition_summary(
        labels=labels, partition=[np.array([0, 1]), np.array([2, 4, 5]), np.array([], np.int64)]
    )
    assert [r["records"] for r in rows] == [2, 3, 0]
    assert [r["classes"] for r in rows] == [1, 2, 0]
    assert rows[0]["effective_classes"] == pytest.approx(1.0)
    assert rows[1]["effective_classes"] == pytest.approx(
        np.exp(-(1 / 3) * np.log(1 / 3) - (2 / 3) * np.log(2 / 3))
    )
    assert rows[1]["largest_class_fraction"] == pytest.approx(2 / 3)
    with pytest.raises(PartitionError, match="site 0"):
        partition_summary(labels=labels, partition=[np.array([8])])
