"""The :class:`PrivacyLedger` file: create or resume (:meth:`~PrivacyLedger.open`), audit
(:meth:`~PrivacyLedger.read`), and the write-ahead ``begin``/``commit``/``resume`` appends.

See :mod:`privacy.ledger` for the format, the write-ahead rule and the key handling; the line
format is :mod:`privacy.ledger.lines`, the keys :mod:`privacy.ledger.keys`, the order of entries
:mod:`privacy.ledger.state`, the accountant replay :mod:`privacy.ledger.replay`.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privacy.accountants import Accountant, DistributedEvent
from privacy.analysis._checks import check_finite_nonneg, check_int
from privacy.atomic import atomic_write_text, fsync_dir
from privacy.errors import (
    InvalidPrivacyConfigError,
    LedgerAuthenticationError,
    LedgerCorruptedError,
    LedgerError,
    LedgerTruncatedError,
    LedgerUnverifiableError,
)
from privacy.ledger.budget import BudgetCheck, PlannedSteps, check_budget
from privacy.ledger.keys import create_key, load_key, read_head, resolve_key_dir, write_head
from privacy.ledger.lines import (
    GAUSSIAN_ACCOUNTANTS,
    GENESIS,
    INTEGRITY_NO_KEY,
    INTEGRITY_UNAUTHENTICATED,
    INTEGRITY_VERIFIED,
    LEDGER_FORMAT,
    LEDGER_ID,
    LEDGER_VERSION,
    ROUND_ORDERS,
    LedgerEntry,
    LedgerHeader,
    MechanismRecord,
    PrivacyBudget,
    check_line_mac,
    load_line,
    parse_entry,
    parse_header,
    seal_line,
)
from privacy.ledger.replay import replay_accountants
from privacy.ledger.state import LedgerState

__all__ = ["PrivacyLedger"]


class PrivacyLedger:
    """Write-ahead, authenticated ε ledger; use :meth:`open` to create or resume one, :meth:`read` to audit.

    See the module docstring for the format, the write-ahead rule and the key handling.
    """

    def __init__(
        self,
        *,
        path: Path,
        header: LedgerHeader,
        entries: list[LedgerEntry],
        raw_lines: list[str],
        state: LedgerState,
        key: bytes | None,
        key_dir: Path | None,
        integrity: str,
        writable: bool,
    ) -> None:
        if len(raw_lines) != len(entries) + 1:
            raise LedgerError("internal: one raw line per entry plus the header is required")
        self._path = path
        self._header = header
        self._entries = entries
        self._raw_lines = raw_lines  # exact text of every line (header first), for torn-tail rewrites
        self._state = state
        self._key = key
        self._key_dir = key_dir
        self._integrity = integrity
        self._writable = writable

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        path: str | os.PathLike[str],
        budget: PrivacyBudget | None = None,
        accountant: str = "rdp",
        recover_torn_tail: bool = False,
        key_dir: str | os.PathLike[str] | None = None,
        round_order: str = "consecutive",
    ) -> PrivacyLedger:
        """Open an existing ledger for writing (verifying every MAC) or create a new one with a new key.

        Args:
            path: ledger file (e.g. ``run_dir / "privacy_ledger.jsonl"``); its directory must exist.
            budget: required to create; when resuming, if given it must equal the stored budget.
            accountant: ``"rdp"``, ``"prv"`` or ``"pld"`` (Gaussian mechanisms); stored in the header.
                When resuming, must equal the stored value.
            recover_torn_tail: drop a last line that is incomplete (no newline and unparsable), as left
                by a crash during a write (such a line was never durable, so its release never
                happened), and rewrite the file without it.
            key_dir: where the key lives (default :func:`default_key_dir`); must not lie inside the
                ledger's directory.
            round_order: for a new ledger: ``"consecutive"`` (each ``begin`` is the round after the
                last one, or after a ``resume``) or ``"any"`` (a site's ledger). When resuming, the
                stored value applies.

        Returns:
            The ledger.

        Raises:
            LedgerAuthenticationError: a MAC or the head does not match (forged or rewritten ledger).
            LedgerTruncatedError: entries the head records are missing.
            LedgerCorruptedError: the file is malformed, edited, or has a broken hash chain.
            LedgerUnverifiableError: the key is missing, or the ledger is an unkeyed version 1 file.
            LedgerKeyError: the key file is unusable or the key directory lies in the ledger's directory.
            InvalidPrivacyConfigError: budget/accountant/round order missing, invalid, or different
                from the file's.
            LedgerError: the directory does not exist.
        """
        p = Path(path)
        if accountant not in GAUSSIAN_ACCOUNTANTS:
            raise InvalidPrivacyConfigError(
                f"accountant must be one of {GAUSSIAN_ACCOUNTANTS}, got {accountant!r}"
            )
        if round_order not in ROUND_ORDERS:
            raise InvalidPrivacyConfigError(f"round_order must be one of {ROUND_ORDERS}, got {round_order!r}")
        if budget is not None and not isinstance(budget, PrivacyBudget):
            raise InvalidPrivacyConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
        if not p.parent.is_dir():
            raise LedgerError(f"directory {p.parent} does not exist")
        kd = resolve_key_dir(key_dir=key_dir, ledger_dir=p.parent)
        if p.exists() and p.stat().st_size > 0:
            ledger = cls._read(p, key_dir=kd, recover_torn_tail=recover_torn_tail, writable=True)
            if ledger._integrity != INTEGRITY_VERIFIED:
                raise LedgerUnverifiableError(f"{p}: {ledger._integrity}; refusing to append to it")
            if budget is not None and budget != ledger._header.budget:
                raise InvalidPrivacyConfigError(
                    f"budget {budget.to_dict()} differs from the ledger's {ledger._header.budget.to_dict()}"
                )
            if accountant != ledger._header.accountant:
                raise InvalidPrivacyConfigError(
                    f"accountant {accountant!r} differs from the ledger's {ledger._header.accountant!r}"
                )
            return ledger
        if budget is None:
            raise InvalidPrivacyConfigError(f"creating ledger {p} needs a budget")
        created = time.time()
        ledger_id = os.urandom(16).hex()
        key = create_key(key_dir=kd, ledger_id=ledger_id)
        body = {
            "kind": "header",
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "seq": 0,
            "budget": budget.to_dict(),
            "accountant": accountant,
            "created_unix": created,
            "ledger_id": ledger_id,
            "auth": "hmac-sha256",
            "round_order": round_order,
        }
        line_hash, mac, line = seal_line(key=key, prev_mac=GENESIS, body=body)
        # "x" refuses to clobber a file created concurrently; an existing empty file (crash before the
        # header was written) holds no entries and is initialised.
        _write_durably(p, "w" if p.exists() else "x", line)
        fsync_dir(p.parent)
        write_head(key=key, key_dir=kd, ledger_id=ledger_id, seq=0, mac=mac)
        header = LedgerHeader(
            budget=budget,
            accountant=accountant,
            created_unix=created,
            hash=line_hash,
            version=LEDGER_VERSION,
            ledger_id=ledger_id,
            round_order=round_order,
            mac=mac,
        )
        return cls(
            path=p,
            header=header,
            entries=[],
            raw_lines=[line],
            state=LedgerState(round_order),
            key=key,
            key_dir=kd,
            integrity=INTEGRITY_VERIFIED,
            writable=True,
        )

    @classmethod
    def read(
        cls, *, path: str | os.PathLike[str], key_dir: str | os.PathLike[str] | None = None
    ) -> PrivacyLedger:
        """Read and verify a ledger without modifying anything (audits, reports).

        A torn last line is ignored (it was never durable). Check :attr:`integrity`: only
        ``INTEGRITY_VERIFIED`` means every MAC was checked with the key.

        Args:
            path: the ledger file.
            key_dir: where its key lives (default :func:`default_key_dir`).

        Returns:
            A read-only ledger.

        Raises:
            LedgerAuthenticationError: a MAC or the head does not match.
            LedgerTruncatedError: entries the head records are missing.
            LedgerCorruptedError: the file is malformed or its hash chain is broken.
            LedgerKeyError: the key file is unusable or lies in the ledger's directory.
            LedgerError: the file does not exist or is empty.
        """
        p = Path(path)
        if not p.is_file() or p.stat().st_size == 0:
            raise LedgerError(f"{p} does not exist or is empty")
        return cls._read(
            p,
            key_dir=resolve_key_dir(key_dir=key_dir, ledger_dir=p.parent),
            recover_torn_tail=True,
            writable=False,
        )

    @classmethod
    def _read(cls, path: Path, *, key_dir: Path, recover_torn_tail: bool, writable: bool) -> PrivacyLedger:
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" if the file ends with a newline
        torn = False
        if tail:
            try:
                json.loads(tail.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                torn = True
            if not torn:
                lines.append(tail)  # complete JSON, just missing its newline: validate it as usual
            elif not recover_torn_tail:
                raise LedgerCorruptedError(
                    "incomplete last line (crash during a write?); "
                    "reopen with recover_torn_tail=True to drop it",
                    line_number=len(lines) + 1,
                )
        if not lines:
            raise LedgerCorruptedError("ledger has no header line", line_number=1)
        header_obj = load_line(raw_line=lines[0], line_number=1)
        version = header_obj.get("version")
        key: bytes | None = None
        if version == LEDGER_VERSION:
            ledger_id = header_obj.get("ledger_id")
            if not isinstance(ledger_id, str) or not LEDGER_ID.fullmatch(ledger_id):
                raise LedgerCorruptedError("header has no valid ledger_id", line_number=1)
            key = load_key(key_dir=key_dir, ledger_id=ledger_id)
            integrity = INTEGRITY_VERIFIED if key is not None else INTEGRITY_NO_KEY
        elif version == 1:
            integrity = INTEGRITY_UNAUTHENTICATED
        else:
            raise LedgerCorruptedError(f"unsupported ledger version {version!r}", line_number=1)
        header = parse_header(obj=header_obj)
        prev_mac = GENESIS
        if key is not None:
            prev_mac = check_line_mac(key=key, obj=header_obj, prev_mac=GENESIS, line_number=1)
        state = LedgerState(header.round_order)
        entries: list[LedgerEntry] = []
        prev = header.hash
        for i, raw_line in enumerate(lines[1:], start=2):
            obj = load_line(raw_line=raw_line, line_number=i)
            entry = parse_entry(obj=obj, line_number=i, prev_hash=prev, version=header.version, seq=i - 1)
            if key is not None:
                prev_mac = check_line_mac(key=key, obj=obj, prev_mac=prev_mac, line_number=i)
            try:
                state.apply(entry)
            except LedgerError as exc:
                raise LedgerCorruptedError(str(exc), line_number=i) from exc
            entries.append(entry)
            prev = entry.hash
        if key is not None:
            assert header.ledger_id is not None
            head = read_head(key=key, key_dir=key_dir, ledger_id=header.ledger_id)
            if head is not None:
                head_seq, head_mac = head
                if head_seq > len(entries):
                    raise LedgerTruncatedError(
                        f"{path}: the ledger ends at entry {len(entries)} but entry {head_seq} was written "
                        "(lines were deleted from its end)"
                    )
                written_mac = header.mac if head_seq == 0 else entries[head_seq - 1].mac
                if not hmac.compare_digest(str(written_mac), head_mac):
                    raise LedgerAuthenticationError(f"{path}: entry {head_seq} differs from the one written")
        ledger = cls(
            path=path,
            header=header,
            entries=entries,
            raw_lines=[b.decode("utf-8") for b in lines],
            state=state,
            key=key,
            key_dir=key_dir,
            integrity=integrity,
            writable=writable and key is not None,
        )
        if tail and writable:
            # Either a torn line was dropped, or the last line is complete but lacks its newline:
            # rewrite so the next append starts on a fresh line.
            ledger._rewrite()
        return ledger

    # ---- properties ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def header(self) -> LedgerHeader:
        """The header (budget, δ, accountant, ledger id)."""
        return self._header

    @property
    def budget(self) -> PrivacyBudget:
        """The stored budget."""
        return self._header.budget

    @property
    def delta(self) -> float:
        """The δ of every ε in this ledger."""
        return self._header.budget.delta

    @property
    def integrity(self) -> str:
        """``INTEGRITY_VERIFIED``, ``INTEGRITY_NO_KEY`` or ``INTEGRITY_UNAUTHENTICATED``."""
        return self._integrity

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every line after the header (begin, commit, resume), oldest first."""
        return tuple(self._entries)

    @property
    def pending(self) -> LedgerEntry | None:
        """The last ``begin`` if it has not been committed (it counts as released)."""
        return self._state.pending

    @property
    def last_round(self) -> int:
        """The round the next ``begin`` follows: the last round begun, or the round of the last resume."""
        return self._state.position

    def releases(self) -> tuple[LedgerEntry, ...]:
        """The entries that count toward ε, oldest first: every commit, every ``begin`` never committed
        (also the pending one), and version-1 round lines.

        Returns:
            The counted entries; the last one holds the current cumulative ε.
        """
        return tuple(self._state.releases())

    def latest(self) -> LedgerEntry | None:
        """The counted entry holding the current cumulative ε, or ``None``."""
        rel = self._state.releases()
        return rel[-1] if rel else None

    def __len__(self) -> int:
        return len(self._state.releases())

    # ---- writing ------------------------------------------------------------------------------
    def _check_records(self, sites: Any, global_record: Any) -> None:
        if not isinstance(sites, Mapping) or not all(isinstance(r, MechanismRecord) for r in sites.values()):
            raise InvalidPrivacyConfigError("sites must map site names to MechanismRecord")
        if not all(isinstance(name, str) and name for name in sites):
            raise InvalidPrivacyConfigError("site names must be non-empty strings")
        if global_record is not None and not isinstance(global_record, MechanismRecord):
            raise InvalidPrivacyConfigError("global_record must be a MechanismRecord or None")

    def _write(self, body: dict[str, Any], make: Any) -> LedgerEntry:
        """Check, then durably append one line (write, flush, fsync), then advance the head."""
        if not self._writable or self._key is None or self._key_dir is None:
            raise LedgerError(
                f"{self._path} was opened read-only or without its key; it cannot be appended to"
            )
        prev_mac = self._entries[-1].mac if self._entries else self._header.mac
        assert prev_mac is not None
        line_hash, mac, line = seal_line(key=self._key, prev_mac=prev_mac, body=body)
        entry: LedgerEntry = make(line_hash, mac)
        trial = self._state.copy()
        trial.apply(entry)  # raises before anything is written
        _write_durably(self._path, "a", line)
        self._state = trial
        self._entries.append(entry)
        self._raw_lines.append(line)
        assert self._header.ledger_id is not None
        write_head(
            key=self._key, key_dir=self._key_dir, ledger_id=self._header.ledger_id, seq=entry.seq, mac=mac
        )
        return entry

    def _record_line(
        self,
        *,
        kind: str,
        round: int,
        sites: Mapping[str, MechanismRecord],
        global_record: MechanismRecord | None,
        time_unix: float | None,
        begin_seq: int | None = None,
    ) -> LedgerEntry:
        self._check_records(sites, global_record)
        rnd = check_int("round", round, minimum=0 if kind == "resume" else 1)
        stamp = time.time() if time_unix is None else check_finite_nonneg("time_unix", time_unix)
        prev_hash = self._entries[-1].hash if self._entries else self._header.hash
        seq = self._state.seq + 1
        body: dict[str, Any] = {
            "kind": kind,
            "seq": seq,
            "round": rnd,
            "time_unix": stamp,
            "sites": {name: rec.to_dict() for name, rec in sites.items()},
            "global": None if global_record is None else global_record.to_dict(),
            "prev": prev_hash,
        }
        if begin_seq is not None:
            body["begin"] = begin_seq

        def make(line_hash: str, mac: str) -> LedgerEntry:
            return LedgerEntry(
                round=rnd,
                time_unix=stamp,
                sites=dict(sites),
                global_record=global_record,
                prev_hash=prev_hash,
                hash=line_hash,
                kind=kind,
                seq=seq,
                begin_seq=begin_seq,
                mac=mac,
            )

        return self._write(body, make)

    def begin(
        self,
        *,
        round: int,
        sites: Mapping[str, MechanismRecord],
        global_record: MechanismRecord | None = None,
        time_unix: float | None = None,
    ) -> LedgerEntry:
        """Durably record that round ``round`` starts (write, flush, fsync) — call before it can release.

        From now on the round counts toward ε with these records, whether or not it completes.

        Args:
            round: the round; with ``round_order == "consecutive"`` it must be ``last_round + 1``.
            sites: cumulative record-level ε of every site *if the round releases as planned*, with
                the largest cost it can have (a site that will not train still appears, with
                ``steps=0`` and its unchanged ε).
            global_record: cumulative client-level ε under the same upper bound, if any (once
                present it must stay present).
            time_unix: timestamp (default: now).

        Returns:
            The new entry.

        Raises:
            LedgerError: read-only ledger, wrong round number, a site disappeared, or an ε decreased.
            InvalidPrivacyConfigError: malformed records.
        """
        return self._record_line(
            kind="begin", round=round, sites=sites, global_record=global_record, time_unix=time_unix
        )

    def commit(
        self,
        *,
        sites: Mapping[str, MechanismRecord],
        global_record: MechanismRecord | None = None,
        time_unix: float | None = None,
    ) -> LedgerEntry:
        """Durably record what the pending round actually released; call before publishing anything derived.

        Args:
            sites: cumulative record-level ε of the same sites as the ``begin``, with the actual cost.
            global_record: cumulative client-level ε with the actual cost, if any.
            time_unix: timestamp (default: now).

        Returns:
            The new entry.

        Raises:
            LedgerError: no pending ``begin``, other sites than the ``begin``'s, or an ε decreased.
            InvalidPrivacyConfigError: malformed records.
        """
        pending = self._state.pending
        if pending is None:
            raise LedgerError("commit without a pending begin")
        return self._record_line(
            kind="commit",
            round=pending.round,
            sites=sites,
            global_record=global_record,
            time_unix=time_unix,
            begin_seq=pending.seq,
        )

    def append(
        self,
        *,
        round: int,
        sites: Mapping[str, MechanismRecord],
        global_record: MechanismRecord | None = None,
        time_unix: float | None = None,
    ) -> LedgerEntry:
        """:meth:`begin` then :meth:`commit` with the same records (the cost is known in advance).

        Args:
            round: see :meth:`begin`.
            sites: see :meth:`begin`.
            global_record: see :meth:`begin`.
            time_unix: timestamp (default: now).

        Returns:
            The commit entry.

        Raises:
            LedgerError: see :meth:`begin`.
            InvalidPrivacyConfigError: malformed records.
        """
        self.begin(round=round, sites=sites, global_record=global_record, time_unix=time_unix)
        return self.commit(sites=sites, global_record=global_record, time_unix=time_unix)

    def mark_resume(self, *, round: int, time_unix: float | None = None) -> LedgerEntry:
        """Record that the run resumes from the checkpoint of ``round`` (nothing is removed).

        A pending ``begin`` stays counted as released; the next ``begin`` follows ``round``.

        Args:
            round: the checkpoint's round (0: no checkpoint), at most :attr:`last_round`.
            time_unix: timestamp (default: now).

        Returns:
            The new entry.

        Raises:
            LedgerError: ``round`` is beyond :attr:`last_round`, or the ledger is read-only.
        """
        return self._record_line(
            kind="resume", round=round, sites={}, global_record=None, time_unix=time_unix
        )

    def _rewrite(self) -> None:
        """Rewrite the file from the kept raw lines (tmp file + fsync + atomic rename + dir fsync)."""
        atomic_write_text(path=self._path, text="\n".join(self._raw_lines) + "\n")

    # ---- resume helpers -----------------------------------------------------------------------
    def rebuild_accountants(self, *, verify: bool = True) -> tuple[dict[str, Accountant], Accountant | None]:
        """Replay every counted entry (:meth:`releases`) into fresh accountants (per site, and global).

        Gaussian-family records are replayed into the header's accountant kind with
        ``step(noise_multiplier, sample_rate, num_steps=steps)``; DDG/Skellam records into a
        :class:`~privacy.accountants.DistributedDPAccountant` with ``params["event"]`` repeated ``steps``
        times. A ``begin`` that was never committed is replayed with its planned records.

        Args:
            verify: check that the replayed accountants reproduce the last counted entry's ε
                (relative 1e-6).

        Returns:
            ``(site_accountants, global_accountant or None)``.

        Raises:
            LedgerCorruptedError: replay does not reproduce the recorded ε, or a site switches
                between Gaussian and distributed mechanisms.
        """
        return replay_accountants(
            releases=self._state.releases(),
            accountant=self._header.accountant,
            delta=self.delta,
            verify=verify,
        )

    def check_budget(
        self,
        *,
        site_accountants: Mapping[str, Accountant],
        site_plans: Mapping[str, PlannedSteps | DistributedEvent],
        global_accountant: Accountant | None = None,
        global_plan: PlannedSteps | DistributedEvent | None = None,
    ) -> BudgetCheck:
        """:func:`check_budget` against this ledger's budget."""
        return check_budget(
            budget=self.budget,
            site_accountants=site_accountants,
            site_plans=site_plans,
            global_accountant=global_accountant,
            global_plan=global_plan,
        )

    def __repr__(self) -> str:
        return f"PrivacyLedger({str(self._path)!r}, rounds={len(self._entries)}, delta={self.delta:g})"


def _write_durably(path: Path, mode: str, line: str) -> None:
    """Write ``line`` and a newline to ``path`` opened with ``mode``, then flush and fsync."""
    with open(path, mode, encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
