"""The last lines of ``make demo``: what the two stages reached, what they guarantee, what the
attack and the audit found, and where the reports are.

Reads only what the demo wrote (each run's ``report.json``, as ``secfed report`` writes it), so
the figures are the reports' own::

    python examples/demo_summary.py runs/demo-20250101-120000 runs/demo-20250101-120000-dp

Exit status 0; 2 when a run directory holds no ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _pct(value: Any, ci: Any = None) -> str:
    if not isinstance(value, int | float):
        return "not measured"
    text = f"{100 * value:.1f}"
    return f"{text} ± {100 * ci:.1f} %" if isinstance(ci, int | float) else f"{text} %"


def accuracy_line(*, label: str, report: dict[str, Any]) -> str:
    """One stage's accuracy against its untrained model (and the plain sentence when not beaten).

    Args:
        label: The stage's name.
        report: Its ``report.json``.

    Returns:
        The line.
    """
    u = report["utility"]
    line = f"{label:<24}{_pct(u.get('test_accuracy'), u.get('ci95'))}"
    if u.get("untrained_accuracy") is None:
        return line + " (untrained model not scored)"
    line += f" vs untrained model {_pct(u['untrained_accuracy'], u.get('untrained_ci95'))}"
    if u.get("beat_untrained") is False:
        return line + ": training did not beat the untrained model"
    return line + f" ({100 * (u['test_accuracy'] - u['untrained_accuracy']):+.1f} points)"


def privacy_line(*, report: dict[str, Any]) -> str:
    """ε with δ, the privacy unit and the accountant, or that none is claimed.

    Args:
        report: A run's ``report.json``.

    Returns:
        The line.
    """
    p = report["privacy"]
    if not p.get("applied"):
        return "privacy: none claimed (no DP)"
    return (
        f"privacy: ε = {p['epsilon']:.2f} at δ = {p['delta']:g} per {p.get('unit') or 'unit'} "
        f"({p.get('mode')}-level DP, {p.get('accountant')} accountant)"
    )


def attack_lines(*, report: dict[str, Any]) -> list[str]:
    """The membership-inference figures and the white-box audit with its power.

    Args:
        report: A run's ``report.json``.

    Returns:
        The lines (one per result found).
    """
    out: list[str] = []
    mia = report["attacks"].get("mia") or {}
    rows = [r for r in mia.get("rows", []) if isinstance(r.get("auc"), int | float)]
    # record-level attacks (the privacy unit); the client-level ones have a handful of members
    rows = [r for r in rows if str(r["attack"]).startswith("record")] or rows
    if rows:
        best = max(rows, key=lambda r: r["auc"])
        tpr = best.get("tpr_at_0.1%")
        out.append(
            f"membership inference, strongest ({best['attack']}): AUC {best['auc']:.3f}"
            + (f", TPR {100 * tpr:.2f} % at 0.1 % FPR" if isinstance(tpr, int | float) else "")
            + f" ({best.get('members')} members / {best.get('non_members')} non-members; AUC 0.5 = guessing)"
        )
    for label, text in report.get("verdict", {}).get("rows", []):
        if label == "Audit" and not text.startswith("not run"):
            out.append(f"audit: {text}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plain_run", type=Path, help="the non-private run")
    parser.add_argument("dp_run", type=Path, help="the DP + SecAgg+ run (attacked and audited)")
    args = parser.parse_args(argv)
    reports = {}
    for name in ("plain_run", "dp_run"):
        path = getattr(args, name) / "report.json"
        try:
            reports[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{path}: no readable report ({exc})", file=sys.stderr)
            return 2
    plain, dp = reports["plain_run"], reports["dp_run"]
    print()
    print(
        "== secfed demo: 5 class-disjoint sites, each in its own process, embedded Omniglot, 5-way 1-shot =="
    )
    print(accuracy_line(label="federated, no DP:", report=plain))
    print(accuracy_line(label="SecAgg+ and DP:", report=dp))
    print(privacy_line(report=dp))
    if dp["utility"].get("beat_untrained") is False:
        print(
            "  (why this epsilon: 8 is the usual upper end for DP-SGD; at it, 2 rounds from scratch leave a "
            "Conv-4 ProtoNet\n   on small sites at its untrained model: examples/omniglot_demo_dp.toml, "
            "docs/private_training.md)"
        )
    for line in attack_lines(report=dp):
        print(line)
    print(f"reports: {args.plain_run / 'report.html'}")
    print(f"         {args.dp_run / 'report.html'}  (the attacked and audited run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
