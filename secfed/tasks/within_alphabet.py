"""Within-alphabet one-shot tasks (Lake, Salakhutdinov & Tenenbaum 2015, "Human-level concept learning
through probabilistic program induction", Science 350).

Lake et al.'s 20-way one-shot classification runs take 20 characters of *one* alphabet; one
drawer's image of each character is the support ("training") set and another drawer's images of
the same characters are the queries. Characters of one alphabet look alike, so this is harder than
N-way tasks over all test classes (Koch et al. 2015 report their Siamese network's 92.0 % on it).

:class:`WithinAlphabetTaskSource` draws such tasks from a test (or validation) split:

* an alphabet (a ``class_group``) uniformly among the alphabets with at least ``n_way``
  characters, then ``n_way`` of its characters without replacement;
* ``k_shot + q_query`` distinct drawers; the first ``k_shot`` drawers' images of every chosen
  character are the support, the other ``q_query`` drawers' images the queries (Lake et al.:
  ``n_way = 20``, ``k_shot = 1``, ``q_query = 1``, so 20 queries per task). Support and query are
  label-major like :class:`~secfed.tasks.episodic.EpisodicTaskSource`'s.

**Alphabets with fewer than ``n_way`` characters are skipped** (an alphabet that cannot fill a
20-way task would give an easier, smaller-way task whose accuracy is not comparable); the source
refuses a split in which no alphabet qualifies. On the project's small test split (the alphabets
only in ``images_background_small2``) Japanese (katakana, 47 characters) and Sanskrit (42) qualify
for 20-way tasks and Tagalog (17) does not.

Only the original characters are used: with rotated test classes (``data.test_rotations``,
class names ending in ``/rot090``, ``/rot180``, ``/rot270``) the rotated copies are left out, as in
Lake et al.'s evaluation.

Drawers: the Omniglot loaders keep each character's records ordered by file name
``<character id>_<drawer>.png`` (:mod:`secfed.data.omniglot`, :mod:`secfed.data.omniglot_embedded`),
and the character id is the same for all of a character's images, so a record's rank within its
class is its drawer's rank. Pass ``drawers`` (e.g. :func:`secfed.data.omniglot_embedded.embedded_drawers`)
to use explicit drawer ids instead. Every character used must have the same set of drawers.
"""

from __future__ import annotations

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import InsufficientDataError
from secfed.errors import DataError
from secfed.tasks.base import IndexedTaskSource, Task

__all__ = ["WithinAlphabetTaskSource", "rank_drawers"]

_ROTATED = ("/rot090", "/rot180", "/rot270")


def rank_drawers(*, dataset: ImageDataset) -> np.ndarray:
    """Drawer of every record as its 1-based rank within its class (see the module docstring).

    Args:
        dataset: An Omniglot dataset as the loaders return it.

    Returns:
        int64 ``(N,)`` drawer ranks.
    """
    out = np.zeros(dataset.num_records, dtype=np.int64)
    for c in range(dataset.num_classes):
        rows = np.flatnonzero(dataset.labels == c)
        out[rows] = np.arange(1, rows.size + 1)
    return out


