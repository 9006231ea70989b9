"""Flower's side of the secure-aggregation benchmark: finding its reference benchmark and running it.

Flower (``flwr``) is not a dependency of the project: its reference benchmark ``bench.py`` runs in
the interpreter of a virtual environment that has it (``--flower-python``), through the scripts of
``evaluations/benchmarks/flower/`` (real files, outside the installed package; see their README).
The reference benchmark is not shipped with the repository: ``--flower-bench`` names it, by default
``anchors/flower_secagg/bench.py`` under :func:`evaluations.benchmarks.shared_dir`
(:func:`resolve_flower_bench` says what to do when it is absent). Three ways to run it:
:func:`run_flower` (its own script, lines parsed), :func:`run_flower_harness` (every setting, with
CPU time) and :class:`FlowerWorker` (one round per request, to alternate with ours).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path

from evaluations.benchmarks import SHARED_ENV, shared_dir
from evaluations.errors import EvaluationError

__all__ = [
    "FLOWER_ERR_TOL",
    "FLOWER_SCRIPTS",
    "FlowerSetupError",
    "FlowerWorker",
    "default_flower_bench",
    "flower_script",
    "resolve_flower_bench",
    "run_flower",
    "run_flower_harness",
]

FLOWER_ERR_TOL = 1e-2  # Flower's own quantisation error is ~1e-4 at these settings
#: The scripts that run in Flower's interpreter (not part of the installed package; see its README).
FLOWER_SCRIPTS = Path(__file__).resolve().parent / "flower"


class FlowerSetupError(EvaluationError, FileNotFoundError):
    """Flower's side of the comparison cannot run: its reference benchmark or our scripts are missing."""


def default_flower_bench() -> Path:
    """Where Flower's reference benchmark is looked for when ``--flower-bench`` is not given.

    Returns:
        ``anchors/flower_secagg/bench.py`` under :func:`evaluations.benchmarks.shared_dir`
        (``$SECFED_SHARED``, or the folder ``shared`` beside the repository).
    """
    return shared_dir() / "anchors" / "flower_secagg" / "bench.py"


def resolve_flower_bench(path: Path | None) -> Path:
    """The reference benchmark to run: ``path``, or :func:`default_flower_bench` when ``None``.

    Args:
        path: ``--flower-bench``, if given.

    Returns:
        The existing file.

    Raises:
        FlowerSetupError: The file does not exist (the message says how to name it).
    """
    bench = default_flower_bench() if path is None else path
    if not bench.is_file():
        how = (
            f"set ${SHARED_ENV} to the folder holding anchors/flower_secagg/bench.py or pass --flower-bench"
            if path is None
            else "pass the path of Flower's reference benchmark with --flower-bench"
        )
        raise FlowerSetupError(f"Flower's reference benchmark {bench} does not exist: {how}")
    return bench


def flower_script(name: str) -> Path:
    """A script of ``flower/`` that runs in Flower's interpreter.

    Raises:
        FlowerSetupError: It is missing (an installed copy without the repository's ``flower/``).
    """
    path = FLOWER_SCRIPTS / name
    if not path.is_file():
        raise FlowerSetupError(f"{path} is missing: run the benchmark from a checkout of the repository")
    return path


_FLOWER_LINE = re.compile(
    r"^(?P<label>SecAgg \(full graph\)|SecAgg\+ \(k=(?P<k>\d+)\))\s+"
    r"n=\s*(?P<n>\d+)\s+drop=\s*(?P<drop>\d+)\s+total=\s*(?P<total>[\d.]+)s"
)


def _count_wrong(wrong: dict[str, int], key: tuple[str, int, bool]) -> None:
    """Count a finished Flower round whose aggregate is wrong (not a valid timing) under its setting."""
    name = f"{key[0]}/n={key[1]}/drop={key[2]}"
    wrong[name] = wrong.get(name, 0) + 1


def _process_record(
    *,
    cmd: list[str],
    proc: subprocess.CompletedProcess[str],
    t0: float,
    wrong: dict[str, int],
    rounds: dict[tuple[str, int, bool], float],
) -> dict:
    """What a finished Flower process leaves for the report."""
    return {
        "wrong_aggregates": wrong,
        "cmd": cmd,
        "returncode": proc.returncode,
        "stdout": proc.stdout,
        "stderr_tail": proc.stderr[-4000:],
        "wall_s": time.perf_counter() - t0,
        "rounds": rounds,
    }


