"""The privacy parameters of a run as one frozen, typed, validated value (:class:`DPParams`).

:func:`dp_params` is the one place that reads the configuration's ``privacy``, ``federation``,
``partition`` and ``secagg`` sections for the DP wrappers: it is called once on the *calibrated*
configuration (:func:`secfed.dp.calibration.calibrated_config`) and its value is handed down to the
server's mode strategies (:mod:`secfed.dp.modes`), the noise-sharing helpers
(:mod:`secfed.dp.sharing`) and the distributed-DP encoders (:mod:`secfed.dp.distributed`), which
never see the configuration. :class:`DPParams` checks itself on construction; a bad field raises
:class:`DPParamsError` naming it. On the site side :func:`secfed.dp.site.params.site_dp_params`
puts the value together with the public facts of local training (one
:class:`~secfed.dp.site.params.SiteDPParams` per site, handed to the site's privacy hook).

The public facts of the federation plan the value is built from (:func:`client_sample_rate`,
:func:`expected_participants`, :func:`max_participants`, :func:`worst_case_survivors`,
:func:`record_steps_per_round`, :func:`record_mechanism`) are functions of the configuration and
live here, below their users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from secfed.config import ExperimentConfig, max_sites_per_round, threshold_floor
from secfed.dp.engines.steps import step_normaliser
from secfed.dp.reports import RECORD_MECHANISMS
from secfed.errors import ConfigError
from secfed.federation.server import sampled_sites
from secfed.learners import episodic_learner_names, learner_class

__all__ = [
    "DPParams",
    "DPParamsError",
    "DistributedParams",
    "NoiseSharingParams",
    "client_sample_rate",
    "client_sampling_note",
    "dp_params",
    "given_or_built",
    "expected_participants",
    "max_participants",
    "record_mechanism",
    "record_steps_per_round",
    "worst_case_survivors",
]

_EPISODIC_LEARNERS = episodic_learner_names()  # learners whose class declares ``episodic``
#: Per-record steps: the noise-sharing projection radius in units of ``η·C`` (batches up to 4x the
#: public one).
_PER_RECORD_RADIUS = 4.0
_MODES = ("record", "client", "distributed")
_GAUSSIAN_ACCOUNTANTS = ("rdp", "prv", "pld")
_DISTRIBUTED_MECHANISMS = ("skellam", "ddg")


class DPParamsError(ConfigError):
    """A field of :class:`DPParams` (or of its parts) is invalid.

    Attributes:
        field: The offending field's name (e.g. ``"delta"``, ``"noise_sharing.colluding_sites"``).
    """

    def __init__(self, *, field: str, value: object, reason: str) -> None:
        super().__init__(f"DPParams.{field} = {value!r}: {reason}")
        self.field = field


def _require(ok: bool, *, field: str, value: object, reason: str) -> None:
    if not ok:
        raise DPParamsError(field=field, value=value, reason=reason)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------------
# Public facts of the federation plan (functions of the configuration)
# --------------------------------------------------------------------------------------------------
def _check_config(config: object) -> ExperimentConfig:
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    return config


def client_sample_rate(*, config: ExperimentConfig) -> float:
    """The per-round probability that a given site is sampled (public).

    ``federation.sample_rate`` for Poisson sampling; ``clients_per_round / num_sites`` for fixed-size
    sampling (1 when every site takes part).

    Args:
        config: The experiment configuration.

    Returns:
        q_client in (0, 1].

    Raises:
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
    """
    f = _check_config(config).federation
    if f.sampling == "poisson":
        return float(f.sample_rate)
    n = config.partition.num_sites
    m = f.clients_per_round or n
    return float(m) / float(n)


def client_sampling_note(*, config: ExperimentConfig) -> str:
    """How client sampling is accounted, in words (stored in the ledger and the summary).

    Fixed-size sampling without replacement of ``m < N`` sites is accounted with the
    Poisson-subsampled analysis at ``q = m/N``: an approximation, not a proven bound (the sampled
    Gaussian RDP of Mironov, Talwar & Zhang 2019 assumes Poisson sampling). Use
    ``federation.sampling = "poisson"`` for a proven client-level guarantee.

    Args:
        config: The experiment configuration.

    Returns:
        ``"poisson"``, ``"all sites every round"`` or a note on the fixed-size approximation.

    Raises:
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
    """
    f = _check_config(config).federation
    if f.sampling == "poisson":
        return "poisson"
    if (f.clients_per_round or config.partition.num_sites) == config.partition.num_sites:
        return "all sites every round"
    return "fixed-size without replacement, accounted as Poisson at q=m/N (approximation)"


def expected_participants(*, config: ExperimentConfig) -> int:
    """Expected number of sampled sites per round: ``round(q·N)`` (Poisson, at least 1) or ``m``.

    Args:
        config: The experiment configuration.

    Returns:
        The count (>= 1).

    Raises:
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
    """
    f = _check_config(config).federation
    n = config.partition.num_sites
    if f.sampling == "poisson":
        return max(1, int(round(f.sample_rate * n)))
    return f.clients_per_round or n


def max_participants(*, config: ExperimentConfig) -> int:
    """Largest number of sites whose encodings may be summed in a round (``N`` or ``m``).

    Args:
        config: The experiment configuration.

    Returns:
        The count.

    Raises:
        ConfigError: If ``config`` is not an :class:`~secfed.config.ExperimentConfig`.
    """
    return max_sites_per_round(_check_config(config))


def worst_case_survivors(*, config: ExperimentConfig) -> int:
    """Fewest clients whose noise can reach a decoded SecAgg sum in one round.

    With fixed-size sampling and no simulated dropouts or stragglers every sampled site survives
    (``m``). Otherwise 2: SecAgg needs at least ``t >= 2`` survivors to unmask
    (:func:`protocols.params.resolve_params`), and a round with fewer releases nothing.

    Args:
        config: The configuration.

    Returns:
        The survivor count.
    """
    f = config.federation
    m = max_participants(config=config)
    if f.sampling == "fixed" and f.dropout_rate == 0 and f.straggler_rate == 0:
        return m
    return min(2, m)


def record_steps_per_round(*, config: ExperimentConfig) -> int:
    """DP-SGD steps one site takes per round under record-level DP (as :mod:`secfed.dp.site` does).

    Args:
        config: The experiment configuration.

    Returns:
        ``local_steps`` times the learner's
        :meth:`~secfed.learners.base.Learner.dp_steps_per_local_step`: ``meta_batch *
        inner_steps`` for Reptile (per-sample DP-SGD in every inner step), 1 otherwise (one
        episodic or per-sample DP-SGD step per local step).
    """
    lr = config.learner
    per_local_step = learner_class(lr.name).dp_steps_per_local_step(
        meta_batch=lr.meta_batch, inner_steps=lr.inner_steps
    )
    return int(lr.local_steps * per_local_step)


def record_mechanism(*, config: ExperimentConfig) -> str:
    """The record-level mechanism of the configured learner: episodic or per-sample Gaussian.

    Args:
        config: The experiment configuration.

    Returns:
        One of :data:`secfed.dp.reports.RECORD_MECHANISMS`.
    """
    return RECORD_MECHANISMS[0] if config.learner.name in _EPISODIC_LEARNERS else RECORD_MECHANISMS[1]


# --------------------------------------------------------------------------------------------------
# The typed values
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NoiseSharingParams:
    """Record-level noise split across sites under secure aggregation (:mod:`secfed.dp.sharing`).

    Attributes:
        colluding_sites: ``c``: sites whose noise shares the server may know (not counted).
        sites_per_round: ``m``: the most sites a round can hold.
        threshold_floor: ``t_floor``: the fewest survivors whose sum can be decoded (``> c``).
        planning_survivors: Survivors the planner and the calibration assume (``m`` or ``t_floor``).
        sensitivity_factor: ``S / C``: 2 per episode, 1 per record.
        update_scale: ``η/E``: the map from a clipped sum to the (negated) update of one SGD step.
        update_radius: ``R``: the public L2 bound the encoder projects an update onto.
    """

    colluding_sites: int
    sites_per_round: int
    threshold_floor: int
    planning_survivors: int
    sensitivity_factor: float
    update_scale: float
    update_radius: float

    def __post_init__(self) -> None:
        pre = "noise_sharing."
        c, m, t = self.colluding_sites, self.sites_per_round, self.threshold_floor
        _require(
            _is_int(m) and m >= 1, field=pre + "sites_per_round", value=m, reason="must be an integer >= 1"
        )
        _require(
            _is_int(t) and 1 <= t <= m,
            field=pre + "threshold_floor",
            value=t,
            reason=f"must be an integer in [1, {m}]",
        )
        _require(
            _is_int(c) and 0 <= c < t,
            field=pre + "colluding_sites",
            value=c,
            reason=f"must be an integer in [0, {t}): below the threshold floor, so every decodable sum holds "
            "counted noise",
        )
        s = self.planning_survivors
        _require(
            _is_int(s) and t <= s <= m,
            field=pre + "planning_survivors",
            value=s,
            reason=f"must be an integer in [{t}, {m}]",
        )
        for name in ("sensitivity_factor", "update_scale", "update_radius"):
            v = getattr(self, name)
            _require(_is_real(v) and v > 0, field=pre + name, value=v, reason="must be finite and > 0")


@dataclass(frozen=True, kw_only=True)
class DistributedParams:
    """The settings of the distributed DDG/Skellam mechanism (:mod:`secfed.dp.distributed`).

    Attributes:
        mechanism: ``skellam`` or ``ddg``.
        bits: Modulus bits of the encoder (8 to 62).
        expected_participants: Expected sites per round (each adds ``1/n`` of the variance).
        max_participants: Most encodings one round may sum.
        rotation_seed: The public seed the per-round rotations derive from (``experiment.seed``).
    """

    mechanism: str
    bits: int
    expected_participants: int
    max_participants: int
    rotation_seed: int

    def __post_init__(self) -> None:
        pre = "distributed."
        _require(
            self.mechanism in _DISTRIBUTED_MECHANISMS,
            field=pre + "mechanism",
            value=self.mechanism,
            reason=f"must be one of {_DISTRIBUTED_MECHANISMS}",
        )
        _require(
            _is_int(self.bits) and 8 <= self.bits <= 62,
            field=pre + "bits",
            value=self.bits,
            reason="must be in [8, 62]",
        )
        m = self.max_participants
        _require(
            _is_int(m) and m >= 1, field=pre + "max_participants", value=m, reason="must be an integer >= 1"
        )
        n = self.expected_participants
        _require(
            _is_int(n) and 1 <= n <= m,
            field=pre + "expected_participants",
            value=n,
            reason=f"must be an integer in [1, {m}]",
        )
        _require(
            _is_int(self.rotation_seed),
            field=pre + "rotation_seed",
            value=self.rotation_seed,
            reason="must be an integer",
        )


@dataclass(frozen=True, kw_only=True)
class DPParams:
    """What the DP wrappers need of a run, after calibration (build it with :func:`dp_params`).

    Attributes:
        mode: ``record``, ``client`` or ``distributed`` (``privacy.mode``).
        unit: ``record`` or ``client``: the unit of the claimed ε.
        noise_multiplier: z after calibration (>= 0).
        max_grad_norm: The clipping norm C (> 0).
        sample_rate: Record-level Poisson sampling rate q of DP-SGD, in (0, 1].
        delta: δ, in (0, 1).
        accountant: ``rdp``, ``prv`` or ``pld``.
        epsilon_budget: The ε cap (``None``: none).
        target_epsilon: The calibration target (``None``: none; z is the configured one).
        num_sites: N, the sites of the run.
        client_sample_rate: The public per-round sampling rate of a site, in (0, 1].
        worst_case_survivors: Fewest clients whose noise can reach a decoded SecAgg sum.
        steps_per_round: Record-level DP steps a site takes per round.
        record_mechanism: The record-level mechanism of the learner.
        schedule: The public sample of rounds ``1 .. experiment.rounds`` (sorted site ids each).
        noise_sharing: Noise sharing's parameters (record mode with ``privacy.noise_sharing``).
        distributed: The distributed mechanism's settings (distributed mode).

    Raises:
        DPParamsError: Naming the first invalid field.
    """

    mode: str
    unit: str
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    accountant: str
    epsilon_budget: float | None
    target_epsilon: float | None
    num_sites: int
    client_sample_rate: float
    worst_case_survivors: int
    steps_per_round: int
    record_mechanism: str
    schedule: tuple[tuple[int, ...], ...]
    noise_sharing: NoiseSharingParams | None = None
    distributed: DistributedParams | None = None

    def __post_init__(self) -> None:
        _require(self.mode in _MODES, field="mode", value=self.mode, reason=f"must be one of {_MODES}")
        unit = "record" if self.mode == "record" else "client"
        _require(
            self.unit == unit, field="unit", value=self.unit, reason=f"mode {self.mode!r} claims {unit!r}"
        )
        z = self.noise_multiplier
        _require(_is_real(z) and z >= 0, field="noise_multiplier", value=z, reason="must be finite and >= 0")
        c = self.max_grad_norm
        _require(_is_real(c) and c > 0, field="max_grad_norm", value=c, reason="must be finite and > 0")
        q = self.sample_rate
        _require(_is_real(q) and 0 < q <= 1, field="sample_rate", value=q, reason="must be in (0, 1]")
        d = self.delta
        _require(_is_real(d) and 0 < d < 1, field="delta", value=d, reason="must be in (0, 1)")
        _require(
            self.accountant in _GAUSSIAN_ACCOUNTANTS,
            field="accountant",
            value=self.accountant,
            reason=f"must be one of {_GAUSSIAN_ACCOUNTANTS}",
        )
        for name in ("epsilon_budget", "target_epsilon"):
            v = getattr(self, name)
            _require(v is None or (_is_real(v) and v > 0), field=name, value=v, reason="must be None or > 0")
        n = self.num_sites
        _require(_is_int(n) and n >= 1, field="num_sites", value=n, reason="must be an integer >= 1")
        qc = self.client_sample_rate
        _require(
            _is_real(qc) and 0 < qc <= 1, field="client_sample_rate", value=qc, reason="must be in (0, 1]"
        )
        w = self.worst_case_survivors
        _require(
            _is_int(w) and 1 <= w <= n, field="worst_case_survivors", value=w, reason=f"must be in [1, {n}]"
        )
        s = self.steps_per_round
        _require(_is_int(s) and s >= 0, field="steps_per_round", value=s, reason="must be an integer >= 0")
        _require(
            self.record_mechanism in RECORD_MECHANISMS,
            field="record_mechanism",
            value=self.record_mechanism,
            reason=f"must be one of {RECORD_MECHANISMS}",
        )
        _require(
            isinstance(self.schedule, tuple)
            and all(
                isinstance(r, tuple) and all(_is_int(i) and 0 <= i < n for i in r) for r in self.schedule
            ),
            field="schedule",
            value=self.schedule,
            reason=f"must be a tuple of tuples of site ids in [0, {n})",
        )
        sharing = self.noise_sharing
        _require(
            sharing is None or (self.mode == "record" and isinstance(sharing, NoiseSharingParams)),
            field="noise_sharing",
            value=sharing,
            reason="noise sharing is record-level (mode 'record') and a NoiseSharingParams",
        )
        if sharing is not None:
            _require(z > 0, field="noise_multiplier", value=z, reason="noise sharing needs noise > 0")
        dist = self.distributed
        _require(
            (dist is None) == (self.mode != "distributed")
            and (dist is None or isinstance(dist, DistributedParams)),
            field="distributed",
            value=dist,
            reason="a DistributedParams in mode 'distributed', None otherwise",
        )

    def sampled_sites(self, *, round_idx: int) -> tuple[int, ...]:
        """The sites the public schedule samples in round ``round_idx`` (before budget exclusions).

        Args:
            round_idx: The round (1-based, at most the run's rounds).

        Returns:
            Sorted site ids (:func:`secfed.federation.server.sampled_sites`).

        Raises:
            ConfigError: The round is outside the run's ``1 .. experiment.rounds``.
        """
        if _is_int(round_idx) and 1 <= round_idx <= len(self.schedule):
            return self.schedule[round_idx - 1]
        raise ConfigError(f"round {round_idx!r} is outside the run's rounds 1 .. {len(self.schedule)}")

    def describe(self) -> dict[str, object]:
        """The value's scalar fields (for logs and tests; the schedule is summarised by its length)."""
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = len(v) if f.name == "schedule" else v
        return out


def _noise_sharing(config: ExperimentConfig) -> NoiseSharingParams | None:
    p, lr = config.privacy, config.learner
    if not (p.mode == "record" and p.noise_sharing):
        return None
    episodic = lr.name in _EPISODIC_LEARNERS
    f = config.federation
    m = max_sites_per_round(config)
    t = threshold_floor(config=config)
    surely_all = f.sampling == "fixed" and f.dropout_rate == 0 and f.straggler_rate == 0
    lr_, clip = float(lr.local_lr), float(p.max_grad_norm)
    return NoiseSharingParams(
        colluding_sites=int(p.colluding_sites),
        sites_per_round=int(m),
        threshold_floor=int(t),
        planning_survivors=int(m if surely_all else t),
        sensitivity_factor=2.0 if episodic else 1.0,
        update_scale=lr_ / float(step_normaliser(config=config)),
        update_radius=lr_ * clip if episodic else _PER_RECORD_RADIUS * lr_ * clip,
    )


def _distributed(config: ExperimentConfig) -> DistributedParams | None:
    p = config.privacy
    if p.mode != "distributed":
        return None
    return DistributedParams(
        mechanism=p.mechanism,
        bits=int(p.bits),
        expected_participants=int(expected_participants(config=config)),
        max_participants=int(max_participants(config=config)),
        rotation_seed=int(config.experiment.seed),
    )


def given_or_built(*, config: ExperimentConfig, params: DPParams | None) -> DPParams:
    """The run's privacy parameters as handed down by the caller, else built from ``config``.

    ``Experiment.run`` builds the value once, on the calibrated configuration, and passes it to
    the server's privacy, the DP planning and the aggregators; a caller without one (tests, the
    ``secfed privacy`` command) passes ``None``.

    Args:
        config: The (calibrated) configuration.
        params: :func:`dp_params` of ``config``, or ``None``.

    Returns:
        ``params``, or :func:`dp_params` of ``config``.

    Raises:
        ConfigError: ``params`` is not a :class:`DPParams`, or was built from another
            configuration (its ``mode`` or ``noise_multiplier`` differs from ``config.privacy``:
            e.g. the configuration before calibration).
    """
    if params is None:
        return dp_params(config=config)
    if not isinstance(params, DPParams):
        raise ConfigError(f"params must be a DPParams, got {type(params).__name__}")
    p = _check_config(config).privacy
    if params.mode != p.mode or params.noise_multiplier != float(p.noise_multiplier):
        raise ConfigError(
            f"params (mode {params.mode!r}, noise_multiplier {params.noise_multiplier!r}) were built "
            f"from another configuration than privacy.mode = {p.mode!r}, privacy.noise_multiplier = "
            f"{p.noise_multiplier!r}: pass dp_params(config=config) of the calibrated configuration"
        )
    return params


def dp_params(*, config: ExperimentConfig) -> DPParams:
    """The run's privacy parameters, read from the (calibrated) configuration once.

    Args:
        config: The configuration, after :func:`secfed.dp.calibration.calibrated_config`
            (``privacy.mode`` ``record``, ``client`` or ``distributed``).

    Returns:
        The validated value.

    Raises:
        ConfigError: ``config`` is not an :class:`~secfed.config.ExperimentConfig`, or
            ``privacy.mode`` is not ``record``, ``client`` or ``distributed``.
        DPParamsError: A value read from the configuration is invalid (names the field).
    """
    cfg = _check_config(config)
    p = cfg.privacy
    if p.mode not in _MODES:
        raise ConfigError(f"privacy.mode = {p.mode!r}: ServerPrivacy needs record, client or distributed")
    return DPParams(
        mode=p.mode,
        unit="record" if p.mode == "record" else "client",
        noise_multiplier=float(p.noise_multiplier),
        max_grad_norm=float(p.max_grad_norm),
        sample_rate=float(p.sample_rate),
        delta=float(p.delta),
        accountant=p.accountant,
        epsilon_budget=float(p.epsilon_budget) if p.epsilon_budget > 0 else None,
        target_epsilon=float(p.target_epsilon) if p.target_epsilon > 0 else None,
        num_sites=int(cfg.partition.num_sites),
        client_sample_rate=client_sample_rate(config=cfg),
        worst_case_survivors=worst_case_survivors(config=cfg),
        steps_per_round=record_steps_per_round(config=cfg),
        record_mechanism=record_mechanism(config=cfg),
        schedule=tuple(
            tuple(int(s) for s in sampled_sites(config=cfg, round_idx=r))
            for r in range(1, cfg.experiment.rounds + 1)
        ),
        noise_sharing=_noise_sharing(cfg),
        distributed=_distributed(cfg),
    )
