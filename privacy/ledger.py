"""Append-only, hash-chained JSON-lines ε ledger, and privacy-budget checks.

One file per run (e.g. ``<run_dir>/privacy_ledger.jsonl``). Line 1 is a header (format, version, δ,
accounting method, budget); every further line is one training round, with the cumulative ε of every
site (record-level DP) and the global ε (client-level DP) at the ledger's δ, together with the
mechanism, σ, q, steps, privacy unit and adjacency of the round. Each line carries the SHA-256 of its
canonical JSON and of the previous line, so edits, reordering and truncation in the middle are
detected on :meth:`PrivacyLedger.open`.

Write-ahead rule: call :meth:`PrivacyLedger.append` (which writes, flushes and fsyncs) *before*
the round's model is released; a crash after the append and before the release only overstates ε.

Resume: :meth:`PrivacyLedger.open` reads and validates every existing entry (it never resets the
file); :meth:`PrivacyLedger.truncate` drops entries after the last round whose checkpoint survived,
and :meth:`PrivacyLedger.rebuild_accountants` replays the entries into fresh accountants (and checks
that they reproduce the recorded ε). A torn last line (crash in the middle of a write) is an error
unless ``recover_torn_tail=True`` is passed, in which case it is dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privacy.accountants import (
    Accountant,
    DistributedDPAccountant,
    DistributedEvent,
    GaussianAccountant,
    create_accountant,
)
from privacy.analysis._checks import check_delta, check_finite_nonneg, check_int, check_positive, check_rate
from privacy.errors import (
    BudgetExceededError,
    InvalidPrivacyConfigError,
    LedgerCorruptedError,
    LedgerError,
)

__all__ = [
    "DISTRIBUTED_LEDGER_MECHANISMS",
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "BudgetCheck",
    "LedgerEntry",
    "LedgerHeader",
    "MechanismRecord",
    "PlannedSteps",
    "PrivacyBudget",
    "PrivacyLedger",
    "check_budget",
]

LEDGER_FORMAT = "secfed.privacy.ledger"
LEDGER_VERSION = 1
#: Mechanisms accounted with :class:`~privacy.accountants.DistributedDPAccountant` (their record's
#: ``params["event"]`` holds the :class:`~privacy.accountants.DistributedEvent`). Every other mechanism
#: name is accounted as a Poisson-subsampled Gaussian with the record's σ, q and steps.
DISTRIBUTED_LEDGER_MECHANISMS: tuple[str, ...] = ("ddg", "skellam")
_GAUSSIAN_ACCOUNTANTS = ("rdp", "prv", "pld")
_GENESIS = "0" * 64
_REL_TOL = 1e-9


def _canonical(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


def _eps_to_json(eps: float) -> float | str:
    return "inf" if math.isinf(eps) else eps


def _eps_from_json(value: Any, where: str) -> float:
    if value == "inf":
        return math.inf
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise InvalidPrivacyConfigError(f"{where}: epsilon must be a number >= 0 or 'inf', got {value!r}")
    return float(value)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivacyBudget:
    """The run's privacy budget.

    Attributes:
        delta: δ at which every ε in the ledger is reported.
        site_epsilon: cap on each site's record-level ε (``None``: no cap).
        global_epsilon: cap on the global client-level ε (``None``: no cap).

    Raises:
        InvalidPrivacyConfigError: invalid values.
    """

    delta: float
    site_epsilon: float | None = None
    global_epsilon: float | None = None

    def __post_init__(self) -> None:
        check_delta(self.delta)
        if self.site_epsilon is not None:
            check_positive("site_epsilon", self.site_epsilon)
        if self.global_epsilon is not None:
            check_positive("global_epsilon", self.global_epsilon)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"delta": self.delta, "site_epsilon": self.site_epsilon, "global_epsilon": self.global_epsilon}

    @classmethod
    def from_dict(cls, *, data: Any) -> PrivacyBudget:
        """Inverse of :meth:`to_dict`.

        Raises:
            InvalidPrivacyConfigError: malformed data.
        """
        if not isinstance(data, Mapping) or set(data) != {"delta", "site_epsilon", "global_epsilon"}:
            raise InvalidPrivacyConfigError("budget must have exactly delta, site_epsilon, global_epsilon")
        return cls(
            delta=data["delta"], site_epsilon=data["site_epsilon"], global_epsilon=data["global_epsilon"]
        )


@dataclass(frozen=True)
class MechanismRecord:
    """One site's (or the global mechanism's) state after a round.

    Attributes:
        epsilon: cumulative ε after this round, at the ledger's δ (``inf`` allowed).
        mechanism: e.g. ``"dp-sgd"``, ``"episodic-dp-sgd"``, ``"dp-fedavg"``, ``"ddg"``, ``"skellam"``.
        noise_multiplier: σ used this round (for DDG/Skellam: informative only).
        sample_rate: q used this round.
        steps: number of noisy steps this round (0 if the site did not train; rounds for DDG/Skellam).
        privacy_unit: ``"record"`` or ``"client"``.
        adjacency: e.g. ``"add/remove"`` or ``"zero-out"``.
        params: extra JSON scalars/objects; DDG/Skellam records need ``params["event"]`` (the
            :meth:`~privacy.accountants.DistributedEvent.to_dict` of the round).

    Raises:
        InvalidPrivacyConfigError: invalid values.
    """

    epsilon: float
    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    privacy_unit: str
    adjacency: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)):
            raise InvalidPrivacyConfigError(f"epsilon must be a number, got {self.epsilon!r}")
        if math.isnan(self.epsilon) or self.epsilon < 0:
            raise InvalidPrivacyConfigError(f"epsilon must be >= 0 (inf allowed), got {self.epsilon!r}")
        for name in ("mechanism", "privacy_unit", "adjacency"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidPrivacyConfigError(f"{name} must be a non-empty string, got {value!r}")
        check_finite_nonneg("noise_multiplier", self.noise_multiplier)
        check_rate("sample_rate", self.sample_rate)
        check_int("steps", self.steps, minimum=0)
        if not isinstance(self.params, Mapping):
            raise InvalidPrivacyConfigError("params must be a mapping")
        try:
            _canonical(dict(self.params))
        except (TypeError, ValueError) as exc:
            raise InvalidPrivacyConfigError(f"params must be strict-JSON serialisable: {exc}") from exc
        if self.mechanism in DISTRIBUTED_LEDGER_MECHANISMS:
            if "event" not in self.params:
                raise InvalidPrivacyConfigError(f"a {self.mechanism!r} record needs params['event']")
            DistributedEvent.from_dict(data=self.params["event"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``inf`` ε written as the string ``"inf"``)."""
        return {
            "epsilon": _eps_to_json(float(self.epsilon)),
            "mechanism": self.mechanism,
            "noise_multiplier": float(self.noise_multiplier),
            "sample_rate": float(self.sample_rate),
            "steps": int(self.steps),
            "privacy_unit": self.privacy_unit,
            "adjacency": self.adjacency,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, *, data: Any, where: str = "record") -> MechanismRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            InvalidPrivacyConfigError: malformed data.
        """
        keys = {
            "epsilon",
            "mechanism",
            "noise_multiplier",
            "sample_rate",
            "steps",
            "privacy_unit",
            "adjacency",
            "params",
        }
        if not isinstance(data, Mapping) or set(data) != keys:
            raise InvalidPrivacyConfigError(f"{where}: fields must be {sorted(keys)}")
        return cls(
            epsilon=_eps_from_json(data["epsilon"], where),
            mechanism=data["mechanism"],
            noise_multiplier=data["noise_multiplier"],
            sample_rate=data["sample_rate"],
            steps=data["steps"],
            privacy_unit=data["privacy_unit"],
            adjacency=data["adjacency"],
            params=data["params"],
        )


@dataclass(frozen=True)
class LedgerHeader:
    """First line of a ledger file."""

    budget: PrivacyBudget
    accountant: str
    created_unix: float
    hash: str

    @property
    def delta(self) -> float:
        """The δ of every ε in the ledger."""
        return self.budget.delta


@dataclass(frozen=True)
class LedgerEntry:
    """One round of the ledger (cumulative ε per site and globally)."""

    round: int
    time_unix: float
    sites: Mapping[str, MechanismRecord]
    global_record: MechanismRecord | None
    prev_hash: str
    hash: str


# --------------------------------------------------------------------------------------------------
# Ledger
# --------------------------------------------------------------------------------------------------


class PrivacyLedger:
    """Append-only ε ledger; use :meth:`open` to create or resume one."""

    def __init__(
        self, *, path: Path, header: LedgerHeader, entries: list[LedgerEntry], raw_lines: list[str]
    ) -> None:
        if len(raw_lines) != len(entries) + 1:
            raise LedgerError("internal: one raw line per entry plus the header is required")
        self._path = path
        self._header = header
        self._entries = entries
        self._raw_lines = raw_lines  # exact bytes of every line (header first), for atomic rewrites

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        path: str | os.PathLike[str],
        budget: PrivacyBudget | None = None,
        accountant: str = "rdp",
        recover_torn_tail: bool = False,
    ) -> PrivacyLedger:
        """Open an existing ledger (validating every entry) or create a new one.

        Args:
            path: ledger file (e.g. ``run_dir / "privacy_ledger.jsonl"``); its directory must exist.
            budget: required to create; when resuming, if given it must equal the stored budget.
            accountant: ``"rdp"``, ``"prv"`` or ``"pld"`` (Gaussian mechanisms); stored in the header.
                When resuming, must equal the stored value.
            recover_torn_tail: drop a last line that is incomplete (no newline and unparsable), as left
                by a crash during a write, and rewrite the file without it.

        Returns:
            The ledger.

        Raises:
            LedgerCorruptedError: the file is malformed, edited, or has a broken hash chain.
            InvalidPrivacyConfigError: budget/accountant missing, invalid, or different from the file's.
            LedgerError: the directory does not exist.
        """
        p = Path(path)
        if accountant not in _GAUSSIAN_ACCOUNTANTS:
            raise InvalidPrivacyConfigError(
                f"accountant must be one of {_GAUSSIAN_ACCOUNTANTS}, got {accountant!r}"
            )
        if budget is not None and not isinstance(budget, PrivacyBudget):
            raise InvalidPrivacyConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
        if not p.parent.is_dir():
            raise LedgerError(f"directory {p.parent} does not exist")
        if p.exists() and p.stat().st_size > 0:
            ledger = cls._read(p, recover_torn_tail=recover_torn_tail)
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
        body = {
            "kind": "header",
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "budget": budget.to_dict(),
            "accountant": accountant,
            "created_unix": created,
        }
        digest = _digest(body)
        line = _canonical({**body, "hash": digest}) + "\n"
        # "x" refuses to clobber a file created concurrently; an existing empty file (crash before the
        # header was written) holds no entries and is initialised.
        with open(p, "w" if p.exists() else "x", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(p.parent)
        header = LedgerHeader(budget=budget, accountant=accountant, created_unix=created, hash=digest)
        return cls(path=p, header=header, entries=[], raw_lines=[line[:-1]])

    @classmethod
    def _read(cls, path: Path, *, recover_torn_tail: bool) -> PrivacyLedger:
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
        header = cls._parse_header(lines[0])
        entries: list[LedgerEntry] = []
        prev = header.hash
        for i, raw_line in enumerate(lines[1:], start=2):
            entry = cls._parse_entry(
                raw_line, line_number=i, prev_hash=prev, previous=entries[-1] if entries else None
            )
            entries.append(entry)
            prev = entry.hash
        ledger = cls(path=path, header=header, entries=entries, raw_lines=[b.decode("utf-8") for b in lines])
        if tail:
            # Either a torn line was dropped, or the last line is complete but lacks its newline:
            # rewrite so the next append starts on a fresh line.
            ledger._rewrite()
        return ledger

    @staticmethod
    def _load_line(raw_line: bytes, line_number: int) -> dict[str, Any]:
        try:
            obj = json.loads(raw_line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LedgerCorruptedError(f"not valid JSON: {exc}", line_number=line_number) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("hash"), str):
            raise LedgerCorruptedError("not a ledger object with a hash", line_number=line_number)
        body = {k: v for k, v in obj.items() if k != "hash"}
        try:
            expected = _digest(body)
        except (TypeError, ValueError) as exc:
            raise LedgerCorruptedError(f"not canonical JSON: {exc}", line_number=line_number) from exc
        if obj["hash"] != expected:
            raise LedgerCorruptedError("hash mismatch (line edited)", line_number=line_number)
        return obj

    @classmethod
    def _parse_header(cls, raw_line: bytes) -> LedgerHeader:
        obj = cls._load_line(raw_line, 1)
        if obj.get("kind") != "header" or obj.get("format") != LEDGER_FORMAT:
            raise LedgerCorruptedError("first line is not a privacy-ledger header", line_number=1)
        if obj.get("version") != LEDGER_VERSION:
            raise LedgerCorruptedError(f"unsupported ledger version {obj.get('version')!r}", line_number=1)
        try:
            budget = PrivacyBudget.from_dict(data=obj.get("budget"))
            accountant = obj.get("accountant")
            if accountant not in _GAUSSIAN_ACCOUNTANTS:
                raise InvalidPrivacyConfigError(f"unknown accountant {accountant!r}")
            created = check_finite_nonneg("created_unix", obj.get("created_unix", -1.0))
        except InvalidPrivacyConfigError as exc:
            raise LedgerCorruptedError(f"bad header: {exc}", line_number=1) from exc
        return LedgerHeader(budget=budget, accountant=str(accountant), created_unix=created, hash=obj["hash"])

    @classmethod
    def _parse_entry(
        cls, raw_line: bytes, *, line_number: int, prev_hash: str, previous: LedgerEntry | None
    ) -> LedgerEntry:
        obj = cls._load_line(raw_line, line_number)
        keys = {"kind", "round", "time_unix", "sites", "global", "prev", "hash"}
        if obj.get("kind") != "round" or set(obj) != keys:
            raise LedgerCorruptedError(
                f"round entries must have exactly {sorted(keys)}", line_number=line_number
            )
        if obj["prev"] != prev_hash:
            raise LedgerCorruptedError(
                "hash chain broken (entry removed, reordered or copied)", line_number=line_number
            )
        try:
            if not isinstance(obj["sites"], dict):
                raise InvalidPrivacyConfigError("sites must be an object")
            sites = {
                str(name): MechanismRecord.from_dict(data=rec, where=f"site {name!r}")
                for name, rec in obj["sites"].items()
            }
            glob = (
                None
                if obj["global"] is None
                else MechanismRecord.from_dict(data=obj["global"], where="global")
            )
            time_unix = check_finite_nonneg("time_unix", obj["time_unix"])
            rnd = check_int("round", obj["round"], minimum=1)
            entry = LedgerEntry(
                round=rnd,
                time_unix=time_unix,
                sites=sites,
                global_record=glob,
                prev_hash=prev_hash,
                hash=obj["hash"],
            )
            _check_succession(previous, entry)
        except (InvalidPrivacyConfigError, LedgerError) as exc:
            raise LedgerCorruptedError(str(exc), line_number=line_number) from exc
        return entry

    # ---- properties ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def header(self) -> LedgerHeader:
        """The header (budget, δ, accountant)."""
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
    def entries(self) -> tuple[LedgerEntry, ...]:
        """All round entries, oldest first."""
        return tuple(self._entries)

    @property
    def last_round(self) -> int:
        """The last recorded round (0 if none)."""
        return self._entries[-1].round if self._entries else 0

    def latest(self) -> LedgerEntry | None:
        """The last entry, or ``None``."""
        return self._entries[-1] if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)

    # ---- writing ------------------------------------------------------------------------------
    def append(
        self,
        *,
        round: int,
        sites: Mapping[str, MechanismRecord],
        global_record: MechanismRecord | None = None,
        time_unix: float | None = None,
    ) -> LedgerEntry:
        """Durably append round ``round`` (write, flush, fsync) — call before releasing its model.

        Args:
            round: must be ``last_round + 1``.
            sites: cumulative record-level ε of every site so far (a site that did not train this
                round still appears, with ``steps=0`` and its unchanged ε).
            global_record: cumulative client-level ε, if any (once present it must stay present).
            time_unix: timestamp (default: now).

        Returns:
            The new entry.

        Raises:
            LedgerError: wrong round number, a site disappeared, or an ε decreased.
            InvalidPrivacyConfigError: malformed records.
        """
        if not isinstance(sites, Mapping) or not all(isinstance(r, MechanismRecord) for r in sites.values()):
            raise InvalidPrivacyConfigError("sites must map site names to MechanismRecord")
        if not all(isinstance(name, str) and name for name in sites):
            raise InvalidPrivacyConfigError("site names must be non-empty strings")
        if global_record is not None and not isinstance(global_record, MechanismRecord):
            raise InvalidPrivacyConfigError("global_record must be a MechanismRecord or None")
        rnd = check_int("round", round, minimum=1)
        stamp = time.time() if time_unix is None else check_finite_nonneg("time_unix", time_unix)
        prev_hash = self._entries[-1].hash if self._entries else self._header.hash
        body = {
            "kind": "round",
            "round": rnd,
            "time_unix": stamp,
            "sites": {name: rec.to_dict() for name, rec in sites.items()},
            "global": None if global_record is None else global_record.to_dict(),
            "prev": prev_hash,
        }
        digest = _digest(body)
        entry = LedgerEntry(
            round=rnd,
            time_unix=stamp,
            sites=dict(sites),
            global_record=global_record,
            prev_hash=prev_hash,
            hash=digest,
        )
        _check_succession(self._entries[-1] if self._entries else None, entry)
        line = _canonical({**body, "hash": digest}) + "\n"
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._entries.append(entry)
        self._raw_lines.append(line[:-1])
        return entry

    def truncate(self, *, last_round: int) -> None:
        """Drop every entry after ``last_round`` (resume after a crash mid-round), atomically.

        Args:
            last_round: the last round to keep (0 keeps only the header).

        Raises:
            LedgerError: ``last_round`` is beyond the ledger's last round or negative.
        """
        keep = check_int("last_round", last_round, minimum=0)
        if keep > self.last_round:
            raise LedgerError(f"cannot truncate to round {keep}: the ledger ends at round {self.last_round}")
        if keep == self.last_round:
            return
        self._entries = [e for e in self._entries if e.round <= keep]
        self._raw_lines = self._raw_lines[: len(self._entries) + 1]
        self._rewrite()

    def _rewrite(self) -> None:
        """Rewrite the file from the kept raw lines (tmp file + fsync + atomic rename + dir fsync)."""
        lines = self._raw_lines
        tmp = self._path.with_name(self._path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)

    # ---- resume helpers -----------------------------------------------------------------------
    def rebuild_accountants(self, *, verify: bool = True) -> tuple[dict[str, Accountant], Accountant | None]:
        """Replay every entry into fresh accountants (per site, and global).

        Gaussian-family records are replayed into the header's accountant kind with
        ``step(noise_multiplier, sample_rate, num_steps=steps)``; DDG/Skellam records into a
        :class:`~privacy.accountants.DistributedDPAccountant` with ``params["event"]`` repeated ``steps``
        times.

        Args:
            verify: check that the replayed accountants reproduce the last entry's ε (relative 1e-6).

        Returns:
            ``(site_accountants, global_accountant or None)``.

        Raises:
            LedgerCorruptedError: replay does not reproduce the recorded ε, or a site switches
                between Gaussian and distributed mechanisms.
        """
        sites: dict[str, Accountant] = {}
        glob: Accountant | None = None
        for e in self._entries:
            for name, rec in e.sites.items():
                sites[name] = self._replay(sites.get(name), rec, f"site {name!r}")
            if e.global_record is not None:
                glob = self._replay(glob, e.global_record, "global")
        if verify and self._entries:
            last = self._entries[-1]
            checks: list[tuple[str, Accountant | None, MechanismRecord | None]] = [
                (f"site {n!r}", sites.get(n), r) for n, r in last.sites.items()
            ]
            checks.append(("global", glob, last.global_record))
            for where, acc, recorded in checks:
                if acc is None or recorded is None:
                    continue
                eps = acc.get_epsilon(delta=self.delta)
                if not _close(eps, recorded.epsilon, 1e-6):
                    raise LedgerCorruptedError(
                        f"{where}: replayed epsilon {eps:.6g} != recorded {recorded.epsilon:.6g}"
                    )
        return sites, glob

    def _replay(self, acc: Accountant | None, rec: MechanismRecord, where: str) -> Accountant:
        distributed = rec.mechanism in DISTRIBUTED_LEDGER_MECHANISMS
        if acc is None:
            acc = (
                DistributedDPAccountant() if distributed else create_accountant(kind=self._header.accountant)
            )
        if distributed != isinstance(acc, DistributedDPAccountant):
            raise LedgerCorruptedError(f"{where} switches between Gaussian and distributed mechanisms")
        if rec.steps == 0:
            return acc
        if isinstance(acc, DistributedDPAccountant):
            acc.step(event=DistributedEvent.from_dict(data=rec.params["event"]), num_rounds=rec.steps)
        else:
            acc.step(noise_multiplier=rec.noise_multiplier, sample_rate=rec.sample_rate, num_steps=rec.steps)
        return acc

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


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


def _check_succession(previous: LedgerEntry | None, entry: LedgerEntry) -> None:
    expected = 1 if previous is None else previous.round + 1
    if entry.round != expected:
        raise LedgerError(
            f"round {entry.round} does not follow round {expected - 1} (expected round {expected})"
        )
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


# --------------------------------------------------------------------------------------------------
# Budget checks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedSteps:
    """The planned Gaussian steps of the next round for one site (or the global mechanism).

    Attributes:
        noise_multiplier: σ.
        sample_rate: q.
        steps: number of steps (>= 0).

    Raises:
        InvalidPrivacyConfigError: invalid values.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        check_finite_nonneg("noise_multiplier", self.noise_multiplier)
        check_rate("sample_rate", self.sample_rate)
        check_int("steps", self.steps, minimum=0)

    def describe(self) -> str:
        """Human-readable summary."""
        return f"sigma={self.noise_multiplier:g}, q={self.sample_rate:g}, {self.steps} steps"