def run_flower(*, python: str, bench: Path, dim: int, clients: list[int], timeout: float) -> dict:
    """Run Flower's benchmark in its own interpreter and parse its per-round totals.

    Returns:
        ``{"stdout": ..., "rounds": {(label, n, dropped?): seconds}}`` (keys as strings in JSON).
    """
    cmd = [python, str(bench), "--dim", str(dim), "--clients", *map(str, clients)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    rounds: dict[tuple[str, int, bool], float] = {}
    wrong: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        mt = _FLOWER_LINE.match(line.strip())
        if mt:
            label = "full" if mt.group("label").startswith("SecAgg (") else f"k{mt.group('k')}"
            key = (label, int(mt.group("n")), int(mt.group("drop")) > 0)
            err = re.search(r"max\|err\|=(\S+)", line)
            if err is not None and float(err.group(1)) > FLOWER_ERR_TOL:
                _count_wrong(wrong, key)
                continue
            rounds[key] = float(mt.group("total"))
    return _process_record(cmd=cmd, proc=proc, t0=t0, wrong=wrong, rounds=rounds)


def run_flower_harness(
    *,
    python: str,
    bench: Path,
    dim: int,
    clients: list[int],
    timeout: float,
    repeats: int = 3,
    only: tuple[str, bool] | None = None,
) -> dict:
    """Run Flower's ``run_protocol`` per setting in its interpreter, with wall and CPU times.

    The settings are Flower's own benchmark's (``flower/flower_harness.py``).

    Settings whose round takes under 20 s are repeated ``repeats`` times; the best valid one is
    kept (rounds whose aggregate is wrong are counted in ``wrong_aggregates`` and excluded).

    Args:
        python: Flower's interpreter.
        bench: Path of Flower's ``bench.py``.
        dim: Vector length.
        clients: Client counts.
        timeout: Seconds before giving up.
        repeats: Repetitions of fast settings.
        only: ``(label, dropped?)`` to run a single setting (label ``full`` or ``k9``).

    Returns:
        ``{"rounds": {(label, n, dropped?): wall s}, "cpu": {(...): CPU s}, ...}``.
    """
    cmd = [python, str(flower_script("flower_harness.py")), str(bench), str(dim), "0.2"]
    cmd.append(",".join(map(str, clients)))
    cmd += [str(repeats), "20"]
    if only is not None:
        cmd += [only[0], str(int(only[1]))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    rounds: dict[tuple[str, int, bool], float] = {}
    cpu: dict[tuple[str, int, bool], float] = {}
    wrong: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            key = (rec["label"], int(rec["n"]), int(rec["dropped"]) > 0)
            if float(rec["max_abs_err"]) > FLOWER_ERR_TOL:
                # Flower finished the round but its aggregate is wrong (e.g. a dropped client's
                # mask could not be removed); such a round is not a valid timing
                _count_wrong(wrong, key)
                continue
            rounds[key] = min(rounds.get(key, math.inf), float(rec["total_s"]))
            cpu[key] = min(cpu.get(key, math.inf), float(rec["cpu_s"]))
    return {**_process_record(cmd=cmd, proc=proc, t0=t0, wrong=wrong, rounds=rounds), "cpu": cpu}


class FlowerWorker:
    """Flower's reference benchmark in its own interpreter, one round per request.

    A persistent process (``flower/flower_worker.py``) that runs one round of Flower's own
    ``bench.run_protocol`` per request and answers with its time, so that Flower's rounds and ours
    can alternate and see the same machine load (these machines are shared and their speed drifts).

    Args:
        python: Interpreter of a virtual environment with ``flwr``.
        bench: Path of Flower's ``bench.py`` (:func:`default_flower_bench`).
        timeout: Seconds to wait for the worker to start (one round may take longer).

    Raises:
        RuntimeError: If the worker does not start.
    """

    def __init__(self, *, python: str, bench: Path, timeout: float = 300.0) -> None:
        self._proc = subprocess.Popen(
            [python, str(flower_script("flower_worker.py")), str(bench)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._proc.stdout.readline() if self._proc.stdout is not None else ""
        if not line.startswith('{"ready"'):
            err = self._proc.stderr.read()[-2000:] if self._proc.stderr is not None else ""
            self.close()
            raise RuntimeError(f"Flower worker did not start: {line!r} {err}")

    def round(self, *, label: str, n: int, dim: int, dropped: int) -> dict[str, float]:
        """Run one Flower round.

        Args:
            label: ``full`` (SecAgg) or ``k9`` (SecAgg+ with Flower's num_shares=9).
            n: Clients.
            dim: Vector length.
            dropped: Clients dropped after the share-keys stage.

        Returns:
            ``total_s`` (Flower's own timing of the round), ``wall_s``, ``cpu_s``, ``max_abs_err``.

        Raises:
            RuntimeError: If the worker died.
        """
        assert self._proc.stdin is not None and self._proc.stdout is not None
        req = {"label": label, "n": n, "dim": dim, "dropped": dropped}
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read()[-2000:] if self._proc.stderr is not None else ""
            raise RuntimeError(f"Flower worker exited: {err}")
        return {k: float(v) for k, v in json.loads(line).items()}

    def close(self) -> None:
        """Stop the worker."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
