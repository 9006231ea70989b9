"""White-box one-run audit of a secfed run directory, with the run's own privacy configuration.

Reads only the public configuration (``config.toml``), ``summary.json`` and the run's ε ledger
(``privacy_ledger.jsonl``, read with :meth:`privacy.ledger.PrivacyLedger.read`): the privacy mode,
``C``, for distributed DP the noise mechanism and bit width, and — from the ledger, the source of
truth for the run's ε — the accounted ``(z, q, steps)`` of the most exposed unit: in record mode the
site with the largest ε and the sum of its class-aware steps over the counted rounds (what its ε
composes), in client mode the global record's rounds. The audit replays exactly those steps and
accounts them with the run's accountant, so its accountant ε is the run's ε
(:func:`run_privacy_plan`; a run without a ledger falls back to the planning function the run
itself uses, :func:`secfed.dp.server.planned_epsilon`). It then audits the project's mechanism for that
mode with gradient canaries (:mod:`attacks.whitebox_audit`): record-level runs with a per-sample
learner audit :class:`privacy.dpsgd.PerSampleDPSGD`, episodic learners (ProtoNet, MAML, FOMAML)
:class:`privacy.episodic.EpisodicDPSGD`, client-level runs the DP-FedAvg aggregator and
distributed runs the distributed encoder's decoded sum; a run without DP is audited as the plain
sum it releases. The result lands in ``RUN_DIR/attacks/whitebox_audit.json``.

What this audits is the mechanism the run was configured with, not the trained model: the canaries
are gradients at the mechanism's input (Steinke, Nasr & Jagielski 2023, white-box setting).

The black-box audit with worst-case initial parameters (:mod:`attacks.blackbox_init_audit`) is run
against a record-level run's accounted parameters the same way
(:func:`run_blackbox_init_audit_attack`, ``RUN_DIR/attacks/blackbox_init_audit.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attacks.blackbox_init_audit import BlackBoxInitAuditConfig, run_blackbox_init_audit
from attacks.canary_clients import CANARY_MODES, CanaryClientConfig, run_canary_client_audit
from attacks.errors import AttackConfigError
from attacks.options import AttackOptions
from attacks.secfed_adapter import LoadedRun
from attacks.whitebox_audit import WhiteBoxAuditConfig, run_whitebox_audit
from secfed.learners import learner_class

__all__ = [
    "DEFAULT_WHITEBOX_CANARIES",
    "RunPrivacyPlan",
    "canary_config_for_run",
    "run_privacy_plan",
    "whitebox_config_for_run",
    "run_whitebox_audit_attack",
    "run_blackbox_init_audit_attack",
]

#: Canaries of the white-box audit when ``--canaries`` keeps the black-box audit's default.
DEFAULT_WHITEBOX_CANARIES = 2000

#: Relative tolerance within which the audit's accountant ε and the run's ε are said to agree.
EPSILON_AGREEMENT_RTOL = 1e-3


@dataclass(frozen=True)
class RunPrivacyPlan:
    """What the run accounted for its most exposed unit (the audit replays exactly this).

    Attributes:
        noise_multiplier: ``z`` of every counted step.
        sample_rate: ``q`` of every counted step.
        steps: Counted steps (record mode: class-aware DP steps of the most exposed site; client and
            distributed modes: rounds).
        accountant: The run's accountant (``"rdp"``, ``"prv"``, ``"pld"``).
        epsilon: The run's ε of that unit (the ledger's last counted entry; ``None`` if unknown).
        source: ``"ledger"`` or ``"planning"`` (no ledger: :func:`secfed.dp.server.planned_epsilon`).
        site: The most exposed site (record mode, from the ledger), else ``None``.
        integrity: The ledger's integrity (``"verified"`` only when every MAC was checked).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    epsilon: float | None
    source: str
    site: str | None = None
    integrity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _plan_from_ledger(*, run: LoadedRun) -> RunPrivacyPlan | None:
    from privacy.errors import LedgerError
    from privacy.ledger import PrivacyLedger

    path = run.run_dir / "privacy_ledger.jsonl"
    if not path.is_file():
        return None
    try:
        ledger = PrivacyLedger.read(path=path)
    except LedgerError as exc:
        raise AttackConfigError(f"{path}: the run's ε ledger cannot be read: {exc}") from exc
    releases = ledger.releases()
    if not releases:
        return None
    mode = run.config.privacy.mode
    last = releases[-1]
    if mode == "record":
        if not last.sites:
            return None
        site = max(last.sites, key=lambda s: float(last.sites[s].epsilon))
        recs = [e.sites[site] for e in releases if site in e.sites and e.sites[site].steps > 0]
        eps = float(last.sites[site].epsilon)
    else:
        site = None
        recs = [
            e.global_record for e in releases if e.global_record is not None and e.global_record.steps > 0
        ]
        eps = float(last.global_record.epsilon) if last.global_record is not None else math.nan
    if not recs:
        return None
    pairs = {(float(r.noise_multiplier), float(r.sample_rate)) for r in recs}
    if len(pairs) != 1:
        raise AttackConfigError(
            f"{path}: the counted rounds use different (z, q) {sorted(pairs)}; the audit replays one "
            "(z, q) and cannot mirror this run"
        )
    ((z, q),) = pairs
    return RunPrivacyPlan(
        noise_multiplier=z,
        sample_rate=q,
        steps=int(sum(int(r.steps) for r in recs)),
        accountant=str(ledger.header.accountant),
        epsilon=eps if math.isfinite(eps) else None,
        source="ledger",
        site=site,
        integrity=str(ledger.integrity),
    )


