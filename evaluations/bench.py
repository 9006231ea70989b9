"""Run every benchmark in sequence and collect their results into one Markdown file (``make bench``).

Benchmarks (each in its own subprocess, with its own flags; a script that does not exist is
reported as skipped):

* ``omniglot``: :mod:`evaluations.benchmarks.omniglot` with ``--settings 5w1s,5w5s,20w1s``; the
  measured numbers are placed beside the published full-Omniglot numbers (ProtoNet: Snell et al.
  2017; MAML: Finn et al. 2017; Reptile: Nichol et al. 2018), labelled as measured on the small
  Omniglot subset;
* ``secagg``, ``dp_overhead``, ``ledger``, ``attacks``: the other benchmark scripts under
  ``evaluations/benchmarks/`` (flags a script does not offer are left out; a script without an
  entry here is listed in the output as not run);
* ``sweep-digits``: a privacy–utility sweep on the embedded digits (``secfed sweep``);
* ``sweep-omniglot``: privacy–utility sweeps of ProtoNet and Reptile on Omniglot (not in ``--quick``
  unless named with ``--only``).

Usage::

    python -m evaluations.bench [--quick] [--only omniglot,sweep-digits] [--out bench_results/x]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluations.benchmarks import shared_dir
from evaluations.errors import BenchError

__all__ = ["BENCHMARKS", "HELPERS", "BenchItem", "BenchOutcome", "plan", "unlisted_scripts", "main"]

REPO = Path(__file__).resolve().parents[1]
#: Data the repository does not ship: ``$SECFED_SHARED/data`` (see :func:`evaluations.benchmarks.shared_dir`).
DATA = shared_dir() / "data"
_TAIL_LINES = 40


@dataclass(frozen=True)
class BenchItem:
    """One benchmark to run.

    Attributes:
        name: The ``--only`` name.
        module: The script's module (``None`` for built-in steps run through ``secfed``).
        args: ``(quick, out_dir) -> argument list`` (flags the script lacks are dropped later).
        needs: Paths that must exist (e.g. a data folder), else the item is skipped.
        full_only: Skipped by ``--quick`` unless named with ``--only``.
        collect: ``(out_dir) -> Markdown`` summarising the item's output files (optional).
    """

    name: str
    module: str | None
    args: Callable[[bool, Path], list[list[str]]]
    needs: tuple[Path, ...] = ()
    full_only: bool = False
    collect: Callable[[Path], str] | None = None


@dataclass
class BenchOutcome:
    """What happened to one benchmark item."""

    name: str
    status: str
    seconds: float = 0.0
    commands: list[list[str]] = field(default_factory=list)
    tail: str = ""
    summary: str = ""


def _omniglot_args(quick: bool, out: Path) -> list[list[str]]:
    args = ["--settings", "5w1s,5w5s,20w1s", "--out", str(out)]
    if quick:
        return [
            [
                *args,
                "--learners",
                "protonet,maml,reptile",
                "--quick",
                "--modes",
                "federated",
                "--sites",
                "2",
                "--local-steps",
                "2",
                "--set",
                "model.hidden=16",
                "--set",
                "learner.test_inner_steps=5",
            ]
        ]
    return [[*args, "--learners", "protonet,maml,fomaml,reptile"]]


def _omniglot_collect(out: Path) -> str:
    files = sorted(out.glob("omniglot-settings-*.json"))
    if not files:
        return "No Omniglot results were written."
    from evaluations.benchmarks.omniglot_tables import settings_markdown

    doc = json.loads(files[-1].read_text(encoding="utf-8"))
    note = (
        f"Budget: {doc.get('budget')} training tasks per run; {doc.get('episodes')} test tasks per setting."
    )
    return settings_markdown(results=doc["results"], note=note)


def _secagg_args(quick: bool, out: Path) -> list[list[str]]:
    return [["--out", str(out / "secagg.json"), *(["--quick"] if quick else [])]]


def _dp_overhead_args(quick: bool, out: Path) -> list[list[str]]:
    args = ["--json", str(out / "dp_overhead.json"), "--out", str(out / "dp_overhead.json")]
    if quick:
        # smoke settings: dp_overhead leaves its target column unjudged under --quick
        args += ["--quick", "--repeats", "1", "--local-steps", "1", "--hidden", "16"]
    return [args]


def _ledger_args(quick: bool, out: Path) -> list[list[str]]:
    args = ["--out", str(out / "ledger.json")]
    if quick:
        args += [
            "--quick",
            "--rounds",
            "50",
            "--sites",
            "3",
            "--grouping-steps",
            "100",
            "--ungrouped-pld-steps",
            "0",
            "--ungrouped-prv-steps",
            "20",
        ]
    return [args]


def _attacks_args(quick: bool, out: Path) -> list[list[str]]:
    args = ["--out", str(out)]
    if quick:
        args += ["--iterations", "30", "--references", "2", "--canaries", "60", "--epsilons", "8"]
        args += ["--inversion-noise", "0", "0.1", "--parts", "inversion", "mia", "audit"]
    return [args]


_QUICK_SWEEP = [
    "--set",
    "experiment.rounds=2",
    "--set",
    "experiment.eval_every=1",
    "--set",
    "experiment.eval_episodes=20",
    "--set",
    "experiment.final_eval_episodes=50",
    "--set",
    "learner.local_steps=2",
    "--set",
    "model.hidden=16",
]


def _sweep_digits_args(quick: bool, out: Path) -> list[list[str]]:
    eps = "8,inf" if quick else "1,3,8,inf"
    args = ["sweep", str(REPO / "examples" / "digits_protonet.toml"), "--epsilons", eps, "--out", str(out)]
    args += ["--no-progress", *(_QUICK_SWEEP if quick else [])]
    return [args]


def _sweep_omniglot_args(quick: bool, out: Path) -> list[list[str]]:
    extra = _QUICK_SWEEP if quick else []
    return [
        [
            "sweep",
            str(REPO / "examples" / f"omniglot_{learner}.toml"),
            "--epsilons",
            "8,inf" if quick else "1,3,8,inf",
            "--out",
            str(out / learner),
            "--no-progress",
            "--attacks",
            "none",
            *extra,
        ]
        for learner in ("protonet", "reptile")
    ]


def _sweep_collect(out: Path) -> str:
    parts = []
    for summary in sorted(out.rglob("summary.md")):
        if (summary.parent / "sweep.json").is_file():
            text = summary.read_text(encoding="utf-8")
            parts.append(text.split("\n", 1)[1] if text.startswith("#") else text)
            if (summary.parent / "report.html").is_file():
                parts.append(f"Report: `{summary.parent / 'report.html'}`\n")
    return "\n".join(parts) or "No sweep summary was written."


def _audit_canary_clients_args(quick: bool, out: Path) -> list[list[str]]:
    return [["--seeds", "0"]] if quick else [[]]


def _audit_fdp_args(quick: bool, out: Path) -> list[list[str]]:
    return [["--seeds", "0", "--canaries", "1000"]] if quick else [[]]


BENCHMARKS: tuple[BenchItem, ...] = (
    BenchItem(
        "omniglot",
        "evaluations.benchmarks.omniglot",
        _omniglot_args,
        needs=(DATA / "omniglot",),
        collect=_omniglot_collect,
    ),
    BenchItem("secagg", "evaluations.benchmarks.secagg", _secagg_args),
    BenchItem("dp_overhead", "evaluations.benchmarks.dp_overhead", _dp_overhead_args),
    BenchItem("ledger", "evaluations.benchmarks.ledger", _ledger_args),
    BenchItem("attacks", "evaluations.benchmarks.attacks", _attacks_args),
    BenchItem(
        "audit_canary_clients", "evaluations.benchmarks.audit_canary_clients", _audit_canary_clients_args
    ),
    BenchItem("audit_fdp", "evaluations.benchmarks.audit_fdp", _audit_fdp_args),
    BenchItem("sweep-digits", None, _sweep_digits_args, collect=_sweep_collect),
    BenchItem(
        "sweep-omniglot",
        None,
        _sweep_omniglot_args,
        needs=(DATA / "omniglot",),
        full_only=True,
        collect=_sweep_collect,
    ),
)


def _supported_flags(module: str) -> set[str] | None:
    """The ``--flags`` a script's ``--help`` lists (``None`` when ``--help`` fails)."""
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0:
        return None
    return {tok.rstrip(",=").split("=")[0] for tok in res.stdout.split() if tok.startswith("--")}


