"""Benchmark of the white-box one-run audit (issue 21 targets): ``python -m attacks.whitebox_benchmark``.

1. Record-level DP-SGD (:class:`privacy.dpsgd.PerSampleDPSGD`, full batch, one step) calibrated to
   accountant ε = 8 at δ = 1e-5 on a d = 4096 vector mechanism with m = 4000 Dirac canaries: the
   one-run ε-DP bound, the GDP bound, their ceilings and the idealised-Gaussian reference, over
   several seeds.
2. The noise cut 2× in every mode at the same claimed ε: detected when a bound exceeds it.

Prints one line per audit and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from attacks.whitebox_audit import WhiteBoxAuditConfig, accountant_epsilon, run_whitebox_audit

__all__ = ["calibrate_z", "main"]


def calibrate_z(*, target: float, delta: float = 1e-5) -> float:
    """The noise multiplier of one full-batch Gaussian step whose RDP-accountant ε is ``target``.

    Args:
        target: The accountant ε.
        delta: δ.

    Returns:
        z (bisection to 1e-9).
    """
    lo, hi = 0.05, 50.0
    for _ in range(80):
        mid = (lo + hi) / 2
        eps = accountant_epsilon(config=WhiteBoxAuditConfig(noise_multiplier=mid, delta=delta))
        lo, hi = (mid, hi) if eps > target else (lo, mid)
    return hi


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: ``--epsilon``, ``--canaries``, ``--dim``, ``--seeds``.

    Returns:
        0.
    """
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--canaries", type=int, default=4000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    z = calibrate_z(target=args.epsilon)
    out: dict[str, Any] = {"z": z, "record": [], "noise_cut_2x": {}}
    base = {"noise_multiplier": z, "num_canaries": args.canaries, "dim": args.dim, "background": 16}
    for seed in range(args.seeds):
        t = time.perf_counter()
        r = run_whitebox_audit(config=WhiteBoxAuditConfig(mode="record", seed=seed, reference_runs=5, **base))
        d = r.to_dict()
        row = {
            "seed": seed,
            "accountant": d["accountant_epsilon"],
            "eps_dp": d["one_run"]["epsilon"],
            "eps_dp_ceiling": d["one_run"]["ceiling"],
            "eps_dp_ideal": d["idealised_gaussian"]["one_run_epsilon_median"],
            "gdp_mu": d["gdp"]["mu"],
            "gdp_eps": d["gdp"]["epsilon"],
            "gdp_ceiling": d["gdp"]["ceiling_epsilon"],
            "gdp_ideal": d["idealised_gaussian"]["gdp_epsilon_median"],
            "seconds": time.perf_counter() - t,
        }
        out["record"].append(row)
        print("record", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    for mode in ("record", "episode", "client", "distributed"):
        r = run_whitebox_audit(
            config=WhiteBoxAuditConfig(mode=mode, noise_factor=0.5, reference_runs=0, **base)
        )
        d = r.to_dict()
        row = {
            "accountant": d["accountant_epsilon"],
            "eps_dp": d["one_run"]["epsilon"],
            "gdp_eps": d["gdp"]["epsilon"],
            "detected": d["violation"],
        }
        out["noise_cut_2x"][mode] = row
        print(
            "noise cut 2x",
            mode,
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
        )
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
