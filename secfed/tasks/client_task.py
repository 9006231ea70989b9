"""Client-as-task: a site's own data split into support and query.

This is the task definition of FedMeta (Chen, Luo, Dong, Li & He 2018, "Federated Meta-Learning
with Fast Convergence and Efficient Communication") and Per-FedAvg (Fallah, Mokhtari & Ozdaglar,
NeurIPS 2020): each site is one task; the global model is adapted on a support set drawn from the
site's data and scored on a disjoint query set from the same site.

Unlike episodic tasks, **labels are not relabelled**: a client task uses the dataset's global
labels and ``n_way`` is the number of global classes (``dataset.num_classes``), so the model's
output layer is shared by all sites and a site need not hold every class. The label range
``[0, n_way)`` required by :class:`~secfed.tasks.base.Task` holds by construction.
Records are split uniformly at random (not stratified by class).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from secfed.data.dataset import ImageDataset
from secfed.data.errors import InsufficientDataError
from secfed.errors import DataError
from secfed.tasks.base import Task

__all__ = ["ClientTaskSource", "HeldOutSitesSource", "client_evaluation_task"]


def _support_size(*, dataset: ImageDataset, support_fraction: float | None, support_size: int | None) -> int:
    n = dataset.num_records
    if (support_fraction is None) == (support_size is None):
        raise DataError("give exactly one of support_fraction and support_size")
    if support_size is not None:
        if (
            isinstance(support_size, bool)
            or not isinstance(support_size, numbers.Integral)
            or support_size < 1
        ):
            raise DataError(f"support_size must be an integer >= 1, got {support_size!r}")
        return int(support_size)
    assert support_fraction is not None
    if (
        isinstance(support_fraction, bool)
        or not isinstance(support_fraction, numbers.Real)
        or not 0.0 < float(support_fraction) < 1.0
    ):
        raise DataError(f"support_fraction must be a number in (0, 1), got {support_fraction!r}")
    return max(1, int(math.floor(float(support_fraction) * n)))


class ClientTaskSource:
    """Draws support/query tasks from one site's own data (a :class:`~secfed.tasks.base.TaskSource`).

    Every call draws ``support_size + query_size`` distinct records uniformly at random; the
    first ``support_size`` form the support set, the rest the query set.

    Args:
        dataset: The site's data.
        support_fraction: Support size as a fraction of the site's records (floored, >= 1).
        support_size: Support size in records (give exactly one of the two).
        query_size: Query size in records; ``None`` means every record not in the support set.

    Raises:
        DataError: If the sizes are invalid.
        InsufficientDataError: If the site has fewer than ``support_size + query_size`` records
            (the message names the dataset and the counts).
    """

    def __init__(
        self,
        *,
        dataset: ImageDataset,
        support_fraction: float | None = None,
        support_size: int | None = None,
        query_size: int | None = None,
    ) -> None:
        support = _support_size(dataset=dataset, support_fraction=support_fraction, support_size=support_size)
        n = dataset.num_records
        if query_size is None:
            query = n - support
        elif isinstance(query_size, bool) or not isinstance(query_size, numbers.Integral) or query_size < 1:
            raise DataError(f"query_size must be an integer >= 1 or None, got {query_size!r}")
        else:
            query = int(query_size)
        if query < 1 or support + query > n:
            raise InsufficientDataError(
                f"{dataset.describe()}: a client task needs support_size + query_size records with "
                f"query_size >= 1 ({support} + {max(query, 1)} = {support + max(query, 1)}), "
                f"but the site holds {n}"
            )
        self.dataset = dataset
        self.support_size = support
        self.query_size = query
        self.n_way = dataset.num_classes

    def sample_indices(self, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(support_idx, query_idx)``: disjoint dataset indices.

        Args:
            rng: The only source of randomness.

        Returns:
            Support and query index arrays.
        """
        picks = rng.choice(self.dataset.num_records, size=self.support_size + self.query_size, replace=False)
        return picks[: self.support_size], picks[self.support_size :]

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw one client task (global labels, ``n_way = dataset.num_classes``).

        Args:
            rng: The only source of randomness.

        Returns:
            A :class:`Task` built from the site's own records.
        """
        support, query = self.sample_indices(rng=rng)
        images, labels = self.dataset.images, self.dataset.labels
        return Task(
            support_x=torch.from_numpy(images[support]),
            support_y=torch.from_numpy(labels[support]),
            query_x=torch.from_numpy(images[query]),
            query_y=torch.from_numpy(labels[query]),
            n_way=self.n_way,
        )


def client_evaluation_task(
    *,
    dataset: ImageDataset,
    rng: np.random.Generator,
    support_fraction: float | None = None,
    support_size: int | None = None,
) -> Task:
    """The evaluation task of a held-out site: a random support set, every other record as query.

    Args:
        dataset: The held-out site's data.
        rng: The only source of randomness (seed it for a fixed evaluation split).
        support_fraction: Support size as a fraction of the site's records.
        support_size: Support size in records (give exactly one of the two).

    Returns:
        A task whose query set is the rest of the site's data (global labels).

    Raises:
        DataError: If the sizes are invalid.
        InsufficientDataError: If no record would be left for the query set.
    """
    source = ClientTaskSource(
        dataset=dataset, support_fraction=support_fraction, support_size=support_size, query_size=None
    )
    return source.sample(rng=rng)


class HeldOutSitesSource:
    """Client-as-task evaluation over several held-out sites (a :class:`~secfed.tasks.base.TaskSource`).

    Each task first draws one held-out site uniformly at random, then a support/query split of
    that site's own data (:class:`ClientTaskSource`), as in FedMeta / Per-FedAvg evaluation on
    clients that never took part in training.

    Args:
        sites: One :class:`ClientTaskSource` per held-out site (all with the same ``n_way``).

    Raises:
        DataError: If ``sites`` is empty or the sites disagree on ``n_way``.
    """

    def __init__(self, *, sites: list[ClientTaskSource]) -> None:
        if not sites:
            raise DataError("HeldOutSitesSource needs at least one held-out site")
        ways = {s.n_way for s in sites}
        if len(ways) != 1:
            raise DataError(
                f"held-out sites must share the global label space, got n_way values {sorted(ways)}"
            )
        self.sites = list(sites)
        self.n_way = sites[0].n_way

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw a held-out site, then one of its client tasks.

        Args:
            rng: The only source of randomness.

        Returns:
            The task.
        """
        return self.sites[int(rng.integers(len(self.sites)))].sample(rng=rng)
