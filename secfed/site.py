"""One site's private data: its records, their task source, its public class list and record ids.

A :class:`Site` lives only in that site's process (built by :func:`secfed.components.build_site`);
the DP wrappers (:mod:`secfed.dp.site`) and the client runtime read it, never the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError
from secfed.tasks.base import TaskSource

__all__ = ["Site"]


@dataclass
class Site:
    """One site's private data and task source (lives only in that site's process).

    Attributes:
        site_id: The site's id.
        dataset: The site's own records.
        tasks: Task source over the site's records.
        public_classes: The site's public class list (from the configuration and the dataset's
            public description: :func:`secfed.data.partition.site_class_lists`), never computed
            from the records; every label of ``dataset`` is in it.
        record_ids: A stable id per record (its index in the training split), so that removing
            one record changes the identity, and hence the keyed randomness, of no other.
        inputs: The records as the model consumes them, row for row with ``dataset``: their
            cached scattering features with ``model.cache_features`` (:mod:`secfed.models.feature_cache`),
            ``None`` for the raw records themselves (:attr:`model_inputs`).
    """

    site_id: int
    dataset: ImageDataset
    tasks: TaskSource
    public_classes: tuple[int, ...] = ()
    record_ids: np.ndarray | None = None
    inputs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.public_classes:
            # Built by hand (tests, attacks' replicas): every class of the dataset's description.
            self.public_classes = tuple(range(self.dataset.num_classes))
        if self.record_ids is None:
            self.record_ids = np.arange(self.dataset.num_records, dtype=np.int64)
        ids = np.asarray(self.record_ids)
        if ids.shape != (self.dataset.num_records,):
            raise DatasetFormatError(
                f"site {self.site_id}: {ids.shape} record ids for {self.dataset.num_records} records"
            )
        if self.inputs is not None and (
            self.inputs.ndim < 2 or self.inputs.shape[0] != self.dataset.num_records
        ):
            raise DatasetFormatError(
                f"site {self.site_id}: inputs of shape {self.inputs.shape} for "
                f"{self.dataset.num_records} records"
            )
        unknown = np.setdiff1d(self.dataset.labels, np.asarray(self.public_classes, dtype=np.int64))
        if unknown.size:
            raise DatasetFormatError(
                f"site {self.site_id} holds labels outside its public class list: {unknown[:10].tolist()}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one record."""
        return self.dataset.input_shape

    @property
    def model_inputs(self) -> np.ndarray:
        """What the model is fed for each record: the cached features, or the raw images."""
        return self.dataset.images if self.inputs is None else self.inputs

    @property
    def num_records(self) -> int:
        """Records held by the site."""
        return self.dataset.num_records

    def summary(self) -> dict[str, Any]:
        """What the site could say about its data: its record count (private under DP) and the
        size of its public class list. Only :mod:`secfed.federation.egress` decides what of it
        leaves the site."""
        return {"records": int(self.num_records), "classes": len(self.public_classes)}
