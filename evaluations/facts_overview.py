"""The "What was run" facts of a run report: status, configuration fingerprint, model and sites."""

from __future__ import annotations

from typing import Any

from evaluations.jsonio import as_float
from evaluations.rundata import RunData
from secfed.config import config_from_dict, config_hash
from secfed.errors import SecfedError
from secfed.federation.egress import WITHHELD_NOTE

__all__ = ["model_description", "what_was_run"]


_ARCH_NAMES = {"mlp": "MLP", "conv4": "Conv-4"}
_NORM_NAMES = {"none": "no normalisation", "batch": "BatchNorm", "group": "GroupNorm"}


def model_description(*, run: RunData) -> str | None:
    """The model in words, e.g. "MLP, 1 hidden layer of 512 units, no normalisation" or "Conv-4, 64
    filters per layer, GroupNorm (8 groups), on a fixed ScatterNet front-end (J = 2, L = 8)".

    Args:
        run: The run.

    Returns:
        The description, or ``None`` when the configuration does not name the architecture.
    """
    arch = run.setting(key="model.arch")
    if not arch:
        return None
    hidden, norm = run.setting(key="model.hidden"), run.setting(key="model.norm")
    parts = [_ARCH_NAMES.get(str(arch), str(arch))]
    if arch == "mlp":
        layers = run.setting(key="model.layers", default=1)
        if layers == 0:
            parts.append("no hidden layer (the embedding is the input features)")
        else:
            plural = "s" if layers != 1 else ""
            parts.append(f"{layers} hidden layer{plural} of {hidden} units")
    else:
        parts.append(f"{hidden} filters per layer")
    norm_text = _NORM_NAMES.get(str(norm), f"{norm} normalisation")
    if norm == "group" and run.setting(key="model.groups") is not None:
        norm_text += f" ({run.setting(key='model.groups')} groups)"
    parts.append(norm_text)
    text = ", ".join(parts)
    if run.setting(key="model.frontend") == "scatter":
        text += (
            f", on a fixed ScatterNet front-end (J = {run.setting(key='model.scatter_j')}, "
            f"L = {run.setting(key='model.scatter_l')}; no trainable parameters)"
        )
    return text


def what_was_run(*, run: RunData) -> dict[str, Any]:
    """Section 1 of a run report: the run's status, configuration, model and sites.

    Args:
        run: The run.

    Returns:
        ``run_dir``, ``name``, ``status``, ``config_hash`` (of the resolved configuration when the
        run is unfinished), ``code_version``, the setting (``dataset``, ``learner``, ``model``,
        ``partition``, rounds, ``seed``, ``backend``), ``wall_s``, ``sites`` (one row each, record
        counts withheld where the run withheld them) and ``sites_statement``.
    """
    s = run.summary or {}
    sites = []
    for key, info in sorted((run.sites or {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
        sites.append(
            {
                "site": info.get("site", key),
                "records": info.get("records"),
                "classes": info.get("classes"),
                "withheld": "records" in (info.get("withheld") or []),
            }
        )
    records = [int(r["records"]) for r in sites if isinstance(r.get("records"), int)]
    withheld = any(r["withheld"] for r in sites)
    model = model_description(run=run)
    fingerprint = s.get("config_hash")
    if not fingerprint and run.config:
        try:  # an unfinished run: fingerprint its resolved configuration the way the runtime does
            fingerprint = config_hash(config_from_dict(run.config))
        except SecfedError:
            fingerprint = None
    status = "complete" if run.summary is not None else "unfinished (no summary.json yet)"
    if s.get("stopped_early"):
        status = f"stopped early: {s['stopped_early']}"
    return {
        "run_dir": str(run.path),
        "name": run.setting(key="experiment.name"),
        "status": status,
        "config_hash": fingerprint,
        "code_version": s.get("code_version"),
        "config_problem": run.config_problem,
        "dataset": s.get("dataset") or run.setting(key="data.dataset"),
        "learner": s.get("learner") or run.setting(key="learner.name"),
        "model": model,
        "partition": run.setting(key="partition.scheme"),
        "rounds_completed": s.get("rounds", run.metrics[-1].get("round") if run.metrics else 0),
        "rounds_configured": run.setting(key="experiment.rounds"),
        "seed": run.setting(key="experiment.seed"),
        "backend": s.get("backend") or run.setting(key="experiment.backend"),
        "wall_s": as_float(value=s.get("wall_s")),
        "wall_note": WITHHELD_NOTE if withheld and s.get("wall_s") is None else None,
        "sites": sites,
        "total_records": sum(records) if records else None,
        "sites_statement": (
            f"{len(sites)} sites took part. Their record counts are {WITHHELD_NOTE}: a count differs "
            "by one between neighbouring datasets, so releasing it would void the guarantee. The "
            "classes column is the size of each site's public class list."
            if sites and withheld
            else f"{len(sites)} sites took part, holding {sum(records)} training records in total; "
            "the table lists what each site reported about itself (counts only, no data)."
            if sites and records
            else "No per-site data summary (sites.json) was recorded."
        ),
    }
