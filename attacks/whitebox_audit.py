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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from attacks import audit_common as common
from attacks.audit import one_run_audit
from attacks.errors import AttackConfigError
from attacks.fdp import fdp_one_run_audit, gdp_audit, one_run_gdp_audit

__all__ = [
    "MODES",
    "WhiteBoxAuditConfig",
    "WhiteBoxAuditResult",
    "accountant_epsilon",
    "idealised_scores",
    "release_scores",
    "run_whitebox_audit",
]

#: Privacy modes the white-box audit covers.
MODES: tuple[str, ...] = ("record", "episode", "client", "distributed", "none")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WhiteBoxAuditConfig:
    """What to audit and how.

    Attributes:
        mode: ``"record"`` (per-sample DP-SGD), ``"episode"`` (per-episode DP-SGD), ``"client"``
            (DP-FedAvg central noise), ``"distributed"`` (DDG/Skellam under SecAgg) or ``"none"``
            (no DP: the plain sum, as a run without privacy releases it).
        noise_multiplier: The claimed ``z``.
        max_grad_norm: The claimed clip bound ``C``.
        sample_rate: Poisson rate ``q`` of records / episodes / clients per step (``client`` and
            ``distributed``: secfed's client level uses 1, no sampling amplification).
        steps: Releases observed (DP-SGD steps or rounds), each accounted.
        num_canaries: m.
        dim: d >= m (coordinates beyond m carry the background records).
        background: Non-canary records / episodes / clients (their gradients lie off the canary axes).
        delta: δ of every bound and of the accountant's ε.
        significance: Error probability of every bound.
        canary_scale: Canary norm over ``C`` (> 1: an honest mechanism clips it to ``C``).
        noise_factor: Actual over claimed noise (negative control; 1 = honest).
        clip_factor: Actual over claimed clip bound, noise std unchanged (negative control).
        group_size: Copies of each canary moving together (negative control; 1 = honest).
        distributed_mechanism: ``"ddg"`` or ``"skellam"``.
        bits: Modulus bits of the distributed encoder.
        reference_runs: Runs of the idealised Gaussian reference (median reported; 0 = skip).
        one_run_gdp: Also compute the proven one-run GDP bound (slower).
        seed: Seed of the auditor's own coins (inclusion bits, background, reference); the
            mechanism's noise comes from :mod:`privacy.noise`.
        fdp_one_run: Also compute the proven one-run f-DP bound of Mahloujifar et al. (2025),
            :func:`attacks.fdp.fdp_one_run_audit`, and its ceiling (a few seconds at m = 4000).
        accountant: Accountant of the accountant's ε (``"rdp"``, ``"prv"`` or ``"pld"``; record,
            episode and client modes): the run's own, so the audit's ε is the run's ε.
    """

    mode: str = "record"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    sample_rate: float = 1.0
    steps: int = 1
    num_canaries: int = 1000
    dim: int = 1024
    background: int = 16
    delta: float = 1e-5
    significance: float = 0.05
    canary_scale: float = 2.0
    noise_factor: float = 1.0
    clip_factor: float = 1.0
    group_size: int = 1
    distributed_mechanism: str = "ddg"
    bits: int = 32
    reference_runs: int = 5
    one_run_gdp: bool = False
    seed: int = 0
    fdp_one_run: bool = False
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise AttackConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        common.check_positive_numbers(
            config=self, names=("max_grad_norm", "canary_scale", "noise_factor", "clip_factor")
        )
        z = self.noise_multiplier
        if isinstance(z, bool) or not isinstance(z, int | float) or not math.isfinite(z) or z < 0:
            raise AttackConfigError(f"noise_multiplier must be finite and >= 0, got {z!r}")
        if self.mode != "none" and z == 0:
            raise AttackConfigError(f"mode {self.mode!r} needs noise_multiplier > 0 (use mode 'none')")
        common.check_sample_rate(sample_rate=self.sample_rate)
        common.check_ints(
            config=self,
            minimums=(("steps", 1), ("num_canaries", 2), ("dim", 2), ("background", 0), ("group_size", 1)),
        )
        if self.dim < self.num_canaries or (self.background and self.dim == self.num_canaries):
            raise AttackConfigError(
                f"dim ({self.dim}) must be >= num_canaries ({self.num_canaries}), "
                "and > num_canaries with background records"
            )
        common.check_probabilities(delta=self.delta, significance=self.significance)
        common.check_choice(name="accountant", value=self.accountant, choices=("rdp", "prv", "pld"))
        common.check_choice(
            name="distributed_mechanism", value=self.distributed_mechanism, choices=("ddg", "skellam")
        )

    @property
    def claimed_noise_std(self) -> float:
        """Noise std of one release as claimed: ``2zC`` per episode, ``zC`` otherwise (0 without DP)."""
        factor = 2.0 if self.mode == "episode" else 1.0
        return factor * self.noise_multiplier * self.max_grad_norm

    def shifts(self) -> tuple[float, float]:
        """Claimed mean of a canary's coordinate when it takes part, in noise stds: (in, out)."""
        if self.mode == "none":
            return 1.0, 0.0
        a = self.max_grad_norm / self.claimed_noise_std
        return (a, -a) if self.mode == "episode" else (a, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


@dataclass
class WhiteBoxAuditResult:
    """Bounds, their ceilings and the accountant's ε (see :meth:`to_dict`)."""

    config: WhiteBoxAuditConfig
    accountant_epsilon: float
    one_run: dict[str, Any]
    gdp: dict[str, Any]
    idealised: dict[str, Any]
    statement: str
    timings: dict[str, float] = field(default_factory=dict)
    one_run_gdp: dict[str, Any] | None = None
    fdp_one_run: dict[str, Any] | None = None

    @property
    def epsilon_lower_bound(self) -> float:
        """The proven one-run ε-DP bound."""
        return float(self.one_run["epsilon"])

    @property
    def violation(self) -> bool:
        """True when the proven ε-DP bound, the GDP ε bound or the f-DP bound exceeds the accountant's ε."""
        fdp = float(self.fdp_one_run["epsilon"]) if self.fdp_one_run else 0.0
        return (
            self.epsilon_lower_bound > self.accountant_epsilon
            or float(self.gdp["epsilon"]) > self.accountant_epsilon
            or fdp > self.accountant_epsilon
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        acc = self.accountant_epsilon
        return {
            "config": self.config.to_dict(),
            "accountant_epsilon": acc if math.isfinite(acc) else None,
            "one_run": self.one_run,
            "gdp": self.gdp,
            "one_run_gdp": self.one_run_gdp,
            "fdp_one_run": self.fdp_one_run,
            "idealised_gaussian": self.idealised,
            "violation": self.violation,
            "statement": self.statement,
            "timings_s": self.timings,
        }


# --------------------------------------------------------------------------------------------------
# accountant
# --------------------------------------------------------------------------------------------------


def _distributed_plan(cfg: WhiteBoxAuditConfig, *, clients: int, z: float, clip: float) -> Any:
    from privacy.distributed import plan_distributed_dp

    return plan_distributed_dp(
        mechanism=cfg.distributed_mechanism,
        dim=cfg.dim,
        clip_norm=clip,
        noise_multiplier=z,
        expected_clients=clients,
        bits=cfg.bits,
        max_clients=clients,
    )


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
        from privacy.accountants import DistributedDPAccountant

        n = _num_clients(config)
        plan = _distributed_plan(config, clients=n, z=config.noise_multiplier, clip=config.max_grad_norm)
        dacc = DistributedDPAccountant()
        dacc.step(event=plan.event(num_survivors=n, sample_rate=config.sample_rate), num_rounds=config.steps)
        return float(dacc.get_epsilon(delta=config.delta))
    from privacy.calibration import epsilon_for

    return float(
        epsilon_for(
            noise_multiplier=config.noise_multiplier,
            sample_rate=config.sample_rate,
            steps=config.steps,
            delta=config.delta,
            accountant=config.accountant,
        )
    )


# --------------------------------------------------------------------------------------------------
# mechanisms: each returns the released vectors (steps, d) in units of the clipped sum
# --------------------------------------------------------------------------------------------------


class _NullAccountant:
    def step(self, *, noise_multiplier: float, sample_rate: float, num_steps: int = 1) -> None:
        del noise_multiplier, sample_rate, num_steps


def _background(cfg: WhiteBoxAuditConfig, rng: np.random.Generator) -> np.ndarray:
    """Background gradients off the canary axes, norm ``canary_scale · C``."""
    n, d, m = cfg.background, cfg.dim, cfg.num_canaries
    out = np.zeros((n, d))
    if n:
        g = rng.standard_normal((n, d - m))
        g *= cfg.canary_scale * cfg.max_grad_norm / np.linalg.norm(g, axis=1, keepdims=True)
        out[:, m:] = g
    return out


def _canary_rows(
    cfg: WhiteBoxAuditConfig, canaries: np.ndarray, sign: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``s·C·e_i`` (times ``sign``) for the given canary indices, each ``group_size`` times."""
    idx = np.repeat(canaries, cfg.group_size)
    rows = np.zeros((idx.size, cfg.dim))
    val = cfg.canary_scale * cfg.max_grad_norm
    rows[np.arange(idx.size), idx] = val if sign is None else val * np.repeat(sign, cfg.group_size)
    return rows


def _actual(cfg: WhiteBoxAuditConfig) -> tuple[float, float]:
    """(noise multiplier, clip bound) the mechanism is built with: noise std ``noise_factor·z·C``
    whatever the clip bound."""
    clip = cfg.max_grad_norm * cfg.clip_factor
    return cfg.noise_multiplier * cfg.noise_factor / cfg.clip_factor, clip


def _participation(cfg: WhiteBoxAuditConfig, count: int) -> np.ndarray:
    """Per-step Poisson coins (rate q) of ``count`` units from the mechanism's noise source."""
    return common.participation(sample_rate=cfg.sample_rate, count=count)


def _release_record(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    from privacy.dpsgd import PerSampleDPSGD

    rows = np.concatenate([_canary_rows(cfg, np.flatnonzero(included)), bg])
    x = torch.from_numpy(rows).to(torch.float64)
    model = nn.Linear(cfg.dim, 1, bias=False).to(torch.float64)
    nn.init.zeros_(model.weight)
    z, clip = _actual(cfg)
    dp = PerSampleDPSGD(
        model=model,
        x=x,
        y=torch.zeros(x.shape[0], dtype=torch.long),
        noise_multiplier=z,
        max_grad_norm=clip,
        sample_rate=cfg.sample_rate,
        expected_batch_size=1,
        lr=1.0,
        accountant=_NullAccountant(),
        per_example_loss=lambda out, _y: out[:, 0],
    )
    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        before = model.weight.detach().clone()
        dp.step()
        out[t] = -(model.weight.detach() - before).reshape(-1).numpy()  # w <- w - lr * noisy sum
        progress(f"record-level DP-SGD step {t + 1}/{cfg.steps}")
    dp.finish()
    return out


def _release_episode(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    from privacy.episodic import EpisodicDPSGD

    m = cfg.num_canaries
    sign = np.where(included, 1.0, -1.0)
    episodes_all = np.concatenate([_canary_rows(cfg, np.arange(m), sign), bg])
    model = nn.Linear(cfg.dim, 1, bias=False).to(torch.float64)
    nn.init.zeros_(model.weight)
    z, clip = _actual(cfg)
    dp = EpisodicDPSGD(
        model=model,
        noise_multiplier=z,
        max_grad_norm=clip,
        sample_rate=cfg.sample_rate,
        expected_episodes=1,
        lr=1.0,
        accountant=_NullAccountant(),
    )
    params = {"weight": model.weight}

    def loss_fn(
        p: dict[str, torch.Tensor], _b: dict[str, torch.Tensor], episode: torch.Tensor
    ) -> torch.Tensor:
        return (p["weight"][0] * episode).sum()

    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        take = _participation(cfg, episodes_all.shape[0])
        eps_t = torch.from_numpy(episodes_all[take])
        before = model.weight.detach().clone()
        dp.step(episodes=list(eps_t), loss_fn=loss_fn, params=params, buffers={})
        out[t] = -(model.weight.detach() - before).reshape(-1).numpy()
        progress(f"per-episode DP-SGD step {t + 1}/{cfg.steps}")
    return out


def _release_client(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    from privacy.client_dp import DPFedAvgAggregator, DPFedAvgConfig

    rows = np.concatenate([_canary_rows(cfg, np.flatnonzero(included)), bg])
    z, clip = _actual(cfg)
    agg = DPFedAvgAggregator(
        config=DPFedAvgConfig(
            clip_norm=clip, noise_multiplier=z, sample_rate=cfg.sample_rate, num_clients=max(1, rows.shape[0])
        )
    )
    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        take = _participation(cfg, rows.shape[0])
        out[t] = np.asarray(agg.noisy_sum(updates=list(rows[take]), dim=cfg.dim), dtype=np.float64)
        progress(f"DP-FedAvg round {t + 1}/{cfg.steps}")
    return out


def _release_distributed(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    import os

    m = cfg.num_canaries
    # every canary client sends: its update if included, zero otherwise (zero-out adjacency)
    rows = np.concatenate(
        [_canary_rows(cfg, np.arange(m)) * np.repeat(included, cfg.group_size)[:, None], bg]
    )
    n = rows.shape[0]
    z, clip = _actual(cfg)
    plan = _distributed_plan(cfg, clients=n, z=z, clip=clip)
    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        seed = os.urandom(32)  # the round's public rotation seed
        take = _participation(cfg, n)
        out[t] = common.distributed_sum(
            plan=plan, bits=cfg.bits, rows=rows, take=np.flatnonzero(take), rotation_seed=seed
        )
        progress(f"distributed DP round {t + 1}/{cfg.steps} ({int(take.sum())} encodings)")
    return out


def _release_none(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    rows = np.concatenate([_canary_rows(cfg, np.flatnonzero(included)), bg])
    out = np.repeat(rows.sum(axis=0, keepdims=True), cfg.steps, axis=0)
    progress("plain sum (no DP)")
    return out


_RELEASES = {
    "record": _release_record,
    "episode": _release_episode,
    "client": _release_client,
    "distributed": _release_distributed,
    "none": _release_none,
}


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
    bg = _background(config, rng)
    releases = _RELEASES[config.mode](config, included, bg, say)
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
