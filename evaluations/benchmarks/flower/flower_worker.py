"""A persistent Flower process: one round of its reference benchmark per request; run in Flower's interpreter.

Usage: ``flower_worker.py BENCH``. It prints ``{"ready": true}`` once ``bench.py`` is loaded, then
reads one JSON request per line (``n``, ``dim``, ``label``, ``dropped``), runs that round and
answers with one JSON line (``total_s``, ``wall_s``, ``cpu_s``, ``max_abs_err``), so that Flower's
rounds and the project's can alternate under the same machine load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flower_rounds import load_bench, timed_round


def main(argv: list[str]) -> None:
    """Serve rounds on stdin/stdout until stdin closes."""
    bench = load_bench(Path(argv[0]))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        rec = timed_round(
            bench, n=int(req["n"]), dim=int(req["dim"]), label=str(req["label"]), n_drop=int(req["dropped"])
        )
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