def run_privacy_plan(*, run: LoadedRun) -> RunPrivacyPlan:
    """The ``(z, q, steps)`` and accountant the run accounted for its most exposed unit.

    The run's ledger is the source of truth (module docstring); without one (a run that did not
    train a round) the planning function the run uses, :func:`secfed.dp.server.planned_epsilon`
    (class-aware record steps, client rounds without sampling amplification).

    Args:
        run: The loaded run (privacy mode not ``none``).

    Returns:
        The :class:`RunPrivacyPlan`.

    Raises:
        AttackConfigError: If the ledger cannot be read or mixes several ``(z, q)``.
    """
    plan = _plan_from_ledger(run=run)
    if plan is not None:
        return plan
    from secfed.dp.server import planned_epsilon

    p = run.config.privacy
    planned = planned_epsilon(config=run.config)
    if p.mode == "record":
        return RunPrivacyPlan(
            noise_multiplier=float(planned["record_noise_multiplier"]),
            sample_rate=float(planned["record_sample_rate"]),
            steps=int(planned["record_steps"]),
            accountant=str(planned["accountant"]),
            epsilon=float(planned["record_epsilon"]),
            source="planning",
        )
    eps_key = "distributed_epsilon" if p.mode == "distributed" else "client_epsilon"
    return RunPrivacyPlan(
        noise_multiplier=float(planned["noise_multiplier"]),
        sample_rate=1.0,
        steps=int(planned["client_rounds"]),
        accountant=str(planned["accountant"]),
        epsilon=float(planned[eps_key]) if eps_key in planned else None,
        source="planning",
    )


def whitebox_config_for_run(
    *, run: LoadedRun, options: AttackOptions, plan: RunPrivacyPlan | None = None
) -> WhiteBoxAuditConfig:
    """The audit configuration that mirrors a run's privacy settings.

    The steps, ``z``, ``q`` and accountant come from :func:`run_privacy_plan` (the run's ledger),
    so the audit's accountant ε is the run's ε. ``options.rounds`` overrides the step count
    (``rounds × learner.local_steps`` per record, every step counted; ``rounds`` per client): the
    audit's ε is then that of the audited steps, not the run's.

    Args:
        run: The loaded run.
        options: Attack options (``canaries``, ``rounds``, ``seed``).
        plan: The run's plan when the caller holds it (default: :func:`run_privacy_plan`).

    Returns:
        The :class:`~attacks.whitebox_audit.WhiteBoxAuditConfig`.

    Raises:
        AttackConfigError: If the run's privacy mode is unknown or its ledger cannot be mirrored.
    """
    cfg = run.config
    p = cfg.privacy
    m = options.canaries if options.canaries != AttackOptions().canaries else DEFAULT_WHITEBOX_CANARIES
    common: dict[str, Any] = {
        "num_canaries": m,
        "dim": m + 64,
        "background": 16,
        "delta": float(p.delta),
        "max_grad_norm": float(p.max_grad_norm),
        "seed": options.seed,
        "reference_runs": 3,
        "fdp_one_run": True,
    }
    if p.mode == "none" or float(p.noise_multiplier) == 0:
        return WhiteBoxAuditConfig(mode="none", noise_multiplier=0.0, steps=1, **common)
    if p.mode not in ("record", "client", "distributed"):
        raise AttackConfigError(
            f"privacy.mode {p.mode!r} cannot be audited (expected none, record, client, distributed)"
        )
    plan = plan if plan is not None else run_privacy_plan(run=run)
    z = plan.noise_multiplier
    common["accountant"] = plan.accountant if plan.accountant in ("rdp", "prv", "pld") else "rdp"
    if p.mode == "record":
        mode = "episode" if learner_class(cfg.learner.name).episodic else "record"
        steps = plan.steps if options.rounds is None else options.rounds * int(cfg.learner.local_steps)
        return WhiteBoxAuditConfig(
            mode=mode, noise_multiplier=z, sample_rate=plan.sample_rate, steps=steps, **common
        )
    rounds = plan.steps if options.rounds is None else options.rounds
    if p.mode == "client":
        return WhiteBoxAuditConfig(mode="client", noise_multiplier=z, sample_rate=1.0, steps=rounds, **common)
    mech = p.mechanism if p.mechanism in ("ddg", "skellam") else "ddg"
    return WhiteBoxAuditConfig(
        mode="distributed",
        noise_multiplier=float(p.noise_multiplier),
        sample_rate=1.0,
        steps=rounds,
        distributed_mechanism=mech,
        bits=int(p.bits),
        **common,
    )


