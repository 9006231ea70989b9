"""Replay of a privacy ledger's counted entries into fresh accountants (resume, verification).

Gaussian-family records are replayed into the header's accountant kind with
``step(noise_multiplier, sample_rate, num_steps=steps)``; DDG/Skellam records into a
:class:`~privacy.accountants.DistributedDPAccountant` with ``params["event"]`` repeated ``steps``
times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from privacy.accountants import Accountant, DistributedDPAccountant, DistributedEvent, create_accountant
from privacy.errors import LedgerCorruptedError
from privacy.ledger.lines import DISTRIBUTED_LEDGER_MECHANISMS, LedgerEntry, MechanismRecord

__all__ = ["replay_accountants"]


def replay_accountants(
    *, releases: Sequence[LedgerEntry], accountant: str, delta: float, verify: bool
) -> tuple[dict[str, Accountant], Accountant | None]:
    """Replay counted entries, oldest first, into fresh accountants (per site, and global).

    Args:
        releases: the entries that count toward ε (see :meth:`privacy.ledger.PrivacyLedger.releases`).
        accountant: the Gaussian accountant kind of the ledger's header.
        delta: the ledger's δ.
        verify: check that the replayed accountants reproduce the last entry's ε (relative 1e-6).

    Returns:
        ``(site_accountants, global_accountant or None)``.

    Raises:
        LedgerCorruptedError: replay does not reproduce the recorded ε, or a site switches
            between Gaussian and distributed mechanisms.
    """
    sites: dict[str, Accountant] = {}
    glob: Accountant | None = None
    for e in releases:
        for name, rec in e.sites.items():
            sites[name] = _replay(sites.get(name), rec, f"site {name!r}", accountant)
        if e.global_record is not None:
            glob = _replay(glob, e.global_record, "global", accountant)
    if verify and releases:
        last = releases[-1]
        checks: list[tuple[str, Accountant | None, MechanismRecord | None]] = [
            (f"site {n!r}", sites.get(n), r) for n, r in last.sites.items()
        ]
        checks.append(("global", glob, last.global_record))
        for where, acc, recorded in checks:
            if acc is None or recorded is None:
                continue
            eps = acc.get_epsilon(delta=delta)
            if not _close(eps, recorded.epsilon, 1e-6):
                raise LedgerCorruptedError(
                    f"{where}: replayed epsilon {eps:.6g} != recorded {recorded.epsilon:.6g}"
                )
    return sites, glob


def _replay(acc: Accountant | None, rec: MechanismRecord, where: str, accountant: str) -> Accountant:
    distributed = rec.mechanism in DISTRIBUTED_LEDGER_MECHANISMS
    if acc is None:
        acc = DistributedDPAccountant() if distributed else create_accountant(kind=accountant)
    if distributed != isinstance(acc, DistributedDPAccountant):
        raise LedgerCorruptedError(f"{where} switches between Gaussian and distributed mechanisms")
    if rec.steps == 0:
        return acc
    if isinstance(acc, DistributedDPAccountant):
        acc.step(event=DistributedEvent.from_dict(data=rec.params["event"]), num_rounds=rec.steps)
    else:
        acc.step(noise_multiplier=rec.noise_multiplier, sample_rate=rec.sample_rate, num_steps=rec.steps)
    return acc


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))
