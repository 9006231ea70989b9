"""The whole configuration and the rules across its sections, each written once.

:class:`ExperimentConfig` holds the nine sections of :mod:`secfed.config.sections`;
:func:`validate` runs every section's own check, then the rules below that need two sections or
more (DP against the model's normalisation and the weighting, secure aggregation against the
number of sites, noise sharing against the protocol's threshold, ...). The protocol facts come
from :mod:`protocols.params` (a lower layer), so a bad ``(k, t)`` stops before any work is done.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from secfed.config.sections import (
    DataSection,
    ExperimentSection,
    FederationSection,
    LearnerSection,
    ModelSection,
    PartitionSection,
    PrivacySection,
    SecAggSection,
    TaskSection,
    _check,
)
from secfed.errors import ConfigError
from secfed.learners.declarations import (
    DECLARATIONS,
    declaration,
    names_where,
    sharing_learner_names,
    spoken_list,
)

if TYPE_CHECKING:  # the protocols package loads numpy: imported where a protocol runs, not here
    from protocols.params import Mode, SecAggConfig

__all__ = [
    "ExperimentConfig",
    "SECTIONS",
    "validate",
    "max_sites_per_round",
    "check_distributed_dp_aggregation",
    "supervised_eval_applies",
    "AggregatorOptions",
    "SecAggOptions",
    "protocol_options",
    "check_protocol_options",
    "threshold_floor",
    "check_noise_sharing_config",
]


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, validated experiment configuration.

    Attributes:
        experiment, data, partition, task, model, learner, federation, secagg, privacy: sections.
        base_dir: Folder relative data paths are resolved against (not serialised).
    """

    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    data: DataSection = field(default_factory=DataSection)
    partition: PartitionSection = field(default_factory=PartitionSection)
    task: TaskSection = field(default_factory=TaskSection)
    model: ModelSection = field(default_factory=ModelSection)
    learner: LearnerSection = field(default_factory=LearnerSection)
    federation: FederationSection = field(default_factory=FederationSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    base_dir: str = field(default=".", compare=False)

    def data_root(self) -> Path:
        """The data root resolved against :attr:`base_dir` (empty root stays empty)."""
        if not self.data.root:
            return Path("")
        if self.data.embedded:
            return Path(self.data.root)  # "embedded" is a name, not a path: kept as written
        root = Path(self.data.root).expanduser()
        return root if root.is_absolute() else (Path(self.base_dir) / root).resolve()

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Return a copy with whole sections replaced, re-validated.

        Args:
            **sections: Section objects by name.

        Returns:
            The new configuration.
        """
        new = dataclasses.replace(self, **sections)
        validate(new)
        return new


SECTIONS: dict[str, type] = {f.name: f.type for f in fields(ExperimentConfig) if f.name != "base_dir"}  # type: ignore[misc]


def validate(cfg: ExperimentConfig) -> None:
    """Check every value of ``cfg``; raise on the first problem.

    Every section checks its own values first (in the order of :data:`SECTIONS`), then the rules
    across sections run.

    Args:
        cfg: The configuration.

    Raises:
        ConfigError: Naming the key, the bad value and what is allowed.
    """
    for name in SECTIONS:
        getattr(cfg, name).check()
    d, p, t, m, lr, f, pr = (
        cfg.data,
        cfg.partition,
        cfg.task,
        cfg.model,
        cfg.learner,
        cfg.federation,
        cfg.privacy,
    )
    learner = declaration(lr.name)  # what the run's learner declares (secfed.learners.declarations)
    if cfg.experiment.supervised_eval == "on":
        why = supervised_eval_applies(learner=lr.name, dataset=d.dataset)
        _check(
            why is None,
            "experiment.supervised_eval",
            f"'on' does not apply: {why}",
            cfg.experiment.supervised_eval,
        )
    if t.test_protocol == "within_alphabet":
        _check(
            d.dataset == "omniglot" and t.source == "episodic",
            "task.test_protocol",
            "'within_alphabet' needs data.dataset = 'omniglot' and task.source = 'episodic'",
            t.test_protocol,
        )
    if m.frontend == "scatter":
        side = {"digits": 8, "omniglot": d.image_size}.get(d.dataset)  # MedMNIST: checked at build
        _check(
            side is None or side % 2**m.scatter_j == 0,
            "model.scatter_j",
            f"the scattering transform subsamples by 2^J: the image side ({side}) must be a multiple of 2^J",
            m.scatter_j,
        )
    _check(
        m.pretrain_steps == 0 or bool(d.public_alphabets),
        "model.pretrain_steps",
        "pretraining needs public data: set data.public_alphabets",
        m.pretrain_steps,
    )
    _check(
        m.pretrain_steps == 0 or learner.trains_on_tasks,
        "model.pretrain_steps",
        "public pretraining is for the episodic learners and "
        + spoken_list(names_where(lambda d: d.trains_on_tasks and not d.episodic)),
        lr.name,
    )
    side = {"digits": 8, "omniglot": d.image_size}.get(d.dataset)  # MedMNIST: checked at pretraining
    _check(
        side is None or 2 * m.pretrain_shift < side,
        "model.pretrain_shift",
        f"must be below half the image side ({side})",
        m.pretrain_shift,
    )
    _check(
        not m.cache_features or pr.augmult == 1,
        "model.cache_features",
        "privacy.augmult > 1 shifts the raw pixels, which cached features no longer have: "
        "set model.cache_features = false or privacy.augmult = 1",
        m.cache_features,
    )
    if lr.head_init == "proto":
        # a learner that reads head_init and is not episodic clips per record under record-level DP
        _check(
            learner.episodic or pr.mode != "record",
            "learner.head_init",
            f"'proto' sets {lr.name}'s head from several records of a task, but record-level DP {lr.name} "
            "clips each record's gradient alone (its unit is one record): use 'zero'",
            lr.head_init,
        )
    _check(
        f.clients_per_round <= p.num_sites,
        "federation.clients_per_round",
        f"cannot exceed partition.num_sites = {p.num_sites}",
        f.clients_per_round,
    )
    if f.aggregation != "plain":
        _check(p.num_sites >= 3, "partition.num_sites", "secure aggregation needs >= 3 sites", p.num_sites)
    _check(
        pr.augmult == 1 or (pr.mode == "record" and learner.episodic),
        "privacy.augmult",
        "augmentation multiplicity applies to record-level DP with per-episode clipping "
        f"(the episodic learners, not {spoken_list(names_where(lambda d: not d.episodic), last='or')})",
        pr.augmult,
    )
    check_distributed_dp_aggregation(config=cfg)
    if pr.mode == "distributed":  # after the aggregation: that is the first thing to fix
        _check(
            pr.mechanism in ("skellam", "ddg"),
            "privacy.mechanism",
            "distributed DP needs 'skellam' or 'ddg'",
            pr.mechanism,
        )
    if pr.noise_sharing or pr.colluding_sites:
        check_noise_sharing_config(config=cfg)
    if pr.mode != "none":
        _check(
            f.weighting == "uniform",
            "federation.weighting",
            "record counts are private: DP runs need 'uniform' public weights",
            f.weighting,
        )
        _check(
            m.norm != "batch",
            "model.norm",
            "BatchNorm couples records and is refused under DP; use 'group'",
            m.norm,
        )
    if f.aggregation != "plain":
        # the protocol's own checks of (k, t) at the planned number of sites per round, so that a
        # bad or infeasible setting stops here instead of making every round abort
        check_protocol_options(config=cfg)


def check_distributed_dp_aggregation(*, config: ExperimentConfig) -> None:
    """Refuse distributed DP without secure aggregation: the one place this rule is written.

    The sites' noise shares protect only the sum (Kairouz et al. 2021), so a server that sees each
    update must not run the distributed mechanisms. :func:`validate` checks it for every
    configuration; the aggregator builders of :mod:`secfed.components` call it again for a
    configuration built without validation.

    Args:
        config: The configuration.

    Raises:
        ConfigError: ``privacy.mode = 'distributed'`` with ``federation.aggregation = 'plain'``.
    """
    if config.privacy.mode == "distributed":
        _check(
            config.federation.aggregation != "plain",
            "federation.aggregation",
            "privacy.mode = 'distributed' needs secure aggregation ('secagg' or 'secagg+')",
            config.federation.aggregation,
        )


def max_sites_per_round(cfg: ExperimentConfig) -> int:
    """Most sites a round can sample: ``clients_per_round`` (0 = all) with fixed sampling, all with
    Poisson sampling.

    Args:
        cfg: The configuration.

    Returns:
        The number of sites.
    """
    f, n = cfg.federation, cfg.partition.num_sites
    return n if f.sampling == "poisson" else (f.clients_per_round or n)


# Cross-section rules that need protocol or learner facts (checked by validate; the runtime modules
# above re-export them: secfed.federation.secure, secfed.dp.sharing, secfed.supervised_eval)
def supervised_eval_applies(*, learner: str, dataset: str) -> str | None:
    """Why the supervised evaluation cannot run for this learner and dataset (``None`` if it can).

    Args:
        learner: ``learner.name``.
        dataset: ``data.dataset``.

    Returns:
        The reason, or ``None``.
    """
    declared = DECLARATIONS.get(learner)
    if declared is None or declared.head != "global":
        global_heads = names_where(lambda d: d.head == "global")
        return (
            f"learner {learner!r} has no head over the dataset's classes (ProtoNet has no head; "
            "MAML, FOMAML and Reptile relabel classes per task); use learner.name = "
            + spoken_list(global_heads, last="or", quote=True)
        )
    if dataset != "medmnist":
        return (
            f"dataset {dataset!r} tests on classes never trained on; the supervised evaluation needs a "
            "test split with the training classes (data.dataset = 'medmnist')"
        )
    return None


class AggregatorOptions(TypedDict):
    """The protocol keywords of :class:`secfed.federation.secure.SecureServerAggregator` and
    :class:`~secfed.federation.secure.SecureClientAggregator` (``**options.aggregator_kwargs()``)."""

    mode: Mode
    k: int | None
    t: int | None
    clip: float
    precision_bits: int
    active: bool
    corrupt_fraction: float
    dropout_rate: float


@dataclass(frozen=True)
class SecAggOptions:
    """The secure-aggregation protocol's settings of a run, as one typed value.

    Built by :func:`protocol_options` from ``[secagg]`` and ``[federation]``; the secure
    aggregators hold it as it is (``options=``) and turn it, with a round's facts, into the
    protocol's configuration through :meth:`round_config`, the one place that does.

    Attributes:
        mode: ``secagg`` or ``secagg+`` (``federation.aggregation``).
        k: SecAgg+ neighbourhood size (``None``: derived; ``secagg.k = 0``).
        t: Shamir threshold (``None``: derived; ``secagg.t = 0``).
        clip: Per-coordinate clipping range of the quantiser.
        precision_bits: Fractional bits of the fixed-point quantiser.
        active: Active-adversary mode.
        corrupt_fraction: Assumed fraction of corrupt clients.
        dropout_rate: Assumed dropout rate (dropouts plus stragglers, capped; see
            :func:`protocol_options`).
    """

    mode: Mode
    k: int | None
    t: int | None
    clip: float
    precision_bits: int
    active: bool
    corrupt_fraction: float
    dropout_rate: float

    def aggregator_kwargs(self) -> AggregatorOptions:
        """The keywords of the secure aggregators' constructors.

        Returns:
            Every field, by name.
        """
        return AggregatorOptions(
            mode=self.mode,
            k=self.k,
            t=self.t,
            clip=self.clip,
            precision_bits=self.precision_bits,
            active=self.active,
            corrupt_fraction=self.corrupt_fraction,
            dropout_rate=self.dropout_rate,
        )

    def round_config(self, *, n: int, bits: int | None = None) -> SecAggConfig:
        """The protocol configuration of a round of ``n`` clients
        (:func:`protocols.params.round_protocol_config`; not resolved yet).

        Args:
            n: Participants of the round.
            bits: Modulus bits the server sized for the round (``None``: only the graph
                parameters are needed, or a client accepts the server's).

        Returns:
            The unresolved configuration (``.resolve()`` derives ``k`` and ``t``).

        Raises:
            protocols.errors.ProtocolError: On invalid parameters.
        """
        from protocols.params import round_protocol_config

        return round_protocol_config(
            mode=self.mode,
            n=n,
            k=self.k,
            t=self.t,
            bits=bits,
            active=self.active,
            corrupt_fraction=self.corrupt_fraction,
            dropout_rate=self.dropout_rate,
        )


def protocol_options(config: ExperimentConfig) -> SecAggOptions:
    """The secure aggregation settings of a configuration, as one typed value.

    The assumed dropout rate (used to derive SecAgg+'s ``k`` and ``t``) is
    ``federation.dropout_rate + federation.straggler_rate``, capped so that together with the
    assumed corrupt fraction it stays below 0.95.

    Args:
        config: Experiment configuration with ``federation.aggregation`` ``secagg`` or ``secagg+``.

    Returns:
        The options: ``mode``, ``k``, ``t`` (``None`` = derived), ``clip``, ``precision_bits``,
        ``active``, ``corrupt_fraction`` and ``dropout_rate``.

    Raises:
        ConfigError: ``federation.aggregation = 'plain'`` (no protocol runs).
    """
    s = config.secagg
    f = config.federation
    if f.aggregation == "secagg":
        mode: Mode = "secagg"
    elif f.aggregation == "secagg+":
        mode = "secagg+"
    else:
        raise ConfigError(
            f"federation.aggregation = {f.aggregation!r}: secure aggregation options need 'secagg' or "
            "'secagg+'"
        )
    assumed_dropout = min(f.dropout_rate + f.straggler_rate, 0.95 - s.corrupt_fraction)
    return SecAggOptions(
        mode=mode,
        k=s.k or None,
        t=s.t or None,
        clip=s.clip,
        precision_bits=s.precision_bits,
        active=s.active,
        corrupt_fraction=s.corrupt_fraction,
        dropout_rate=max(0.0, assumed_dropout),
    )


def check_protocol_options(*, config: ExperimentConfig) -> None:
    """Resolve the protocol's parameters for a full round before any work is done.

    A user-given ``secagg.k`` / ``secagg.t`` that is invalid, or misses the 2^-40 security or the
    2^-20 correctness target, and settings under which no ``(k, t)`` meets them, would otherwise
    make every round abort. Rounds with fewer sites (dropouts before training, Poisson sampling)
    are resolved again when they run and abort, recorded in the metrics, if they cannot finish.

    Args:
        config: Experiment configuration with secure aggregation.

    Raises:
        ConfigError: Naming the setting, the planned number of sites and the protocol's reason.
    """
    from protocols.errors import ProtocolError

    opts = protocol_options(config)
    n = max_sites_per_round(config)
    try:
        opts.round_config(n=n).resolve()
    except ProtocolError as exc:
        given = ", ".join(
            f"secagg.{key} = {value}" for key, value in (("k", opts.k), ("t", opts.t)) if value is not None
        )
        raise ConfigError(
            f"federation.aggregation = {opts.mode!r} with {n} sites per round"
            f"{' and ' + given if given else ''}: {exc}"
        ) from exc


def threshold_floor(*, config: ExperimentConfig) -> int:
    """Fewest survivors whose SecAgg sum can be decoded in any round of this configuration.

    The smallest threshold ``t(n)`` the protocol resolves for a round of ``n`` participants,
    ``2 <= n <= m`` (both sides derive ``t(n)`` from the configuration; an honest client refuses to
    unmask a survivor set smaller than it).

    Args:
        config: The configuration (secure aggregation).

    Returns:
        ``t_floor`` (>= 2).

    Raises:
        ConfigError: If no round size resolves (the protocol cannot run at all).
    """
    from protocols.errors import ProtocolError

    opts = protocol_options(config)
    found: list[int] = []
    for n in range(2, max_sites_per_round(config) + 1):
        try:
            params = opts.round_config(n=n).resolve()
        except ProtocolError:
            continue
        found.append(int(params.t))
    if not found:
        raise ConfigError(
            f"federation.aggregation = {config.federation.aggregation!r}: no round of "
            f"2..{max_sites_per_round(config)} "
            "sites can run the protocol, so noise sharing has no threshold"
        )
    return min(found)


def check_noise_sharing_config(*, config: ExperimentConfig) -> None:
    """Refuse a configuration under which noise sharing would not be sound.

    Args:
        config: The configuration.

    Raises:
        ConfigError: Naming the setting: ``privacy.colluding_sites`` without noise sharing; noise
            sharing outside record mode, without secure aggregation, with more than one DP step per
            round or a non-SGD local optimiser (the update would not be an affine function of the
            clipped sum plus the share), with Reptile or another learner, with zero noise, with
            non-uniform weights, or with ``c`` not below the SecAgg threshold floor.
    """
    p, f, lr = config.privacy, config.federation, config.learner
    if not p.noise_sharing:
        if p.colluding_sites:
            raise ConfigError(
                f"privacy.colluding_sites = {p.colluding_sites} only applies with "
                "privacy.noise_sharing = true"
            )
        return
    problems: list[str] = []
    if p.mode != "record":
        problems.append(f"privacy.mode = {p.mode!r} (noise sharing is record-level: use 'record')")
    if f.aggregation not in ("secagg", "secagg+"):
        problems.append(
            f"federation.aggregation = {f.aggregation!r} (the server must see only the sum: use "
            "'secagg' or 'secagg+')"
        )
    # the learners declare it (secfed.learners.declarations, torch-free)
    supported = sharing_learner_names()
    if lr.name not in supported:
        problems.append(
            f"learner.name = {lr.name!r} (supported: {', '.join(supported)}; Reptile takes "
            "several DP steps per round)"
        )
    if lr.local_steps != 1:
        problems.append(
            f"learner.local_steps = {lr.local_steps} (one DP step per round: the released update must "
            "be an affine function of the clipped sum plus the noise share)"
        )
    if lr.local_optimizer != "sgd":
        problems.append(
            f"learner.local_optimizer = {lr.local_optimizer!r} (plain 'sgd' keeps the update affine)"
        )
    if not (p.noise_multiplier > 0 and math.isfinite(p.noise_multiplier)) and not p.target_epsilon > 0:
        problems.append(f"privacy.noise_multiplier = {p.noise_multiplier!r} (must be > 0)")
    if f.weighting != "uniform":
        problems.append(f"federation.weighting = {f.weighting!r} (must be 'uniform')")
    if problems:
        raise ConfigError("privacy.noise_sharing = true is invalid: " + "; ".join(problems))
    m = max_sites_per_round(config)
    c = int(p.colluding_sites)
    if c >= m:
        raise ConfigError(
            f"privacy.colluding_sites = {c} must be below the {m} sites a round can hold "
            "(no noise would count)"
        )
    t = threshold_floor(config=config)
    if c >= t:
        raise ConfigError(
            f"privacy.colluding_sites = {c} is not below the SecAgg threshold floor t = {t} (the fewest "
            f"survivors a round of up to {m} sites can decode): a sum of {t} survivors would hold no "
            "counted noise. Set secagg.t above colluding_sites (or lower colluding_sites)"
        )
