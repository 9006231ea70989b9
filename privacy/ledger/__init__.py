"""Write-ahead, authenticated (HMAC-SHA256 chained) JSON-lines ε ledger, and privacy-budget checks.

One file per run on the server (``<run_dir>/privacy_ledger.jsonl``) and one per site (its own
``<site state dir>/ledger.jsonl``, see :mod:`secfed.dp.site`). Line 1 is a header; every further
line is one event, with the cumulative ε of every site (record-level DP) and the global ε
(client-level DP) at the ledger's δ, together with the mechanism, σ, q, steps, privacy unit and
adjacency.

Format (version 2)
------------------
Every line is canonical JSON (sorted keys, no spaces) with ``seq`` (0 for the header, then 1, 2, ...),
``prev`` (the SHA-256 ``hash`` of the previous line), ``hash`` (SHA-256 of the line without ``hash``
and ``mac``) and ``mac``::

    mac_i = HMAC-SHA256(key, DOMAIN || mac_{i-1} || "\\n" || canonical(line_i without hash and mac))

with ``mac_{-1}`` = 64 zeros. The header holds ``ledger_id`` (128 random bits, hex), ``auth =
"hmac-sha256"``, ``round_order`` (``"consecutive"`` for a run's ledger, ``"any"`` for a site's, whose
rounds skip those the site is not sampled in), the budget, δ and the accountant. Entries are of
three kinds:

``begin`` (written *before* a release: write, flush, fsync)
    The round's records as planned, with the **upper bound** of what the round may release
    (e.g. every site that may train, the fewest survivors of a distributed round). It counts fully
    toward ε from the moment it is durable.
``commit`` (written after the release, before anything derived from it is published)
    The round's actual records (e.g. the steps the sites reported). It replaces the ``begin`` it
    names in the ε computation.
``resume``
    A run was resumed from the checkpoint of round ``round``. Nothing is removed: every earlier
    ``begin`` that was never committed stays counted with its planned records (its release may
    have happened), and the next ``begin`` follows round ``round`` again (the re-run of a round is
    a second release and is counted a second time).

ε is therefore never under-reported: a crash at any point leaves either no durable ``begin`` (the
release cannot have happened: releases wait for the fsync), or a ``begin`` that counts as if the
round released in full. A torn last line (crash during a write) is such a non-durable line and is
dropped on :meth:`PrivacyLedger.open` with ``recover_torn_tail=True``. There is no way to delete
or truncate entries through this API.

Key and authentication
----------------------
The 256-bit key comes from :func:`os.urandom` when the ledger is created and is kept **outside the
ledger file and outside its directory**: ``<key dir>/<ledger_id>.key`` (mode 0600, directory mode
0700), where the key dir is the ``key_dir`` argument, else ``$SECFED_KEY_DIR``, else
``$XDG_CONFIG_HOME/secfed/keys``, else ``~/.config/secfed/keys``. A key directory inside the ledger's
directory is refused (a reader of the run directory could then forge). Next to the key,
``<ledger_id>.head`` (also MAC'ed) records the last sequence number and MAC written, so a ledger
cut short (tail lines deleted) is detected, not only one edited or reordered.

* With the key: every MAC and the head are checked; a ledger rewritten without the key (ε and
  hashes recomputed) fails with :class:`LedgerAuthenticationError`, a shortened one with
  :class:`LedgerTruncatedError`.
* Without the key (another machine, key deleted) :meth:`PrivacyLedger.read` checks the SHA-256 chain
  only and reports ``integrity == INTEGRITY_NO_KEY`` ("cannot verify"), never "verified";
  :meth:`PrivacyLedger.open` (for writing) refuses with :class:`LedgerUnverifiableError`.
* Version 1 ledgers (unkeyed SHA-256 chain, one ``round`` line per round) are read and reported as
  ``INTEGRITY_UNAUTHENTICATED``; they cannot be appended to.

Threat model: an adversary who can write the run directory but not read the key directory cannot
forge, reorder or shorten the ledger without detection. Whoever holds the key (the process that
writes the ledger) can; the MAC does not protect against the writer itself.

Modules: :mod:`privacy.ledger.lines` (the line format and records), :mod:`privacy.ledger.keys` (key
and head files), :mod:`privacy.ledger.state` (the order of entries), :mod:`privacy.ledger.core`
(:class:`PrivacyLedger`), :mod:`privacy.ledger.replay` (accountants from entries) and
:mod:`privacy.ledger.budget` (budget projections). Every public name is importable from here.
"""

from __future__ import annotations

from privacy.errors import (
    LedgerAuthenticationError,
    LedgerKeyError,
    LedgerTruncatedError,
    LedgerUnverifiableError,
)
from privacy.ledger.budget import BudgetCheck, PlannedSteps, check_budget
from privacy.ledger.core import PrivacyLedger
from privacy.ledger.keys import KEY_DIR_ENV, default_key_dir
from privacy.ledger.lines import (
    DISTRIBUTED_LEDGER_MECHANISMS,
    INTEGRITY_NO_KEY,
    INTEGRITY_UNAUTHENTICATED,
    INTEGRITY_VERIFIED,
    LEDGER_FORMAT,
    LEDGER_VERSION,
    LedgerEntry,
    LedgerHeader,
    MechanismRecord,
    PrivacyBudget,
)

# The line digest under its former private name (tests that forge ledgers without the key use it).
from privacy.ledger.lines import digest as _digest  # noqa: F401

__all__ = [
    "DISTRIBUTED_LEDGER_MECHANISMS",
    "INTEGRITY_NO_KEY",
    "INTEGRITY_UNAUTHENTICATED",
    "INTEGRITY_VERIFIED",
    "KEY_DIR_ENV",
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "BudgetCheck",
    "LedgerAuthenticationError",
    "LedgerEntry",
    "LedgerHeader",
    "LedgerKeyError",
    "LedgerTruncatedError",
    "LedgerUnverifiableError",
    "MechanismRecord",
    "PlannedSteps",
    "PrivacyBudget",
    "PrivacyLedger",
    "check_budget",
    "default_key_dir",
]
