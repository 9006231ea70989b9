"""Privacy–utility sweeps: train one configuration at several ε (and learners / aggregations).

For every grid point the configuration is overridden so that the runtime calibrates the noise
for the target ε (``privacy.target_epsilon=E``; ``privacy.mode`` is ``record`` unless the
configuration already names a DP mode), or trains without differential privacy for ε = ∞
(``privacy.mode=none``). Each point runs through :class:`secfed.experiment.Experiment` into
``SWEEP_DIR/runs/<point>/``; then the configured attacks run on it through
``attacks.runner.run_attack(run_dir=..., attack=...)`` when that entry point is installed (the sweep
says so in its notes when it is not). ``SWEEP_DIR/sweep.json`` (rewritten after every point) and
``SWEEP_DIR/summary.md`` hold accuracy ± 95 % CI, the ε reached and attack metrics per point.

A sweep can be re-run into the same folder to continue it: finished points whose configuration is
unchanged are reused, interrupted points are resumed, and attack results already present are kept.

The grid (its points' names and configurations) is planned by :mod:`evaluations.sweep_grid`, the
attacks' options are parsed and the attacks run by :mod:`evaluations.sweep_attacks`; their names
are importable from here as well.

Usage::

    from evaluations.sweep import run_sweep
    result = run_sweep(config_path="examples/digits_protonet.toml", epsilons=[1, 3, 8, float("inf")],
                       learners=None, aggregations=None, out_dir="runs/sweep")
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.attack_results import headline_metrics, read_attacks
from evaluations.errors import SweepError
from evaluations.facts import SUPERVISED_POINT_KEYS, privacy_facts
from evaluations.jsonio import atomic_write_text, dumps_strict
from evaluations.render_md import sweep_table
from evaluations.rundata import load_run
from evaluations.sweep_attacks import (
    DEFAULT_ATTACKS,
    AttackRunner,
    parse_attack_options,
    run_point_attacks,
    typed_errors,
)
from evaluations.sweep_grid import SweepPoint, parse_epsilons, plan_sweep
from secfed.config import config_hash, config_to_toml, load_config

__all__ = [
    "SWEEP_FORMAT",
    "SweepResult",
    "run_sweep",
    "resolve_attack_runner",
    # re-exported from sweep_grid and sweep_attacks
    "DEFAULT_ATTACKS",
    "SweepPoint",
    "AttackRunner",
    "plan_sweep",
    "parse_epsilons",
    "parse_attack_options",
]

SWEEP_FORMAT = "secfed.sweep"


@dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` wrote.

    Attributes:
        sweep_dir: The sweep directory.
        sweep_json: ``sweep.json``.
        summary_md: ``summary.md`` (the Markdown summary table).
        points: One dict per point, as in ``sweep.json``.
        notes: Notes about the sweep (for example why attacks did not run).
    """

    sweep_dir: Path
    sweep_json: Path
    summary_md: Path
    points: list[dict[str, Any]]
    notes: list[str]


def resolve_attack_runner() -> tuple[AttackRunner | None, str | None, frozenset[str] | None]:
    """The attack entry point, ``attacks.runner.run_attack``, and its registry of attack names.

    Returns:
        ``(runner or None, note when unavailable, the attack names or None)``: the runner and
        :data:`attacks.runner.ATTACKS` (tests replace this function to simulate a missing runner).
    """
    from attacks.runner import ATTACKS, run_attack

    return run_attack, None, frozenset(ATTACKS)


def _run_point(point: SweepPoint, run_dir: Path, progress: bool) -> str:
    from secfed.experiment import Experiment

    toml_text = config_to_toml(point.config)
    if (run_dir / "config.toml").is_file():
        old = (run_dir / "config.toml").read_text(encoding="utf-8")
        if old != toml_text:
            raise SweepError(
                f"{run_dir} holds a run of a different configuration than grid point {point.name}; "
                "choose another --out or remove that folder"
            )
        if (run_dir / "summary.json").is_file():
            return "reused"
        if (run_dir / "metrics.jsonl").is_file():
            Experiment.resume(run_dir, progress=progress)
            return "resumed"
    Experiment(config=point.config).run(out_dir=run_dir, progress=progress)
    return "ran"


