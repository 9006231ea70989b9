"""What the lines of a privacy ledger imply: the counted releases, the pending ``begin``, the round.

:class:`LedgerState` checks each entry against the ones before it (sequence numbers, round order,
a ``commit`` naming its ``begin``, cumulative ε never vanishing or decreasing) and advances. The
same rules serve reading a ledger and appending to it.
"""

from __future__ import annotations

from privacy.errors import LedgerError
from privacy.ledger.lines import LedgerEntry

__all__ = ["LedgerState"]

_REL_TOL = 1e-9


class LedgerState:
    """What the lines so far imply: the counted releases, the pending ``begin``, the round position."""

    def __init__(self, round_order: str) -> None:
        """Start before the first entry.

        Args:
            round_order: ``"consecutive"`` or ``"any"`` (see :class:`~privacy.ledger.LedgerHeader`).
        """
        self.round_order = round_order
        self.counted: list[LedgerEntry] = []  # commits, v1 rounds, and begins that were never committed
        self.pending: LedgerEntry | None = None
        self.position = 0
        self.seq = 0

    def last_counted(self) -> LedgerEntry | None:
        """The last counted entry, or ``None``."""
        return self.counted[-1] if self.counted else None

    def releases(self) -> list[LedgerEntry]:
        """Every counted entry, then the pending ``begin`` (it counts as released)."""
        return self.counted + ([self.pending] if self.pending is not None else [])

    def apply(self, entry: LedgerEntry) -> None:
        """Check ``entry`` against the state and advance it.

        Raises:
            LedgerError: the entry cannot follow (wrong seq or round, commit without begin, ε decreased).
        """
        if entry.seq != self.seq + 1:
            raise LedgerError(f"sequence number {entry.seq} does not follow {self.seq}")
        if entry.kind == "round":  # version 1
            self._check_round(entry)
            _check_succession(self.last_counted(), entry)
            self.counted.append(entry)
            self.position = entry.round
        elif entry.kind == "begin":
            if self.pending is not None:  # an earlier round that never committed: it counts as released
                self.counted.append(self.pending)
                self.pending = None
            self._check_round(entry)
            _check_succession(self.last_counted(), entry)
            self.pending = entry
            self.position = entry.round
        elif entry.kind == "commit":
            if (
                self.pending is None
                or entry.begin_seq != self.pending.seq
                or entry.round != self.pending.round
            ):
                raise LedgerError(
                    f"commit of round {entry.round} (begin {entry.begin_seq}) has no matching begin"
                )
            _check_succession(self.last_counted(), entry)
            dropped = set(self.pending.sites) - set(entry.sites)
            if dropped:
                raise LedgerError(
                    f"commit of round {entry.round} drops site(s) {sorted(dropped)} of its begin"
                )
            self.counted.append(entry)
            self.pending = None
        elif entry.kind == "resume":
            if self.pending is not None:
                self.counted.append(self.pending)
                self.pending = None
            if entry.round > self.position:
                raise LedgerError(
                    f"resume from round {entry.round} beyond the ledger's round {self.position}"
                )
            self.position = entry.round
        else:
            raise LedgerError(f"unknown entry kind {entry.kind!r}")
        self.seq = entry.seq

    def _check_round(self, entry: LedgerEntry) -> None:
        if self.round_order == "consecutive" and entry.round != self.position + 1:
            raise LedgerError(
                f"round {entry.round} does not follow round {self.position} "
                f"(expected round {self.position + 1})"
            )

    def copy(self) -> LedgerState:
        """An independent state with the same counted entries, pending ``begin`` and position."""
        trial = LedgerState(self.round_order)
        trial.counted = list(self.counted)
        trial.pending = self.pending
        trial.position = self.position
        trial.seq = self.seq
        return trial


def _check_succession(previous: LedgerEntry | None, entry: LedgerEntry) -> None:
    """Cumulative ε never vanishes or decreases relative to the last counted entry."""
    if previous is None:
        return
    missing = set(previous.sites) - set(entry.sites)
    if missing:
        raise LedgerError(
            f"round {entry.round} drops site(s) {sorted(missing)} (cumulative epsilon cannot vanish)"
        )
    for name, rec in entry.sites.items():
        old = previous.sites.get(name)
        if old is not None and rec.epsilon < old.epsilon * (1 - _REL_TOL):
            raise LedgerError(f"site {name!r}: epsilon decreased from {old.epsilon:g} to {rec.epsilon:g}")
    if previous.global_record is not None:
        if entry.global_record is None:
            raise LedgerError(f"round {entry.round} drops the global record")
        if entry.global_record.epsilon < previous.global_record.epsilon * (1 - _REL_TOL):
            raise LedgerError(
                f"global epsilon decreased from {previous.global_record.epsilon:g} "
                f"to {entry.global_record.epsilon:g}"
            )
