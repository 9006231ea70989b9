"""The server's privacy modes: one strategy object per ``privacy.mode`` behind :class:`PrivacyMode`.

* :class:`RecordMode` (:mod:`secfed.dp.modes.record`): record-level DP-SGD at every site, with or
  without noise sharing under secure aggregation;
* :class:`ClientMode` (:mod:`secfed.dp.modes.client`): client-level DP-FedAvg, the server adds the
  noise;
* :class:`DistributedMode` (:mod:`secfed.dp.modes.distributed`): DDG/Skellam noise shares inside
  the SecAgg sum.

:func:`privacy_mode` picks one; :class:`secfed.dp.server.ServerPrivacy` holds the ledger and calls it.
"""

from __future__ import annotations

from secfed.builders import RunShape
from secfed.config import ExperimentConfig
from secfed.dp.modes.base import AccountingState, PrivacyMode, PrivacyStateError
from secfed.dp.modes.client import MECHANISM_DP_FEDAVG, MECHANISM_RECORD_BOUND, ClientMode
from secfed.dp.modes.distributed import DistributedMode, worst_case_survivors
from secfed.dp.modes.record import RecordMode
from secfed.errors import ConfigError

__all__ = [
    "MECHANISM_DP_FEDAVG",
    "MECHANISM_RECORD_BOUND",
    "AccountingState",
    "ClientMode",
    "DistributedMode",
    "PrivacyMode",
    "PrivacyStateError",
    "RecordMode",
    "privacy_mode",
    "worst_case_survivors",
]


def privacy_mode(*, config: ExperimentConfig, shape: RunShape | None = None) -> PrivacyMode:
    """The strategy of the configured ``privacy.mode``.

    Args:
        config: The configuration.
        shape: The run's shape when the caller holds it (distributed mode needs the model size).

    Returns:
        The mode's strategy object.

    Raises:
        ConfigError: ``privacy.mode`` is not ``record``, ``client`` or ``distributed``.
    """
    mode = config.privacy.mode
    if mode == "record":
        return RecordMode(config=config)
    if mode == "client":
        return ClientMode(config=config)
    if mode == "distributed":
        return DistributedMode(config=config, shape=shape)
    raise ConfigError(f"privacy.mode = {mode!r}: ServerPrivacy needs record, client or distributed")
