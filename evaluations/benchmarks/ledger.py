"""Benchmark: accounting + durable ledger writes for a long run, and grouped vs ungrouped accountants.

Usage::

    python -m evaluations.benchmarks.ledger [--rounds 1000] [--sites 10] [--out bench_results/ledger.json]

Part 1 simulates a run: every round each site records ``steps`` DP-SGD steps (its σ alternates
between two values by round, so its history has two groups), its ε is computed, the global DP-FedAvg
accountant records one round, and one fsync'd ledger entry is appended. Then the ledger is reopened
(full validation) and replayed into fresh accountants (with ε verification).

Part 2 times 1,000 alternating (σ, q) steps with our grouped accountants against the libraries' own
(Opacus merges only consecutive identical steps; dp_accounting composes every event separately).
The ungrouped PRV and PLD references are slow; their step counts are configurable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from opacus.accountants import PRVAccountant as OpacusPRV
from opacus.accountants import RDPAccountant as OpacusRDP

from privacy.accountants import PLDAccountant, PRVAccountant, RDPAccountant
from privacy.analysis import gaussian as _gaussian
from privacy.analysis import numerical as _numerical
from privacy.ledger import MechanismRecord, PrivacyBudget, PrivacyLedger

DELTA = 1e-5
PAIR_A = (1.0, 0.01)
PAIR_B = (1.2, 0.01)


def _clear_caches() -> None:
    _gaussian._sgm_rdp_cached.cache_clear()
    _numerical._base_pld.cache_clear()


def bench_ledger(*, rounds: int, sites: int, steps: int) -> dict[str, Any]:
    """Simulate ``rounds`` rounds with ``sites`` sites; return timings in seconds."""
    _clear_caches()
    names = [f"site-{i:02d}" for i in range(sites)]
    site_sigma = {n: (0.9 + 0.05 * i, 1.1 + 0.05 * i) for i, n in enumerate(names)}
    accs = {n: RDPAccountant() for n in names}
    glob = RDPAccountant()
    t_account = t_write = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "privacy_ledger.jsonl"
        ledger = PrivacyLedger.open(
            path=path, budget=PrivacyBudget(delta=DELTA, site_epsilon=1e6, global_epsilon=1e6)
        )
        t_start = time.perf_counter()
        for r in range(1, rounds + 1):
            t0 = time.perf_counter()
            records = {}
            for n in names:
                sigma = site_sigma[n][r % 2]
                accs[n].step(noise_multiplier=sigma, sample_rate=0.01, num_steps=steps)
                records[n] = MechanismRecord(
                    epsilon=accs[n].get_epsilon(delta=DELTA),
                    mechanism="dp-sgd",
                    noise_multiplier=sigma,
                    sample_rate=0.01,
                    steps=steps,
                    privacy_unit="record",
                    adjacency="add/remove",
                )
            glob.step(noise_multiplier=1.0, sample_rate=0.3)
            grec = MechanismRecord(
                epsilon=glob.get_epsilon(delta=DELTA),
                mechanism="dp-fedavg",
                noise_multiplier=1.0,
                sample_rate=0.3,
                steps=1,
                privacy_unit="client",
                adjacency="add/remove",
            )
            t1 = time.perf_counter()
            ledger.append(round=r, sites=records, global_record=grec)
            t2 = time.perf_counter()
            t_account += t1 - t0
            t_write += t2 - t1
        t_total = time.perf_counter() - t_start
        size = path.stat().st_size
        t0 = time.perf_counter()
        reopened = PrivacyLedger.open(path=path)
        t_open = time.perf_counter() - t0
        _clear_caches()
        t0 = time.perf_counter()
        reopened.rebuild_accountants(verify=True)
        t_replay = time.perf_counter() - t0
    return {
        "rounds": rounds,
        "sites": sites,
        "steps_per_round": steps,
        "total_s": t_total,
        "accounting_s": t_account,
        "append_fsync_s": t_write,
        "per_round_ms": 1e3 * t_total / rounds,
        "file_bytes": size,
        "reopen_validate_s": t_open,
        "replay_verify_s": t_replay,
        "final_site_epsilon": accs[names[0]].get_epsilon(delta=DELTA),
        "final_global_epsilon": glob.get_epsilon(delta=DELTA),
    }


def _alternate(step, n: int) -> None:
    for i in range(n):
        sigma, q = PAIR_A if i % 2 == 0 else PAIR_B
        step(sigma, q)


def _timed(fn) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fn()
    return float(value), time.perf_counter() - t0


def bench_grouping(*, steps: int, ungrouped_prv_steps: int, ungrouped_pld_steps: int) -> dict[str, Any]:
    """Grouped (ours) vs ungrouped (library) accountants on alternating steps."""
    out: dict[str, Any] = {"steps": steps}

    _clear_caches()
    ours_rdp = RDPAccountant()
    t0 = time.perf_counter()
    _alternate(lambda s, q: ours_rdp.step(noise_multiplier=s, sample_rate=q), steps)
    eps, t = _timed(lambda: ours_rdp.get_epsilon(delta=DELTA))
    out["rdp_grouped"] = {"epsilon": eps, "seconds": time.perf_counter() - t0}

    lib_rdp = OpacusRDP()
    t0 = time.perf_counter()
    _alternate(lambda s, q: lib_rdp.step(noise_multiplier=s, sample_rate=q), steps)
    eps, _ = _timed(lambda: lib_rdp.get_epsilon(delta=DELTA))
    out["rdp_opacus_ungrouped"] = {
        "epsilon": eps,
        "seconds": time.perf_counter() - t0,
        "entries": len(lib_rdp.history),
    }

    ours_prv = PRVAccountant()
    t0 = time.perf_counter()
    _alternate(lambda s, q: ours_prv.step(noise_multiplier=s, sample_rate=q), steps)
    eps, _ = _timed(lambda: ours_prv.get_epsilon(delta=DELTA))
    out["prv_grouped"] = {"epsilon": eps, "seconds": time.perf_counter() - t0}

    if ungrouped_prv_steps > 0:
        lib_prv = OpacusPRV()
        t0 = time.perf_counter()
        _alternate(lambda s, q: lib_prv.step(noise_multiplier=s, sample_rate=q), ungrouped_prv_steps)
        eps, _ = _timed(lambda: lib_prv.get_epsilon(DELTA))
        out["prv_opacus_ungrouped"] = {
            "epsilon": eps,
            "seconds": time.perf_counter() - t0,
            "entries": len(lib_prv.history),
            "steps": ungrouped_prv_steps,
        }

    ours_pld = PLDAccountant()
    t0 = time.perf_counter()
    _alternate(lambda s, q: ours_pld.step(noise_multiplier=s, sample_rate=q), steps)
    eps, _ = _timed(lambda: ours_pld.get_epsilon(delta=DELTA))
    out["pld_grouped"] = {"epsilon": eps, "seconds": time.perf_counter() - t0}
    eps, t_again = _timed(lambda: ours_pld.get_epsilon(delta=DELTA))
    out["pld_grouped_repeat_query_s"] = t_again

    if ungrouped_pld_steps > 0:
        lib_pld = pld_privacy_accountant.PLDAccountant()
        t0 = time.perf_counter()

        def compose(s: float, q: float) -> None:
            lib_pld.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)))

        _alternate(compose, ungrouped_pld_steps)
        eps, _ = _timed(lambda: lib_pld.get_epsilon(DELTA))
        out["pld_dp_accounting_ungrouped"] = {
            "epsilon": eps,
            "seconds": time.perf_counter() - t0,
            "steps": ungrouped_pld_steps,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=50)
    parser.add_argument("--grouping-steps", type=int, default=1000)
    parser.add_argument(
        "--ungrouped-prv-steps", type=int, default=1000, help="0 skips (Opacus: minutes at 1000)"
    )
    parser.add_argument("--ungrouped-pld-steps", type=int, default=20, help="0 skips (about 1 s per step)")
    parser.add_argument("--only", choices=("ledger", "grouping"), default=None, help="run one part only")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    if args.only in (None, "ledger"):
        results["ledger"] = bench_ledger(rounds=args.rounds, sites=args.sites, steps=args.steps_per_round)
        print(json.dumps({"ledger": results["ledger"]}, indent=2), flush=True)
    if args.only in (None, "grouping"):
        results["grouping"] = bench_grouping(
            steps=args.grouping_steps,
            ungrouped_prv_steps=args.ungrouped_prv_steps,
            ungrouped_pld_steps=args.ungrouped_pld_steps,
        )
        print(json.dumps({"grouping": results["grouping"]}, indent=2), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
