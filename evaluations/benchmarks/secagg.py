"""Benchmark of :mod:`protocols` secure aggregation (SecAgg / SecAgg+), optionally against Flower.

Every round is simulated in one process (server and all clients, one core;
:mod:`evaluations.benchmarks.secagg_rounds`): clients quantise a float32 update of ``m``
coordinates, run their session, and the server unmasks and decodes.
Dropouts happen after the share-keys stage (clients send no masked input), as in Flower's own
benchmark, which exercises the recovery path. Reported per round: wall time, process CPU time,
mean client compute, server time, the server's unmasking time, bytes sent/received per client,
and the decoding error. The keystream rate of the masks' PRG and the client masking rate are
measured too (:mod:`evaluations.benchmarks.secagg_primitives`), to see how close masking is to
the keystream limit.

With ``--flower-python FLOWER_VENV/bin/python`` Flower's reference benchmark runs in the same
invocation, in its own virtual environment, and ratios are printed
(:mod:`evaluations.benchmarks.secagg_flower`). The reference benchmark is not part of the
repository: ``--flower-bench PATH/bench.py`` names it, by default
``$SECFED_SHARED/anchors/flower_secagg/bench.py`` (:func:`evaluations.benchmarks.shared_dir`);
when it is absent the command stops with status 2 before measuring anything. Usage::

    python -m evaluations.benchmarks.secagg --out bench_results/secagg.json \
        [--quick] [--flower-python FLOWER_VENV/bin/python] [--flower-bench PATH/bench.py]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from evaluations.benchmarks import SHARED_ENV
from evaluations.benchmarks.secagg_flower import (
    FLOWER_ERR_TOL,
    FlowerSetupError,
    FlowerWorker,
    flower_script,
    resolve_flower_bench,
    run_flower,
    run_flower_harness,
)
from evaluations.benchmarks.secagg_primitives import keystream_rate, masking_rate
from evaluations.benchmarks.secagg_rounds import Case, Row, best_of, cases, measure_round, run_case
from evaluations.plots import secagg_plot


# --------------------------------------------------------------------------- Flower
def run_case_alternating(
    case: Case,
    worker: FlowerWorker,
    *,
    clip: float,
    precision_bits: int,
    seed: int,
    max_attempts: int,
    repeats: int,
    max_block: int = 50,
) -> tuple[Row, dict[str, Any]]:
    """Alternate Flower's rounds with ours on one setting, so both see the same machine load.

    Each of ``repeats`` blocks is one Flower round followed by our rounds for about the same wall
    time (at least one, at most ``max_block``); a Flower round longer than 20 s ends the
    measurement after its block. Reported: the best round of each side (as in the other modes)
    and the medians over all rounds of each side, whose ratio does not depend on how many rounds
    each side ran.

    Args:
        case: The setting (must have ``flower_key``).
        worker: A running :class:`FlowerWorker`.
        clip: Per-coordinate clip range of the float updates.
        precision_bits: Quantisation precision.
        seed: Seed of the synthetic updates and dropouts (advanced per round).
        max_attempts: Rounds to try when one of ours aborts.
        repeats: Blocks (Flower rounds).
        max_block: Most of our rounds per block.

    Returns:
        Our best row, with the Flower figures filled in, and a record of every Flower round.
    """
    assert case.flower_key is not None
    label, n, dropped = case.flower_key
    n_drop = int(n * 0.2) if dropped else 0
    ours: list[Row] = []
    flower: list[dict[str, float]] = []
    wrong = 0
    for _ in range(repeats):
        rec = worker.round(label=label, n=n, dim=case.m, dropped=n_drop)
        if rec["max_abs_err"] > FLOWER_ERR_TOL:
            wrong += 1  # a finished round with a wrong aggregate is not a valid timing
        else:
            flower.append(rec)
        t0 = time.perf_counter()
        block = 0
        while block == 0 or (time.perf_counter() - t0 < rec["total_s"] and block < max_block):
            ours.append(
                measure_round(
                    case,
                    clip=clip,
                    precision_bits=precision_bits,
                    seed=seed + len(ours),
                    max_attempts=max_attempts,
                )
            )
            block += 1
        if rec["total_s"] > 20.0:
            break
    best = best_of(ours)
    best.wall_median_s = float(np.median([r.wall_s for r in ours]))
    best.rounds_measured = len(ours)
    if flower:
        best.flower_s = min(r["total_s"] for r in flower)
        best.speedup_vs_flower = best.flower_s / best.wall_s
        best.flower_cpu_s = min(r["cpu_s"] for r in flower)
        best.cpu_speedup_vs_flower = best.flower_cpu_s / best.cpu_s
        best.flower_median_s = float(np.median([r["total_s"] for r in flower]))
        best.median_speedup_vs_flower = best.flower_median_s / best.wall_median_s
        best.flower_rounds_measured = len(flower)
    return best, {"rounds": flower, "wrong_aggregates": wrong}


# --------------------------------------------------------------------------- output
def markdown(rows: list[Row]) -> str:
    """Render the rows as a Markdown table."""
    head = (
        "| setting | k | t | bits | m | dropped | round wall s | round CPU s | client mean ms | server s "
        "| unmask s | sent/client KB | recv/client KB | max abs err | Flower wall s | speed-up (wall) "
        "| Flower CPU s | speed-up (CPU) | median wall s (rounds) | Flower median s (rounds) "
        "| speed-up (medians) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        fl = f"{r.flower_s:.2f}" if r.flower_s is not None else "-"
        sp = f"{r.speedup_vs_flower:.1f}x" if r.speedup_vs_flower is not None else "-"
        fc = f"{r.flower_cpu_s:.2f}" if r.flower_cpu_s is not None else "-"
        sc = f"{r.cpu_speedup_vs_flower:.1f}x" if r.cpu_speedup_vs_flower is not None else "-"
        mw = f"{r.wall_median_s:.3f} ({r.rounds_measured})" if r.wall_median_s is not None else "-"
        mf = f"{r.flower_median_s:.2f} ({r.flower_rounds_measured})" if r.flower_median_s is not None else "-"
        ms = f"{r.median_speedup_vs_flower:.1f}x" if r.median_speedup_vs_flower is not None else "-"
        extra = f" ({r.aborted_attempts} aborted)" if r.aborted_attempts else ""
        lines.append(
            f"| {r.case}{extra} | {r.k} | {r.t} | {r.bits} | {r.m:,} | {r.dropped} | {r.wall_s:.3f} "
            f"| {r.cpu_s:.3f} | {r.client_mean_ms:.1f} | {r.server_s:.3f} | {r.unmask_s:.3f} "
            f"| {r.bytes_sent_per_client / 1e3:.1f} | {r.bytes_recv_per_client / 1e3:.1f} "
            f"| {r.max_abs_err:.1e} | {fl} | {sp} | {fc} | {sc} | {mw} | {mf} | {ms} |"
        )
    return head + "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_results/secagg.json"), help="JSON output path")
    p.add_argument("--quick", action="store_true", help="small subset (n <= 100, m = 20k, no n=1000 / m=1M)")
    p.add_argument("--dim", type=int, default=None, help="vector length m (default 100k; 20k with --quick)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--precision-bits", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=20, help="rounds tried per setting if a round aborts")
    p.add_argument("--primitives-only", action="store_true", help="only the keystream and masking rates")
    p.add_argument(
        "--repeats", type=int, default=3, help="rounds per fast (< 2 s) setting; the best is reported"
    )
    p.add_argument(
        "--flower-python", default=None, help="interpreter of a venv with flwr (e.g. /tmp/flwr/bin/python)"
    )
    p.add_argument(
        "--flower-bench",
        type=Path,
        default=None,
        metavar="BENCH_PY",
        help="Flower's reference benchmark bench.py, which the repository does not ship (default: "
        f"${SHARED_ENV}/anchors/flower_secagg/bench.py; ${SHARED_ENV} unset: the folder 'shared' beside "
        "the repository); checked before anything runs",
    )
    p.add_argument(
        "--flower-mode",
        choices=("alternate", "script", "harness"),
        default="alternate",
        help="alternate: one Flower round, then ours for about as long, repeated (both sides see the "
        "same load; best and median of each side reported); script: run bench.py and parse its lines; "
        "harness: call bench.run_protocol per setting before ours, with CPU time",
    )
    p.add_argument("--flower-timeout", type=float, default=1800.0)
    p.add_argument(
        "--only",
        action="append",
        default=None,
        help="run only settings whose name contains this text (repeatable), e.g. --only 'n=10 '",
    )
    p.add_argument(
        "--replot",
        type=Path,
        default=None,
        metavar="JSON",
        help="only redraw the plot (JSON path with .png) from an earlier run's JSON output",
    )
    return p


def _primitives(report: dict[str, Any]) -> None:
    """Measure and print the keystream and client masking rates into ``report``."""
    ks = {
        f"{nb // 1000}KB": keystream_rate(nbytes=nb, reps=max(10, 20_000_000 // nb))
        for nb in (400_000, 4_000_000)
    }
    report["keystream_GBps"] = ks
    for size, rates in ks.items():
        shown = ", ".join(f"{k} {v:.2f} GB/s" for k, v in rates.items())
        print(f"PRG keystream (AES-128-CTR) {size}: {shown}")
    masking = [
        masking_rate(m=m, neighbours=10, reps=40 if m > 500_000 else 100) for m in (100_000, 1_000_000)
    ]
    report["masking"] = masking
    for mr in masking:
        print(
            f"client masking m={mr['m']:,}, {mr['masks']} masks (10 pairwise incl. X25519+HKDF, 1 self): "
            f"{mr['mask_ms']:.2f} ms vs keystream alone {mr['keystream_ms']:.2f} ms "
            f"-> {mr['mask_over_keystream']:.2f}x the keystream limit ({mr['mask_GBps']:.2f} GB/s of masks); "
            f"expansion and accumulation alone (keys derived) {mr['expand_ms']:.2f} ms "
            f"-> {mr['expand_over_keystream']:.2f}x"
        )


def _flower_start(args: argparse.Namespace, *, dim: int) -> dict[str, Any] | None:
    """Flower's record for the run (``None`` without ``--flower-python``); the script mode runs it now."""
    if not args.flower_python:
        return None
    clients = [10, 50] if not args.quick else [10]
    print(
        f"Flower's benchmark: {args.flower_python} {args.flower_bench} ({args.flower_mode} mode)", flush=True
    )
    if args.flower_mode in ("harness", "alternate"):
        # interleaved: each Flower setting runs right before (harness) or alternately with
        # (alternate) the matching protocols setting (see the case loop)
        return {
            "rounds": {},
            "cpu": {},
            "wrong_aggregates": {},
            "returncode": 0,
            "stdout": "",
            "stderr_tail": "",
        }
    flower = run_flower(
        python=args.flower_python,
        bench=args.flower_bench,
        dim=dim,
        clients=clients,
        timeout=args.flower_timeout,
    )
    if flower["wrong_aggregates"]:
        print(f"Flower rounds with a wrong aggregate (excluded from timings): {flower['wrong_aggregates']}")
    if flower["returncode"] != 0:
        print(f"Flower benchmark failed (rc={flower['returncode']}): {flower['stderr_tail'][-800:]}")
    return flower


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        0; 2 when ``--replot`` cannot read its input. Invalid arguments, a missing Flower reference
        benchmark (with ``--flower-python``) or an ``--only`` that matches nothing exit with status 2
        and a message, before anything is measured.
    """
    p = _parser()
    args = p.parse_args(argv)
    if args.replot is not None:
        return _replot(args.replot)
    if args.flower_python:
        try:
            args.flower_bench = resolve_flower_bench(args.flower_bench)
            flower_script("flower_worker.py" if args.flower_mode == "alternate" else "flower_harness.py")
        except FlowerSetupError as exc:
            p.error(str(exc))
    dim = args.dim or (20_000 if args.quick else 100_000)
    selected = [
        c for c in cases(quick=args.quick, dim=dim) if not args.only or any(o in c.name for o in args.only)
    ]
    if not selected and not args.primitives_only:
        p.error(f"--only {args.only} matches no setting")
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "dim": dim,
        "clip": args.clip,
        "precision_bits": args.precision_bits,
    }
    print(f"# secagg benchmark (m={dim:,}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    _primitives(report)
    if args.primitives_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.out}")
        return 0
    flower = _flower_start(args, dim=dim)
    # warm-up (imports, caches, allocator) so that the first measured setting is not penalised
    measure_round(
        Case("warm-up", "secagg", 5, 1000, 0.0),
        clip=args.clip,
        precision_bits=args.precision_bits,
        seed=0,
        max_attempts=1,
    )
    worker: FlowerWorker | None = None
    if flower is not None and args.flower_mode == "alternate":
        worker = FlowerWorker(python=args.flower_python, bench=args.flower_bench)
        flower["flower_rounds"] = {}
    try:
        rows = _run_cases(selected, args=args, dim=dim, flower=flower, worker=worker)
    finally:
        if worker is not None:
            worker.close()
    _report(rows=rows, report=report, flower=flower, args=args)
    return 0


def _run_cases(
    selected: list[Case],
    *,
    args: argparse.Namespace,
    dim: int,
    flower: dict[str, Any] | None,
    worker: FlowerWorker | None,
) -> list[Row]:
    rows: list[Row] = []
    # how every setting is measured, with Flower's rounds alternating or not
    measure: dict[str, Any] = {
        "clip": args.clip,
        "precision_bits": args.precision_bits,
        "seed": args.seed,
        "max_attempts": args.max_attempts,
        "repeats": args.repeats,
    }
    for case in selected:
        if worker is not None and flower is not None and case.flower_key and case.m == dim:
            row, frec = run_case_alternating(case, worker, **measure)
            if row.flower_s is not None and row.flower_cpu_s is not None:
                flower["rounds"][case.flower_key] = row.flower_s
                flower["cpu"][case.flower_key] = row.flower_cpu_s
            flower["flower_rounds"][case.name] = frec["rounds"]
            if frec["wrong_aggregates"]:
                flower["wrong_aggregates"][case.name] = frec["wrong_aggregates"]
                print(f"Flower rounds with a wrong aggregate (excluded): {frec['wrong_aggregates']}")
            _print_row(row)
            rows.append(row)
            continue
        if flower is not None and args.flower_mode == "harness" and case.flower_key and case.m == dim:
            label, n_cl, dropped = case.flower_key
            part = run_flower_harness(
                python=args.flower_python,
                bench=args.flower_bench,
                dim=dim,
                clients=[n_cl],
                timeout=args.flower_timeout,
                repeats=args.repeats,
                only=(label, dropped),
            )
            flower["rounds"].update(part["rounds"])
            flower["cpu"].update(part["cpu"])
            flower["wrong_aggregates"].update(part["wrong_aggregates"])
            flower["stdout"] += part["stdout"]
            flower["returncode"] = flower["returncode"] or part["returncode"]
            if part["returncode"] != 0:
                print(f"Flower harness failed (rc={part['returncode']}): {part['stderr_tail'][-800:]}")
            if part["wrong_aggregates"]:
                print(f"Flower rounds with a wrong aggregate (excluded): {part['wrong_aggregates']}")
        row = run_case(case, **measure, quick_s=2.0)
        if flower is not None and case.flower_key is not None and case.m == dim:
            f_s = flower["rounds"].get(case.flower_key)
            if f_s is not None:
                row.flower_s = f_s
                row.speedup_vs_flower = f_s / row.wall_s
            f_cpu = flower.get("cpu", {}).get(case.flower_key)
            if f_cpu is not None:
                row.flower_cpu_s = f_cpu
                row.cpu_speedup_vs_flower = f_cpu / row.cpu_s
        rows.append(row)
        _print_row(row)
    return rows


def _print_row(row: Row) -> None:
    fl = f", Flower {row.flower_s:.2f} s -> {row.speedup_vs_flower:.1f}x" if row.flower_s else ""
    if row.flower_cpu_s:
        fl += f" (CPU {row.flower_cpu_s:.2f} s -> {row.cpu_speedup_vs_flower:.1f}x)"
    if row.median_speedup_vs_flower is not None and row.wall_median_s and row.flower_median_s:
        fl += (
            f"; medians {row.wall_median_s:.3f} s ({row.rounds_measured} rounds) vs "
            f"{row.flower_median_s:.2f} s ({row.flower_rounds_measured}) "
            f"-> {row.median_speedup_vs_flower:.1f}x"
        )
    print(
        f"{row.case:42s} k={row.k:3d} t={row.t:3d} wall={row.wall_s:7.3f}s cpu={row.cpu_s:7.3f}s "
        f"unmask={row.unmask_s:.3f}s sent/client={row.bytes_sent_per_client / 1e3:.1f}KB "
        f"err={row.max_abs_err:.1e} (bound {row.err_bound:.1e}){fl}",
        flush=True,
    )
    assert row.max_abs_err <= row.err_bound + 1e-9, "decoded sum outside the quantisation error bound"


def _report(
    *, rows: list[Row], report: dict, flower: dict[str, Any] | None, args: argparse.Namespace
) -> None:
    if flower is not None:
        report["flower"] = {
            **flower,
            "mode": args.flower_mode,
            "rounds": {f"{k[0]}/n={k[1]}/drop={k[2]}": v for k, v in flower["rounds"].items()},
            "cpu": {f"{k[0]}/n={k[1]}/drop={k[2]}": v for k, v in flower.get("cpu", {}).items()},
        }
    report["rows"] = [asdict(r) for r in rows]
    report["loadavg_end"] = os.getloadavg()
    table = markdown(rows)
    report["markdown"] = table
    print()
    print(table)
    if flower is not None:
        for what, attr in (
            ("wall", "speedup_vs_flower"),
            ("CPU", "cpu_speedup_vs_flower"),
            ("median wall", "median_speedup_vs_flower"),
        ):
            ratios = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
            if ratios:
                geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
                print(f"speed-up vs Flower ({what}, same run): min {min(ratios):.1f}x, geomean {geo:.1f}x")
                report[f"speedup_vs_flower_{what.lower().replace(' ', '_')}"] = {
                    "min": min(ratios),
                    "geomean": geo,
                }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")
    _write_plot(json_path=args.out, rows=report["rows"])


def _write_plot(*, json_path: Path, rows: list[dict[str, Any]]) -> None:
    """Draw the rows beside their JSON output (same name, .png)."""
    png = json_path.with_suffix(".png")
    png.write_bytes(secagg_plot(rows=rows))
    print(f"wrote {png}")


def _replot(path: Path) -> int:
    """Redraw the plot of an earlier run from its JSON output."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"secagg benchmark: cannot read rows from {path}: {exc}", file=sys.stderr)
        return 2
    _write_plot(json_path=path, rows=rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
