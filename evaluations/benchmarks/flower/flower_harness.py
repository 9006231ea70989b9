"""Flower's reference rounds for a list of settings, one JSON line per round; run in Flower's interpreter.

Usage: ``flower_harness.py BENCH DIM DROP_FRACTION N1,N2,.. REPEATS REPEAT_BELOW_S [LABEL [DROPPED]]``.
For every client count: the full graph (``full``) and, when Flower's neighbourhood is smaller than
n, SecAgg+ (``k9``); without and with ``DROP_FRACTION`` of the clients dropped after share-keys.
A setting is repeated ``REPEATS`` times while its round takes under ``REPEAT_BELOW_S`` seconds.
``LABEL`` / ``DROPPED`` (0 or 1) select one setting.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flower_rounds import load_bench, neighbours, timed_round


def main(argv: list[str]) -> None:
    """Run the settings named by ``argv`` (see the module docstring)."""
    bench = load_bench(Path(argv[0]))
    dim, drop_frac = int(argv[1]), float(argv[2])
    clients = [int(c) for c in argv[3].split(",")]
    repeats, repeat_below_s = int(argv[4]), float(argv[5])
    only_label = argv[6] if len(argv) > 6 else None
    only_drop = bool(int(argv[7])) if len(argv) > 7 else None
    for n in clients:
        labels = ["full"] + ([f"k{neighbours(n)}"] if neighbours(n) < n else [])
        for label in labels:
            if only_label is not None and label != only_label:
                continue
            for n_drop in (0, int(n * drop_frac)):
                if only_drop is not None and (n_drop > 0) != only_drop:
                    continue
                for _ in range(repeats):
                    rec = timed_round(bench, n=n, dim=dim, label=label, n_drop=n_drop)
                    print(json.dumps({"label": label, "n": n, "dropped": n_drop, **rec}), flush=True)
                    if rec["total_s"] >= repeat_below_s:
                        break


if __name__ == "__main__":
    main(sys.argv[1:])
