"""Read the attack results of a run directory (``RUN_DIR/attacks/``) for reports and sweeps.

The attacks module writes ``inversion.json`` (+ ``inversion_grid.png``), ``mia.json`` (+
``mia_roc.png``) and ``audit.json``. This module does not depend on their exact layout: it looks
for the objects it knows, wherever they sit in the file:

* membership inference: objects with an ``auc`` (as :class:`attacks.mia_metrics.MIAMetrics`
  writes them: ``auc``, ``balanced_accuracy``, ``tpr_at_fpr``; ROC arrays ``fpr``/``tpr`` when present);
* gradient inversion: objects with a ``psnr`` (as :class:`attacks.inversion.InversionScore`:
  ``psnr``, ``ssim``, ``mse``, ``label_accuracy``, ``flat_baseline_psnr``);
* audits: objects with an ``epsilon`` and a ``method`` or ``confidence`` (as
  :class:`attacks.audit.EpsilonLowerBound`), or a numeric ``epsilon_lower_bound``/``lower_bound``;
  the accountant's ε is taken from an ``accountant_epsilon``/``claimed_epsilon`` key beside it.

Anything absent is reported as "not run"; an unreadable file as "unreadable", never an exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluations.errors import ReportInputError
from evaluations.jsonio import as_float, read_json

__all__ = [
    "ATTACK_FILES",
    "AttackOutcome",
    "MIARow",
    "InversionRow",
    "AuditRow",
    "read_attack",
    "read_attacks",
    "mia_rows",
    "mia_curves",
    "inversion_rows",
    "audit_rows",
    "strongest_mia",
    "strongest_inversion",
    "headline_metrics",
]

#: Attack name -> (result file, image written beside it).
ATTACK_FILES: dict[str, tuple[str, str | None]] = {
    "inversion": ("inversion.json", "inversion_grid.png"),
    "mia": ("mia.json", "mia_roc.png"),
    "audit": ("audit.json", None),
}
_ACCOUNTANT_KEYS = (
    "accountant_epsilon",
    "epsilon_accountant",
    "claimed_epsilon",
    "epsilon_claimed",
    "theoretical_epsilon",
)
_LOWER_KEYS = ("epsilon_lower_bound", "lower_bound", "empirical_epsilon")


@dataclass(frozen=True)
class AttackOutcome:
    """One attack's result file.

    Attributes:
        name: ``inversion``, ``mia`` or ``audit``.
        status: ``"not run"``, ``"ok"`` or ``"unreadable"``.
        problem: Why the file is unreadable (``None`` otherwise).
        data: The parsed JSON (``None`` unless ``status == "ok"``).
        image: The PNG written by the attack, if present.
        path: The result file (whether or not it exists).
    """

    name: str
    status: str
    problem: str | None = None
    data: Any = None
    image: Path | None = None
    path: Path | None = None


@dataclass(frozen=True)
class MIARow:
    """One membership-inference attack's metrics."""

    attack: str
    auc: float | None
    balanced_accuracy: float | None
    tpr_at_fpr: dict[str, float] = field(default_factory=dict)
    num_members: int | None = None
    num_nonmembers: int | None = None


@dataclass(frozen=True)
class InversionRow:
    """One gradient-inversion score."""

    attack: str
    psnr: float | None
    ssim: float | None
    mse: float | None
    label_accuracy: float | None
    flat_baseline_psnr: float | None
    sent_in_run: bool | None = None


@dataclass(frozen=True)
class AuditRow:
    """One empirical ε lower bound, beside the accountant's ε when the audit names it."""

    name: str
    lower_bound: float
    confidence: float | None
    method: str | None
    delta: float | None
    accountant_epsilon: float | None
    note: str | None = None