class WithinAlphabetTaskSource(IndexedTaskSource):
    """Lake et al.'s within-alphabet N-way K-shot tasks (a :class:`~secfed.tasks.base.TaskSource`).

    Args:
        dataset: The test or validation split (``class_groups`` are the alphabets).
        n_way: Characters per task (20 in Lake et al.).
        k_shot: Support drawers (1).
        q_query: Query drawers (1 in Lake et al.; each contributes one image per character).
        drawers: Optional drawer id per record (default: :func:`rank_drawers`).

    Raises:
        DataError: If an argument is not a positive integer or ``drawers`` has the wrong shape.
        InsufficientDataError: If no alphabet has ``n_way`` characters, or the characters do not
            share ``k_shot + q_query`` drawers (the message names what is missing).
    """

    def __init__(
        self,
        *,
        dataset: ImageDataset,
        n_way: int,
        k_shot: int,
        q_query: int,
        drawers: np.ndarray | None = None,
    ) -> None:
        self._set_shape(n_way=n_way, k_shot=k_shot, q_query=q_query)
        self.dataset = dataset
        ids = rank_drawers(dataset=dataset) if drawers is None else np.asarray(drawers, dtype=np.int64)
        if ids.shape != (dataset.num_records,):
            raise DataError(f"drawers must have one id per record ({dataset.num_records}), got {ids.shape}")
        characters = [
            c
            for c, name in enumerate(dataset.class_names)
            if not name.endswith(_ROTATED) and np.any(dataset.labels == c)
        ]
        by_alphabet: dict[str, list[int]] = {}
        for c in characters:
            by_alphabet.setdefault(dataset.class_groups[c], []).append(c)
        self.skipped_alphabets: tuple[str, ...] = tuple(
            sorted(a for a, cs in by_alphabet.items() if len(cs) < self.n_way)
        )
        kept = {a: cs for a, cs in sorted(by_alphabet.items()) if len(cs) >= self.n_way}
        if not kept:
            sizes = {a: len(cs) for a, cs in sorted(by_alphabet.items())}
            raise InsufficientDataError(
                f"{dataset.describe()}: a within-alphabet {self.n_way}-way task needs an alphabet with "
                f">= {self.n_way} characters; characters per alphabet: {sizes}"
            )
        # record index of (class, drawer)
        self._index: dict[int, dict[int, int]] = {}
        common: set[int] | None = None
        for cs in kept.values():
            for c in cs:
                rows = np.flatnonzero(dataset.labels == c)
                table = {int(ids[r]): int(r) for r in rows}
                if len(table) != rows.size:
                    raise DataError(f"class {dataset.class_names[c]!r} has two records of one drawer")
                self._index[c] = table
                common = set(table) if common is None else common & set(table)
        shared = sorted(common or ())
        if len(shared) < self.k_shot + self.q_query:
            raise InsufficientDataError(
                f"{dataset.describe()}: a within-alphabet task with {self.k_shot} support and "
                f"{self.q_query} query drawers needs {self.k_shot + self.q_query} drawers shared by "
                f"every character, found {len(shared)}"
            )
        self._drawers = np.asarray(shared, dtype=np.int64)
        self.alphabets: tuple[str, ...] = tuple(kept)
        self._characters = [np.asarray(kept[a], dtype=np.int64) for a in self.alphabets]
        self._images = dataset.images

    def sample_indices(self, *, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Draw one task's record indices.

        Args:
            rng: The only source of randomness.

        Returns:
            ``(alphabet, classes, support_idx, query_idx)``: the alphabet, the dataset labels
            given task labels ``0 .. n_way-1`` and the dataset indices (label-major).
        """
        a = int(rng.integers(len(self.alphabets)))
        pool = self._characters[a]
        classes = pool[rng.choice(pool.size, size=self.n_way, replace=False)]
        chosen = self._drawers[rng.choice(self._drawers.size, size=self.k_shot + self.q_query, replace=False)]
        s_drawers, q_drawers = chosen[: self.k_shot], chosen[self.k_shot :]
        support = np.asarray(
            [self._index[int(c)][int(d)] for c in classes for d in s_drawers], dtype=np.int64
        )
        query = np.asarray([self._index[int(c)][int(d)] for c in classes for d in q_drawers], dtype=np.int64)
        return self.alphabets[a], classes, support, query

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw one within-alphabet task (see the class docstring).

        Args:
            rng: The only source of randomness; the same seeded generator gives the same task.

        Returns:
            A :class:`Task` with ``n_way * k_shot`` support and ``n_way * q_query`` query records.
        """
        _, _, support, query = self.sample_indices(rng=rng)
        return self._gather(support=support, query=query)
