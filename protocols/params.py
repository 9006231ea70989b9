"""Protocol parameters: user configuration, validation and the choice of k and t.

SecAgg (Bonawitz et al., CCS 2017) uses the complete graph. SecAgg+ (Bell et al., CCS 2020)
uses a k-regular Harary graph over a random permutation of the clients and t-of-(k+1) Shamir
shares over each client's closed neighbourhood. Following Bell et al. and the parameter search
of Google's reference implementation, k and t are chosen so that, with ``n_C = ceil(gamma n)``
corrupt and ``n_D = ceil(delta n)`` dropped clients placed uniformly at random:

* the graph of honest survivors stays connected except with probability < 2^-(sigma+1): a
  disconnecting set must contain k/2 consecutive ring positions in two disjoint places, so
  ``P <= n (n - k - 1) / 2 * C(n_C + n_D, k) / C(n, k)`` (union bound over gap pairs);
* no honest client has ``t`` or more corrupt neighbours except with probability 2^-(sigma+1)/n
  (hypergeometric upper tail, n - 1 others of which n_C are corrupt);
* every client keeps at least ``t`` surviving neighbours except with probability 2^-eta/n
  (hypergeometric lower tail, n - 1 others of which n_D dropped).

Defaults sigma = 40, eta = 20. The smallest even k for which some t works is taken, with the
smallest such t; if none below n - 1 works, the complete graph is used. In the active-adversary
variant two sets of t signers in a closed neighbourhood must share an honest client, so
``2t > k + 1 + c`` (with the complete graph: ``t >= floor((n + n_C)/2) + 1``). Full-graph SecAgg
additionally uses a majority threshold ``t >= floor(n/2) + 1`` by default.

All tail probabilities are computed exactly with integer binomials, not floating point. Their
cost grows with n and k (about n^3 for a search over every k), so n and the degree of a
non-complete graph are capped (:data:`DEFAULT_MAX_N`, :data:`DEFAULT_MAX_K`, configurable per
:class:`SecAggConfig`) and the caps are checked before any tail is computed: a server cannot make
a client burn CPU by announcing a huge round.

``dropout_rate`` is the designed *bound*: at most ``n_D = ceil(delta n)`` clients drop (Bell et
al.'s assumption, as in Google's parameter finder). The protocol enforces it: in a non-complete
graph the clients refuse to release shares, and the server aborts, when more than ``n_D`` of the
selected clients are missing from U3 or U3's induced graph is disconnected
(:func:`protocols.graph.check_survivor_graph`). When clients drop independently at a *rate* p,
size the bound from the binomial tail with :func:`dropout_bound` (the smallest d with
P(Binomial(n, p) > d) <= 2^-eta) and pass ``delta = d / n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from protocols.errors import ProtocolConfigError, ProtocolError

__all__ = [
    "Mode",
    "SecAggConfig",
    "SecAggParams",
    "resolve_params",
    "check_config_fields",
    "MAX_CLIENT_ID",
    "DEFAULT_MAX_N",
    "DEFAULT_MAX_K",
    "check_limits",
    "dropout_bound",
    "round_protocol_config",
]

Mode = Literal["secagg", "secagg+"]
MAX_CLIENT_ID = 2**32 - 2  # 2**32 - 1 is the server's id on the wire
#: Largest number of clients a session accepts by default (resolving (k, t) at this n costs
#: at most a few seconds on the server and well under a second to check on a client).
DEFAULT_MAX_N = 10_000
#: Largest degree of a non-complete (SecAgg+) graph accepted by default: checking one (n, k) costs
#: O(k) big-integer binomials of size n (about 0.07 s at n = 10,000, k = 512 on a 2-core machine).
DEFAULT_MAX_K = 512


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """User-facing configuration of secure aggregation.

    Attributes:
        mode: ``"secagg"`` (complete graph) or ``"secagg+"`` (Harary graph).
        n: Number of selected clients; ``None`` means "take it from the server" (client side).
        k: Neighbours per client (even for SecAgg+; ``n - 1`` means the complete graph);
            ``None`` derives it.
        t: Shamir threshold (shares are t-of-(k+1)); ``None`` derives it.
        bits: Arithmetic modulo ``2**bits`` (1..64); ``None`` accepts the server's value
            (client side only).
        active: Active-adversary variant: Ed25519-signed keys and the consistency check.
        corrupt_fraction: Assumed fraction gamma of corrupt clients colluding with the server.
        dropout_rate: Assumed fraction delta of clients that drop out during the round.
        security_bits: sigma, the statistical security target 2^-sigma.
        correctness_bits: eta, the failure-probability target 2^-eta.
        max_n: Largest n this party accepts (checked before any expensive computation; not sent
            on the wire: each party applies its own cap).
        max_k: Largest degree of a non-complete graph this party accepts (likewise).
    """

    mode: Mode = "secagg+"
    n: int | None = None
    k: int | None = None
    t: int | None = None
    bits: int | None = 32
    active: bool = False
    corrupt_fraction: float = 0.05
    dropout_rate: float = 0.1
    security_bits: int = 40
    correctness_bits: int = 20
    max_n: int = DEFAULT_MAX_N
    max_k: int = DEFAULT_MAX_K

    def resolve(self, *, n: int | None = None) -> SecAggParams:
        """Validate and fill in ``k`` and ``t``.

        Args:
            n: Number of clients if :attr:`n` is ``None`` (must agree with it otherwise).

        Returns:
            The resolved parameters.

        Raises:
            ProtocolConfigError: On invalid, insecure or infeasible settings (the message says which).
        """
        if n is not None and self.n is not None and n != self.n:
            raise ProtocolConfigError(f"n={n} disagrees with the configured n={self.n}")
        cfg = self if n is None else replace(self, n=n)
        return resolve_params(cfg)


@dataclass(frozen=True, kw_only=True)
class SecAggParams:
    """Resolved, validated parameters of one aggregation.

    Attributes:
        mode: ``"secagg"`` or ``"secagg+"``.
        n: Number of clients.
        k: Neighbours per client (``n - 1`` for the complete graph).
        t: Shamir threshold over the closed neighbourhood (k + 1 shares).
        bits: Modulus bit width.
        active: Active-adversary variant.
        corrupt_fraction: gamma.
        dropout_rate: delta.
        n_corrupt: ``ceil(gamma n)``.
        n_dropout: ``ceil(delta n)``.
        log2_disconnect: log2 of the bound on P(honest-survivor graph disconnected).
        log2_corrupt_tail: log2 of the bound on P(some honest client has >= t corrupt neighbours).
        log2_failure: log2 of the bound on P(some client has < t surviving neighbours).
    """

    mode: Mode
    n: int
    k: int
    t: int
    bits: int
    active: bool
    corrupt_fraction: float
    dropout_rate: float
    n_corrupt: int
    n_dropout: int
    log2_disconnect: float
    log2_corrupt_tail: float
    log2_failure: float

    @property
    def complete_graph(self) -> bool:
        """Whether every client neighbours every other client."""
        return self.k >= self.n - 1


# --------------------------------------------------------------------------- exact tails
def _log2_ratio(num: int, den: int) -> float:
    if num == 0:
        return -math.inf
    return math.log2(num) - math.log2(den)


@lru_cache(maxsize=4096)
def _upper_tails(population: int, successes: int, draws: int) -> tuple[tuple[int, ...], int]:
    """Numerators of ``P(X >= x)`` for x = 0..draws+1 and the common denominator C(N, draws)."""
    pmf = [math.comb(successes, j) * math.comb(population - successes, draws - j) for j in range(draws + 1)]
    tails = [0] * (draws + 2)
    for j in range(draws, -1, -1):
        tails[j] = tails[j + 1] + pmf[j]
    return tuple(tails), math.comb(population, draws)


def _corrupt_threshold(n: int, k: int, n_corrupt: int, sigma: int) -> tuple[int, float]:
    """Smallest c with P(#corrupt neighbours > c) <= 2^-(sigma+1)/n; also log2 P(> c)."""
    tails, den = _upper_tails(n - 1, min(n_corrupt, n - 1), k)
    for c in range(k + 1):
        if tails[c + 1] * n * 2 ** (sigma + 1) <= den:
            return c, _log2_ratio(tails[c + 1] * n, den)
    return k, -math.inf  # unreachable: P(X > k) = 0


def _survivor_threshold(n: int, k: int, n_dropout: int, eta: int) -> int:
    """Largest s with P(#surviving neighbours < s) <= 2^-eta/n (-1 if none)."""
    tails, den = _upper_tails(n - 1, min(n_dropout, n - 1), k)
    best = -1
    for s in range(k + 2):
        # surviving < s  <=>  dropped neighbours >= k - s + 1
        j = k - s + 1
        num = tails[j] if 0 <= j <= k + 1 else tails[0]
        if num * n * 2**eta <= den:
            best = s
    return best


def _log2_failure(n: int, k: int, n_dropout: int, t: int) -> float:
    if k >= n - 1:
        return -math.inf if n - min(n_dropout, n) >= t else 0.0
    tails, den = _upper_tails(n - 1, min(n_dropout, n - 1), k)
    j = k - t + 1
    num = tails[j] if 0 <= j <= k + 1 else tails[0]
    return _log2_ratio(num * n, den)


def _log2_disconnect(n: int, k: int, n_bad: int) -> float:
    if k >= n - 1 or k > n_bad:
        return -math.inf
    return _log2_ratio(n * (n - k - 1) * math.comb(n_bad, k), 2 * math.comb(n, k))


def _min_threshold(*, mode: Mode, n: int, k: int, c: int, active: bool) -> int:
    t = max(c + 1, 2)
    if active:
        t = max(t, (k + 1 + c) // 2 + 1)
    if mode == "secagg":
        t = max(t, n // 2 + 1)
    return t


def check_config_fields(cfg: SecAggConfig) -> None:
    """Validate the fields of a configuration that do not depend on ``n``.

    Args:
        cfg: The configuration.

    Raises:
        ProtocolConfigError: On an invalid mode, bit width, fraction or target.
    """
    if cfg.mode not in ("secagg", "secagg+"):
        raise ProtocolConfigError(f"mode must be 'secagg' or 'secagg+', got {cfg.mode!r}")
    if not isinstance(cfg.active, bool):
        raise ProtocolConfigError(f"active must be a bool, got {cfg.active!r}")
    if cfg.n is not None and (
        isinstance(cfg.n, bool) or not isinstance(cfg.n, int) or not 2 <= cfg.n <= MAX_CLIENT_ID + 1
    ):
        raise ProtocolConfigError(f"n must be an integer in [2, 2^32 - 1], got {cfg.n!r}")
    if cfg.bits is not None and (
        isinstance(cfg.bits, bool) or not isinstance(cfg.bits, int) or not 1 <= cfg.bits <= 64
    ):
        raise ProtocolConfigError(f"bits must be in [1, 64], got {cfg.bits!r}")
    for name in ("corrupt_fraction", "dropout_rate"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v < 1):
            raise ProtocolConfigError(f"{name} must be in [0, 1), got {v!r}")
    if cfg.corrupt_fraction + cfg.dropout_rate >= 1:
        raise ProtocolConfigError(
            f"corrupt_fraction + dropout_rate must be < 1, got {cfg.corrupt_fraction + cfg.dropout_rate}"
        )
    if not 1 <= cfg.security_bits <= 255 or not 1 <= cfg.correctness_bits <= 255:
        raise ProtocolConfigError("security_bits and correctness_bits must be in [1, 255]")
    for name in ("max_n", "max_k"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ProtocolConfigError(f"{name} must be an integer >= 2, got {v!r}")
    for name in ("k", "t"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ProtocolConfigError(f"{name} must be an integer or None, got {v!r}")


def check_limits(cfg: SecAggConfig, *, max_n: int | None = None, max_k: int | None = None) -> None:
    """Refuse a round larger than the caps, in constant time (before any binomial tail).

    Args:
        cfg: The configuration to check (``n`` and ``k`` as announced; ``None`` is not checked).
        max_n: Cap on ``n`` (default ``cfg.max_n``).
        max_k: Cap on the degree of a non-complete graph (default ``cfg.max_k``); the complete
            graph ``k = n - 1`` needs no tail computation and is only bounded through ``n``.

    Raises:
        ProtocolConfigError: If ``n`` or ``k`` exceeds its cap.
    """
    max_n = cfg.max_n if max_n is None else max_n
    max_k = cfg.max_k if max_k is None else max_k
    n, k = cfg.n, cfg.k
    if isinstance(n, int) and n > max_n:
        raise ProtocolConfigError(
            f"n={n} exceeds this party's cap max_n={max_n} (refused before any computation)"
        )
    if isinstance(k, int) and k > max_k and not (isinstance(n, int) and k == n - 1):
        raise ProtocolConfigError(
            f"k={k} exceeds this party's cap max_k={max_k} for a non-complete graph "
            "(refused before any computation)"
        )


def dropout_bound(*, n: int, rate: float, eta: int = 20) -> int:
    """Designed dropout bound for clients that drop independently with probability ``rate``.

    The smallest ``d`` with ``P(Binomial(n, rate) > d) <= 2^-eta``: a round in which more than
    ``d`` clients drop (and which the protocol then aborts) happens with probability at most
    2^-eta. Computed in log space (``math.lgamma``) from the upper end; the result is rounded up
    by treating tails within a relative 1e-9 of the target as above it.

    Args:
        n: Number of clients (``1 <= n <= DEFAULT_MAX_N`` is cheap; the cost is O(n)).
        rate: Per-client dropout probability in ``[0, 1)``.
        eta: Target exponent (default 20, the correctness target).

    Returns:
        ``d`` in ``[0, n]``.

    Raises:
        ProtocolConfigError: On invalid arguments.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProtocolConfigError(f"n must be an integer >= 1, got {n!r}")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 <= rate < 1):
        raise ProtocolConfigError(f"rate must be in [0, 1), got {rate!r}")
    if not 1 <= eta <= 255:
        raise ProtocolConfigError(f"eta must be in [1, 255], got {eta}")
    if rate == 0:
        return 0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    target = -eta * math.log(2) + 1e-9
    lg_n1 = math.lgamma(n + 1)
    tail = -math.inf  # log P(X > d), accumulated from d = n - 1 downwards
    for d in range(n - 1, -1, -1):
        j = d + 1
        log_pmf = lg_n1 - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q
        hi, lo = (tail, log_pmf) if tail > log_pmf else (log_pmf, tail)
        tail = hi + math.log1p(math.exp(lo - hi)) if lo > -math.inf else hi
        if tail > target:
            return d + 1
    return 0


def _check_basic(cfg: SecAggConfig) -> int:
    check_config_fields(cfg)
    if cfg.n is None:
        raise ProtocolConfigError("n (number of clients) must be set to resolve parameters")
    check_limits(cfg)
    n = cfg.n
    if cfg.k is not None:
        if cfg.mode == "secagg" and cfg.k != n - 1:
            raise ProtocolConfigError(
                f"mode 'secagg' uses the complete graph: k must be None or n-1={n - 1}, got {cfg.k}"
            )
        if cfg.mode == "secagg+" and not (cfg.k == n - 1 or (2 <= cfg.k <= n - 2 and cfg.k % 2 == 0)):
            raise ProtocolConfigError(
                f"secagg+ k counts neighbours and must be even in [2, n-2] or equal n-1={n - 1}, got {cfg.k} "
                "(Flower's num_shares=9 corresponds to k=8)"
            )
    return n


def _evaluate(cfg: SecAggConfig, n: int, k: int, n_c: int, n_d: int) -> tuple[int, int, int, float]:
    """For a degree k: (t_min, t_max, c, log2 corrupt tail); t_max < t_min means infeasible."""
    if k >= n - 1:  # complete graph: counts are deterministic; a dropped client's n_d - 1 fellow
        # dropouts and a survivor's own share both leave n - n_d share holders
        c, log2_c, s = min(n_c, n - 1), -math.inf, n - min(n_d, n)
    else:
        c, log2_c = _corrupt_threshold(n, k, n_c, cfg.security_bits)
        s = _survivor_threshold(n, k, n_d, cfg.correctness_bits)
    t_min = _min_threshold(mode=cfg.mode, n=n, k=k, c=c, active=cfg.active)
    return t_min, min(s, k + 1), c, log2_c


@lru_cache(maxsize=256)
def resolve_params(cfg: SecAggConfig) -> SecAggParams:
    """Validate a configuration and derive ``k`` and ``t`` where not given (cached).

    Args:
        cfg: The configuration (``n`` must be set; ``bits`` may be ``None`` only when only graph
            parameters are needed, it is then reported as 0).

    Returns:
        The resolved parameters.

    Raises:
        ProtocolConfigError: On invalid values, a user-given (k, t) that misses the security or
            correctness target, or when no (k, t) meets the targets.
    """
    n = _check_basic(cfg)
    n_c = math.ceil(cfg.corrupt_fraction * n - 1e-12)
    n_d = math.ceil(cfg.dropout_rate * n - 1e-12)
    sigma = cfg.security_bits
    candidates: list[int]
    if cfg.k is not None:
        candidates = [cfg.k]
    elif cfg.mode == "secagg":
        candidates = [n - 1]
    else:
        candidates = [*range(2, min(n - 1, cfg.max_k + 1), 2), n - 1]
    reasons = []
    for k in candidates:
        log2_dis = _log2_disconnect(n, k, n_c + n_d)
        if log2_dis >= -(sigma + 1):
            reasons.append(
                f"k={k}: the honest-survivor graph disconnects with probability 2^{log2_dis:.1f} "
                f"(target < 2^-{sigma + 1})"
            )
            continue
        t_min, t_max, c, log2_c = _evaluate(cfg, n, k, n_c, n_d)
        if cfg.t is not None:
            t = cfg.t
            if not 2 <= t <= k + 1:
                raise ProtocolConfigError(f"t must be in [2, k+1={k + 1}], got {t}")
            if t < t_min:
                why = (
                    "active mode needs 2t > k + 1 + corrupt neighbours"
                    if cfg.active
                    else (
                        "t must exceed the corrupt-neighbour bound"
                        + (" and be a majority" if cfg.mode == "secagg" else "")
                    )
                )
                raise ProtocolConfigError(
                    f"t={t} is below the secure minimum {t_min} for n={n}, k={k}, "
                    f"corrupt_fraction={cfg.corrupt_fraction} ({why}; up to {c} corrupt neighbours)"
                )
            if t > t_max:
                raise ProtocolConfigError(
                    f"t={t} exceeds {t_max}, the number of surviving neighbours guaranteed with "
                    f"probability 1 - 2^-{cfg.correctness_bits}/n at dropout_rate={cfg.dropout_rate}"
                )
        else:
            if t_max < t_min:
                reasons.append(f"k={k}: need t >= {t_min} but only {t_max} neighbours surely survive")
                continue
            t = t_min
        return SecAggParams(
            mode=cfg.mode,
            n=n,
            k=k,
            t=t,
            bits=cfg.bits if cfg.bits is not None else 0,
            active=cfg.active,
            corrupt_fraction=float(cfg.corrupt_fraction),
            dropout_rate=float(cfg.dropout_rate),
            n_corrupt=n_c,
            n_dropout=n_d,
            log2_disconnect=log2_dis,
            log2_corrupt_tail=log2_c if t == c + 1 else _log2_corrupt_tail(n, k, n_c, t),
            log2_failure=_log2_failure(n, k, n_d, t),
        )
    raise ProtocolConfigError(
        f"no (k, t) meets 2^-{sigma} security and 2^-{cfg.correctness_bits} correctness for n={n}, "
        f"corrupt_fraction={cfg.corrupt_fraction}, dropout_rate={cfg.dropout_rate}, active={cfg.active}: "
        + "; ".join(reasons[-3:])
    )


def _log2_corrupt_tail(n: int, k: int, n_c: int, t: int) -> float:
    if k >= n - 1:
        return -math.inf if min(n_c, n - 1) < t else 0.0
    tails, den = _upper_tails(n - 1, min(n_c, n - 1), k)
    return _log2_ratio(tails[min(t, k + 1)] * n, den)


def round_protocol_config(
    *,
    mode: Mode,
    n: int,
    k: int | None,
    t: int | None,
    bits: int | None,
    active: bool,
    corrupt_fraction: float,
    dropout_rate: float,
) -> SecAggConfig:
    """The protocol configuration of one round of ``n`` clients (server and clients agree on it).

    ``secagg``: the configured rate is passed through (the complete graph is immune to split
    survivor graphs; its thresholds alone decide). ``secagg+``: the protocol's designed bound is
    ``d / n`` with ``d = dropout_bound(n, dropout_rate, 2^-20)``, so the dropout count exceeds it
    (and the round aborts) with probability at most 2^-20. If no (k, t) meets the targets at that
    bound and ``k`` was not given, the complete graph (``k = n - 1``) at the configured rate is
    used instead.

    Args:
        mode: ``"secagg"`` or ``"secagg+"``.
        n: Number of clients in the round.
        k: Configured degree (``None`` derives it).
        t: Configured threshold (``None`` derives it).
        bits: Modulus bits (``None`` when only the graph parameters are needed).
        active: Active-adversary variant.
        corrupt_fraction: Assumed corrupt fraction.
        dropout_rate: Per-client dropout probability.

    Returns:
        The configuration, with ``n`` set.

    Raises:
        protocols.ProtocolConfigError: If ``n`` or ``k`` exceeds the protocol's caps (checked first, in
            constant time) or the configured ``k`` / ``t`` miss the targets.
    """
    base = SecAggConfig(
        mode=mode,
        n=n,
        k=k,
        t=t,
        bits=bits,
        active=active,
        corrupt_fraction=corrupt_fraction,
        dropout_rate=dropout_rate,
    )
    check_limits(base)
    if mode != "secagg+":
        return base
    if base.resolve().complete_graph:  # configuration errors surface here, as before
        return base  # a complete graph cannot split; its thresholds alone decide
    d = dropout_bound(n=n, rate=dropout_rate, eta=base.correctness_bits)
    reason = f"the designed bound would be {d} of {n} dropouts"
    if d / n + corrupt_fraction < 1:
        sized = replace(base, dropout_rate=d / n)
        try:
            sized.resolve()
            return sized
        except ProtocolError as exc:
            reason = str(exc)
    if k is not None:
        raise ProtocolConfigError(
            f"secagg+ with k={k}: at dropout rate {dropout_rate} the dropout bound is sized from the "
            f"binomial tail (2^-{base.correctness_bits}): {d} of {n} clients; {reason}"
        )
    return replace(base, k=n - 1)
