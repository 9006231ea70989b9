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

from collections.abc import Callable

from secfed.dp.modes.base import AccountingState, PrivacyMode, PrivacyStateError
from secfed.dp.modes.client import MECHANISM_DP_FEDAVG, MECHANISM_RECORD_BOUND, ClientMode
from secfed.dp.modes.distributed import DistributedMode, worst_case_survivors
from secfed.dp.modes.record import RecordMode
from secfed.dp.params import DPParams
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


def privacy_mode(*, params: DPParams, dim: Callable[[], int] | None = None) -> PrivacyMode:
    """The strategy of the run's ``privacy.mode``.

    Args:
        params: The run's privacy parameters (:func:`secfed.dp.params.dp_params`).
        dim: Finds the flat update length when first needed (distributed mode's encoding; e.g.
            :func:`secfed.dp.distributed.model_dim` of the run).

    Returns:
        The mode's strategy object.

    Raises:
        ConfigError: ``params.mode`` is not ``record``, ``client`` or ``distributed``, or distributed
            mode without ``dim``.
    """
    mode = params.mode
    if mode == "record":
        return RecordMode(params=params)
    if mode == "client":
        return ClientMode(params=params)
    if mode == "distributed":
        if dim is None:
            raise ConfigError("distributed mode needs the run's update length (dim)")
        return DistributedMode(params=params, dim=dim)
    raise ConfigError(f"privacy.mode = {mode!r}: ServerPrivacy needs record, client or distributed")
