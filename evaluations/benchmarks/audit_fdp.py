"""The one-run f-DP analysis next to the ε-DP and GDP ones (issue 21).

Run: ``python -m evaluations.benchmarks.audit_fdp``.

The white-box benchmark's setting (:mod:`attacks.whitebox_benchmark`): record-level DP-SGD, one
full-batch step, z calibrated to RDP-accountant ε = 8 at δ = 1e-5, d = 4096, m = 4000 Dirac canaries,
seeds 0–4; then the noise cut 2× in every mode at the same claim (seed 0). Prints one line per audit
(the proven ε-DP, f-DP and the independent-trials GDP bounds with their ceilings) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from attacks.whitebox_audit import WhiteBoxAuditConfig, run_whitebox_audit
from attacks.whitebox_benchmark import calibrate_z

__all__ = ["main"]


def _row(cfg: WhiteBoxAuditConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    d = run_whitebox_audit(config=cfg).to_dict()
    f = d["fdp_one_run"]
    return {
        "mode": cfg.mode,
        "noise_factor": cfg.noise_factor,
        "seed": cfg.seed,
        "accountant": d["accountant_epsilon"],
        "eps_dp": d["one_run"]["epsilon"],
        "eps_dp_ceiling": d["one_run"]["ceiling"],
        "fdp": f["epsilon"],
        "fdp_mu": f["mu"],
        "fdp_ceiling": f["ceiling_epsilon"],
        "gdp": d["gdp"]["epsilon"],
        "gdp_ceiling": d["gdp"]["ceiling_epsilon"],
        "violation": d["violation"],
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--canaries", type=int, default=4000)
    args = p.parse_args(argv)
    z = calibrate_z(target=args.epsilon)
    common: dict[str, Any] = {
        "noise_multiplier": z,
        "num_canaries": args.canaries,
        "dim": 4096 if args.canaries <= 4000 else args.canaries + 96,
        "background": 16,
        "reference_runs": 0,
        "fdp_one_run": True,
    }
    rows = [_row(WhiteBoxAuditConfig(mode="record", seed=s, **common)) for s in args.seeds]
    rows += [
        _row(WhiteBoxAuditConfig(mode=mode, seed=0, noise_factor=0.5, **common))
        for mode in ("record", "episode", "client", "distributed")
    ]
    for r in rows:
        print(
            f"{r['mode']:11s} noise x{r['noise_factor']:g} seed {r['seed']}: "
            f"accountant {r['accountant']:.2f}  "
            f"eps-DP {r['eps_dp']:.2f}/{r['eps_dp_ceiling']:.2f}  f-DP {r['fdp']:.2f} (mu {r['fdp_mu']:.3f})/"
            f"{r['fdp_ceiling']:.2f}  GDP {r['gdp']:.2f}/{r['gdp_ceiling']:.2f}  violation {r['violation']}  "
            f"{r['seconds']:.1f} s",
            flush=True,
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
