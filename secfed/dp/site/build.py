"""Build a site's privacy hook from the configuration it received, read once into a ``SiteDPParams``.

:func:`build_site_privacy` reads the run's parameters once (:func:`secfed.dp.site.params.site_dp_params`,
which builds the run's :class:`~secfed.dp.params.DPParams` unless the caller hands one down) and
picks the hook for the configured mode and learner.
"""

from __future__ import annotations

from pathlib import Path

from secfed.config import ExperimentConfig
from secfed.dp.params import DPParams
from secfed.dp.site.base import SitePrivacy, SitePrivacyStateError
from secfed.dp.site.client import ClientLevelSitePrivacy
from secfed.dp.site.episodic import EpisodicSitePrivacy
from secfed.dp.site.params import site_dp_params
from secfed.dp.site.per_sample import PerSampleSitePrivacy
from secfed.errors import ConfigError
from secfed.site import Site

__all__ = ["build_site_privacy"]


def build_site_privacy(
    *,
    config: ExperimentConfig,
    site_id: int,
    site: Site,
    state_dir: str | Path | None = None,
    key_dir: str | Path | None = None,
    params: DPParams | None = None,
) -> SitePrivacy:
    """Build the site's privacy hook for the configured mode and learner.

    Args:
        config: The experiment configuration (``privacy.mode`` in ``record``, ``client``,
            ``distributed``).
        site_id: The site's id.
        site: The site's own data.
        state_dir: Record mode: the site's state directory (its durable ledger, replayed into the
            accountant, so the ε budget survives restarts); ``None`` keeps the accountant in memory.
            Ignored in client/distributed mode.
        key_dir: Directory of the site ledger's HMAC key (default ``$SECFED_KEY_DIR`` or
            ``~/.config/secfed/keys``).
        params: The run's :class:`~secfed.dp.params.DPParams` of ``config`` when the caller has
            it; ``None`` (the runtime) builds it here, once per site.

    Returns:
        :class:`EpisodicSitePrivacy` (record mode, ProtoNet/MAML/FOMAML),
        :class:`PerSampleSitePrivacy` (record mode, Reptile/FedAvg) or
        :class:`ClientLevelSitePrivacy` (client / distributed mode).

    Raises:
        ConfigError: If the mode is ``none``, the learner/task source is unsupported under
            record-level DP, ``task.n_way`` exceeds the site's classes, or ``params`` was built
            from another configuration.
        SitePrivacyStateError: If ``site`` is not site ``site_id``.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if not isinstance(site, Site) or site.site_id != site_id:
        raise SitePrivacyStateError(f"site {getattr(site, 'site_id', None)} is not site {site_id}")
    sp = site_dp_params(config=config, params=params)  # the configuration, read once
    if sp.dp.mode in ("client", "distributed"):
        return ClientLevelSitePrivacy(params=sp, site_id=site_id)
    record = EpisodicSitePrivacy if sp.episodic else PerSampleSitePrivacy
    return record(params=sp, site_id=site_id, site=site, state_dir=state_dir, key_dir=key_dir)
