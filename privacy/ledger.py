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
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import stat
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
from privacy.atomic import atomic_write_text, fsync_dir
from privacy.errors import (
    BudgetExceededError,
    InvalidPrivacyConfigError,
    LedgerCorruptedError,
    LedgerError,
)

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

LEDGER_FORMAT = "secfed.privacy.ledger"
LEDGER_VERSION = 2
#: Environment variable naming the key directory (tests point it at a temporary folder).
KEY_DIR_ENV = "SECFED_KEY_DIR"
#: Integrity of a ledger whose every MAC (and head) was checked with its key.
INTEGRITY_VERIFIED = "verified"
#: Integrity of a version-2 ledger whose key is not available: unknown, not verified.
INTEGRITY_NO_KEY = "cannot verify: the ledger's key is missing (integrity unknown)"
#: Integrity of a version-1 ledger: an unkeyed hash chain, which anyone can recompute.
INTEGRITY_UNAUTHENTICATED = "unauthenticated: format version 1 has no MAC (integrity unknown)"
#: Mechanisms accounted with :class:`~privacy.accountants.DistributedDPAccountant` (their record's
#: ``params["event"]`` holds the :class:`~privacy.accountants.DistributedEvent`). Every other mechanism
#: name is accounted as a Poisson-subsampled Gaussian with the record's σ, q and steps.
DISTRIBUTED_LEDGER_MECHANISMS: tuple[str, ...] = ("ddg", "skellam")
_GAUSSIAN_ACCOUNTANTS = ("rdp", "prv", "pld")
_ROUND_ORDERS = ("consecutive", "any")
_GENESIS = "0" * 64
_REL_TOL = 1e-9
_KEY_BYTES = 32
_MAC_DOMAIN = b"secfed.privacy.ledger/v2/hmac-sha256\n"
_HEAD_DOMAIN = b"secfed.privacy.ledger/v2/head\n"
_LEDGER_ID = re.compile(r"[0-9a-f]{32}")
_ENTRY_KEYS = {"kind", "seq", "round", "time_unix", "sites", "global", "prev", "hash", "mac"}


class LedgerAuthenticationError(LedgerCorruptedError):
    """A MAC (or the head next to the key) does not match: the ledger was rewritten or forged."""


class LedgerTruncatedError(LedgerCorruptedError):
    """The ledger ends before the last entry its head (kept with the key) says was written."""


class LedgerUnverifiableError(LedgerError):
    """The ledger's integrity cannot be checked (its key is missing, or it is an unkeyed v1 ledger)."""


class LedgerKeyError(LedgerError):
    """The key file is unusable: malformed, readable by others, or inside the ledger's directory."""


