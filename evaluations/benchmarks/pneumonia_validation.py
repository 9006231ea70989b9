"""Score DP plans for PneumoniaMNIST on the official validation split, several seeds per plan.

For choosing a per-ε plan without looking at the test split (issue 17). Every (setting, seed) is
one ``secfed run`` of the configuration with the setting's ``--set`` overrides and
``experiment.seed = seed`` (the run's partition and initial model; the DP noise and Poisson
sampling draw from ``os.urandom`` in every run, so two runs of one seed differ too). The run's
own few-shot evaluation is cut to 10 tasks and the untrained baseline is skipped (neither enters
the validation AUC). Only the validation keys of each run's ``summary.json`` are read and printed
(``val_auc`` with its DeLong interval, sensitivity, specificity) plus ε and the noise multiplier;
the test keys stay in the run directories, unread.

Rows go to ``OUT/rows.jsonl`` (one JSON object per run); a (setting, seed) whose run directory
already holds a ``summary.json`` is read, not re-run, so an interrupted grid resumes. The last
lines printed are, per setting, the mean, sample standard deviation, minimum and maximum of the
validation AUC over its seeds.

Usage::

    OMP_NUM_THREADS=1 python -m evaluations.benchmarks.pneumonia_validation examples/pneumonia_dp.toml \\
        --out /tmp/pb/grid --grid eps1 --seeds 0,1,2 --jobs 2
    # one ad-hoc setting:
    python -m evaluations.benchmarks.pneumonia_validation examples/pneumonia_dp.toml --out /tmp/x \\
        --setting 'q05=privacy.sample_rate=0.5,privacy.expected_batch=325,experiment.rounds=100'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from secfed.errors import ConfigError

__all__ = ["GRIDS", "VAL_KEYS", "parse_setting", "validate_setting", "summarise", "main"]

#: Keys of ``summary.json`` a row carries: validation only, never the test split's.
VAL_KEYS = (
    "val_auc",
    "val_auc_ci95",
    "val_sensitivity",
    "val_specificity",
    "epsilon",
    "noise_multiplier",
    "max_grad_norm",
)

#: Overrides that only cut the run's cost (the validation AUC does not depend on them).
_CHEAP = ("experiment.final_eval_episodes=10", "experiment.untrained_baseline=false")


def _plan(
    q: float,
    rounds: int,
    lr: float,
    ema: float,
    clip: float = 1.0,
    eps: float = 1.0,
    scatter_l: int | None = None,
) -> list[str]:
    """Overrides of one plan; the public normaliser is q x 650 (a site's ~650 records)."""
    extra = [] if scatter_l is None else [f"model.scatter_l={scatter_l}"]
    return [
        f"privacy.target_epsilon={eps}",
        f"privacy.sample_rate={q}",
        f"privacy.expected_batch={round(q * 650)}",
        f"experiment.rounds={rounds}",
        f"learner.local_lr={lr}",
        f"federation.ema={ema}",
        f"privacy.max_grad_norm={clip}",
        *extra,
    ]


#: Named grids: setting name -> overrides on top of ``examples/pneumonia_dp.toml``.
#: ``eps1``: ε = 1, each site its own full noise; fewer, larger steps (q up to 0.5, rounds scaled
#: so that q x rounds, the epochs of per-record gradients, stays near 50), learning rate, clip norm,
#: server EMA.
GRIDS: dict[str, dict[str, list[str]]] = {
    "eps1": {
        "q01_T500_lr1_ema09": _plan(0.1, 500, 1.0, 0.9),  # the ε = 8 file's plan
        "q01_T500_lr1_ema099": _plan(0.1, 500, 1.0, 0.99),
        "q02_T250_lr1_ema09": _plan(0.2, 250, 1.0, 0.9),
        "q02_T250_lr2_ema095": _plan(0.2, 250, 2.0, 0.95),
        "q02_T250_lr1_ema099": _plan(0.2, 250, 1.0, 0.99),
        "q05_T100_lr1_ema09": _plan(0.5, 100, 1.0, 0.9),
        "q05_T100_lr2.5_ema09": _plan(0.5, 100, 2.5, 0.9),
        "q05_T100_lr5_ema09": _plan(0.5, 100, 5.0, 0.9),
        "q05_T100_lr2.5_ema095": _plan(0.5, 100, 2.5, 0.95),
        "q05_T200_lr2.5_ema095": _plan(0.5, 200, 2.5, 0.95),
        "q05_T50_lr5_ema09": _plan(0.5, 50, 5.0, 0.9),
        "q05_T100_C5_lr0.5_ema09": _plan(0.5, 100, 0.5, 0.9, clip=5.0),
    },
    # ε = 1 with fewer ScatterNet orientations L (J = 2): 1 + 2L + 2L^2 channels x 7 x 7 features,
    # 3,969 (L = 8) / 1,225 (L = 4) / 441 (L = 2) / 196 (L = 1); the noise norm on the linear head
    # grows with the square root of its size.
    "eps1_features": {
        "q05_T100_lr1_ema09_L4": _plan(0.5, 100, 1.0, 0.9, scatter_l=4),
        "q05_T100_lr1_ema09_L2": _plan(0.5, 100, 1.0, 0.9, scatter_l=2),
        "q05_T100_lr1_ema09_L1": _plan(0.5, 100, 1.0, 0.9, scatter_l=1),
        "q05_T100_lr0.5_ema09_L4": _plan(0.5, 100, 0.5, 0.9, scatter_l=4),
        "q05_T100_lr2.5_ema09_L2": _plan(0.5, 100, 2.5, 0.9, scatter_l=2),
        "q05_T100_lr1_ema095_L2": _plan(0.5, 100, 1.0, 0.95, scatter_l=2),
        "q02_T250_lr1_ema09_L2": _plan(0.2, 250, 1.0, 0.9, scatter_l=2),
        "q01_T500_lr1_ema09_L2": _plan(0.1, 500, 1.0, 0.9, scatter_l=2),
    },
    # Run after the test runs of the chosen plan (eps1_features' q05_T100_lr1_ema09_L4): direction
    # for later work only, nothing shipped was chosen on them.
    "eps1_followup": {
        "q05_T100_lr1_ema095_L4": _plan(0.5, 100, 1.0, 0.95, scatter_l=4),
        "q02_T250_lr1_ema09_L4": _plan(0.2, 250, 1.0, 0.9, scatter_l=4),
        "q05_T100_lr1_ema09_L6": _plan(0.5, 100, 1.0, 0.9, scatter_l=6),
    },
}


def parse_setting(text: str) -> tuple[str, list[str]]:
    """Parse ``NAME=KEY=VALUE,KEY=VALUE,...`` into a name and its overrides.

    Args:
        text: The setting as given on the command line.

    Returns:
        ``(name, overrides)``.

    Raises:
        ConfigError: If the name or an override is malformed (naming ``--setting``).
    """
    name, sep, rest = text.partition("=")
    overrides = [o for o in rest.split(",") if o]
    if not sep or not name or not overrides or any("=" not in o or "." not in o for o in overrides):
        raise ConfigError(f"--setting must be NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...], got {text!r}")
    return name, overrides


def _secfed_script() -> str:
    """The ``secfed`` command of this interpreter's environment (else the one on ``PATH``)."""
    local = Path(sys.executable).parent / "secfed"
    found = str(local) if local.is_file() else shutil.which("secfed")
    if found is None:
        raise ConfigError(
            "the secfed command is not installed next to this Python or on PATH (pip install -e .)"
        )
    return found


def validate_setting(
    *, config_path: Path, overrides: Sequence[str], seed: int, run_dir: Path
) -> dict[str, Any]:
    """Run one (setting, seed) with ``secfed run`` (or reuse its finished run) and read its validation row.

    Args:
        config_path: The experiment's TOML file.
        overrides: ``section.key=value`` overrides of the setting.
        seed: ``experiment.seed`` of the run.
        run_dir: The run directory (``run.log`` holds the run's output).

    Returns:
        The :data:`VAL_KEYS` of the run's summary, ``seed``, ``overrides``, ``wall_s`` (``None``
        when the run was reused) and ``run_dir``.

    Raises:
        RuntimeError: If the run fails (its log is named).
    """
    summary = run_dir / "summary.json"
    wall: float | None = None
    if not summary.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            _secfed_script(),
            "run",
            str(config_path),
            "--out",
            str(run_dir),
            "--no-progress",
        ]
        for o in (*overrides, *_CHEAP, f"experiment.seed={seed}"):
            cmd += ["--set", o]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.time()
        with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        wall = round(time.time() - t0, 1)
        if rc != 0 or not summary.exists():
            raise RuntimeError(f"run failed (exit {rc}); see {run_dir.parent / f'{run_dir.name}.log'}")
    s = json.loads(summary.read_text())
    row: dict[str, Any] = {k: s.get(k) for k in VAL_KEYS}
    row.update(seed=seed, overrides=list(overrides), wall_s=wall, run_dir=str(run_dir))
    return row


