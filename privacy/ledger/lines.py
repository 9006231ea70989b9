"""The privacy ledger's line format: canonical JSON, SHA-256 digest, HMAC chain, records and parsing.

Every line of a ledger (see :mod:`privacy.ledger` for the format) is canonical JSON with a ``hash``
(SHA-256 of the line without ``hash`` and ``mac``) and, from version 2 on, a ``mac`` chained over the
previous line's. This module holds the records a line carries (:class:`PrivacyBudget`,
:class:`MechanismRecord`, :class:`LedgerHeader`, :class:`LedgerEntry`), the encoding of ε (``inf``
as the string ``"inf"``), and the parsing of one raw line into a checked header or entry. It knows
nothing of files, keys or the order of entries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from privacy.accountants import DistributedEvent
from privacy.analysis._checks import check_delta, check_finite_nonneg, check_int, check_positive, check_rate
from privacy.analysis.discrete import DISTRIBUTED_MECHANISMS
from privacy.errors import InvalidPrivacyConfigError, LedgerAuthenticationError, LedgerCorruptedError

__all__ = [
    "DISTRIBUTED_LEDGER_MECHANISMS",
    "GAUSSIAN_ACCOUNTANTS",
    "GENESIS",
    "INTEGRITY_NO_KEY",
    "INTEGRITY_UNAUTHENTICATED",
    "INTEGRITY_VERIFIED",
    "LEDGER_FORMAT",
    "LEDGER_ID",
    "LEDGER_VERSION",
    "ROUND_ORDERS",
    "LedgerEntry",
    "LedgerHeader",
    "MechanismRecord",
    "PrivacyBudget",
    "canonical",
    "check_line_mac",
    "digest",
    "line_mac",
    "load_line",
    "parse_entry",
    "parse_header",
    "seal_line",
]

LEDGER_FORMAT = "secfed.privacy.ledger"
LEDGER_VERSION = 2
#: Integrity of a ledger whose every MAC (and head) was checked with its key.
INTEGRITY_VERIFIED = "verified"
#: Integrity of a version-2 ledger whose key is not available: unknown, not verified.
INTEGRITY_NO_KEY = "cannot verify: the ledger's key is missing (integrity unknown)"
#: Integrity of a version-1 ledger: an unkeyed hash chain, which anyone can recompute.
INTEGRITY_UNAUTHENTICATED = "unauthenticated: format version 1 has no MAC (integrity unknown)"
#: Mechanisms accounted with :class:`~privacy.accountants.DistributedDPAccountant` (their record's
#: ``params["event"]`` holds the :class:`~privacy.accountants.DistributedEvent`). Every other mechanism
#: name is accounted as a Poisson-subsampled Gaussian with the record's σ, q and steps.
DISTRIBUTED_LEDGER_MECHANISMS: tuple[str, ...] = DISTRIBUTED_MECHANISMS
#: Gaussian accountant kinds a header may name.
GAUSSIAN_ACCOUNTANTS = ("rdp", "prv", "pld")
#: Round orders a header may name.
ROUND_ORDERS = ("consecutive", "any")
#: The MAC (and previous hash) before the first line.
GENESIS = "0" * 64
#: The form of a version-2 ledger id (128 random bits, hex).
LEDGER_ID = re.compile(r"[0-9a-f]{32}")
_MAC_DOMAIN = b"secfed.privacy.ledger/v2/hmac-sha256\n"
_ENTRY_KEYS = {"kind", "seq", "round", "time_unix", "sites", "global", "prev", "hash", "mac"}


def canonical(obj: Mapping[str, Any]) -> str:
    """Canonical JSON of ``obj``: sorted keys, no spaces, no NaN or infinity.

    Args:
        obj: a JSON object.

    Returns:
        The text every hash and MAC of the ledger is computed over.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot encode.
        ValueError: ``obj`` holds NaN or an infinity.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj`` (a line's ``hash``).

    Args:
        obj: the line without ``hash`` and ``mac``.

    Returns:
        64 hex digits.

    Raises:
        TypeError: see :func:`canonical`.
        ValueError: see :func:`canonical`.
    """
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


def line_mac(*, key: bytes, prev_mac: str, body: Mapping[str, Any]) -> str:
    """The MAC of one line: HMAC-SHA256(key, DOMAIN || prev_mac || "\\n" || canonical(body)).

    Args:
        key: the ledger's key.
        prev_mac: the previous line's MAC (:data:`GENESIS` before the header).
        body: the line without ``hash`` and ``mac``.

    Returns:
        64 hex digits.
    """
    msg = _MAC_DOMAIN + prev_mac.encode("ascii") + b"\n" + canonical(body).encode("utf-8")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def seal_line(*, key: bytes, prev_mac: str, body: Mapping[str, Any]) -> tuple[str, str, str]:
    """The ``hash``, ``mac`` and text (canonical JSON, no newline) of a new line.

    Args:
        key: the ledger's key.
        prev_mac: the previous line's MAC (:data:`GENESIS` for the header).
        body: the line without ``hash`` and ``mac``.

    Returns:
        ``(hash, mac, text)``.
    """
    line_hash = digest(body)
    mac = line_mac(key=key, prev_mac=prev_mac, body=body)
    return line_hash, mac, canonical({**body, "hash": line_hash, "mac": mac})


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
            canonical(dict(self.params))
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
# Parsing one line
# --------------------------------------------------------------------------------------------------


def check_line_mac(*, key: bytes, obj: Mapping[str, Any], prev_mac: str, line_number: int) -> str:
    """Check the ``mac`` of one parsed line against the chain.

    Args:
        key: the ledger's key.
        obj: the parsed line (with ``hash`` and ``mac``).
        prev_mac: the previous line's MAC (:data:`GENESIS` for the header).
        line_number: 1-based line, for the error.

    Returns:
        The line's MAC (the next line's ``prev_mac``).

    Raises:
        LedgerAuthenticationError: the MAC is missing or does not match.
    """
    mac = obj.get("mac")
    body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
    if not isinstance(mac, str) or not hmac.compare_digest(
        mac, line_mac(key=key, prev_mac=prev_mac, body=body)
    ):
        raise LedgerAuthenticationError(
            "MAC mismatch: the line was written or rewritten without the ledger's key",
            line_number=line_number,
        )
    return mac


def load_line(*, raw_line: bytes, line_number: int) -> dict[str, Any]:
    """Parse one raw line and check its ``hash``.

    Args:
        raw_line: the line's bytes, without the newline.
        line_number: 1-based line, for the error.

    Returns:
        The parsed JSON object.

    Raises:
        LedgerCorruptedError: not JSON, not an object with a hash, not canonical, or edited.
    """
    try:
        obj = json.loads(raw_line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerCorruptedError(f"not valid JSON: {exc}", line_number=line_number) from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("hash"), str):
        raise LedgerCorruptedError("not a ledger object with a hash", line_number=line_number)
    body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
    try:
        expected = digest(body)
    except (TypeError, ValueError) as exc:
        raise LedgerCorruptedError(f"not canonical JSON: {exc}", line_number=line_number) from exc
    if obj["hash"] != expected:
        raise LedgerCorruptedError("hash mismatch (line edited)", line_number=line_number)
    return obj


def parse_header(*, obj: Mapping[str, Any]) -> LedgerHeader:
    """The header of a ledger from its parsed first line.

    Args:
        obj: the line as returned by :func:`load_line`.

    Returns:
        The header.

    Raises:
        LedgerCorruptedError: not a privacy-ledger header, or a bad budget, accountant or round order.
    """
    if obj.get("kind") != "header" or obj.get("format") != LEDGER_FORMAT:
        raise LedgerCorruptedError("first line is not a privacy-ledger header", line_number=1)
    version = int(obj["version"])
    try:
        budget = PrivacyBudget.from_dict(data=obj.get("budget"))
        accountant = obj.get("accountant")
        if accountant not in GAUSSIAN_ACCOUNTANTS:
            raise InvalidPrivacyConfigError(f"unknown accountant {accountant!r}")
        created = check_finite_nonneg("created_unix", obj.get("created_unix", -1.0))
        order = obj.get("round_order", "consecutive")
        if order not in ROUND_ORDERS:
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


def parse_entry(
    *, obj: Mapping[str, Any], line_number: int, prev_hash: str, version: int, seq: int
) -> LedgerEntry:
    """One entry of a ledger from its parsed line (its fields, hash chain and sequence number).

    Args:
        obj: the line as returned by :func:`load_line`.
        line_number: 1-based line, for errors.
        prev_hash: the previous line's hash.
        version: the ledger's format version (1 or 2).
        seq: the sequence number this line must carry (version 2).

    Returns:
        The entry (not yet checked against the entries before it: see :mod:`privacy.ledger.state`).

    Raises:
        LedgerCorruptedError: wrong kind or fields, broken chain, wrong sequence number, bad records.
    """
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
        raise LedgerCorruptedError(f"sequence number {obj['seq']!r} is not {seq}", line_number=line_number)
    try:
        if not isinstance(obj["sites"], dict):
            raise InvalidPrivacyConfigError("sites must be an object")
        sites = {
            str(name): MechanismRecord.from_dict(data=rec, where=f"site {name!r}")
            for name, rec in obj["sites"].items()
        }
        glob = (
            None if obj["global"] is None else MechanismRecord.from_dict(data=obj["global"], where="global")
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
