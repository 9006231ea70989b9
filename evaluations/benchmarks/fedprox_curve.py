"""Draw FedProx's accuracy and ROC AUC over μ from finished run directories (docs/learners.md).

Each run is one ``secfed run`` of ``examples/pneumonia_fedavg_client_as_task.toml`` with
``federation.proximal_mu = MU`` and ``experiment.seed = SEED`` (the command is in docs/learners.md);
this script reads only their ``summary.json`` (``val_supervised_accuracy``, ``val_auc``,
``test_supervised_accuracy``, ``test_auc``) and writes one PNG: validation and test, one line per
seed, accuracy on the left and ROC AUC on the right (Li et al., "Federated Optimization in
Heterogeneous Networks", MLSys 2020, for the proximal term).

Usage::

    python -m evaluations.benchmarks.fedprox_curve --out docs/images/fedprox-mu-curve.png \\
        0:0:runs/fedprox-mu0-s0 0.1:0:runs/fedprox-mu0.1-s0 0:1:runs/fedprox-mu0-s1 ...
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluations.errors import EvaluationError

__all__ = ["FedProxPoint", "read_point", "draw_curve", "main"]

_KEYS = ("val_supervised_accuracy", "val_auc", "test_supervised_accuracy", "test_auc")


@dataclass(frozen=True)
class FedProxPoint:
    """One finished run: its μ, its seed and the four figures the plot shows."""

    mu: float
    seed: int
    val_accuracy: float
    val_auc: float
    test_accuracy: float
    test_auc: float


def read_point(*, spec: str) -> FedProxPoint:
    """Parse ``MU:SEED:RUN_DIR`` and read the run's ``summary.json``.

    Args:
        spec: ``MU:SEED:RUN_DIR`` (μ a number >= 0, the seed an integer).

    Returns:
        The point.

    Raises:
        EvaluationError: If the spec is malformed, the summary is missing or unreadable, or a
            figure is absent or not a finite number (the message names the run and the key).
    """
    parts = spec.split(":", 2)
    if len(parts) != 3:
        raise EvaluationError(f"{spec!r}: expected MU:SEED:RUN_DIR")
    try:
        mu, seed = float(parts[0]), int(parts[1])
    except ValueError as exc:
        raise EvaluationError(f"{spec!r}: MU must be a number and SEED an integer") from exc
    if not (math.isfinite(mu) and mu >= 0):
        raise EvaluationError(f"{spec!r}: MU must be finite and >= 0")
    path = Path(parts[2]) / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: cannot read a finished run's summary ({exc})") from exc
    values = []
    for key in _KEYS:
        value = summary.get(key) if isinstance(summary, dict) else None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EvaluationError(f"{path}: {key} is missing or not a number (a supervised run?)")
        values.append(float(value))
    return FedProxPoint(mu, seed, *values)


def draw_curve(*, points: Sequence[FedProxPoint], title: str) -> bytes:
    """The two-panel figure as PNG bytes.

    Args:
        points: The runs (any order; one line per seed and split).
        title: The figure's title.

    Returns:
        PNG bytes.

    Raises:
        EvaluationError: If ``points`` is empty or two runs share a (μ, seed).
    """
    if not points:
        raise EvaluationError("no runs to draw")
    seen = {(p.mu, p.seed) for p in points}
    if len(seen) != len(points):
        raise EvaluationError("two runs share the same (mu, seed)")
    fig = Figure(figsize=(8.0, 3.2))
    FigureCanvasAgg(fig)
    mus = sorted({p.mu for p in points})
    seeds = sorted({p.seed for p in points})
    panels = (
        ("accuracy (%)", "val_accuracy", "test_accuracy", 100.0),
        ("ROC AUC", "val_auc", "test_auc", 1.0),
    )
    for i, (label, val_key, test_key, scale) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, split, color in ((val_key, "validation", "tab:blue"), (test_key, "test", "tab:orange")):
            for j, seed in enumerate(seeds):
                run = sorted((p for p in points if p.seed == seed), key=lambda p: p.mu)
                style = ("o-", "s--", "^:", "d-.")[j % 4]
                ax.plot(
                    [p.mu for p in run],
                    [scale * getattr(p, key) for p in run],
                    style,
                    color=color,
                    mfc=color if j == 0 else "none",
                    label=f"{split}, seed {seed}",
                )
        ax.set_xscale("symlog", linthresh=min([m for m in mus if m > 0], default=0.01))
        ax.set_xticks(mus)
        ax.set_xticklabels([f"{m:g}" for m in mus])
        ax.set_xlabel("FedProx μ (0 = FedAvg)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (exit 0; 2 on bad input, with the reason on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="MU:SEED:RUN_DIR, one per finished run")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="PneumoniaMNIST, 6 Dirichlet sites, α = 0.1")
    args = parser.parse_args(argv)
    try:
        png = draw_curve(points=[read_point(spec=s) for s in args.runs], title=args.title)
    except EvaluationError as exc:
        print(f"fedprox_curve: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
