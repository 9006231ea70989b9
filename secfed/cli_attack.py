"""``secfed attack``: run a privacy attack against a run directory.

Command::

    secfed attack RUN_DIR --attack inversion|mia|audit|whitebox-audit|blackbox-init-audit
                  [--references N] [--iterations N]
                  [--canaries M] [--rounds R] [--site S] [--seed S] [--json] [--no-progress]

Results are written to ``RUN_DIR/attacks/`` (see :mod:`attacks.runner`); the key metrics and the
written paths are printed. Progress goes to stderr as ``[attack]`` lines (``mia``: each replica
federation as it starts and ends, with an estimate of the time left; ``inversion``: each
scenario; ``whitebox-audit``: each stage), unless ``--no-progress``. A bad run directory or
invalid option exits with status 2 and a message naming the problem; a corrupted checkpoint with
status 1 (:class:`secfed.errors.CheckpointError`, naming the file).

Layering: this module belongs to the command line, the project's top layer, so it imports
``attacks`` (inside the command, as ``attacks/__init__.py`` loads torch and ``secfed --help`` stays
fast); the runtime below it never does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from secfed.cli_types import int_at_least

__all__ = ["register"]

_ATTACKS = ("inversion", "mia", "audit", "whitebox-audit", "blackbox-init-audit")


def _int(minimum: int) -> Callable[[str], int]:
    """The argument type of an integer >= ``minimum`` (:func:`secfed.cli_types.int_at_least`)."""
    return int_at_least(minimum=minimum)


def _fmt(v: Any, pct: bool = False) -> str:
    if not isinstance(v, (int, float)):
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.3f}"


def _inversion_lines(doc: dict[str, Any]) -> list[str]:
    lines = [
        f"gradient inversion of site {doc['site']} ({doc['learner']}, privacy {doc['privacy']['mode']}):"
    ]
    for name, sc in doc["scenarios"].items():
        s = sc["score"]
        lines.append(
            f"  {name:17s} records {sc['records']:3d}  PSNR {_fmt(s['psnr'])} dB (flat image "
            f"{_fmt(s['flat_baseline_psnr'])})  SSIM {_fmt(s['ssim'])}  labels {_fmt(s['label_accuracy'])}"
            f"{'' if sc['sent_in_run'] else '  [not sent in this run]'}"
        )
    for name, why in doc.get("skipped", {}).items():
        lines.append(f"  {name:17s} skipped: {why}")
    return lines


def _mia_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"membership inference, site {doc['site']} ({doc['learner']}, privacy {doc['privacy_mode']}):"]
    for level in ("record_level", "client_level"):
        part = doc.get(level)
        if part is None:
            continue
        if "skipped" in part and "attacks" not in part:
            lines.append(f"  {level.replace('_', ' ')}: skipped ({part['skipped']})")
            continue
        lines.append(f"  {level.replace('_', ' ')} ({part['design']['replicas']} replicas):")
        for name, m in part["attacks"].items():
            tpr = m["tpr_at_fpr"]
            lines.append(
                f"    {name:27s} AUC {_fmt(m['auc'])}  bal.acc {_fmt(m['balanced_accuracy'])}  "
                f"TPR@0.1% {_fmt(tpr.get('0.001'), True)}  TPR@1% {_fmt(tpr.get('0.01'), True)}"
            )
    return lines


def _audit_lines(doc: dict[str, Any]) -> list[str]:
    acc = doc["accountant_epsilon"]
    cp = doc.get("clopper_pearson") or {}
    return [
        f"canary audit of site {doc['site']} ({doc['canaries']['count']} canaries, "
        f"{doc['canaries']['included']} included, {doc['rounds']} rounds, delta = {doc['delta']:g}):",
        f"  accountant epsilon      {_fmt(acc) if acc is not None else 'inf (no DP)'}",
        f"  one-run lower bound     {_fmt(doc['one_run']['epsilon'])} "
        f"(confidence {doc['one_run']['confidence']:.2f})",
        f"  Clopper-Pearson bound   {_fmt(cp.get('epsilon'))}",
    ]


def _whitebox_lines(doc: dict[str, Any]) -> list[str]:
    cfg = doc["config"]
    acc = doc["accountant_epsilon"]
    one, gdp, ideal = doc["one_run"], doc["gdp"], doc.get("idealised_gaussian") or {}
    lines = [
        f"white-box one-run audit ({cfg['mode']} mechanism of a {doc['privacy_mode']} run, "
        f"{cfg['num_canaries']} canaries, {cfg['steps']} steps, z = {cfg['noise_multiplier']:g}, "
        f"C = {cfg['max_grad_norm']:g}, q = {cfg['sample_rate']:g}, delta = {cfg['delta']:g}):",
        f"  accountant epsilon       {_fmt(acc) if acc is not None else 'inf (no DP)'}"
        f"  (run's summary: {_fmt(doc.get('run_epsilon'))})",
        f"  one-run eps-DP bound     {_fmt(one['epsilon'])}  ceiling {_fmt(one['ceiling'])}"
        f"  (confidence {one['confidence']:.2f}, proven in one run)",
        f"  GDP bound                mu {_fmt(gdp['mu'])} -> epsilon {_fmt(gdp['epsilon'])}"
        f"  ceiling {_fmt(gdp['ceiling_epsilon'])}",
    ]
    fdp = doc.get("fdp_one_run")
    if fdp:
        lines.append(
            f"  f-DP one-run bound       mu {_fmt(fdp['mu'])} -> epsilon {_fmt(fdp['epsilon'])}"
            f"  ceiling {_fmt(fdp.get('ceiling_epsilon'))}  (proven in one run; Mahloujifar et al. 2025)"
        )
    if ideal:
        lines.append(
            f"  idealised Gaussian       eps-DP {_fmt(ideal['one_run_epsilon_median'])}, "
            f"GDP epsilon {_fmt(ideal['gdp_epsilon_median'])} (median of {ideal['runs']})"
        )
    lines.append(f"  {doc['statement']}")
    cc = doc.get("canary_clients")
    if cc:
        lines.append(
            f"canary clients (Andrew et al. 2024): epsilon estimate {_fmt(cc['epsilon_estimate'])} "
            f"against the accountant's {_fmt(cc['accountant_epsilon'])}"
            + ("  VIOLATION" if cc.get("violation") else "")
        )
        lines.append(f"  {cc['statement']}")
    return lines


def _blackbox_lines(doc: dict[str, Any]) -> list[str]:
    cfg = doc["config"]
    lines = [
        f"black-box audit, worst-case initial parameters (Annamalai & De Cristofaro 2024; "
        f"{cfg['trials']} trials of a small model with the run's z = {cfg['noise_multiplier']:g}, "
        f"q = {cfg['sample_rate']:g}, {cfg['steps']} steps):",
        f"  accountant epsilon       {_fmt(doc['accountant_epsilon'])}"
        f"  (run's summary: {_fmt(doc.get('run_epsilon'))})",
    ]
    for name, b in doc["bounds"].items():
        lines.append(f"  {name:<24} {_fmt(b['epsilon'])}  ceiling {_fmt(b['ceiling'])}")
    lines.append(f"  {doc['statement']}")
    return lines


def _cmd_attack(args: argparse.Namespace) -> int:
    # An attack's errors are secfed errors (attacks.errors.AttackError derives from SecfedError):
    # secfed.cli.main reports them, exit status 2 for invalid input, 1 otherwise.
    from attacks.runner import AttackOptions, run_attack

    options = AttackOptions(
        **{
            k: v
            for k, v in {
                "references": args.references,
                "iterations": args.iterations,
                "canaries": args.canaries,
                "rounds": args.rounds,
                "site": args.site,
                "seed": args.seed,
            }.items()
            if v is not None
        }
    )
    progress = None
    if not args.no_progress:

        def progress(line: str) -> None:
            print(f"[{args.attack}] {line}", file=sys.stderr, flush=True)

        progress(f"loading {args.run_dir}")
    doc = run_attack(run_dir=args.run_dir, attack=args.attack, options=options, progress=progress)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    lines = {
        "inversion": _inversion_lines,
        "mia": _mia_lines,
        "audit": _audit_lines,
        "whitebox-audit": _whitebox_lines,
        "blackbox-init-audit": _blackbox_lines,
    }[args.attack](doc)
    lines += [f"wrote {path}" for path in doc.get("files", {}).values()]
    print("\n".join(lines))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``secfed attack`` to the ``secfed`` parser.

    Args:
        subparsers: The ``secfed`` command's subparsers (see :func:`secfed.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "attack",
        help="run a privacy attack (inversion, mia, audit, whitebox-audit, blackbox-init-audit) "
        "against a run directory",
        description="Attack a finished run as an honest-but-curious server; results go to RUN_DIR/attacks/.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `secfed run`")
    p.add_argument("--attack", required=True, choices=_ATTACKS, help="which attack to run")
    p.add_argument(
        "--references", type=_int(2), metavar="N", help="MIA reference models per target (default 6)"
    )
    p.add_argument("--iterations", type=_int(1), metavar="N", help="inversion iterations (default 300)")
    p.add_argument(
        "--canaries", type=_int(2), metavar="M", help="audit canaries (default 200; whitebox-audit 2000)"
    )
    p.add_argument(
        "--rounds", type=_int(1), metavar="R", help="rounds of replica/audit runs (default: the run's)"
    )
    p.add_argument("--site", type=_int(0), metavar="S", help="attacked site (default 0)")
    p.add_argument("--seed", type=_int(0), metavar="S", help="seed of the attacker's choices (default 0)")
    p.add_argument("--json", action="store_true", help="print the result document as JSON")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress lines on stderr (by default mia, inversion and whitebox-audit report each "
        "replica, scenario or stage as it starts and ends)",
    )
    p.set_defaults(func=_cmd_attack)
