"""Differential privacy in the runtime: the server's accountant/ledger and the sites' local hooks.

* :class:`ServerPrivacy` (:mod:`secfed.dp.server`): the server side — the append-only privacy
  ledger of the run around every round, with one strategy per privacy mode (:mod:`secfed.dp.modes`:
  budgets, the central noise of client-level DP-FedAvg, the accounting);
  :func:`calibrated_config` (:mod:`secfed.dp.calibration`) over the plan of :mod:`secfed.dp.planning`;
  site reports as typed values (:mod:`secfed.dp.reports`).
* :func:`build_site_privacy` / :class:`SitePrivacy` (:mod:`secfed.dp.site`): the site side —
  record-level DP-SGD inside local training, or client-level clipping.
* :func:`make_distributed_encoder_factory` (:mod:`secfed.dp.distributed`): the per-round integer
  encoders of distributed DP under secure aggregation.

Plain imports: the server side already needs what the site side imports (Opacus, torch.func).
"""

from __future__ import annotations

from secfed.dp.calibration import calibrated_config
from secfed.dp.distributed import make_distributed_encoder_factory
from secfed.dp.server import ServerPrivacy
from secfed.dp.site import SitePrivacy, build_site_privacy

__all__ = [
    "ServerPrivacy",
    "SitePrivacy",
    "build_site_privacy",
    "calibrated_config",
    "make_distributed_encoder_factory",
]