def _point_row(point: SweepPoint, sweep_dir: Path, run_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": point.name,
        "target_epsilon": point.target_epsilon,
        "learner": point.learner or point.config.learner.name,
        "aggregation": point.aggregation or point.config.federation.aggregation,
        "privacy_mode": point.config.privacy.mode,
        "overrides": list(point.overrides),
        "config_hash": config_hash(point.config),
        "run_dir": str(run_dir.relative_to(sweep_dir)),
        "status": "pending",
        "problem": None,
    }
    return row


def _fill_results(row: dict[str, Any], run_dir: Path) -> None:
    run = load_run(path=run_dir)
    s = run.summary or {}
    priv = privacy_facts(run=run)
    row.update(
        {
            "test_accuracy": s.get("test_accuracy"),
            "ci95": s.get("test_accuracy_ci95"),
            # the point's starting model on the same test tasks (secfed.experiment.untrained_evaluation)
            "untrained_test_accuracy": s.get("untrained_test_accuracy"),
            "untrained_ci95": s.get("untrained_test_accuracy_ci95"),
            "test_episodes": s.get("test_episodes"),
            "rounds": s.get("rounds"),
            "wall_s": s.get("wall_s"),
            "stopped_early": s.get("stopped_early"),
            "epsilon": priv["epsilon"] if priv["applied"] else math.inf,
            "epsilon_sites": priv["epsilon_sites"],
            "delta": priv["delta"],
            "noise_multiplier": priv["noise_multiplier"],
            "privacy_unit": priv["unit"],
            "code_version": s.get("code_version"),
            # the supervised evaluation of the global model (secfed.supervised_eval), when computed
            **{k: s[k] for k in SUPERVISED_POINT_KEYS if k in s},
        }
    )
    row["attack_metrics"] = headline_metrics(outcomes=read_attacks(run_dir=run_dir))


def _write_outputs(
    sweep_dir: Path, header: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]
) -> tuple[Path, Path]:
    doc = {**header, "notes": notes, "points": rows}
    sweep_json = sweep_dir / "sweep.json"
    atomic_write_text(path=sweep_json, text=dumps_strict(value=doc))
    lines = [f"# Privacy–utility sweep: {header['config_path']}\n"]
    lines += [f"> **Note:** {n}\n" for n in notes]
    lines.append(sweep_table(points=rows))
    summary = sweep_dir / "summary.md"
    atomic_write_text(path=summary, text="\n".join(lines))
    return sweep_json, summary