#: Canary clients of the canary-client audit of a client-level or distributed run.
DEFAULT_CANARY_CLIENTS = 1000


def canary_config_for_run(
    *, run: LoadedRun, options: AttackOptions, plan: RunPrivacyPlan
) -> CanaryClientConfig:
    """The canary-client audit (:mod:`attacks.canary_clients`) that mirrors a client-level or distributed run.

    The canaries join the run's client population (its sites are the real clients) with the run's
    public client-sampling rate, for the run's counted rounds (``options.rounds`` overrides the
    rounds observed); the accountant composes the ledger's counted rounds with the run's
    accountant.

    Args:
        run: The loaded run (``client`` or ``distributed`` mode).
        options: Attack options (``canaries``, ``rounds``, ``seed``).
        plan: The run's :class:`RunPrivacyPlan`.

    Returns:
        The :class:`~attacks.canary_clients.CanaryClientConfig`.

    Raises:
        AttackConfigError: If the run's mode has no canary-client audit.
    """
    from secfed.dp.distributed import client_sample_rate

    p = run.config.privacy
    if p.mode not in CANARY_MODES:
        raise AttackConfigError(f"canary clients audit modes {CANARY_MODES}, not privacy.mode {p.mode!r}")
    k = options.canaries if options.canaries != AttackOptions().canaries else DEFAULT_CANARY_CLIENTS
    return CanaryClientConfig(
        mode=p.mode,
        noise_multiplier=plan.noise_multiplier if p.mode == "client" else float(p.noise_multiplier),
        max_grad_norm=float(p.max_grad_norm),
        sample_rate=float(client_sample_rate(config=run.config)),
        rounds=options.rounds if options.rounds is not None else plan.steps,
        num_canaries=k,
        real_clients=int(run.config.partition.num_sites),
        delta=float(p.delta),
        distributed_mechanism=p.mechanism if p.mechanism in ("ddg", "skellam") else "ddg",
        bits=int(p.bits),
        accountant=plan.accountant if plan.accountant in ("rdp", "prv", "pld") else "rdp",
        accountant_rounds=plan.steps,
        seed=options.seed,
    )


def _run_epsilon(run: LoadedRun) -> float | None:
    """The run's own ε (``summary.json``), ``None`` when it has none."""
    eps = run.summary.get("epsilon")
    return float(eps) if isinstance(eps, int | float) else None


