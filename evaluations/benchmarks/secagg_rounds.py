"""The secure-aggregation benchmark's settings and one simulated round of each.

Every round is simulated in one process (server and all clients, one core): clients quantise a
float32 update of ``m`` coordinates, run their :mod:`protocols` session, and the server unmasks
and decodes. Dropouts happen after the share-keys stage (clients send no masked input), as in
Flower's own benchmark, which exercises the recovery path. :class:`Row` holds what one round
measured; :func:`run_case` keeps the best of several. The command line, the comparison with
Flower and the output are :mod:`evaluations.benchmarks.secagg`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from protocols import (
    ProtocolError,
    SecAggClientSession,
    SecAggConfig,
    SecAggServerSession,
    Stage,
    StochasticQuantizer,
)

__all__ = ["Case", "Row", "best_of", "cases", "measure_round", "run_case"]


@dataclass(frozen=True)
class Case:
    """One benchmark setting."""

    name: str
    mode: str
    n: int
    m: int
    drop: float
    k: int | None = None
    t: int | None = None
    corrupt_fraction: float = 0.05
    dropout_rate: float = 0.2
    security_bits: int = 40
    correctness_bits: int = 20
    flower_key: tuple[str, int, bool] | None = None  # (Flower config label, n, dropped?)


@dataclass
class Row:
    """Measured figures of one case."""

    case: str
    mode: str
    n: int
    k: int
    t: int
    bits: int
    m: int
    dropped: int
    wall_s: float
    cpu_s: float
    client_mean_ms: float
    server_s: float
    unmask_s: float
    bytes_sent_per_client: float
    bytes_recv_per_client: float
    max_abs_err: float
    err_bound: float
    aborted_attempts: int
    stage_client_s: dict[str, float] = field(default_factory=dict)
    flower_s: float | None = None
    speedup_vs_flower: float | None = None
    flower_cpu_s: float | None = None
    cpu_speedup_vs_flower: float | None = None
    # alternate mode only: medians over all measured rounds of each side, and the rounds counted
    wall_median_s: float | None = None
    flower_median_s: float | None = None
    median_speedup_vs_flower: float | None = None
    rounds_measured: int | None = None
    flower_rounds_measured: int | None = None


def cases(*, quick: bool, dim: int) -> list[Case]:
    """The benchmark settings (see the module docstring)."""
    out: list[Case] = []
    for drop in (0.0, 0.2):
        out.append(
            Case(f"SecAgg n=10 drop={drop:.0%}", "secagg", 10, dim, drop, flower_key=("full", 10, drop > 0))
        )
        if not quick:
            out.append(
                Case(
                    f"SecAgg n=50 drop={drop:.0%}", "secagg", 50, dim, drop, flower_key=("full", 50, drop > 0)
                )
            )
        # Flower's num_shares=9 = 8 neighbours + the client itself, threshold 5; valid only under
        # the assumption of no corruption and no dropout (it is not 2^-40 secure at 5 % / 20 %).
        # The protocol refuses to unmask beyond its designed dropout bound, so with 20 % dropout
        # the bound must admit the 10 drops: k = 8 then validates only at 2^-12 security, and
        # t = 4 (t = 5 cannot be validated with 10 dropouts at any correctness target).
        out.append(
            Case(
                f"SecAgg+ n=50 k=8 (Flower k=9) drop={drop:.0%}",
                "secagg+",
                50,
                dim,
                drop,
                k=8,
                t=5 if drop == 0 else 4,
                corrupt_fraction=0.0,
                dropout_rate=drop,
                security_bits=40 if drop == 0 else 12,
                correctness_bits=20 if drop == 0 else 1,
                flower_key=("k9", 50, drop > 0),
            )
        )
        out.append(Case(f"SecAgg+ n=50 derived drop={drop:.0%}", "secagg+", 50, dim, drop))
        out.append(Case(f"SecAgg+ n=100 derived drop={drop:.0%}", "secagg+", 100, dim, drop))
        if not quick:
            out.append(Case(f"SecAgg+ n=1000 derived drop={drop:.0%}", "secagg+", 1000, dim, drop))
            out.append(Case(f"SecAgg+ n=100 derived m=1M drop={drop:.0%}", "secagg+", 100, 1_000_000, drop))
    return out


def run_case(
    case: Case,
    *,
    clip: float,
    precision_bits: int,
    seed: int,
    max_attempts: int,
    repeats: int,
    quick_s: float,
) -> Row:
    """Measure a setting: the best (minimum wall and minimum CPU time) of ``repeats`` rounds when
    one round takes less than ``quick_s`` seconds, else a single round. Best-of is used because
    the machines are shared; Flower's harness mode measures the same way.

    Args:
        case: The setting.
        clip: Per-coordinate clip range of the float updates.
        precision_bits: Quantisation precision.
        seed: Seed of the synthetic updates and the dropout choice.
        max_attempts: Rounds to try before giving up when rounds abort (only Flower's setting,
            whose (k, t) does not tolerate 20 % dropout reliably, ever aborts).
        repeats: Rounds to measure for fast settings.
        quick_s: Threshold below which a setting counts as fast.

    Returns:
        The measured row (``aborted_attempts`` counts aborts over all measured rounds).
    """
    rows = [
        measure_round(case, clip=clip, precision_bits=precision_bits, seed=seed, max_attempts=max_attempts)
    ]
    if rows[0].wall_s < quick_s:
        for r in range(1, repeats):
            rows.append(
                measure_round(
                    case, clip=clip, precision_bits=precision_bits, seed=seed + r, max_attempts=max_attempts
                )
            )
    return best_of(rows)


def best_of(rows: list[Row]) -> Row:
    """The row of the fastest round, with the lowest CPU time and the aborts of all rounds."""
    best = min(rows, key=lambda r: r.wall_s)
    best.cpu_s = min(r.cpu_s for r in rows)
    best.aborted_attempts = sum(r.aborted_attempts for r in rows)
    return best


def measure_round(case: Case, *, clip: float, precision_bits: int, seed: int, max_attempts: int) -> Row:
    """One successful round (retrying, with fresh dropouts and sessions, if a round aborts)."""
    quant_server = StochasticQuantizer(clip=clip, precision_bits=precision_bits, n_clients=case.n)
    cfg = SecAggConfig(
        mode=case.mode,  # type: ignore[arg-type]
        k=case.k,
        t=case.t,
        bits=quant_server.bits,
        corrupt_fraction=case.corrupt_fraction,
        dropout_rate=case.dropout_rate,
        security_bits=case.security_bits,
        correctness_bits=case.correctness_bits,
    )
    ids = list(range(case.n))
    aborted = 0
    rng = np.random.default_rng(seed)
    while True:
        n_drop = int(case.n * case.drop)
        dropped = set(rng.choice(case.n, size=n_drop, replace=False).tolist()) if n_drop else set()
        try:
            return _one_round(case, cfg, ids, dropped, quant_server, clip, precision_bits, seed, aborted)
        except ProtocolError as exc:
            aborted += 1
            if aborted >= max_attempts:
                raise RuntimeError(f"{case.name}: {aborted} rounds aborted; last error: {exc}") from exc


def _update(u: int, m: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, u]).uniform(-1, 1, m).astype(np.float32)


def _one_round(
    case: Case,
    cfg: SecAggConfig,
    ids: list[int],
    dropped: set[int],
    quant_server: StochasticQuantizer,
    clip: float,
    precision_bits: int,
    seed: int,
    aborted: int,
) -> Row:
    m = case.m
    # the clients' float updates exist before the round starts (as in Flower's benchmark)
    updates = {u: _update(u, m, seed) for u in ids}
    # each client's long-lived encoder (its own OS-seeded rounding generator)
    encoders = {
        u: StochasticQuantizer(
            clip=clip, precision_bits=precision_bits, n_clients=case.n, bits=quant_server.bits
        )
        for u in ids
    }
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    server = SecAggServerSession(config=cfg, round_idx=1, participants=ids, vector_length=m)
    clients = {u: SecAggClientSession(client_id=u, config=cfg, round_idx=1, vector_length=m) for u in ids}
    client_s: dict[str, float] = {}
    server_s = 0.0
    while not server.done:
        stage = server.stage
        t0 = time.perf_counter()
        requests = server.requests()
        server_s += time.perf_counter() - t0
        t_client = 0.0
        for u, req in requests.items():
            if stage >= Stage.COLLECT_MASKED_INPUT and u in dropped:
                continue
            t0 = time.perf_counter()
            value = None
            if stage == Stage.COLLECT_MASKED_INPUT:
                value = encoders[u].encode(x=updates[u])
            response = clients[u].handle(req, value=value)
            t1 = time.perf_counter()
            t_client += t1 - t0
            server.ingest(client_id=u, message=response)  # streamed, as responses arrive
            server_s += time.perf_counter() - t1
        del requests
        client_s[stage.name.lower()] = t_client
        t0 = time.perf_counter()
        server.close_stage()
        server_s += time.perf_counter() - t0
    result = server.result()
    t0 = time.perf_counter()
    decoded = quant_server.decode(total=result.total, n_summed=len(result.survivors))
    server_s += time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    expected = np.zeros(m)
    for u in result.survivors:
        expected += np.clip(updates[u].astype(np.float64), -clip, clip)
    err = float(np.max(np.abs(decoded - expected)))
    bytes_sent = [c.bytes_out for u, c in clients.items() if u in result.survivors]
    bytes_recv = [c.bytes_in for u, c in clients.items() if u in result.survivors]
    return Row(
        case=case.name,
        mode=case.mode,
        n=case.n,
        k=result.params.k,
        t=result.params.t,
        bits=result.params.bits,
        m=m,
        dropped=len(dropped),
        wall_s=wall,
        cpu_s=cpu,
        client_mean_ms=1e3 * sum(client_s.values()) / case.n,
        server_s=server_s,
        unmask_s=float(result.metrics["unmask_s"]),
        bytes_sent_per_client=float(np.mean(bytes_sent)),
        bytes_recv_per_client=float(np.mean(bytes_recv)),
        max_abs_err=err,
        err_bound=len(result.survivors) / 2.0**precision_bits,
        aborted_attempts=aborted,
        stage_client_s=client_s,
    )
