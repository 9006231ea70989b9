"""The grid of a privacy–utility sweep: ``--epsilons`` parsed, and every point's name and configuration."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluations.errors import SweepError
from secfed.config import CHOICES, ExperimentConfig, load_config
from secfed.errors import SecfedError

__all__ = ["SweepPoint", "parse_epsilons", "plan_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    """One grid point.

    Attributes:
        name: Folder name under ``SWEEP_DIR/runs/`` (e.g. ``eps3-protonet-secagg``).
        target_epsilon: The ε the noise is calibrated for (``inf`` = no differential privacy).
        learner: Learner override, or ``None`` to keep the configuration's.
        aggregation: Aggregation override, or ``None`` to keep the configuration's.
        overrides: Every ``section.key=value`` override of this point, in order.
        config: The validated configuration of the point.
    """

    name: str
    target_epsilon: float
    learner: str | None
    aggregation: str | None
    overrides: tuple[str, ...]
    config: ExperimentConfig = field(repr=False, compare=False)


def parse_epsilons(*, text: str) -> list[float]:
    """Parse ``"1,3,8,inf"`` into floats.

    Args:
        text: Comma-separated numbers; ``inf`` (or ``none``) means no differential privacy.

    Returns:
        The values.

    Raises:
        SweepError: On an empty list or a value that is not a number.
    """
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item.lower() in ("inf", "infinity", "none", "∞"):
            out.append(math.inf)
            continue
        try:
            out.append(float(item))
        except ValueError as exc:
            raise SweepError(f"--epsilons: {item!r} is not a number (use e.g. 1,3,8,inf)") from exc
    if not out:
        raise SweepError("--epsilons: give at least one value, e.g. 1,3,8,inf")
    return out


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", value.replace("+", "plus")).strip("-")


def _eps_name(eps: float) -> str:
    return "epsinf" if math.isinf(eps) else f"eps{eps:g}"


def _check_choice(kind: str, values: Sequence[str] | None, key: str) -> list[str | None]:
    if values is None:
        return [None]
    vals = list(values)
    if not vals:
        raise SweepError(f"{kind}: give at least one value or None to keep the configuration's")
    allowed = CHOICES[key]
    for v in vals:
        if v not in allowed:
            raise SweepError(f"{kind}: {v!r} is not allowed; choose from {', '.join(allowed)}")
    if len(set(vals)) != len(vals):
        raise SweepError(f"{kind}: duplicate values in {vals}")
    return list(vals)


def plan_sweep(
    *,
    config_path: str | Path,
    epsilons: Sequence[float],
    learners: Sequence[str] | None,
    aggregations: Sequence[str] | None,
    overrides: Sequence[str] = (),
) -> tuple[list[SweepPoint], list[str]]:
    """Validate the grid and build every point's configuration (no training).

    Args:
        config_path: The base TOML configuration.
        epsilons: Target ε values (> 0; ``inf`` = no DP); distinct.
        learners: Learners to sweep, or ``None`` for the configuration's.
        aggregations: Aggregations (``plain``, ``secagg``, ``secagg+``), or ``None`` for the configuration's.
        overrides: Extra ``section.key=value`` overrides applied to every point (before the grid's).

    Returns:
        ``(points, notes)``; notes explain adjustments (e.g. BatchNorm replaced by GroupNorm).

    Raises:
        SweepError: On an invalid grid value or a point whose configuration is invalid.
    """
    eps_list = list(epsilons)
    if not eps_list:
        raise SweepError("epsilons: give at least one target ε (inf = no differential privacy)")
    for e in eps_list:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or math.isnan(e) or e <= 0:
            raise SweepError(f"epsilons: {e!r} is invalid; each target ε must be > 0 (or inf for no DP)")
    if len(set(eps_list)) != len(eps_list):
        raise SweepError(f"epsilons: duplicate values in {eps_list}")
    learner_list = _check_choice("learners", learners, "learner.name")
    agg_list = _check_choice("aggregations", aggregations, "federation.aggregation")
    path = Path(config_path)
    try:
        base = load_config(path, overrides=list(overrides))
    except SecfedError as exc:
        raise SweepError(f"base configuration {path}: {exc}") from exc
    notes: list[str] = []
    extra: list[str] = []
    if any(math.isfinite(e) for e in eps_list) and base.model.norm == "batch":
        extra.append("model.norm=group")
        notes.append(
            "model.norm was changed from 'batch' to 'group' at every point: BatchNorm couples records and "
            "is refused under differential privacy, and all points must train the same model."
        )
    dp_mode = base.privacy.mode if base.privacy.mode != "none" else "record"
    points: list[SweepPoint] = []
    for eps in eps_list:
        for learner in learner_list:
            for agg in agg_list:
                grid = (
                    ["privacy.mode=none", "privacy.target_epsilon=0.0"]
                    if math.isinf(eps)
                    else [f'privacy.mode="{dp_mode}"', f"privacy.target_epsilon={float(eps)!r}"]
                )
                if learner is not None:
                    grid.append(f'learner.name="{learner}"')
                if agg is not None:
                    grid.append(f'federation.aggregation="{agg}"')
                name = "-".join([_eps_name(eps)] + [_slug(v) for v in (learner, agg) if v is not None])
                ovr = (*overrides, *extra, *grid)
                try:
                    cfg = load_config(path, overrides=list(ovr))
                    if math.isfinite(eps):
                        cfg = _calibrate(cfg)
                except SecfedError as exc:
                    raise SweepError(f"grid point {name}: invalid configuration: {exc}") from exc
                points.append(
                    SweepPoint(
                        name=name,
                        target_epsilon=float(eps),
                        learner=learner,
                        aggregation=agg,
                        overrides=tuple(ovr),
                        config=cfg,
                    )
                )
    return points, notes


def _calibrate(config: ExperimentConfig) -> ExperimentConfig:
    """The configuration with its noise multiplier calibrated for ``privacy.target_epsilon``.

    Uses :func:`secfed.dp.calibrated_config` (deterministic, so a re-run sweep reproduces the same
    configuration).
    """
    from secfed.dp import calibrated_config

    return calibrated_config(config=config)
