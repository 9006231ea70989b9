"""Differential privacy in the runtime: the server's accountant/ledger and the sites' local hooks.

* :class:`ServerPrivacy` (:mod:`secfed.dp.server`): the server side — budgets, the central noise of
  client-level DP-FedAvg, and the append-only privacy ledger of the run.
* :func:`build_site_privacy` / :class:`SitePrivacy` (:mod:`secfed.dp.site`): the site side —
  record-level DP-SGD inside local training, or client-level clipping. Imported lazily: the server
  process does not need Opacus.
* :func:`make_distributed_encoder_factory` (:mod:`secfed.dp.distributed`): the per-round integer
  encoders of distributed DP under secure aggregation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secfed.dp.server import ServerPrivacy, calibrated_config

if TYPE_CHECKING:  # pragma: no cover
    from secfed.dp.distributed import make_distributed_encoder_factory
    from secfed.dp.site import SitePrivacy, build_site_privacy

__all__ = [
    "ServerPrivacy",
    "SitePrivacy",
    "build_site_privacy",
    "calibrated_config",
    "make_distributed_encoder_factory",
]

_LAZY = {
    "SitePrivacy": "secfed.dp.site",
    "build_site_privacy": "secfed.dp.site",
    "make_distributed_encoder_factory": "secfed.dp.distributed",
}


def __getattr__(name: str) -> Any:
    """Import the site hook (Opacus, torch.func) and the encoder factory only when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'secfed.dp' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