def run_sweep(
    *,
    config_path: str | Path,
    epsilons: Sequence[float],
    learners: Sequence[str] | None,
    aggregations: Sequence[str] | None,
    out_dir: str | Path,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    overrides: Sequence[str] = (),
    progress: bool = False,
    attack_runner: AttackRunner | None = None,
    echo: Callable[[str], None] | None = None,
    attack_options: Sequence[str] = (),
) -> SweepResult:
    """Run a privacy–utility sweep (see the module docstring).

    Args:
        config_path: The base TOML configuration.
        epsilons: Target ε values (``inf`` = no differential privacy).
        learners: Learners to sweep, or ``None`` to keep the configuration's.
        aggregations: Aggregations to sweep, or ``None`` to keep the configuration's.
        out_dir: The sweep directory (created; may hold an earlier run of the same sweep).
        attacks: Attack names passed to ``attacks.runner.run_attack`` at every point (empty: none).
        overrides: Extra ``section.key=value`` overrides for every point.
        progress: Show each run's progress bar.
        attack_runner: The attack entry point; ``None`` looks up ``attacks.runner.run_attack``.
        echo: Receives one line per point as the sweep goes (e.g. ``print``).
        attack_options: ``NAME=VALUE`` options of every attack (fields of
            :class:`attacks.options.AttackOptions`, e.g. ``"iterations=100"``), validated first.

    Returns:
        The written files and per-point results.

    Raises:
        SweepError: On an invalid grid, attack list or configuration (before any training), or when
            ``out_dir`` holds a run of a different configuration at a point's folder.
    """
    attack_list = list(attacks)
    for a in attack_list:
        if not isinstance(a, str) or not a.strip():
            raise SweepError(f"attacks: {a!r} is not an attack name")
    if len(set(attack_list)) != len(attack_list):
        raise SweepError(f"attacks: duplicate names in {attack_list}")
    parsed_options = parse_attack_options(pairs=list(attack_options)) if attack_list else {}
    points, notes = plan_sweep(
        config_path=config_path,
        epsilons=epsilons,
        learners=learners,
        aggregations=aggregations,
        overrides=overrides,
    )
    unavailable = None
    runner = attack_runner
    if attack_list and runner is None:
        runner, unavailable, known = resolve_attack_runner()
        if known is not None:
            bad = [a for a in attack_list if a not in known]
            if bad:
                raise SweepError(f"attacks: unknown {bad}; attacks.runner offers {sorted(known)}")
        if unavailable:
            notes.append(unavailable)
    sweep_dir = Path(out_dir)
    (sweep_dir / "runs").mkdir(parents=True, exist_ok=True)
    base = load_config(config_path, overrides=list(overrides))
    header = {
        "format": SWEEP_FORMAT,
        "version": 1,
        "config_path": str(Path(config_path).resolve()),
        "base_config_hash": config_hash(base),
        "epsilons": [float(e) for e in epsilons],
        "learners": list(learners) if learners is not None else [base.learner.name],
        "aggregations": list(aggregations) if aggregations is not None else [base.federation.aggregation],
        "attacks": attack_list,
        "attack_options": {k: list(v) if isinstance(v, tuple) else v for k, v in parsed_options.items()},
        "attacks_available": runner is not None,
        "overrides": list(overrides),
        "started_unix": time.time(),
    }
    rows = [_point_row(p, sweep_dir, sweep_dir / "runs" / p.name) for p in points]
    _write_outputs(sweep_dir, header, rows, notes)
    for point, row in zip(points, rows, strict=True):
        run_dir = sweep_dir / "runs" / point.name
        if echo is not None:
            echo(f"sweep: point {point.name} (target ε = {point.target_epsilon:g})")
        start = time.perf_counter()
        try:
            row["status"] = _run_point(point, run_dir, progress)
        except SweepError:
            raise
        except typed_errors(broad=False) as exc:  # the runtime's and privacy's typed errors
            row["status"], row["problem"] = "failed", f"{type(exc).__name__}: {exc}"
        row["seconds"] = time.perf_counter() - start
        if row["status"] != "failed":
            row["attacks"] = run_point_attacks(
                run_dir=run_dir,
                attacks=attack_list,
                runner=runner,
                unavailable=unavailable,
                echo=echo,
                options=parsed_options,
            )
            _fill_results(row, run_dir)
        _write_outputs(sweep_dir, header, rows, notes)
        if echo is not None:
            acc = row.get("test_accuracy")
            echo(
                f"sweep: point {point.name}: {row['status']}"
                + (f", accuracy {100 * acc:.2f} %" if isinstance(acc, float) else "")
                + (
                    f" (untrained {100 * untrained:.2f} %)"
                    if isinstance(untrained := row.get("untrained_test_accuracy"), float)
                    else ""
                )
                + (f", test AUC {row['test_auc']:.3f}" if isinstance(row.get("test_auc"), float) else "")
                + (f", ε = {row['epsilon']:.3g}" if isinstance(row.get("epsilon"), float) else "")
            )
    sweep_json, summary = _write_outputs(sweep_dir, header, rows, notes)
    return SweepResult(
        sweep_dir=sweep_dir, sweep_json=sweep_json, summary_md=summary, points=rows, notes=notes
    )