def _filter_flags(args: list[str], supported: set[str]) -> list[str]:
    """Drop flags (with all their values) that the script does not offer."""
    out: list[str] = []
    keep = True
    for tok in args:
        if tok.startswith("--"):
            keep = tok in supported
        if keep:
            out.append(tok)
    return out


#: Scripts under evaluations/benchmarks/ that are helpers of another benchmark, not benchmarks.
# Scripts that `make bench` does not run itself: art_mia is called by attacks.py under ART's own
# interpreter; init_accuracy is a per-configuration baseline (an untrained model's accuracy);
# secagg_flower, secagg_primitives and secagg_rounds are parts of the secagg benchmark, and
# omniglot_eval, omniglot_settings and omniglot_tables parts of the omniglot one;
# dp_validation (a configuration's validation score) and feature_cache (one DP round with and
# without model.cache_features) are per-configuration tools named in docs/private_training.md;
# pneumonia_validation (a grid of PneumoniaMNIST DP plans scored on validation over several
# seeds, tens of secfed runs) is the tool that chose examples/pneumonia_dp_eps1.toml;
# fedprox_curve draws docs/images/fedprox-mu-curve.png from finished FedProx run directories.
HELPERS = (
    "art_mia",
    "dp_validation",
    "feature_cache",
    "fedprox_curve",
    "init_accuracy",
    "metric_probe",
    "omniglot_eval",
    "omniglot_settings",
    "omniglot_tables",
    "pneumonia_validation",
    "secagg_flower",
    "secagg_primitives",
    "secagg_rounds",
)