def _canonical(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


def _mac(key: bytes, prev_mac: str, body: Mapping[str, Any]) -> str:
    msg = _MAC_DOMAIN + prev_mac.encode("ascii") + b"\n" + _canonical(body).encode("utf-8")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


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


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def default_key_dir() -> Path:
    """The directory of ledger keys when none is given.

    Returns:
        ``$SECFED_KEY_DIR`` if set, else ``$XDG_CONFIG_HOME/secfed/keys``, else
        ``~/.config/secfed/keys``.
    """
    env = os.environ.get(KEY_DIR_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "secfed" / "keys"


def _resolve_key_dir(key_dir: str | os.PathLike[str] | None, ledger_dir: Path) -> Path:
    kd = Path(key_dir) if key_dir is not None else default_key_dir()
    kd_abs, ld_abs = kd.expanduser().resolve(), ledger_dir.resolve()
    if kd_abs == ld_abs or ld_abs in kd_abs.parents:
        raise LedgerKeyError(
            f"key directory {kd_abs} is inside the ledger's directory {ld_abs}: whoever reads the run "
            f"directory could forge the ledger; keep keys elsewhere (${KEY_DIR_ENV})"
        )
    return kd_abs


def _key_file(key_dir: Path, ledger_id: str) -> Path:
    return key_dir / f"{ledger_id}.key"


def _head_file(key_dir: Path, ledger_id: str) -> Path:
    return key_dir / f"{ledger_id}.head"


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600 (fsync'ed; atomically replaced unless exclusive)."""
    target = path if exclusive else path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(target, flags, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(target, path)
    fsync_dir(path.parent)


def _create_key(key_dir: Path, ledger_id: str) -> bytes:
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(_KEY_BYTES)
    try:
        _write_private(_key_file(key_dir, ledger_id), key.hex() + "\n", exclusive=True)
    except FileExistsError as exc:  # pragma: no cover - 128-bit id collision
        raise LedgerKeyError(f"a key for ledger {ledger_id} already exists in {key_dir}") from exc
    return key


def _load_key(key_dir: Path, ledger_id: str) -> bytes | None:
    path = _key_file(key_dir, ledger_id)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
        raise LedgerKeyError(f"key file {path} is accessible to other users (mode {oct(st.st_mode & 0o777)})")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LedgerKeyError(f"key file {path} is unreadable or not hex: {exc}") from exc
    if len(key) < _KEY_BYTES:
        raise LedgerKeyError(f"key file {path} holds {len(key)} bytes, at least {_KEY_BYTES} are required")
    return key


def _head_mac(key: bytes, head: Mapping[str, Any]) -> str:
    return hmac.new(key, _HEAD_DOMAIN + _canonical(head).encode("utf-8"), hashlib.sha256).hexdigest()


def _write_head(key: bytes, key_dir: Path, ledger_id: str, seq: int, mac: str) -> None:
    head = {"ledger_id": ledger_id, "seq": seq, "mac": mac}
    _write_private(
        _head_file(key_dir, ledger_id),
        _canonical({**head, "head_mac": _head_mac(key, head)}) + "\n",
        exclusive=False,
    )


def _read_head(key: bytes, key_dir: Path, ledger_id: str) -> tuple[int, str] | None:
    path = _head_file(key_dir, ledger_id)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        head = {"ledger_id": obj["ledger_id"], "seq": obj["seq"], "mac": obj["mac"]}
        ok = hmac.compare_digest(str(obj["head_mac"]), _head_mac(key, head))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LedgerAuthenticationError(f"head file {path} is malformed: {exc}") from exc
    if not ok or head["ledger_id"] != ledger_id or not isinstance(head["seq"], int):
        raise LedgerAuthenticationError(f"head file {path} fails its MAC")
    return int(head["seq"]), str(head["mac"])


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
    """First line of a ledger file.

    Attributes:
        budget: The budget (and δ).
        accountant: Gaussian accountant kind of the replay.
        created_unix: Creation time.
        hash: SHA-256 of the header line.
        version: Format version (1: unkeyed, 2: HMAC chain).
        ledger_id: 128-bit hex id naming the key file (``None`` in version 1).
        round_order: ``"consecutive"`` (a run's ledger) or ``"any"`` (a site's).
        mac: The header's MAC (``None`` in version 1).
    """

    budget: PrivacyBudget
    accountant: str
    created_unix: float
    hash: str
    version: int = LEDGER_VERSION
    ledger_id: str | None = None
    round_order: str = "consecutive"
    mac: str | None = None

    @property
    def delta(self) -> float:
        """The δ of every ε in the ledger."""
        return self.budget.delta


@dataclass(frozen=True)
class LedgerEntry:
    """One line of the ledger after the header.

    Attributes:
        round: The training round (for ``resume``: the checkpoint's round resumed from).
        time_unix: Time stamp.
        sites: Cumulative record-level ε per site after this release (empty for ``resume``).
        global_record: Cumulative client-level ε, if any.
        prev_hash: Hash of the previous line.
        hash: SHA-256 of this line.
        kind: ``"begin"``, ``"commit"``, ``"resume"`` (version 2) or ``"round"`` (version 1).
        seq: Line number after the header (1, 2, ...).
        begin_seq: For a ``commit``: the ``seq`` of the ``begin`` it completes.
        mac: The line's MAC (``None`` in version 1).
    """

    round: int
    time_unix: float
    sites: Mapping[str, MechanismRecord]
    global_record: MechanismRecord | None
    prev_hash: str
    hash: str
    kind: str = "commit"
    seq: int = 0
    begin_seq: int | None = None
    mac: str | None = None


# --------------------------------------------------------------------------------------------------
# Ledger
# --------------------------------------------------------------------------------------------------


class _State:
    """What the lines so far imply: the counted releases, the pending ``begin``, the round position."""

    def __init__(self, round_order: str) -> None:
        self.round_order = round_order
        self.counted: list[LedgerEntry] = []  # commits, v1 rounds, and begins that were never committed
        self.pending: LedgerEntry | None = None
        self.position = 0
        self.seq = 0

    def last_counted(self) -> LedgerEntry | None:
        return self.counted[-1] if self.counted else None

    def releases(self) -> list[LedgerEntry]:
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
        state: _State,
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
        if accountant not in _GAUSSIAN_ACCOUNTANTS:
            raise InvalidPrivacyConfigError(
                f"accountant must be one of {_GAUSSIAN_ACCOUNTANTS}, got {accountant!r}"
            )
        if round_order not in _ROUND_ORDERS:
            raise InvalidPrivacyConfigError(
                f"round_order must be one of {_ROUND_ORDERS}, got {round_order!r}"
            )
        if budget is not None and not isinstance(budget, PrivacyBudget):
            raise InvalidPrivacyConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
        if not p.parent.is_dir():
            raise LedgerError(f"directory {p.parent} does not exist")
        kd = _resolve_key_dir(key_dir, p.parent)
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
        key = _create_key(kd, ledger_id)
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
        digest = _digest(body)
        mac = _mac(key, _GENESIS, body)
        line = _canonical({**body, "hash": digest, "mac": mac}) + "\n"
        # "x" refuses to clobber a file created concurrently; an existing empty file (crash before the
        # header was written) holds no entries and is initialised.
        with open(p, "w" if p.exists() else "x", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(p.parent)
        _write_head(key, kd, ledger_id, 0, mac)
        header = LedgerHeader(
            budget=budget,
            accountant=accountant,
            created_unix=created,
            hash=digest,
            version=LEDGER_VERSION,
            ledger_id=ledger_id,
            round_order=round_order,
            mac=mac,
        )
        return cls(
            path=p,
            header=header,
            entries=[],
            raw_lines=[line[:-1]],
            state=_State(round_order),
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
            p, key_dir=_resolve_key_dir(key_dir, p.parent), recover_torn_tail=True, writable=False
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
        header_obj = cls._load_line(lines[0], 1)
        version = header_obj.get("version")
        key: bytes | None = None
        if version == LEDGER_VERSION:
            ledger_id = header_obj.get("ledger_id")
            if not isinstance(ledger_id, str) or not _LEDGER_ID.fullmatch(ledger_id):
                raise LedgerCorruptedError("header has no valid ledger_id", line_number=1)
            key = _load_key(key_dir, ledger_id)
            integrity = INTEGRITY_VERIFIED if key is not None else INTEGRITY_NO_KEY
        elif version == 1:
            integrity = INTEGRITY_UNAUTHENTICATED
        else:
            raise LedgerCorruptedError(f"unsupported ledger version {version!r}", line_number=1)
        header = cls._parse_header(header_obj)
        prev_mac = _GENESIS
        if key is not None:
            prev_mac = cls._check_mac(key, header_obj, _GENESIS, 1)
        state = _State(header.round_order)
        entries: list[LedgerEntry] = []
        prev = header.hash
        for i, raw_line in enumerate(lines[1:], start=2):
            obj = cls._load_line(raw_line, i)
            entry = cls._parse_entry(obj, line_number=i, prev_hash=prev, version=header.version, seq=i - 1)
            if key is not None:
                prev_mac = cls._check_mac(key, obj, prev_mac, i)
            try:
                state.apply(entry)
            except LedgerError as exc:
                raise LedgerCorruptedError(str(exc), line_number=i) from exc
            entries.append(entry)
            prev = entry.hash
        if key is not None:
            assert header.ledger_id is not None
            head = _read_head(key, key_dir, header.ledger_id)
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

    @staticmethod
    def _check_mac(key: bytes, obj: Mapping[str, Any], prev_mac: str, line_number: int) -> str:
        mac = obj.get("mac")
        body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, prev_mac, body)):
            raise LedgerAuthenticationError(
                "MAC mismatch: the line was written or rewritten without the ledger's key",
                line_number=line_number,
            )
        return mac

    @staticmethod
    def _load_line(raw_line: bytes, line_number: int) -> dict[str, Any]:
        try:
            obj = json.loads(raw_line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LedgerCorruptedError(f"not valid JSON: {exc}", line_number=line_number) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("hash"), str):
            raise LedgerCorruptedError("not a ledger object with a hash", line_number=line_number)
        body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
        try:
            expected = _digest(body)
        except (TypeError, ValueError) as exc:
            raise LedgerCorruptedError(f"not canonical JSON: {exc}", line_number=line_number) from exc
        if obj["hash"] != expected:
            raise LedgerCorruptedError("hash mismatch (line edited)", line_number=line_number)
        return obj

    @classmethod
    def _parse_header(cls, obj: Mapping[str, Any]) -> LedgerHeader:
        if obj.get("kind") != "header" or obj.get("format") != LEDGER_FORMAT:
            raise LedgerCorruptedError("first line is not a privacy-ledger header", line_number=1)
        version = int(obj["version"])
        try:
            budget = PrivacyBudget.from_dict(data=obj.get("budget"))
            accountant = obj.get("accountant")
            if accountant not in _GAUSSIAN_ACCOUNTANTS:
                raise InvalidPrivacyConfigError(f"unknown accountant {accountant!r}")
            created = check_finite_nonneg("created_unix", obj.get("created_unix", -1.0))
            order = obj.get("round_order", "consecutive")
            if order not in _ROUND_ORDERS:
                raise InvalidPrivacyConfigError(f"unknown round_order {order!r}")
            if version == LEDGER_VERSION and (obj.get("auth") != "hmac-sha256" or obj.get("seq") != 0):
                raise InvalidPrivacyConfigError("a version 2 header needs auth 'hmac-sha256' and seq 0")
        except InvalidPrivacyConfigError as exc:
            raise LedgerCorruptedError(f"bad header: {exc}", line_number=1) from exc
        return LedgerHeader(
            budget=budget,
            accountant=str(accountant),
            created_unix=created,
            hash=obj["hash"],
            version=version,
            ledger_id=obj.get("ledger_id") if version == LEDGER_VERSION else None,
            round_order=str(order),
            mac=obj.get("mac") if version == LEDGER_VERSION else None,
        )

    @classmethod
    def _parse_entry(
        cls, obj: Mapping[str, Any], *, line_number: int, prev_hash: str, version: int, seq: int
    ) -> LedgerEntry:
        kind = obj.get("kind")
        if version == 1:
            keys = {"kind", "round", "time_unix", "sites", "global", "prev", "hash"}
            kinds: tuple[str, ...] = ("round",)
        else:
            keys = _ENTRY_KEYS | ({"begin"} if kind == "commit" else set())
            kinds = ("begin", "commit", "resume")
        if kind not in kinds or set(obj) != keys:
            raise LedgerCorruptedError(
                f"entries must be of kind {list(kinds)} with exactly {sorted(keys)}", line_number=line_number
            )
        if obj["prev"] != prev_hash:
            raise LedgerCorruptedError(
                "hash chain broken (entry removed, reordered or copied)", line_number=line_number
            )
        if version != 1 and obj["seq"] != seq:
            raise LedgerCorruptedError(
                f"sequence number {obj['seq']!r} is not {seq}", line_number=line_number
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
            if kind == "resume" and (sites or glob is not None):
                raise InvalidPrivacyConfigError("a resume entry holds no records")
            time_unix = check_finite_nonneg("time_unix", obj["time_unix"])
            rnd = check_int("round", obj["round"], minimum=0 if kind == "resume" else 1)
            begin_seq = check_int("begin", obj["begin"], minimum=1) if kind == "commit" else None
        except InvalidPrivacyConfigError as exc:
            raise LedgerCorruptedError(str(exc), line_number=line_number) from exc
        return LedgerEntry(
            round=rnd,
            time_unix=time_unix,
            sites=sites,
            global_record=glob,
            prev_hash=prev_hash,
            hash=obj["hash"],
            kind=str(kind),
            seq=seq,
            begin_seq=begin_seq,
            mac=obj.get("mac"),
        )

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
        digest = _digest(body)
        mac = _mac(self._key, prev_mac, body)
        entry: LedgerEntry = make(digest, mac)
        trial = _State(self._state.round_order)
        trial.__dict__.update(
            counted=list(self._state.counted),
            pending=self._state.pending,
            position=self._state.position,
            seq=self._state.seq,
        )
        trial.apply(entry)  # raises before anything is written
        line = _canonical({**body, "hash": digest, "mac": mac}) + "\n"
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._state = trial
        self._entries.append(entry)
        self._raw_lines.append(line[:-1])
        assert self._header.ledger_id is not None
        _write_head(self._key, self._key_dir, self._header.ledger_id, entry.seq, mac)
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

        def make(digest: str, mac: str) -> LedgerEntry:
            return LedgerEntry(
                round=rnd,
                time_unix=stamp,
                sites=dict(sites),
                global_record=global_record,
                prev_hash=prev_hash,
                hash=digest,
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
        sites: dict[str, Accountant] = {}
        glob: Accountant | None = None
        releases = self._state.releases()
        for e in releases:
            for name, rec in e.sites.items():
                sites[name] = self._replay(sites.get(name), rec, f"site {name!r}")
            if e.global_record is not None:
                glob = self._replay(glob, e.global_record, "global")
        if verify and releases:
            last = releases[-1]
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
