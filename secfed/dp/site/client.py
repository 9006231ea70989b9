"""Client-level DP at the site (modes ``client``, ``distributed``): the learner's own training, then clipping.

The site clips its whole flat update to L2 norm ``privacy.max_grad_norm``
(:func:`privacy.client_dp.clip_update`). The noise is added by the trusted aggregator (``client``)
or by the secure aggregation clients (``distributed``), not here. Mechanism name: ``"client-clip"``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import nn

from privacy.adjacency import Adjacency
from privacy.client_dp import clip_update
from secfed.dp.site.base import MECHANISM_CLIENT_CLIP, SitePrivacy
from secfed.learners.base import Learner, LocalUpdate
from secfed.site import Site

__all__ = ["ClientLevelSitePrivacy"]


class ClientLevelSitePrivacy(SitePrivacy):
    """Client-level DP (``client`` / ``distributed``): learner's own training, then flat clipping."""

    unit: ClassVar[str] = "client"
    adjacency: ClassVar[Adjacency] = Adjacency.CLIENT

    @property
    def mechanism(self) -> str:
        """``"client-clip"``."""
        return MECHANISM_CLIENT_CLIP

    @property
    def sample_rate(self) -> float:
        """The federation's public client sampling rate per round."""
        return self._dp.client_sample_rate

    @property
    def steps_per_round(self) -> int:
        """One client-level release per round."""
        return 1

    def local_update(
        self, *, learner: Learner, model: nn.Module, site: Site, rng: np.random.Generator, round_idx: int
    ) -> LocalUpdate:
        """The learner's own local update (no record-level noise); see :meth:`SitePrivacy.local_update`."""
        self._check_call(learner=learner, model=model, site=site, round_idx=round_idx)
        self._round = None
        result = learner.local_update(model=model, tasks=site.tasks, rng=rng)
        self._round, self._round_steps = int(round_idx), 1
        return result

    def finalize_update(self, *, update: np.ndarray, round_idx: int) -> np.ndarray:
        """Scale the whole flat update to L2 norm at most ``privacy.max_grad_norm``.

        Args:
            update: The flat float update.
            round_idx: The round number.

        Returns:
            ``update * min(1, C / ||update||)`` with the input's dtype.

        Raises:
            privacy.errors.InvalidInputError: If ``update`` is not a finite 1-D float array.
        """
        clipped, _ = clip_update(update=update, clip_norm=self._dp.max_grad_norm)
        return clipped
