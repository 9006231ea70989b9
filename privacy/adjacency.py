"""The adjacency relations the project's guarantees are stated for, as one enum.

Each member's value is the sentence written to site reports, the privacy ledgers and the reports
(unchanged from the string constants it replaces, so ledgers written before still read). Code
compares and passes members, never the sentences; :meth:`Adjacency.parse` reads one back.

* :attr:`Adjacency.RECORD`: add/remove one record of a site's dataset (record-level DP-SGD and the
  episodic scheme, :mod:`privacy.dpsgd`, :mod:`privacy.episodic`; Abadi et al. 2016).
* :attr:`Adjacency.CLIENT`: add/remove one client's entire dataset (DP-FedAvg, McMahan et al. 2018).
* :attr:`Adjacency.DISTRIBUTED`: zero-out, one client's update replaced by zero while its noise
  share is kept (distributed DP, Kairouz et al. 2021; Agarwal et al. 2021; :mod:`privacy.distributed`).
"""

from __future__ import annotations

from enum import Enum

from privacy.distributed import ADJACENCY as _ZERO_OUT
from privacy.errors import PrivacyError

__all__ = ["Adjacency"]


class Adjacency(str, Enum):
    """An adjacency relation; ``str(member)`` and ``member.value`` are its serialised sentence."""

    RECORD = "add/remove one record"
    CLIENT = "add/remove one client's entire dataset"
    DISTRIBUTED = f"{_ZERO_OUT}: one client's update replaced by zero (its noise share kept)"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def parse(cls, text: object) -> Adjacency:
        """The member whose sentence is ``text`` (as read from a report or a ledger).

        Args:
            text: The serialised sentence.

        Returns:
            The member.

        Raises:
            PrivacyError: If ``text`` is not one of the sentences (naming the allowed ones).
        """
        for member in cls:
            if text == member.value:
                return member
        raise PrivacyError(f"unknown adjacency {text!r}; expected one of {[m.value for m in cls]}")