def read_attack(*, run_dir: Path, name: str) -> AttackOutcome:
    """Read one attack's result file.

    Args:
        run_dir: The run directory.
        name: A key of :data:`ATTACK_FILES`.

    Returns:
        The outcome (``status="not run"`` when the file is absent).

    Raises:
        ReportInputError: If ``name`` is not a known attack.
    """
    if name not in ATTACK_FILES:
        raise ReportInputError(f"unknown attack {name!r}; known: {', '.join(ATTACK_FILES)}")
    json_name, png_name = ATTACK_FILES[name]
    folder = run_dir / "attacks"
    path = folder / json_name
    image = folder / png_name if png_name and (folder / png_name).is_file() else None
    if not path.is_file():
        return AttackOutcome(name=name, status="not run", image=image, path=path)
    try:
        data = read_json(path=path)
    except ReportInputError as exc:
        return AttackOutcome(name=name, status="unreadable", problem=str(exc), image=image, path=path)
    return AttackOutcome(name=name, status="ok", data=data, image=image, path=path)


def read_attacks(*, run_dir: Path) -> dict[str, AttackOutcome]:
    """Read every known attack's result file of a run (see :func:`read_attack`)."""
    return {name: read_attack(run_dir=run_dir, name=name) for name in ATTACK_FILES}


def _walk(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    if isinstance(obj, Mapping):
        yield path, obj
        for k, v in obj.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, (*path, str(i)))


def _label(path: tuple[str, ...], obj: Mapping[str, Any], default: str) -> str:
    for key in ("name", "attack", "method_name"):
        if isinstance(obj.get(key), str) and obj[key]:
            return str(obj[key])
    named = [p for p in path if not p.isdigit() and p not in ("metrics", "results", "attacks", "score")]
    return named[-1] if named else default


def _int(v: Any) -> int | None:
    f = as_float(value=v)
    return int(f) if f is not None and f == f and abs(f) != float("inf") else None


def mia_rows(*, data: Any) -> list[MIARow]:
    """Membership-inference metrics found in ``data`` (objects with an ``auc``)."""
    rows = []
    for path, obj in _walk(data):
        if as_float(value=obj.get("auc")) is None:
            continue
        raw_tpr = obj.get("tpr_at_fpr")
        tpr: Mapping[str, Any] = raw_tpr if isinstance(raw_tpr, Mapping) else {}
        rows.append(
            MIARow(
                attack=_label(path, obj, "mia"),
                auc=as_float(value=obj.get("auc")),
                balanced_accuracy=as_float(value=obj.get("balanced_accuracy")),
                tpr_at_fpr={str(k): f for k, v in tpr.items() if (f := as_float(value=v)) is not None},
                num_members=_int(obj.get("num_members")),
                num_nonmembers=_int(obj.get("num_nonmembers")),
            )
        )
    return rows


