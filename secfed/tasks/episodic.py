"""N-way K-shot episodic task sampling (Vinyals et al., "Matching Networks for One Shot
Learning", NeurIPS 2016; the episode protocol used by MAML, Reptile and Prototypical Networks).
"""

from __future__ import annotations

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import InsufficientDataError
from secfed.tasks.base import IndexedTaskSource, Task

__all__ = ["EpisodicTaskSource"]


class EpisodicTaskSource(IndexedTaskSource):
    """Draws N-way K-shot tasks from one dataset (a :class:`~secfed.tasks.base.TaskSource`).

    Each task picks ``n_way`` distinct classes uniformly among the classes that have at least
    ``k_shot + q_query`` records, then ``k_shot + q_query`` distinct records of each class; the
    first ``k_shot`` are support, the rest query, so support and query never share a record.
    The chosen classes get labels ``0 .. n_way-1`` in random order (the order they were drawn).
    Support and query are label-major: all records of label 0 first, then label 1, ...
    (``support_y == repeat(arange(n_way), k_shot)``), which prototype-based learners may rely on.

    Args:
        dataset: The site's data.
        n_way: Classes per task.
        k_shot: Support records per class.
        q_query: Query records per class.

    Raises:
        DataError: If an argument is not a positive integer.
        InsufficientDataError: If fewer than ``n_way`` classes have ``k_shot + q_query``
            records (the message names the dataset, the requirement and the counts).
    """

    def __init__(self, *, dataset: ImageDataset, n_way: int, k_shot: int, q_query: int) -> None:
        self._set_shape(n_way=n_way, k_shot=k_shot, q_query=q_query)
        self.dataset = dataset
        per_class = self.k_shot + self.q_query
        counts = dataset.class_counts()
        eligible = np.flatnonzero(counts >= per_class)
        if eligible.size < self.n_way:
            raise InsufficientDataError(
                f"{dataset.describe()}: a {self.n_way}-way {self.k_shot}-shot task with {self.q_query} "
                f"queries needs at least {self.n_way} classes with >= {per_class} records each "
                f"(k_shot + q_query), but only {eligible.size} of its {dataset.num_classes} classes "
                f"qualify (records per class: min {int(counts.min())}, max {int(counts.max())})"
            )
        order = np.argsort(dataset.labels, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        self._classes = eligible.astype(np.int64)
        self._class_indices: list[np.ndarray] = [order[bounds[c] : bounds[c + 1]] for c in self._classes]
        self._images = dataset.images

    @property
    def eligible_classes(self) -> np.ndarray:
        """Dataset labels of the classes tasks are drawn from (copy)."""
        return self._classes.copy()

    def sample_indices(self, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the record indices of one task without gathering the images.

        Args:
            rng: The only source of randomness.

        Returns:
            ``(classes, support_idx, query_idx)``: the dataset labels given task labels
            ``0 .. n_way-1`` and the dataset indices of support and query (label-major).
        """
        picks = rng.choice(self._classes.size, size=self.n_way, replace=False)
        per_class = self.k_shot + self.q_query
        chosen = np.empty((self.n_way, per_class), dtype=np.int64)
        for row, pick in enumerate(picks):
            pool = self._class_indices[pick]
            chosen[row] = pool[rng.choice(pool.size, size=per_class, replace=False)]
        support = chosen[:, : self.k_shot].reshape(-1)
        query = chosen[:, self.k_shot :].reshape(-1)
        return self._classes[picks], support, query

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw one task (see the class docstring).

        Args:
            rng: The only source of randomness; the same seeded generator gives the same task.

        Returns:
            A :class:`Task` with support ``(n_way * k_shot, C, H, W)`` and query
            ``(n_way * q_query, C, H, W)`` float32 tensors and int64 labels in ``[0, n_way)``.
        """
        _, support, query = self.sample_indices(rng=rng)
        return self._gather(support=support, query=query)