def unlisted_scripts() -> list[str]:
    """Benchmark scripts present under ``evaluations/benchmarks/`` that this driver has no entry for."""
    listed = {b.module.rsplit(".", 1)[-1] for b in BENCHMARKS if b.module}
    folder = REPO / "evaluations" / "benchmarks"
    return sorted(
        p.stem
        for p in folder.glob("*.py")
        if p.stem not in listed and p.stem not in HELPERS and p.stem != "__init__"
    )


def _script_exists(module: str) -> bool:
    return (REPO / Path(*module.split("."))).with_suffix(".py").is_file()


def plan(*, only: list[str] | None, quick: bool) -> list[BenchItem]:
    """The benchmark items to run, in order.

    Args:
        only: Names to run (``None``: all, minus full-only items in quick mode).
        quick: Smoke-test budgets.

    Returns:
        The items.

    Raises:
        BenchError: On an unknown name in ``only``.
    """
    names = [b.name for b in BENCHMARKS]
    if only is not None:
        unknown = [n for n in only if n not in names]
        if unknown or not only:
            raise BenchError(f"--only: unknown benchmark(s) {unknown}; choose from {', '.join(names)}")
        return [b for b in BENCHMARKS if b.name in only]
    return [b for b in BENCHMARKS if not (quick and b.full_only)]


