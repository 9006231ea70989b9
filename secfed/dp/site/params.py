"""What a site's privacy hook needs of the run, as one typed value read once (:class:`SiteDPParams`).

:func:`site_dp_params` is the one place on the site side that reads the configuration: it checks
that the configured mode, learner, task source and model support a site privacy hook, and puts the
run's :class:`~secfed.dp.params.DPParams` (z, C, q, δ, the accountant, the ε budget, noise sharing,
the planned steps per round) together with the public facts of the site's local training (the
learner, its loop sizes, ``task.n_way``, the step's public normaliser, augmentation multiplicity,
the public seed). :func:`secfed.dp.site.build.build_site_privacy` builds the value once per site
and hands it to the hook (:class:`~secfed.dp.site.base.SitePrivacy`), which never sees the
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from secfed.config import ExperimentConfig
from secfed.dp.engines.steps import step_normaliser
from secfed.dp.params import DPParams, DPParamsError, given_or_built
from secfed.errors import ConfigError
from secfed.learners import LEARNERS, learner_class

__all__ = ["SiteDPParams", "check_site_config", "site_dp_params"]

#: The learners record-level DP supports: every registered one (episodic: per-episode units;
#: otherwise per-sample DP-SGD through the learner's own loop).
_RECORD_LEARNERS = tuple(LEARNERS)
#: Fields of :class:`SiteDPParams` that are counts of at least 1 / of at least 0.
_POSITIVE = ("n_way", "episodes_per_step", "expected_batch", "normaliser", "augmult")
_NON_NEGATIVE = ("local_steps", "meta_batch", "inner_steps", "seed")


@dataclass(frozen=True, kw_only=True)
class SiteDPParams:
    """The site hook's parameters: the run's :class:`~secfed.dp.params.DPParams` and the public
    facts of the site's local training (build it with :func:`site_dp_params`).

    Attributes:
        dp: The run's privacy parameters (``noise_multiplier``, ``max_grad_norm``, ``sample_rate``,
            ``delta``, ``accountant``, ``epsilon_budget``, ``client_sample_rate``,
            ``steps_per_round``, ``noise_sharing``, ...).
        learner: The configured learner's name (the hook refuses another learner).
        episodic: Whether the learner's DP unit is an episode (its class declares ``episodic``).
        dp_plan: The learner's declared public plan (``Learner.dp_plan``: ``"slots"``, ``"tasks"``
            or ``"every_step"``).
        local_steps: ``learner.local_steps``.
        meta_batch: ``learner.meta_batch``.
        inner_steps: ``learner.inner_steps``.
        n_way: ``task.n_way`` (classes per slot or per Reptile task).
        episodes_per_step: ``privacy.episodes_per_step`` (slots of an episodic DP step).
        expected_batch: ``privacy.expected_batch`` (reported in the hook's description).
        normaliser: The public divisor of a DP step's noisy sum
            (:func:`secfed.dp.engines.steps.step_normaliser`).
        augmult: ``privacy.augmult`` (augmentation multiplicity of episodic units; 1 = off).
        seed: ``experiment.seed`` (the public seed the slot plans derive from).

    Raises:
        DPParamsError: Naming the first invalid field (``site.<field>``).
    """

    dp: DPParams
    learner: str
    episodic: bool
    dp_plan: str
    local_steps: int
    meta_batch: int
    inner_steps: int
    n_way: int
    episodes_per_step: int
    expected_batch: int
    normaliser: int
    augmult: int
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.dp, DPParams):
            raise DPParamsError(field="site.dp", value=self.dp, reason="must be a DPParams")
        if not isinstance(self.learner, str) or not self.learner:
            raise DPParamsError(field="site.learner", value=self.learner, reason="must be a learner name")
        for name, low in [(n, 1) for n in _POSITIVE] + [(n, 0) for n in _NON_NEGATIVE]:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise DPParamsError(field=f"site.{name}", value=v, reason=f"must be an integer >= {low}")


def check_site_config(config: ExperimentConfig) -> None:
    """Refuse a configuration without a site privacy hook, or one record-level DP does not support.

    Args:
        config: The experiment configuration.

    Raises:
        ConfigError: ``privacy.mode`` is ``none``; or, in record mode, the learner is unsupported,
            an episodic or task-planning learner does not draw episodic tasks, or the model's
            normalisation couples records (``model.norm = "batch"``).
    """
    p = config.privacy
    if p.mode == "none":
        raise ConfigError("privacy.mode = 'none' has no site privacy hook")
    if p.mode != "record":
        return
    name = config.learner.name
    if name not in _RECORD_LEARNERS:
        raise ConfigError(f"record-level DP does not support learner.name = {name!r}")
    cls = learner_class(name)
    if (cls.episodic or cls.dp_plan == "tasks") and config.task.source != "episodic":
        raise ConfigError(
            f"task.source = {config.task.source!r} is not supported under record-level DP for {name}; "
            "use 'episodic' (records are drawn into public class slots)"
        )
    if config.model.norm == "batch":
        raise ConfigError("model.norm = 'batch' couples records; record-level DP needs 'group' or 'none'")


def site_dp_params(*, config: ExperimentConfig, params: DPParams | None = None) -> SiteDPParams:
    """The site hook's parameters, read from the (calibrated) configuration once.

    Args:
        config: The configuration the site received (``privacy.mode`` ``record``, ``client`` or
            ``distributed``).
        params: The run's :class:`~secfed.dp.params.DPParams` of ``config`` when the caller has
            it, else ``None`` (built here, once).

    Returns:
        The validated value.

    Raises:
        ConfigError: See :func:`check_site_config`; or ``params`` was built from another
            configuration (:func:`secfed.dp.params.given_or_built`).
        DPParamsError: A value read from the configuration is invalid (names the field).
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    check_site_config(config)
    lr, p = config.learner, config.privacy
    cls = learner_class(lr.name)
    return SiteDPParams(
        dp=given_or_built(config=config, params=params),
        learner=lr.name,
        episodic=bool(cls.episodic),
        dp_plan=str(cls.dp_plan),
        local_steps=int(lr.local_steps),
        meta_batch=int(lr.meta_batch),
        inner_steps=int(lr.inner_steps),
        n_way=int(config.task.n_way),
        episodes_per_step=int(p.episodes_per_step),
        expected_batch=int(p.expected_batch),
        normaliser=step_normaliser(config=config),
        augmult=int(p.augmult),
        seed=int(config.experiment.seed),
    )
