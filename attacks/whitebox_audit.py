"""White-box one-run audit with gradient-space canaries, for every privacy mode of secfed.

Design (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run", NeurIPS,
Sec. 6, white-box "Dirac canaries"): ``m`` canaries, canary ``i`` a gradient (or update) along the
coordinate axis ``e_i`` of a ``d``-dimensional vector mechanism (``m <= d``), each included
independently with probability 1/2 by the auditor's coin. The canaries enter **at the
mechanism's input** and go through the project's own clip-and-noise code:

* ``record`` — :class:`privacy.dpsgd.PerSampleDPSGD` on a linear model ``w ∈ R^d`` with the
  per-record loss ``<w, x>``, so record ``x`` has per-record gradient ``x``: a canary record is
  the Dirac gradient ``s·C·e_i`` (``s`` = :attr:`WhiteBoxAuditConfig.canary_scale`, clipped to
  ``C`` by an honest mechanism). Poisson sampling, Opacus clipping, noise (:mod:`privacy.noise`)
  and the optimiser step are the mechanism's. Excluded canaries are absent (add/remove).
* ``episode`` — :class:`privacy.episodic.EpisodicDPSGD` with the episode loss ``<w, g_e>``: the
  canary episode's meta-gradient is ``+s·C·e_i`` with the canary record and ``-s·C·e_i``
  without it (the worst case of replace-one-episode that the ``2C`` sensitivity covers).
* ``client`` — :class:`privacy.client_dp.DPFedAvgAggregator`: a canary client's update
  ``s·C·e_i`` is clipped to ``C`` and summed with the central noise ``N(0, (zC)² I)``.
* ``distributed`` — :class:`privacy.distributed.DistributedDPEncoder`: every client (canary or
  not) encodes its update with its noise share; an excluded canary encodes zero and still adds
  its noise (zero-out adjacency); the auditor sees only the decoded modular sum.

The observation is only what the threat model grants: each step's released noisy update
(``record``/``episode``: the parameters before and after the step, white-box DP-SGD; ``client``:
the noisy sum; ``distributed``: the decoded aggregate). The score of canary ``i`` is the
log-likelihood ratio of "in" versus "out" of the inner products ``<release_t, e_i>`` under the
*claimed* mechanism (for full batches, their sum). Guesses on the top / bottom scores; bounds:

* ε-DP: :func:`attacks.audit.one_run_audit` (Steinke et al. 2023, proven in one run);
* GDP: :func:`attacks.fdp.gdp_audit` (μ lower bound, canaries as independent trials — realised
  by this design for mechanisms with independent per-coordinate noise), the proven but
  weaker :func:`attacks.fdp.one_run_gdp_audit`, and (``fdp_one_run``) the proven one-run f-DP
  analysis of Mahloujifar, Melis & Chaudhuri 2025, :func:`attacks.fdp.fdp_one_run_audit`;
* the **power** of each: the bound every-guess-right would give with the same ``m`` and guess
  grid (the ceiling), and the same audit of an idealised continuous Gaussian mechanism with the
  same parameters (what this ``m`` achieves at best in expectation);
* the accountant's ε of exactly the audited steps (the project's accountants, told the claimed
  parameters).

Negative controls are configuration fields: ``noise_factor`` (actual / claimed noise),
``clip_factor`` (actual / claimed clip bound, noise still ``z·C``: clipping disabled when large),
``group_size`` (one canary moves that many records / episodes / clients: the sensitivity is
understated ``group_size``-fold, the class of bug that per-record clipping of an episodic loss is).

The configuration and result live in :mod:`attacks.whitebox_config` (re-exported here), the
mechanisms the canaries go through in :mod:`attacks.whitebox_releases`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp

from attacks import audit_common as common
from attacks.audit import one_run_audit
from attacks.fdp import fdp_one_run_audit, gdp_audit, one_run_gdp_audit
from attacks.whitebox_config import MODES, WhiteBoxAuditConfig, WhiteBoxAuditResult
from attacks.whitebox_releases import RELEASES, background_rows, distributed_plan

__all__ = [
    "MODES",
    "WhiteBoxAuditConfig",
    "WhiteBoxAuditResult",
    "accountant_epsilon",
    "idealised_scores",
    "release_scores",
    "run_whitebox_audit",
]

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# accountant
# --------------------------------------------------------------------------------------------------


def _num_clients(cfg: WhiteBoxAuditConfig) -> int:
    return cfg.num_canaries * cfg.group_size + cfg.background


def accountant_epsilon(*, config: WhiteBoxAuditConfig) -> float:
    """The accountant's ε of the audited steps under the claimed parameters (inf without DP).

    Record / episode / client: :func:`privacy.calibration.epsilon_for` with ``config.accountant``
    (the run's accountant) told ``(z, q)`` for ``config.steps`` steps (per episode ``z`` relative to
    the sensitivity ``2C``, as :class:`~privacy.episodic.EpisodicDPSGD` records it) — the function
    the run's planning (``secfed.dp.server.planned_epsilon``) uses. Distributed:
    :class:`privacy.accountants.DistributedDPAccountant` with the plan's event (all clients' noise in
    the sum).

    Args:
        config: The audit configuration.

    Returns:
        ε at ``config.delta``.
    """
    if config.mode == "none":
        return math.inf
    if config.mode == "distributed":
        n = _num_clients(config)
        plan = distributed_plan(config, clients=n, z=config.noise_multiplier, clip=config.max_grad_norm)
        return common.distributed_accountant_epsilon(
            plan=plan, survivors=n, sample_rate=config.sample_rate, rounds=config.steps, delta=config.delta
        )
    return common.gaussian_accountant_epsilon(config=config)


# --------------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------------


def release_scores(*, config: WhiteBoxAuditConfig, releases: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio "in" vs "out" of each canary from its inner products with the releases.

    With ``x_t = <release_t, e_i> / σ`` (σ the claimed noise std) and claimed means ``(a_in,
    a_out)`` of a taking-part canary (:meth:`WhiteBoxAuditConfig.shifts`), the score is
    ``Σ_t log[(1-q)φ(x_t) + qφ(x_t - a_in)] - log[(1-q)φ(x_t) + qφ(x_t - a_out)]`` (for ``q = 1``
    an affine function of ``Σ_t x_t``). Without DP the plain inner product is used.

    Args:
        config: The audit configuration (claimed parameters only).
        releases: ``(steps, d)`` released vectors.

    Returns:
        ``(m,)`` scores.
    """
    x = np.asarray(releases, dtype=np.float64)[:, : config.num_canaries]
    if config.mode == "none":
        return x.sum(axis=0)
    x = x / config.claimed_noise_std
    a_in, a_out = config.shifts()
    q = config.sample_rate
    if q >= 1.0:
        return ((a_in - a_out) * x - (a_in**2 - a_out**2) / 2).sum(axis=0)

    def loglik(a: float) -> np.ndarray:
        return logsumexp(np.stack([np.log1p(-q) - x**2 / 2, math.log(q) - (x - a) ** 2 / 2]), axis=0)

    return (loglik(a_in) - loglik(a_out)).sum(axis=0)


