"""Episodic N-way K-shot sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secfed.data import InsufficientDataError, load_digits_dataset
from secfed.errors import DataError
from secfed.tasks import EpisodicTaskSource, Task, TaskSource


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_shapes_labels_and_protocol(digits) -> None:
    source = EpisodicTaskSource(dataset=digits, n_way=5, k_shot=3, q_query=4)
    _typed: TaskSource = source  # structural conformance (TaskSource is a Protocol)
    assert callable(_typed.sample)
    task = source.sample(rng=np.random.default_rng(0))
    assert isinstance(task, Task) and task.n_way == 5
    assert task.support_x.shape == (15, 1, 8, 8) and task.query_x.shape == (20, 1, 8, 8)
    assert task.support_x.dtype == torch.float32 and task.support_y.dtype == torch.int64
    assert torch.equal(task.support_y, torch.arange(5).repeat_interleave(3))  # label-major
    assert torch.equal(task.query_y, torch.arange(5).repeat_interleave(4))
    assert task.num_examples == 35


def test_records_match_their_task_labels_and_never_overlap(make_dataset) -> None:
    ds = make_dataset([8] * 12)
    source = EpisodicTaskSource(dataset=ds, n_way=4, k_shot=2, q_query=3)
    rng = np.random.default_rng(1)
    for _ in range(50):
        classes, support, query = source.sample_indices(rng=rng)
        assert len(set(classes.tolist())) == 4
        assert not set(support.tolist()) & set(query.tolist())
        assert len(set(support.tolist()) | set(query.tolist())) == 4 * 5
        np.testing.assert_array_equal(ds.labels[support], np.repeat(classes, 2))
        np.testing.assert_array_equal(ds.labels[query], np.repeat(classes, 3))
    task = source.sample(rng=np.random.default_rng(2))
    classes, support, query = source.sample_indices(rng=np.random.default_rng(2))
    # pixels identify records: the task's tensors are exactly the drawn records
    np.testing.assert_array_equal(task.support_x.numpy()[:, 0, 0, 0], ds.images[support, 0, 0, 0])
    np.testing.assert_array_equal(task.query_x.numpy()[:, 0, 0, 0], ds.images[query, 0, 0, 0])


def test_label_order_is_random_and_classes_are_uniform(make_dataset) -> None:
    ds = make_dataset([5] * 6)
    source = EpisodicTaskSource(dataset=ds, n_way=3, k_shot=1, q_query=1)
    rng = np.random.default_rng(3)
    first_class = [int(source.sample_indices(rng=rng)[0][0]) for _ in range(600)]
    counts = np.bincount(first_class, minlength=6)
    assert counts.min() > 60  # each class takes label 0 about 1/6 of the time (100 expected)


def test_only_eligible_classes_are_drawn(make_dataset) -> None:
    ds = make_dataset([3, 10, 10, 2, 10])
    source = EpisodicTaskSource(dataset=ds, n_way=3, k_shot=2, q_query=2)
    np.testing.assert_array_equal(source.eligible_classes, [1, 2, 4])
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert set(source.sample_indices(rng=rng)[0].tolist()) == {1, 2, 4}


def test_determinism_from_rng(digits) -> None:
    source = EpisodicTaskSource(dataset=digits, n_way=5, k_shot=1, q_query=5)
    a, b = source.sample(rng=np.random.default_rng(42)), source.sample(rng=np.random.default_rng(42))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    c = source.sample(rng=np.random.default_rng(43))
    assert not torch.equal(a.support_x, c.support_x)


def test_tensors_are_independent_of_the_dataset(digits) -> None:
    source = EpisodicTaskSource(dataset=digits, n_way=2, k_shot=1, q_query=1)
    task = source.sample(rng=np.random.default_rng(0))
    before = digits.images.copy()
    task.support_x.add_(1.0)  # writable, and writing does not touch the dataset
    np.testing.assert_array_equal(digits.images, before)


def test_too_few_classes(make_dataset) -> None:
    ds = make_dataset([20, 20, 3], name="tiny")
    with pytest.raises(InsufficientDataError) as info:
        EpisodicTaskSource(dataset=ds, n_way=3, k_shot=1, q_query=5)
    message = str(info.value)
    assert "dataset 'tiny'" in message and "at least 3 classes with >= 6 records" in message
    assert "only 2 of its 3 classes qualify" in message and "min 3, max 20" in message


def test_too_few_shots(digits) -> None:
    with pytest.raises(DataError, match=r"needs at least 5 classes with >= 200 records .* only 0 of its 10"):
        EpisodicTaskSource(dataset=digits, n_way=5, k_shot=100, q_query=100)
    with pytest.raises(DataError, match="at least 11 classes"):
        EpisodicTaskSource(dataset=digits, n_way=11, k_shot=1, q_query=1)


@pytest.mark.parametrize("field", ["n_way", "k_shot", "q_query"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_invalid_sizes(digits, field: str, value) -> None:
    args = {"n_way": 2, "k_shot": 1, "q_query": 1, field: value}
    with pytest.raises(DataError, match=f"{field} must be an integer >= 1"):
        EpisodicTaskSource(dataset=digits, **args)