def _run_item(item: BenchItem, *, quick: bool, out: Path) -> BenchOutcome:
    folder = out / item.name
    missing = [p for p in item.needs if not p.exists()]
    if missing:
        return BenchOutcome(item.name, f"skipped: {missing[0].resolve()} not found")
    if item.module is not None and not _script_exists(item.module):
        return BenchOutcome(item.name, f"skipped: {item.module} does not exist yet")
    folder.mkdir(parents=True, exist_ok=True)
    supported = _supported_flags(item.module) if item.module else None
    if item.module is not None and supported is None:
        return BenchOutcome(item.name, f"failed: `python -m {item.module} --help` did not run")
    outcome = BenchOutcome(item.name, "ok")
    start = time.perf_counter()
    log_path = folder / "output.log"
    tails = []
    with open(log_path, "w", encoding="utf-8") as log:
        for args in item.args(quick, folder):
            cmd = [sys.executable, "-m", item.module or "secfed"]
            cmd += _filter_flags(args, supported) if supported is not None else args
            outcome.commands.append(cmd)
            print(
                f"bench: {item.name}: {' '.join(cmd[1:])} (output: {log_path})", file=sys.stderr, flush=True
            )
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            begin = log.tell()
            res = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
            log.flush()
            with open(log_path, "rb") as fh:
                fh.seek(begin)
                text = fh.read().decode("utf-8", errors="replace")
            tails.append("\n".join(text.strip().splitlines()[-_TAIL_LINES:]))
            if res.returncode != 0:
                outcome.status = f"failed (exit status {res.returncode}; see {log_path})"
                break
    outcome.seconds = time.perf_counter() - start
    outcome.tail = "\n".join(t for t in tails if t)
    if item.collect is not None and outcome.status == "ok":
        outcome.summary = item.collect(folder)
    return outcome


def _markdown(outcomes: list[BenchOutcome], *, quick: bool, out: Path) -> str:
    kind = "quick smoke run: tiny budgets, numbers are not meaningful" if quick else "full"
    lines = [
        f"# secfed benchmarks ({kind})",
        "",
        f"Results folder: `{out}`. Each benchmark ran in its own process; its full output is in "
        "`<name>/output.log`.",
        "",
        "| benchmark | status | wall time (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.1f} |" for o in outcomes]
    extra = unlisted_scripts()
    if extra:
        lines += [
            "",
            f"Benchmark scripts without an entry in evaluations/bench.py (not run): {', '.join(extra)}.",
        ]
    for o in outcomes:
        lines += ["", f"## {o.name}", "", f"Status: {o.status}.", ""]
        for cmd in o.commands:
            lines.append(f"`python {' '.join(cmd[1:])}`  ")
        if o.summary:
            lines += ["", o.summary]
        if o.tail:
            lines += ["", "Last lines of output:", "", "```", o.tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m evaluations.bench``).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        0 when every benchmark that ran succeeded, 1 otherwise, 2 on bad arguments.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run with tiny budgets")
    ap.add_argument(
        "--only", default=None, help=f"comma-separated subset of: {', '.join(b.name for b in BENCHMARKS)}"
    )
    ap.add_argument("--out", default=None, help="results folder (default bench_results/bench-<time>)")
    args = ap.parse_args(argv)
    try:
        items = plan(only=args.only.split(",") if args.only is not None else None, quick=args.quick)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or REPO / "bench_results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[BenchOutcome] = []
    for item in items:
        outcomes.append(_run_item(item, quick=args.quick, out=out))
        text = _markdown(outcomes, quick=args.quick, out=out)
        (out / "bench.md").write_text(text, encoding="utf-8")
        doc: list[dict[str, Any]] = [
            {"name": o.name, "status": o.status, "seconds": o.seconds, "commands": o.commands}
            for o in outcomes
        ]
        (out / "bench.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        print(
            f"bench: {item.name}: {outcomes[-1].status} ({outcomes[-1].seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(_markdown(outcomes, quick=args.quick, out=out))
    print(f"bench: results in {out / 'bench.md'}", file=sys.stderr)
    return 0 if all(o.status == "ok" or o.status.startswith("skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
