"""Client-as-task sampler (FedMeta / Per-FedAvg)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secfed.data import InsufficientDataError, load_digits_dataset, partition_dataset
from secfed.errors import DataError
from secfed.tasks import ClientTaskSource, TaskSource, client_evaluation_task


@pytest.fixture(scope="module")
def site():
    digits = load_digits_dataset()
    parts = partition_dataset(dataset=digits, scheme="dirichlet", num_sites=4, seed=0, alpha=0.3)
    return digits.subset(indices=parts[0], name="site0")


def test_global_labels_are_kept(site) -> None:
    source = ClientTaskSource(dataset=site, support_size=10, query_size=15)
    _typed: TaskSource = source  # structural conformance (TaskSource is a Protocol)
    assert callable(_typed.sample)
    support, query = source.sample_indices(rng=np.random.default_rng(0))
    task = source.sample(rng=np.random.default_rng(0))
    assert task.n_way == 10 == site.num_classes
    assert task.support_x.shape == (10, 1, 8, 8) and task.query_x.shape == (15, 1, 8, 8)
    np.testing.assert_array_equal(task.support_y.numpy(), site.labels[support])
    np.testing.assert_array_equal(task.query_y.numpy(), site.labels[query])
    np.testing.assert_array_equal(task.query_x.numpy(), site.images[query])
    assert not set(support.tolist()) & set(query.tolist())
    assert task.support_y.dtype == torch.int64


def test_fraction_and_default_query(site) -> None:
    n = site.num_records
    source = ClientTaskSource(dataset=site, support_fraction=0.25)
    assert source.support_size == int(0.25 * n) and source.query_size == n - int(0.25 * n)
    support, query = source.sample_indices(rng=np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(np.concatenate([support, query])), np.arange(n))


def test_determinism(site) -> None:
    source = ClientTaskSource(dataset=site, support_size=5, query_size=5)
    a, b = source.sample(rng=np.random.default_rng(9)), source.sample(rng=np.random.default_rng(9))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    c = source.sample(rng=np.random.default_rng(10))
    assert not torch.equal(a.support_x, c.support_x)


def test_evaluation_task_uses_the_rest_as_query(site) -> None:
    task = client_evaluation_task(dataset=site, support_size=7, rng=np.random.default_rng(0))
    assert task.support_y.shape == (7,) and task.query_y.shape == (site.num_records - 7,)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([task.support_y.numpy(), task.query_y.numpy()])), np.sort(site.labels)
    )


def test_validation(make_dataset) -> None:
    small = make_dataset([2, 2], name="small-site")
    with pytest.raises(
        InsufficientDataError, match=r"dataset 'small-site'.*\(3 \+ 2 = 5\), but the site holds 4"
    ):
        ClientTaskSource(dataset=small, support_size=3, query_size=2)
    with pytest.raises(InsufficientDataError, match="holds 4"):
        client_evaluation_task(dataset=small, support_size=4, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="exactly one of"):
        ClientTaskSource(dataset=small)
    with pytest.raises(DataError, match="exactly one of"):
        ClientTaskSource(dataset=small, support_size=1, support_fraction=0.5)
    with pytest.raises(DataError, match=r"support_fraction must be a number in \(0, 1\)"):
        ClientTaskSource(dataset=small, support_fraction=1.0)
    with pytest.raises(DataError, match="support_size must be an integer >= 1"):
        ClientTaskSource(dataset=small, support_size=0)
    with pytest.raises(DataError, match="query_size must be an integer >= 1"):
        ClientTaskSource(dataset=small, support_size=1, query_size=0)


def test_held_out_sites_source_draws_from_every_site_only() -> None:
    from secfed.tasks.client_task import HeldOutSitesSource

    digits = load_digits_dataset()
    parts = partition_dataset(dataset=digits, scheme="iid", num_sites=3, seed=0)
    sites = [ClientTaskSource(dataset=digits.subset(indices=p), support_size=5, query_size=5) for p in parts]
    source = HeldOutSitesSource(sites=sites)
    _typed: TaskSource = source
    assert callable(_typed.sample) and source.n_way == 10
    owners = []
    rng = np.random.default_rng(0)
    images = [s.dataset.images.reshape(s.dataset.num_records, -1) for s in sites]
    for _ in range(30):
        task = source.sample(rng=rng)
        rows = torch.cat([task.support_x, task.query_x]).reshape(10, -1).numpy()
        # every record of a task comes from one held-out site
        hits = [sum(bool((img == r).all(axis=1).any()) for r in rows) for img in images]
        assert max(hits) == 10
        owners.append(int(np.argmax(hits)))
    assert set(owners) == {0, 1, 2}
    with pytest.raises(DataError, match="at least one"):
        HeldOutSitesSource(sites=[])


def test_client_as_task_config_builds_held_out_test_sites() -> None:
    from secfed import components
    from secfed.config import config_from_dict
    from secfed.tasks.client_task import HeldOutSitesSource

    cfg = config_from_dict(
        {
            "partition": {"scheme": "dirichlet", "num_sites": 3, "test_sites": 2},
            "task": {"source": "client_as_task", "support_fraction": 0.5},
            "learner": {"name": "fedavg"},
        }
    )
    train, test = components.load_splits(config=cfg)
    source = components.build_test_source(config=cfg, test=test)
    assert isinstance(source, HeldOutSitesSource) and len(source.sites) == 2
    assert sum(s.dataset.num_records for s in source.sites) == test.num_records
    one = config_from_dict({"task": {"source": "client_as_task"}, "learner": {"name": "fedavg"}})
    assert not isinstance(components.build_test_source(config=one, test=test), HeldOutSitesSource)