def idealised_scores(
    *, config: WhiteBoxAuditConfig, included: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Scores of the same audit on an idealised mechanism: continuous Gaussian noise of the claimed std,
    canaries exactly at the claimed clip bound, Poisson participation at rate q.

    Args:
        config: The audit configuration (its negative-control fields are ignored).
        included: Inclusion bits.
        rng: The reference's generator (simulation only).

    Returns:
        ``(m,)`` scores.
    """
    m, steps = config.num_canaries, config.steps
    a_in, a_out = config.shifts()
    mean = np.where(included, a_in, a_out)[None, :] * (rng.random((steps, m)) < config.sample_rate)
    x = mean + rng.standard_normal((steps, m))
    sigma = config.claimed_noise_std if config.mode != "none" else 1.0
    full = np.zeros((steps, config.num_canaries))
    full[:, :m] = x * sigma
    return release_scores(config=config, releases=full)


# --------------------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------------------


def _statement(acc: float, bounds: common.CanaryBounds, fdp: dict[str, Any] | None = None) -> str:
    fdp_eps = float(fdp["epsilon"]) if fdp else 0.0
    findings = []
    if fdp:
        ceiling = float(fdp["ceiling_epsilon"])
        findings.append(f"f-DP one-run bound (Mahloujifar et al.) {fdp_eps:.2f}, ceiling {ceiling:.2f}")
    return common.audit_statement(
        accountant_epsilon=acc,
        ceilings=(
            ("one-run epsilon-DP analysis", bounds.one_run_ceiling.epsilon),
            ("GDP analysis", bounds.gdp_ceiling.epsilon),
        ),
        sample="these canaries",
        violation=bounds.one_run.epsilon > acc or bounds.gdp.epsilon > acc or fdp_eps > acc,
        findings=findings,
    )


def run_whitebox_audit(
    *, config: WhiteBoxAuditConfig, progress: Progress | None = None
) -> WhiteBoxAuditResult:
    """Run the white-box one-run audit of one privacy mode (module docstring).

    Args:
        config: What to audit.
        progress: Called with a line of text after each step (e.g. ``print``).

    Returns:
        The bounds next to their ceilings, the idealised reference and the accountant's ε.

    Raises:
        AttackConfigError: If ``config`` is not a :class:`WhiteBoxAuditConfig`.
        privacy.errors.PrivacyError: If the mechanism refuses the parameters.
    """
    common.require_config(config=config, kind=WhiteBoxAuditConfig)
    say = common.progress_sink(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    included = rng.random(config.num_canaries) < 0.5
    while included.all() or not included.any():
        included = rng.random(config.num_canaries) < 0.5
    bg = background_rows(config, rng)
    releases = RELEASES[config.mode](config, included, bg, say)
    timings["mechanism"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = release_scores(config=config, releases=releases)
    delta, sig = config.delta, config.significance
    bounds = common.canary_bounds(scores=scores, included=included, delta=delta, significance=sig)
    eps_b, eps_ceiling, gdp_b, gdp_c = bounds.one_run, bounds.one_run_ceiling, bounds.gdp, bounds.gdp_ceiling
    acc = accountant_epsilon(config=config)
    say(f"bounds computed: one-run epsilon {eps_b.epsilon:.3f}, GDP mu {gdp_b.mu:.3f}")
    ideal: dict[str, Any] = {}
    if config.reference_runs > 0 and config.mode != "none":
        ref_rng = np.random.default_rng([config.seed, 1])
        e_ref, g_ref = [], []
        for _ in range(config.reference_runs):
            inc = ref_rng.random(config.num_canaries) < 0.5
            s = idealised_scores(config=config, included=inc, rng=ref_rng)
            e_ref.append(one_run_audit(scores=s, included=inc, delta=delta, significance=sig).epsilon)
            g_ref.append(gdp_audit(scores=s, included=inc, delta=delta, significance=sig).epsilon)
        e_med, g_med = float(np.median(e_ref)), float(np.median(g_ref))
        ideal = {
            "runs": config.reference_runs,
            "one_run_epsilon_median": e_med,
            "gdp_epsilon_median": g_med,
            "one_run_epsilon_runs": e_ref,
            "gdp_epsilon_runs": g_ref,
            "one_run_ratio": eps_b.epsilon / e_med if e_med > 0 else None,
            "gdp_ratio": gdp_b.epsilon / g_med if g_med > 0 else None,
        }
    timings["bounds"] = time.perf_counter() - t1
    proven_gdp = None
    if config.one_run_gdp:
        proven_gdp = one_run_gdp_audit(
            scores=scores, included=included, delta=delta, significance=sig
        ).to_dict()
    fdp_doc = None
    if config.fdp_one_run:
        t2 = time.perf_counter()
        fdp_b = fdp_one_run_audit(scores=scores, included=included, delta=delta, significance=sig)
        fdp_c = fdp_one_run_audit(
            scores=included.astype(np.float64), included=included, delta=delta, significance=sig
        )
        fdp_doc = {**fdp_b.to_dict(), "ceiling_mu": fdp_c.mu, "ceiling_epsilon": fdp_c.epsilon}
        timings["fdp"] = time.perf_counter() - t2
        say(f"f-DP one-run bound (Mahloujifar et al.): mu {fdp_b.mu:.3f}, epsilon {fdp_b.epsilon:.3f}")
    one_run = eps_b.to_dict()
    one_run["ceiling"] = eps_ceiling.epsilon
    one_run["fraction_of_ceiling"] = eps_b.epsilon / eps_ceiling.epsilon if eps_ceiling.epsilon > 0 else None
    gdp = gdp_b.to_dict()
    gdp["ceiling_mu"] = gdp_c.mu
    gdp["ceiling_epsilon"] = gdp_c.epsilon
    gdp["fraction_of_ceiling"] = gdp_b.epsilon / gdp_c.epsilon if gdp_c.epsilon > 0 else None
    gdp["note"] = (
        "epsilon(mu, delta) is a lower bound on epsilon if the trade-off curve is Gaussian; the canaries "
        "are treated as independent trials (Dirac canaries on distinct coordinates)"
    )
    timings["total"] = time.perf_counter() - t0
    return WhiteBoxAuditResult(
        config=config,
        accountant_epsilon=acc,
        one_run=one_run,
        gdp=gdp,
        idealised=ideal,
        statement=_statement(acc, bounds, fdp_doc),
        timings=timings,
        one_run_gdp=proven_gdp,
        fdp_one_run=fdp_doc,
    )