@dataclass(frozen=True)
class BudgetCheck:
    """Outcome of :func:`check_budget`.

    Attributes:
        allowed: ``True`` if the planned round keeps every ε within budget.
        reasons: one message per exceeded budget (empty if allowed).
        projected_site_epsilon: ε each planned site would reach.
        projected_global_epsilon: ε the global mechanism would reach (``None`` if not planned).
    """

    allowed: bool
    reasons: tuple[str, ...]
    projected_site_epsilon: Mapping[str, float]
    projected_global_epsilon: float | None

    def raise_if_exceeded(self) -> None:
        """Raise :class:`~privacy.errors.BudgetExceededError` with the reasons if not allowed."""
        if not self.allowed:
            raise BudgetExceededError("; ".join(self.reasons), reasons=self.reasons)


def _project(
    acc: Accountant, plan: PlannedSteps | DistributedEvent, delta: float, where: str
) -> tuple[float, str]:
    if isinstance(plan, PlannedSteps):
        if not isinstance(acc, GaussianAccountant):
            raise InvalidPrivacyConfigError(f"{where}: a PlannedSteps plan needs a Gaussian accountant")
        eps = acc.projected_epsilon(
            delta=delta,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            num_steps=plan.steps,
        )
        return eps, plan.describe()
    if isinstance(plan, DistributedEvent):
        if not isinstance(acc, DistributedDPAccountant):
            raise InvalidPrivacyConfigError(
                f"{where}: a DistributedEvent plan needs a DistributedDPAccountant"
            )
        eps = acc.projected_epsilon(delta=delta, event=plan, num_rounds=1)
        desc = f"{plan.mechanism}, {plan.num_survivors} clients, q={plan.sample_rate:g}"
        return eps, desc
    raise InvalidPrivacyConfigError(
        f"{where}: plan must be PlannedSteps or DistributedEvent, got {type(plan).__name__}"
    )


