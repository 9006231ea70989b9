"""The accountant of the distributed discrete Gaussian and Skellam mechanisms under secure aggregation.

:class:`DistributedDPAccountant` records rounds of the distributed discrete Gaussian (Kairouz, Liu &
Steinke 2021) or Skellam (Agarwal, Kairouz & Liu 2021) mechanisms, each as a
:class:`DistributedEvent` carrying the number of *surviving* clients whose noise reached the sum (so
dropouts raise ε), with Poisson client-sampling amplification (Zhu & Wang 2019). RDP composes
additively across rounds (Mironov 2017, Prop. 1). Both names are importable from
:mod:`privacy.accountants`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from privacy.accountant_base import (
    ACCOUNTANT_STATE_FORMAT,
    ACCOUNTANT_STATE_VERSION,
    composed_rdp,
    loads_state,
    rdp_privacy_spent,
    state_header,
)
from privacy.analysis._checks import check_int, check_orders, check_positive, check_rate
from privacy.analysis.conversion import DEFAULT_RDP_ORDERS
from privacy.analysis.discrete import DDG_MIN_LOCAL_STDDEV, DISTRIBUTED_MECHANISMS, sampled_distributed_rdp
from privacy.errors import AccountantStateError, InvalidPrivacyConfigError

__all__ = ["DistributedDPAccountant", "DistributedEvent"]


@dataclass(frozen=True)
class DistributedEvent:
    """One round of a distributed DDG / Skellam mechanism, in integer units.

    Attributes:
        mechanism: ``"ddg"`` (Kairouz, Liu & Steinke 2021) or ``"skellam"`` (Agarwal et al. 2021).
        l2_sensitivity: Δ₂, bound on one client's rounded integer vector's L2 norm.
        l1_sensitivity: Δ₁, bound on its L1 norm.
        dim: d, number of coordinates (after padding).
        local_stddev: σ̄, each client's noise std in integer units (Skellam variance σ̄²).
        num_survivors: clients whose noise actually reached the sum this round (after dropouts).
        sample_rate: Poisson client-sampling rate q (1 = every client every round).

    Raises:
        InvalidPrivacyConfigError: on construction, if any field is invalid.
    """

    mechanism: str
    l2_sensitivity: float
    l1_sensitivity: float
    dim: int
    local_stddev: float
    num_survivors: int
    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.mechanism not in DISTRIBUTED_MECHANISMS:
            raise InvalidPrivacyConfigError(
                f"mechanism must be one of {DISTRIBUTED_MECHANISMS}, got {self.mechanism!r}"
            )
        object.__setattr__(self, "l2_sensitivity", check_positive("l2_sensitivity", self.l2_sensitivity))
        object.__setattr__(self, "l1_sensitivity", check_positive("l1_sensitivity", self.l1_sensitivity))
        object.__setattr__(self, "dim", check_int("dim", self.dim, minimum=1))
        object.__setattr__(self, "local_stddev", check_positive("local_stddev", self.local_stddev))
        object.__setattr__(self, "num_survivors", check_int("num_survivors", self.num_survivors, minimum=1))
        object.__setattr__(self, "sample_rate", check_rate("sample_rate", self.sample_rate))
        if self.mechanism == "ddg" and self.local_stddev < DDG_MIN_LOCAL_STDDEV:
            raise InvalidPrivacyConfigError(
                f"DDG local_stddev must be >= {DDG_MIN_LOCAL_STDDEV} (Kairouz et al. 2021), "
                f"got {self.local_stddev}"
            )

    @property
    def total_variance(self) -> float:
        """Noise variance per coordinate in the sum: ``num_survivors · σ̄²`` (integer units)."""
        return self.num_survivors * self.local_stddev**2

    def rdp(self, *, orders: Sequence[float] | np.ndarray) -> np.ndarray:
        """RDP of this round (with client-sampling amplification) at the given orders.

        Args:
            orders: RDP orders α > 1.

        Returns:
            Float64 array, one value per order.
        """
        return sampled_distributed_rdp(
            mechanism=self.mechanism,
            orders=orders,
            l2_sensitivity=self.l2_sensitivity,
            l1_sensitivity=self.l1_sensitivity,
            local_stddev=self.local_stddev,
            num_clients=self.num_survivors,
            dim=self.dim,
            sample_rate=self.sample_rate,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, *, data: Mapping[str, Any]) -> DistributedEvent:
        """Inverse of :meth:`to_dict`.

        Raises:
            InvalidPrivacyConfigError: missing, extra or invalid fields.
        """
        if not isinstance(data, Mapping):
            raise InvalidPrivacyConfigError("a distributed event must be a JSON object")
        expected = {
            "mechanism",
            "l2_sensitivity",
            "l1_sensitivity",
            "dim",
            "local_stddev",
            "num_survivors",
            "sample_rate",
        }
        if set(data) != expected:
            raise InvalidPrivacyConfigError(
                f"distributed event fields must be {sorted(expected)}, got {sorted(data)}"
            )
        return cls(**{k: data[k] for k in expected})


class DistributedDPAccountant:
    """RDP accountant for rounds of the distributed discrete Gaussian / Skellam mechanisms.

    Each :meth:`step` records a :class:`DistributedEvent` (with the round's actual number of
    survivors); identical events are grouped. RDP curves are computed once per distinct event and
    composed additively; conversion as in :mod:`privacy.analysis.conversion`.

    Adjacency: one client's contribution replaced by zero (the client still adds its noise share), the
    setting of Kairouz et al. (2021) and Agarwal et al. (2021); the sensitivities are those of one
    client's rounded vector.

    Args:
        orders: RDP orders α > 1; defaults to :data:`~privacy.analysis.DEFAULT_RDP_ORDERS`.
    """

    kind: ClassVar[str] = "distributed-rdp"

    def __init__(self, *, orders: Sequence[float] | None = None) -> None:
        self._orders = check_orders(DEFAULT_RDP_ORDERS if orders is None else orders)
        self._groups: dict[DistributedEvent, int] = {}
        self._curves: dict[DistributedEvent, np.ndarray] = {}

    def step(self, *, event: DistributedEvent, num_rounds: int = 1) -> None:
        """Record ``num_rounds`` rounds of ``event``.

        Args:
            event: the round's mechanism parameters (with the actual survivors).
            num_rounds: number of identical rounds >= 0.

        Raises:
            InvalidPrivacyConfigError: ``event`` is not a :class:`DistributedEvent` or bad count.
        """
        if not isinstance(event, DistributedEvent):
            raise InvalidPrivacyConfigError(f"event must be a DistributedEvent, got {type(event).__name__}")
        n = check_int("num_rounds", num_rounds, minimum=0)
        if n == 0:
            return
        if event not in self._curves:
            self._curves[event] = event.rdp(orders=self._orders)
        self._groups[event] = self._groups.get(event, 0) + n

    @property
    def history(self) -> list[tuple[DistributedEvent, int]]:
        """Grouped history ``[(event, rounds), ...]``."""
        return list(self._groups.items())

    @property
    def total_rounds(self) -> int:
        """Total recorded rounds."""
        return sum(self._groups.values())

    def __len__(self) -> int:
        return self.total_rounds

    def get_rdp(self) -> np.ndarray:
        """Total RDP at every order."""
        return composed_rdp(self._orders, self._groups, self._curves.__getitem__)

    def getrdp_privacy_spent(self, *, delta: float) -> tuple[float, float]:
        """``(ε, best order)`` at δ; ``(0.0, nan)`` if nothing was recorded.

        Raises:
            InvalidPrivacyConfigError: invalid δ.
        """
        return rdp_privacy_spent(self._orders, self.get_rdp, recorded=bool(self._groups), delta=delta)

    def get_epsilon(self, *, delta: float) -> float:
        """ε spent so far at δ.

        Raises:
            InvalidPrivacyConfigError: invalid δ.
        """
        return self.getrdp_privacy_spent(delta=delta)[0]

    def projected_epsilon(self, *, delta: float, event: DistributedEvent, num_rounds: int = 1) -> float:
        """ε if ``num_rounds`` more rounds of ``event`` were recorded (accountant unchanged).

        Raises:
            InvalidPrivacyConfigError: invalid arguments.
        """
        trial = self.copy()
        trial.step(event=event, num_rounds=num_rounds)
        return trial.get_epsilon(delta=delta)

    def copy(self) -> DistributedDPAccountant:
        """An independent copy."""
        other = DistributedDPAccountant(orders=self._orders.tolist())
        other._groups = dict(self._groups)
        other._curves = dict(self._curves)
        return other

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "format": ACCOUNTANT_STATE_FORMAT,
            "version": ACCOUNTANT_STATE_VERSION,
            "kind": self.kind,
            "params": {"orders": [float(a) for a in self._orders]},
            "history": [{"event": e.to_dict(), "rounds": n} for e, n in self._groups.items()],
        }

    def load_state_dict(self, *, state: Mapping[str, Any]) -> None:
        """Replace parameters and history by those in ``state`` (validated first; all-or-nothing).

        Raises:
            AccountantStateError: malformed state.
        """
        checked = state_header(state, self.kind)
        try:
            params = checked["params"]
            fresh = DistributedDPAccountant(orders=params["orders"])
            history = checked["history"]
            if not isinstance(history, list):
                raise AccountantStateError("history must be a list")
            for i, item in enumerate(history):
                if not isinstance(item, Mapping) or set(item) != {"event", "rounds"}:
                    raise AccountantStateError(f"history[{i}] must be {{'event': ..., 'rounds': ...}}")
                fresh.step(event=DistributedEvent.from_dict(data=item["event"]), num_rounds=item["rounds"])
        except InvalidPrivacyConfigError as exc:
            raise AccountantStateError(f"invalid accountant state: {exc}") from exc
        except (TypeError, KeyError) as exc:
            raise AccountantStateError(f"invalid accountant state: {exc!r}") from exc
        self._orders, self._groups, self._curves = fresh._orders, fresh._groups, fresh._curves

    def to_json(self) -> str:
        """The state as a strict JSON string."""
        return json.dumps(self.state_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_json(cls, *, text: str) -> DistributedDPAccountant:
        """Rebuild from :meth:`to_json` output.

        Raises:
            AccountantStateError: malformed JSON or state.
        """
        acc = cls()
        acc.load_state_dict(state=loads_state(text))
        return acc

    def __repr__(self) -> str:
        return f"DistributedDPAccountant(groups={len(self._groups)}, rounds={self.total_rounds})"