def summarise(*, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting: mean, sample standard deviation, minimum and maximum of ``val_auc`` over seeds.

    Args:
        rows: Rows with ``setting`` and ``val_auc``.

    Returns:
        One dict per setting, in first-seen order.
    """
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["setting"], []).append(float(r["val_auc"]))
    return [
        {
            "setting": name,
            "n": len(v),
            "mean": statistics.fmean(v),
            "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v),
            "max": max(v),
        }
        for name, v in by.items()
    ]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: runs the grid, prints one JSON line per run, then the per-setting summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the experiment's TOML file")
    parser.add_argument("--out", type=Path, required=True, help="directory of the runs and rows.jsonl")
    parser.add_argument("--grid", choices=sorted(GRIDS), help="a named grid of settings")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE,...",
        help="an extra setting (repeatable)",
    )
    parser.add_argument("--only", default="", help="comma-separated setting names to keep")
    parser.add_argument("--seeds", default="0,1,2", help="experiment.seed values (default 0,1,2)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    args = parser.parse_args(argv)

    if not args.config.is_file():
        raise ConfigError(f"config: no such file {args.config}")
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    seeds = _seeds(args.seeds)
    settings: dict[str, list[str]] = dict(GRIDS[args.grid]) if args.grid else {}
    for text in args.setting:
        name, overrides = parse_setting(text)
        settings[name] = overrides
    if args.only:
        keep = [n for n in args.only.split(",") if n]
        unknown = sorted(set(keep) - set(settings))
        if unknown:
            raise ConfigError(f"--only names unknown settings {unknown}")
        settings = {n: settings[n] for n in keep}
    if not settings:
        raise ConfigError("no settings: give --grid or --setting")

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, ov, seed) for name, ov in settings.items() for seed in seeds]

    def one(job: tuple[str, list[str], int]) -> dict[str, Any]:
        name, ov, seed = job
        row = validate_setting(
            config_path=args.config.resolve(), overrides=ov, seed=seed, run_dir=args.out / f"{name}__s{seed}"
        )
        row["setting"] = name
        line = json.dumps(row)
        print(line, flush=True)
        with open(args.out / "rows.jsonl", "a") as f:
            f.write(line + "\n")
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    for s in summarise(rows=rows):
        print(
            f"{s['setting']:<28} n={s['n']} val AUC mean {s['mean']:.3f} sd {s['sd']:.3f} "
            f"[{s['min']:.3f}, {s['max']:.3f}]",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
