"""The ``secfed sweep`` and ``secfed report`` commands (registered by :func:`secfed.cli.build_parser`).

Commands::

    secfed sweep CONFIG.toml --epsilons 1,3,8,inf [--learners protonet,reptile]
                 [--aggregation plain,secagg+] [--attacks inversion,mia,audit | none]
                 [--out SWEEP_DIR] [--set section.key=value ...] [--no-report]
    secfed report RUN_DIR|SWEEP_DIR          # prints the path of report.html

``secfed report`` exits with status 1 (:class:`secfed.errors.IntegrityError`) after writing the
report when a privacy ledger fails its integrity check or cannot be verified.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

__all__ = ["register"]


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _cmd_sweep(args: argparse.Namespace) -> int:
    from evaluations.errors import SweepError
    from evaluations.report import write_report
    from evaluations.sweep import parse_epsilons, run_sweep

    attacks = _split(args.attacks) or []
    if [a.lower() for a in attacks] == ["none"]:
        attacks = []
    learners = _split(args.learners)
    aggregations = _split(args.aggregation)
    if learners == [] or aggregations == []:
        raise SweepError("--learners / --aggregation need at least one comma-separated value")
    out = args.out or str(Path("runs") / f"sweep-{Path(args.config).stem}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    result = run_sweep(
        config_path=args.config,
        epsilons=parse_epsilons(text=args.epsilons),
        learners=learners,
        aggregations=aggregations,
        out_dir=out,
        attacks=attacks,
        overrides=args.set or [],
        progress=not args.no_progress and sys.stderr.isatty(),
        echo=lambda line: print(line, file=sys.stderr, flush=True),
        attack_options=args.attack_option or [],
    )
    print(result.summary_md.read_text(encoding="utf-8"))
    for note in result.notes:
        print(f"note: {note}")
    print(f"sweep directory: {result.sweep_dir}")
    print(f"sweep results: {result.sweep_json}")
    if not args.no_report:
        from secfed.errors import IntegrityError

        paths = write_report(path=result.sweep_dir)
        print(f"report: {paths.html}")
        if paths.integrity_problems:
            raise IntegrityError("the report was written, but: " + "; ".join(paths.integrity_problems))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from evaluations.report import write_report
    from secfed.errors import IntegrityError

    paths = write_report(path=Path(args.path))
    print(paths.html)
    if paths.integrity_problems:
        raise IntegrityError("the report was written, but: " + "; ".join(paths.integrity_problems))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``report`` commands to the ``secfed`` command line.

    Args:
        subparsers: The ``secfed`` parser's sub-command set.
    """
    sweep = subparsers.add_parser(
        "sweep",
        help="privacy-utility sweep over target epsilons (and learners / aggregations)",
        description="Train a configuration at several target epsilons (inf = no differential privacy), "
        "run the attacks on every point, and write SWEEP_DIR/sweep.json, summary.md and a report.",
    )
    sweep.add_argument("config", help="the experiment's TOML file")
    sweep.add_argument(
        "--epsilons", required=True, metavar="E1,E2,...", help="target epsilons, e.g. 1,3,8,inf"
    )
    sweep.add_argument("--learners", metavar="L1,L2", help="learners to sweep (default: the config's)")
    sweep.add_argument(
        "--aggregation",
        metavar="A1,A2",
        help="aggregations to sweep: plain, secagg, secagg+ (default: the config's)",
    )
    sweep.add_argument(
        "--attacks",
        default="inversion,mia,audit",
        metavar="A1,A2|none",
        help="attacks to run on every point (default: inversion,mia,audit; 'none' for none)",
    )
    sweep.add_argument(
        "--out", metavar="SWEEP_DIR", help="sweep directory (default runs/sweep-<config>-<time>)"
    )
    sweep.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value at every point"
    )
    sweep.add_argument(
        "--attack-option",
        action="append",
        metavar="NAME=VALUE",
        help="an attack option for every point, e.g. iterations=100, references=4, levels=record, "
        "canaries=100 (repeatable; see `secfed attack --help` and attacks.options.AttackOptions)",
    )
    sweep.add_argument("--no-progress", action="store_true", help="no per-run progress bars")
    sweep.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    sweep.set_defaults(func=_cmd_sweep)

    report = subparsers.add_parser(
        "report",
        help="write an audit report (HTML, Markdown, JSON) for a run or sweep directory",
        description="Write report.html (self-contained), report.md and report.json into RUN_DIR or "
        "SWEEP_DIR and print the path of report.html.",
    )
    report.add_argument("path", metavar="RUN_DIR|SWEEP_DIR", help="a run directory or a sweep directory")
    report.set_defaults(func=_cmd_report)
