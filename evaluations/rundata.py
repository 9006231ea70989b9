"""Read a run directory (as written by :class:`secfed.experiment.Experiment`) for reporting.

Every piece is optional: a run may lack its privacy ledger (no DP, or DP not implemented yet), its
attack results, or even ``summary.json`` (a run still in progress). :func:`load_run` never writes
to the run directory; the privacy ledger is verified on a private copy, because opening a ledger
may repair a torn last line in place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

from evaluations.errors import ReportInputError
from evaluations.jsonio import as_float, read_json, read_jsonl

__all__ = ["LEDGER_NAME", "LedgerRound", "LedgerView", "RunData", "is_run_dir", "load_run", "read_ledger"]

#: The privacy ledger's file name inside a run directory (see :mod:`privacy.ledger`).
LEDGER_NAME = "privacy_ledger.jsonl"
_RUN_MARKERS = ("config.toml", "metrics.jsonl", "summary.json")


@dataclass(frozen=True)
class LedgerRound:
    """One round of the ledger as read for display.

    Attributes:
        round: Round number.
        sites: Cumulative ε per site after the round.
        global_epsilon: Cumulative client-level ε, or ``None``.
        records: The raw per-site record dicts (mechanism, σ, q, steps, unit, adjacency).
        global_record: The raw global record dict, or ``None``.
    """

    round: int
    sites: dict[str, float]
    global_epsilon: float | None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    global_record: dict[str, Any] | None = None


@dataclass(frozen=True)
class LedgerView:
    """What the report needs from a privacy ledger.

    Attributes:
        path: The ledger file, or ``None`` when the run has none.
        verified: ``True`` only when every MAC was checked with the ledger's key and every entry
            validated; ``False`` otherwise (failed, or cannot be verified); ``None`` when there is no
            ledger.
        problem: Why verification failed or could not be done (``None`` when verified).
        integrity: ``"verified"``, ``"failed"`` (forged, edited, truncated or malformed) or
            ``"unverifiable"`` (the key is missing or the ledger is an unkeyed version 1 file);
            ``None`` when there is no ledger.
        delta: δ of the ledger header.
        accountant: Accountant named in the header.
        budget: The header's budget dict.
        rounds: The round entries, oldest first.
    """

    path: Path | None = None
    verified: bool | None = None
    problem: str | None = None
    integrity: str | None = None
    delta: float | None = None
    accountant: str | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    rounds: tuple[LedgerRound, ...] = ()

    @property
    def present(self) -> bool:
        """Whether the run has a ledger file."""
        return self.path is not None


@dataclass(frozen=True)
class RunData:
    """Everything read from one run directory.

    Attributes:
        path: The run directory.
        config: The resolved configuration (``{section: {key: value}}``); empty if absent.
        config_problem: Why ``config.toml`` could not be read, or ``None``.
        metrics: One dict per round from ``metrics.jsonl``.
        summary: ``summary.json`` or ``None`` (run unfinished).
        sites: ``sites.json`` keyed by site id, or ``None``.
        ledger: The privacy ledger.
    """

    path: Path
    config: dict[str, dict[str, Any]]
    config_problem: str | None
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    sites: dict[str, dict[str, Any]] | None
    ledger: LedgerView

    def setting(self, *, key: str, default: Any = None) -> Any:
        """One configuration value by its dotted key (``"privacy.mode"``).

        Args:
            key: ``section.key``.
            default: Returned when the configuration lacks the value.

        Returns:
            The value from ``config.toml``, or ``default``.
        """
        section, _, name = key.partition(".")
        sec = self.config.get(section)
        return sec.get(name, default) if isinstance(sec, dict) else default

    @property
    def attacks_dir(self) -> Path:
        """Where attack results are written (``RUN_DIR/attacks``)."""
        return self.path / "attacks"


def is_run_dir(*, path: Path) -> bool:
    """Whether ``path`` looks like a run directory (holds config, metrics or summary)."""
    return path.is_dir() and any((path / name).is_file() for name in _RUN_MARKERS)


def _raw_ledger(path: Path) -> tuple[dict[str, Any], list[LedgerRound]]:
    """The counted entries as written (unverified): version 1 ``round`` lines; version 2 ``commit``
    lines and every ``begin`` never committed (it counts as released)."""
    rows = read_jsonl(path=path)
    if not rows or not isinstance(rows[0], dict) or rows[0].get("kind") != "header":
        raise ReportInputError(f"{path}: the first line is not a privacy-ledger header")
    rounds: list[LedgerRound] = []
    pending: LedgerRound | None = None
    for i, row in enumerate(rows[1:], start=2):
        kind = row.get("kind") if isinstance(row, dict) else None
        if kind not in ("round", "begin", "commit", "resume"):
            raise ReportInputError(f"{path}: line {i} is not a ledger entry")
        if kind == "resume":
            continue
        if pending is not None:  # replaced by its commit, or counted as released
            if kind != "commit":
                rounds.append(pending)
            pending = None
        raw_sites = row.get("sites")
        sites_raw: dict[str, Any] = raw_sites if isinstance(raw_sites, dict) else {}
        records = {str(k): v for k, v in sites_raw.items() if isinstance(v, dict)}
        sites = {k: eps for k, v in records.items() if (eps := as_float(value=v.get("epsilon"))) is not None}
        raw_glob = row.get("global")
        glob: dict[str, Any] | None = raw_glob if isinstance(raw_glob, dict) else None
        entry = LedgerRound(
            round=int(row.get("round", i - 1)),
            sites=sites,
            global_epsilon=as_float(value=glob.get("epsilon")) if glob else None,
            records=records,
            global_record=glob,
        )
        if kind == "begin":
            pending = entry
        else:
            rounds.append(entry)
    if pending is not None:
        rounds.append(pending)
    return rows[0], rounds


def _verify_ledger(path: Path) -> tuple[str, str | None]:
    """Verify the ledger read-only (every MAC with its key, the head kept with the key, the hash
    chain and the entries' structure): ``(integrity, problem)``."""
    from privacy.errors import PrivacyError
    from privacy.ledger import INTEGRITY_VERIFIED, PrivacyLedger

    try:
        ledger = PrivacyLedger.read(path=path)
    except PrivacyError as exc:
        return "failed", f"{type(exc).__name__}: {exc}"
    if ledger.integrity != INTEGRITY_VERIFIED:
        return "unverifiable", ledger.integrity
    return "verified", None


def read_ledger(*, run_dir: Path, name: str = LEDGER_NAME) -> LedgerView:
    """Read and verify the privacy ledger of a run (never modifying it).

    Args:
        run_dir: The run directory.
        name: The ledger's file name inside ``run_dir``.

    Returns:
        The ledger view; ``LedgerView()`` (not present) when the run has no ledger.
    """
    path = run_dir / Path(name).name
    if not path.is_file():
        return LedgerView()
    if path.stat().st_size == 0:
        return LedgerView(path=path, verified=False, problem="the ledger file is empty", integrity="failed")
    try:
        header, rounds = _raw_ledger(path)
    except ReportInputError as exc:
        return LedgerView(path=path, verified=False, problem=str(exc), integrity="failed")
    raw_budget = header.get("budget")
    budget: dict[str, Any] = raw_budget if isinstance(raw_budget, dict) else {}
    accountant = str(header.get("accountant", "rdp"))
    integrity, problem = _verify_ledger(path)
    return LedgerView(
        path=path,
        verified=integrity == "verified",
        problem=problem,
        integrity=integrity,
        delta=as_float(value=budget.get("delta")),
        accountant=accountant,
        budget=dict(budget),
        rounds=tuple(rounds),
    )


def load_run(*, path: Path) -> RunData:
    """Read a run directory.

    Args:
        path: The run directory.

    Returns:
        The run's data (missing pieces are empty or ``None``).

    Raises:
        ReportInputError: If ``path`` is not a run directory, or ``summary.json``/``sites.json``
            is malformed.
    """
    path = Path(path)
    if not is_run_dir(path=path):
        raise ReportInputError(f"{path} is not a run directory: it holds none of {', '.join(_RUN_MARKERS)}")
    config: dict[str, dict[str, Any]] = {}
    problem: str | None = None
    cfg_path = path / "config.toml"
    if cfg_path.is_file():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
            config = {k: dict(v) for k, v in raw.items() if isinstance(v, dict)}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            problem = f"config.toml cannot be read: {exc}"
    else:
        problem = "config.toml is missing"
    metrics = (
        [m for m in read_jsonl(path=path / "metrics.jsonl") if isinstance(m, dict)]
        if (path / "metrics.jsonl").is_file()
        else []
    )
    summary = None
    if (path / "summary.json").is_file():
        summary = read_json(path=path / "summary.json")
        if not isinstance(summary, dict):
            raise ReportInputError(f"{path / 'summary.json'}: expected a JSON object")
    sites = None
    if (path / "sites.json").is_file():
        raw_sites = read_json(path=path / "sites.json")
        if not isinstance(raw_sites, dict):
            raise ReportInputError(f"{path / 'sites.json'}: expected a JSON object of sites")
        sites = {str(k): v for k, v in raw_sites.items() if isinstance(v, dict)}
    return RunData(
        path=path,
        config=config,
        config_problem=problem,
        metrics=metrics,
        summary=summary,
        sites=sites,
        ledger=read_ledger(run_dir=path, name=str((summary or {}).get("privacy_ledger") or LEDGER_NAME)),
    )