def check_budget(
    *,
    budget: PrivacyBudget,
    site_accountants: Mapping[str, Accountant],
    site_plans: Mapping[str, PlannedSteps | DistributedEvent],
    global_accountant: Accountant | None = None,
    global_plan: PlannedSteps | DistributedEvent | None = None,
) -> BudgetCheck:
    """Would one more round, as planned, exceed the budget per site or globally?

    Args:
        budget: caps and δ.
        site_accountants: each site's accountant as of now (not modified).
        site_plans: the planned next-round steps of the sites that will train.
        global_accountant: the client-level accountant (if any).
        global_plan: the planned global mechanism of the next round (if any).

    Returns:
        A :class:`BudgetCheck`; call :meth:`BudgetCheck.raise_if_exceeded` to enforce it.

    Raises:
        InvalidPrivacyConfigError: a plan without accountant, or plan/accountant of mismatched types.
    """
    if not isinstance(budget, PrivacyBudget):
        raise InvalidPrivacyConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
    reasons: list[str] = []
    projected: dict[str, float] = {}
    for name, plan in site_plans.items():
        acc = site_accountants.get(name)
        if acc is None:
            raise InvalidPrivacyConfigError(f"site {name!r} has a plan but no accountant")
        eps, desc = _project(acc, plan, budget.delta, f"site {name!r}")
        projected[name] = eps
        if budget.site_epsilon is not None and not eps <= budget.site_epsilon:
            now = acc.get_epsilon(delta=budget.delta)
            reasons.append(
                f"site {name!r}: record-level epsilon would rise from {now:.4g} to {eps:.4g} > budget "
                f"{budget.site_epsilon:g} at delta={budget.delta:g} ({desc})"
            )
    projected_global: float | None = None
    if global_plan is not None:
        if global_accountant is None:
            raise InvalidPrivacyConfigError("a global plan needs a global accountant")
        projected_global, desc = _project(global_accountant, global_plan, budget.delta, "global")
        if budget.global_epsilon is not None and not projected_global <= budget.global_epsilon:
            now = global_accountant.get_epsilon(delta=budget.delta)
            reasons.append(
                f"global: client-level epsilon would rise from {now:.4g} to {projected_global:.4g} > budget "
                f"{budget.global_epsilon:g} at delta={budget.delta:g} ({desc})"
            )
    return BudgetCheck(
        allowed=not reasons,
        reasons=tuple(reasons),
        projected_site_epsilon=projected,
        projected_global_epsilon=projected_global,
    )
