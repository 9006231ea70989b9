"""One timed round of Flower's reference SecAgg/SecAgg+ benchmark; run in Flower's interpreter.

Shared by :mod:`flower_harness` and :mod:`flower_worker` (same folder, which Python puts first on
``sys.path`` when it runs either as a script). ``bench`` is Flower's reference ``bench.py``
(``run_protocol(n, dim, num_shares, threshold, n_drop)`` returning ``total_s`` and
``max_abs_err``), loaded from the path the project's benchmark passes.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from types import ModuleType


def load_bench(path: Path) -> ModuleType:
    """Import Flower's ``bench.py`` from ``path`` and set it up as its own ``main`` does.

    Args:
        path: The file ``bench.py`` (Flower's reference benchmark, or a stand-in of that name).

    Returns:
        The module.
    """
    sys.path.insert(0, str(path.parent))
    import bench

    bench.FLOWER_LOGGER.setLevel(logging.WARNING)
    bench.TaskIdentity.run_id = 1
    bench.TaskIdentity.task_id = 1
    bench.TaskIdentity.node_id = 0
    return bench


def neighbours(n: int) -> int:
    """Flower's SecAgg+ neighbourhood in its own benchmark: every client up to 10, else 9."""
    return n if n <= 10 else 9


def settings(label: str, n: int) -> tuple[float, float]:
    """``(num_shares, threshold)`` of a label: ``full`` (SecAgg, fractions of n) or ``k<k>``."""
    return (1.0, 0.5) if label == "full" else (neighbours(n), 5)


def timed_round(bench: ModuleType, *, n: int, dim: int, label: str, n_drop: int) -> dict[str, float]:
    """Run one round; Flower's own total, our wall and process CPU time, the aggregate's error."""
    num_shares, threshold = settings(label, n)
    c0, w0 = time.process_time(), time.perf_counter()
    r = bench.run_protocol(n, dim, num_shares, threshold, n_drop)
    return {
        "total_s": r["total_s"],
        "wall_s": time.perf_counter() - w0,
        "cpu_s": time.process_time() - c0,
        "max_abs_err": r["max_abs_err"],
    }
