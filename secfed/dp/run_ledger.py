"""The run's privacy ledger file on disk: where it is, and how a (re)started server opens it.

``RUN_DIR/privacy_ledger.jsonl`` is a :class:`privacy.ledger.PrivacyLedger` (write-ahead begin and
commit entries, an HMAC-SHA256 chain whose key lives outside the run directory, a MAC'ed head).
:func:`open_run_ledger` opens and verifies it, keeps every entry (a checkpoint older than the
ledger gets a ``resume`` entry; nothing is truncated), replays it into fresh accountants, and maps
the ledger's errors onto the runtime's (:class:`secfed.errors.IntegrityError` for anything that
fails verification, :class:`secfed.errors.CheckpointError` for I/O,
:class:`secfed.errors.ConfigError` for a ledger of another configuration).
"""

from __future__ import annotations

import logging
from pathlib import Path

from privacy.accountants import Accountant
from privacy.errors import LedgerCorruptedError, LedgerError, PrivacyError
from privacy.ledger import LedgerKeyError, LedgerUnverifiableError, PrivacyBudget, PrivacyLedger
from secfed.errors import CheckpointError, ConfigError, IntegrityError

__all__ = ["LEDGER_FILE", "open_run_ledger"]

log = logging.getLogger("secfed")

#: The ledger's file name inside the run directory.
LEDGER_FILE = "privacy_ledger.jsonl"


def open_run_ledger(
    *,
    run_dir: Path,
    budget: PrivacyBudget,
    accountant: str,
    key_dir: Path | None,
    completed_round: int,
) -> tuple[PrivacyLedger, dict[str, Accountant], Accountant | None]:
    """Open (or create) the run's ledger, verify it, keep every entry, rebuild the accountants.

    Rounds the ledger holds beyond ``completed_round`` (their checkpoint did not survive, or
    ``checkpoint/state.json`` is missing and ``completed_round`` is 0) released something: they
    stay counted and a ``resume`` entry records the restart.

    Args:
        run_dir: The run directory (created if missing).
        budget: The run's budget (the ledger's must be the same).
        accountant: ``privacy.accountant``.
        key_dir: Directory of the ledger's HMAC key (``None``: :func:`privacy.ledger.default_key_dir`).
        completed_round: The last round whose checkpoint exists (0 for a fresh run or none).

    Returns:
        ``(ledger, site accountants by name, global accountant or None)``, replayed from the ledger.

    Raises:
        IntegrityError: The ledger fails its MAC or hash check, is shorter than its head says,
            cannot be verified (key missing, unkeyed version-1 ledger), its recorded ε is not
            reproduced by replay, or it ends before ``completed_round``.
        CheckpointError: The ledger cannot be read or written.
        ConfigError: The ledger was written with another δ, budget or accountant.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LEDGER_FILE
    try:
        ledger = PrivacyLedger.open(
            path=path,
            budget=budget,
            accountant=accountant,
            recover_torn_tail=True,  # a torn line was never durable: its release never happened
            key_dir=key_dir,
            round_order="consecutive",
        )
    except (LedgerCorruptedError, LedgerUnverifiableError, LedgerKeyError) as exc:
        raise IntegrityError(f"{path}: privacy ledger integrity check failed: {exc}") from exc
    except LedgerError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except PrivacyError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if ledger.last_round < completed_round:
        raise IntegrityError(
            f"{path} ends at round {ledger.last_round} but the checkpoint is at round "
            f"{completed_round}: the privacy cost of the released rounds cannot be reconstructed"
        )
    try:
        if ledger.last_round > completed_round or ledger.pending is not None:
            log.warning(
                "privacy: resuming from round %d; the ledger's rounds up to %d stay counted (%s)",
                completed_round,
                ledger.last_round,
                "a begun round never committed" if ledger.pending is not None else "no checkpoint",
            )
            ledger.mark_resume(round=completed_round)
        sites, glob = ledger.rebuild_accountants(verify=True)
    except LedgerCorruptedError as exc:
        raise IntegrityError(f"{path}: privacy ledger integrity check failed: {exc}") from exc
    except (LedgerError, OSError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return ledger, dict(sites), glob