def mia_curves(*, data: Any) -> dict[str, tuple[list[float], list[float]]]:
    """ROC curves found in ``data`` (objects with equal-length ``fpr`` and ``tpr`` lists)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for path, obj in _walk(data):
        fpr, tpr = obj.get("fpr"), obj.get("tpr")
        if isinstance(fpr, list) and isinstance(tpr, list) and len(fpr) == len(tpr) and len(fpr) >= 2:
            xs = [as_float(value=v) for v in fpr]
            ys = [as_float(value=v) for v in tpr]
            if all(v is not None for v in xs + ys):
                curves[_label(path, obj, "mia")] = (
                    [float(v) for v in xs if v is not None],
                    [float(v) for v in ys if v is not None],
                )
    return curves


def inversion_rows(*, data: Any) -> list[InversionRow]:
    """Gradient-inversion scores found in ``data`` (objects with a ``psnr``)."""
    rows = []
    scopes: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for path, obj in _walk(data):
        scopes[path] = obj
        if as_float(value=obj.get("psnr")) is None:
            continue
        if path and path[-1].isdigit() and len(path) >= 2 and path[-2] == "per_record":
            continue  # per-record entries of a score already counted
        parent = scopes.get(path[:-1], {}) if path else {}
        sent = obj.get("sent_in_run", parent.get("sent_in_run"))
        rows.append(
            InversionRow(
                attack=_label(path, obj, "inversion"),
                psnr=as_float(value=obj.get("psnr")),
                ssim=as_float(value=obj.get("ssim")),
                mse=as_float(value=obj.get("mse")),
                label_accuracy=as_float(value=obj.get("label_accuracy")),
                flat_baseline_psnr=as_float(value=obj.get("flat_baseline_psnr")),
                sent_in_run=sent if isinstance(sent, bool) else None,
            )
        )
    return rows


def strongest_mia(*, rows: list[MIARow]) -> list[MIARow]:
    """The strongest attack (highest AUC) per level, ``record/...`` or ``client/...`` (unprefixed: one)."""
    best: dict[str, MIARow] = {}
    for r in rows:
        if r.auc is None:
            continue
        level = r.attack.split("/", 1)[0] if "/" in r.attack else ""
        if level not in best or r.auc > (best[level].auc or 0.0):
            best[level] = r
    return list(best.values())


def strongest_inversion(*, rows: list[InversionRow]) -> InversionRow | None:
    """The best reconstruction by PSNR, preferring scenarios whose message the run actually sent."""
    scored = [r for r in rows if r.psnr is not None]
    sent = [r for r in scored if r.sent_in_run is not False]
    pool = sent or scored
    return max(pool, key=lambda r: r.psnr or 0.0) if pool else None


def _accountant_eps(*scopes: Mapping[str, Any]) -> float | None:
    for scope in scopes:
        for key in _ACCOUNTANT_KEYS:
            if (v := as_float(value=scope.get(key))) is not None:
                return v
    return None


def audit_rows(*, data: Any) -> list[AuditRow]:
    """Empirical ε lower bounds found in ``data``, each with the accountant's ε beside it if named."""
    rows: list[AuditRow] = []
    parents: dict[tuple[str, ...], Mapping[str, Any]] = {}
    top = data if isinstance(data, Mapping) else {}
    for path, obj in _walk(data):
        parents[path] = obj
        parent = parents.get(path[:-1], {}) if path else {}
        bound = None
        if "epsilon" in obj and ("method" in obj or "confidence" in obj):
            bound = as_float(value=obj.get("epsilon"))
        else:
            for key in _LOWER_KEYS:
                if (bound := as_float(value=obj.get(key))) is not None:
                    break
        if bound is None:
            continue
        rows.append(
            AuditRow(
                name=_label(path, obj, "audit"),
                lower_bound=bound,
                confidence=as_float(value=obj.get("confidence")),
                method=str(obj["method"]) if isinstance(obj.get("method"), str) else None,
                delta=as_float(value=obj.get("delta")),
                accountant_epsilon=_accountant_eps(obj, parent, top),
                note=str(obj["note"]) if isinstance(obj.get("note"), str) else None,
            )
        )
    return rows


def headline_metrics(*, outcomes: Mapping[str, AttackOutcome]) -> dict[str, float | str | None]:
    """A flat summary of attack outcomes for sweep tables.

    Args:
        outcomes: From :func:`read_attacks`.

    Returns:
        ``mia_auc`` and ``mia_tpr_at_0.1%`` (strongest attack by AUC, record level when present),
        ``inversion_psnr`` and ``inversion_ssim`` (best reconstruction by PSNR among the messages the
        run sent), ``audit_epsilon_lb`` (largest bound; of the one-run audits when there are any, the
        bound proven valid for a single training run, Steinke et al. 2023), and
        ``<name>_status`` for every attack.
    """
    out: dict[str, float | str | None] = {f"{n}_status": o.status for n, o in outcomes.items()}
    mia = outcomes.get("mia")
    if mia is not None and mia.status == "ok":
        levels = {
            r.attack.split("/", 1)[0] if "/" in r.attack else "": r
            for r in strongest_mia(rows=mia_rows(data=mia.data))
        }
        best = levels.get("record") or next(iter(levels.values()), None)
        if best is not None:
            out["mia_auc"] = best.auc
            out["mia_tpr_at_0.1%"] = best.tpr_at_fpr.get("0.001")
    inv = outcomes.get("inversion")
    if inv is not None and inv.status == "ok":
        best_inv = strongest_inversion(rows=inversion_rows(data=inv.data))
        if best_inv is not None:
            out["inversion_psnr"] = best_inv.psnr
            out["inversion_ssim"] = best_inv.ssim
    aud = outcomes.get("audit")
    if aud is not None and aud.status == "ok":
        arows = audit_rows(data=aud.data)
        one_run = [r for r in arows if r.method == "one_run"]
        if arows:
            out["audit_epsilon_lb"] = max(r.lower_bound for r in (one_run or arows))
    return out
