"""White-box one-run audit of a secfed run directory, with the run's own privacy configuration.

Reads only the public configuration (``config.toml``) and ``summary.json`` of the run: the privacy
mode, ``z`` (the calibrated one from ``summary.json`` when the run calibrated it), ``C``, the
record sampling rate ``q``, the number of DP steps one site takes (rounds × local steps) and, for
distributed DP, the noise mechanism and bit width. It then audits the project's mechanism for that
mode with gradient canaries (:mod:`attacks.whitebox_audit`): record-level runs with a per-sample
learner audit :class:`privacy.dpsgd.PerSampleDPSGD`, episodic learners (ProtoNet, MAML, FOMAML)
:class:`privacy.episodic.EpisodicDPSGD`, client-level runs the DP-FedAvg aggregator and
distributed runs the distributed encoder's decoded sum; a run without DP is audited as the plain
sum it releases. The result lands in ``RUN_DIR/attacks/whitebox_audit.json``.

What this audits is the mechanism the run was configured with, not the trained model: the canaries
are gradients at the mechanism's input (Steinke, Nasr & Jagielski 2023, white-box setting).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attacks.errors import AttackConfigError
from attacks.options import AttackOptions
from attacks.secfed_adapter import LoadedRun
from attacks.whitebox_audit import WhiteBoxAuditConfig, run_whitebox_audit
from secfed.learners import learner_class

__all__ = ["DEFAULT_WHITEBOX_CANARIES", "whitebox_config_for_run", "run_whitebox_audit_attack"]

#: Canaries of the white-box audit when ``--canaries`` keeps the black-box audit's default.
DEFAULT_WHITEBOX_CANARIES = 2000


def whitebox_config_for_run(*, run: LoadedRun, options: AttackOptions) -> WhiteBoxAuditConfig:
    """The audit configuration that mirrors a run's privacy settings.

    Args:
        run: The loaded run.
        options: Attack options (``canaries``, ``rounds``, ``seed``).

    Returns:
        The :class:`~attacks.whitebox_audit.WhiteBoxAuditConfig`.

    Raises:
        AttackConfigError: If the run's privacy mode is unknown.
    """
    cfg = run.config
    p = cfg.privacy
    m = options.canaries if options.canaries != AttackOptions().canaries else DEFAULT_WHITEBOX_CANARIES
    rounds = options.rounds if options.rounds is not None else cfg.experiment.rounds
    z = run.summary.get("noise_multiplier", p.noise_multiplier)
    z = float(z) if isinstance(z, int | float) else float(p.noise_multiplier)
    common: dict[str, Any] = {
        "num_canaries": m,
        "dim": m + 64,
        "background": 16,
        "delta": float(p.delta),
        "max_grad_norm": float(p.max_grad_norm),
        "seed": options.seed,
        "reference_runs": 3,
    }
    if p.mode == "none" or z == 0:
        return WhiteBoxAuditConfig(mode="none", noise_multiplier=0.0, steps=1, **common)
    if p.mode == "record":
        mode = "episode" if learner_class(cfg.learner.name).episodic else "record"
        steps = rounds * int(cfg.learner.local_steps)
        return WhiteBoxAuditConfig(
            mode=mode, noise_multiplier=z, sample_rate=float(p.sample_rate), steps=steps, **common
        )
    if p.mode == "client":
        return WhiteBoxAuditConfig(mode="client", noise_multiplier=z, sample_rate=1.0, steps=rounds, **common)
    if p.mode == "distributed":
        mech = p.mechanism if p.mechanism in ("ddg", "skellam") else "ddg"
        return WhiteBoxAuditConfig(
            mode="distributed",
            noise_multiplier=z,
            sample_rate=1.0,
            steps=rounds,
            distributed_mechanism=mech,
            bits=int(p.bits),
            **common,
        )
    raise AttackConfigError(
        f"privacy.mode {p.mode!r} cannot be audited (expected none, record, client, distributed)"
    )


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
        (the run's own ``summary.json`` ε), ``privacy_mode`` and ``files``.
    """
    config = whitebox_config_for_run(run=run, options=options)
    result = run_whitebox_audit(config=config, progress=progress)
    doc = result.to_dict()
    eps = run.summary.get("epsilon")
    doc["run_epsilon"] = float(eps) if isinstance(eps, int | float) else None
    doc["privacy_mode"] = run.config.privacy.mode
    doc["learner"] = run.config.learner.name
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "whitebox_audit.json"
    doc["files"] = {"json": str(path)}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return doc