def _write(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write ``doc`` (with ``files``) as sorted JSON to ``path``; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc["files"] = {"json": str(path)}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return doc


def _agrees(audit_eps: Any, run_eps: Any) -> bool | None:
    if not isinstance(audit_eps, int | float) or not isinstance(run_eps, int | float):
        return None
    return math.isclose(float(audit_eps), float(run_eps), rel_tol=EPSILON_AGREEMENT_RTOL)


def run_whitebox_audit_attack(
    *, run: LoadedRun, options: AttackOptions, out_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Audit the run's mechanism with white-box canaries; writes ``whitebox_audit.json``.

    Args:
        run: The loaded run.
        options: Attack options.
        out_dir: ``RUN_DIR/attacks``.
        progress: Called with a line after each mechanism step.

    Returns:
        The written document: the audit (:meth:`WhiteBoxAuditResult.to_dict`) plus ``run_epsilon``
        (the run's own ``summary.json`` ε), ``run_privacy`` (:class:`RunPrivacyPlan`),
        ``accountant_matches_run`` (the audit's accountant ε equals the run's within
        :data:`EPSILON_AGREEMENT_RTOL`; ``None`` when either is missing, e.g. no DP, or in distributed
        mode, whose audited vector has its own dimension), ``canary_clients`` (client-level and
        distributed runs: :meth:`attacks.canary_clients.CanaryClientResult.to_dict`, its statement
        appended to ``statement``), ``privacy_mode`` and ``files``.

    Raises:
        AttackConfigError: If the run's ledger cannot be read or mirrored.
    """
    say = progress if progress is not None else (lambda _line: None)
    plan = None
    if run.config.privacy.mode != "none" and float(run.config.privacy.noise_multiplier) > 0:
        plan = run_privacy_plan(run=run)
        say(
            f"run's privacy ({plan.source}): z = {plan.noise_multiplier:g}, q = {plan.sample_rate:g}, "
            f"{plan.steps} counted steps, {plan.accountant} accountant, epsilon "
            f"{plan.epsilon if plan.epsilon is not None else float('nan'):.3f}"
        )
    config = whitebox_config_for_run(run=run, options=options, plan=plan)
    result = run_whitebox_audit(config=config, progress=progress)
    doc = result.to_dict()
    doc["run_epsilon"] = _run_epsilon(run)
    doc["run_privacy"] = plan.to_dict() if plan is not None else None
    doc["accountant_matches_run"] = (
        None if config.mode == "distributed" else _agrees(doc.get("accountant_epsilon"), doc["run_epsilon"])
    )
    doc["privacy_mode"] = run.config.privacy.mode
    doc["canary_clients"] = None
    if plan is not None and run.config.privacy.mode in CANARY_MODES:
        cc = run_canary_client_audit(
            config=canary_config_for_run(run=run, options=options, plan=plan),
            progress=(lambda line: say(f"canary clients: {line}")),
        )
        doc["canary_clients"] = cc.to_dict()
        doc["statement"] = f"{doc['statement']}; {cc.statement}"
        doc["violation"] = bool(doc["violation"] or cc.violation)
    doc["learner"] = run.config.learner.name
    return _write(doc, out_dir / "whitebox_audit.json")


def run_blackbox_init_audit_attack(
    *, run: LoadedRun, options: AttackOptions, out_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Audit a record-level run's DP-SGD parameters black-box; writes ``blackbox_init_audit.json``.

    The run's ``(z, q, steps)``, ``C``, δ and accountant come from its ledger
    (:func:`run_privacy_plan`), so the accountant's ε is the run's; the audited
    model is the small softmax-linear model on the smoke configuration's digits (module docstring),
    not the run's model (:mod:`attacks.blackbox_init_audit`). ``options.canaries`` (when changed from
    its default) sets the trials.

    Args:
        run: The loaded run (:class:`attacks.secfed_adapter.LoadedRun`; ``privacy.mode = "record"``).
        options: :class:`attacks.options.AttackOptions`.
        out_dir: ``RUN_DIR/attacks``.
        progress: Called with a line of text as trials finish.

    Returns:
        The written document (:meth:`attacks.blackbox_init_audit.BlackBoxInitAuditResult.to_dict`
        plus ``run_epsilon``, ``run_privacy`` and ``files``).

    Raises:
        AttackConfigError: If the run is not a record-level DP run or its ledger cannot be mirrored.
    """
    p = run.config.privacy
    if p.mode != "record" or float(p.noise_multiplier) <= 0:
        raise AttackConfigError(
            f"the black-box audit with worst-case initial parameters audits record-level DP-SGD, "
            f"not privacy.mode {p.mode!r}"
        )
    plan = run_privacy_plan(run=run)
    trials = options.canaries if options.canaries != AttackOptions().canaries else 400
    cfg = BlackBoxInitAuditConfig(
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=float(p.max_grad_norm),
        sample_rate=plan.sample_rate,
        steps=plan.steps,
        trials=trials,
        delta=float(p.delta),
        significance=float(options.significance),
        accountant=plan.accountant if plan.accountant in ("rdp", "prv", "pld") else "rdp",
        seed=int(options.seed),
    )
    doc = run_blackbox_init_audit(config=cfg, progress=progress).to_dict()
    doc["run_epsilon"] = _run_epsilon(run)
    doc["run_privacy"] = plan.to_dict()
    return _write(doc, out_dir / "blackbox_init_audit.json")
