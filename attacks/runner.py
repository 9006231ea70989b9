"""Run an attack against a secfed run directory: ``run_attack(run_dir=..., attack=...)``.

Results land in ``RUN_DIR/attacks/``:

* ``inversion``: ``inversion.json`` and ``inversion_grid.png`` (:mod:`attacks.secfed_inversion`) —
  gradient inversion by an honest-but-curious server on the run's final global model, for every
  message kind the run's learner sends (with DP noise when the run uses DP);
* ``mia``: ``mia.json`` and ``mia_roc.png`` (log-log; plus ``mia_client_roc.png``)
  (:mod:`attacks.secfed_mia`) — record- and client-level membership inference with reference
  models trained by the run's own pipeline;
* ``audit``: ``audit.json`` (:mod:`attacks.secfed_audit`) — canary audit: empirical ε lower bounds
  (one run; Clopper–Pearson) beside the accountant's ε.
* ``whitebox-audit``: ``whitebox_audit.json`` (:mod:`attacks.secfed_whitebox`) — white-box one-run
  audit of the run's DP mechanism with gradient canaries (ε-DP and GDP bounds, their ceilings,
  the accountant's ε; client-level and distributed runs also get canary clients);
* ``blackbox-init-audit``: ``blackbox_init_audit.json`` (:mod:`attacks.blackbox_init_audit`) —
  black-box audit (final model only) with worst-case initial parameters of DP-SGD with a record-level
  run's parameters, on a small model.

Typical use::

    from attacks.runner import AttackOptions, run_attack
    result = run_attack(run_dir="runs/demo", attack="mia", options=AttackOptions(references=4))
    print(result["record_level"]["attacks"]["lira_online_global"]["auc"])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from attacks.errors import AttackConfigError
from attacks.options import AttackOptions
from attacks.secfed_adapter import RunDirError, load_run

__all__ = ["ATTACKS", "AttackOptions", "RunDirError", "run_attack"]

#: Attacks :func:`run_attack` knows, and the result file each writes.
ATTACKS: dict[str, str] = {
    "inversion": "inversion.json",
    "mia": "mia.json",
    "audit": "audit.json",
    "whitebox-audit": "whitebox_audit.json",
    "blackbox-init-audit": "blackbox_init_audit.json",
}


def run_attack(
    *,
    run_dir: Path | str,
    attack: str,
    options: AttackOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one attack against a finished (or checkpointed) run and write its results.

    Args:
        run_dir: A run directory written by :class:`secfed.experiment.Experiment`.
        attack: ``"inversion"``, ``"mia"``, ``"audit"``, ``"whitebox-audit"`` or
            ``"blackbox-init-audit"``.
        options: Attack options (defaults: :class:`AttackOptions`).
        progress: Called with a line of progress text (``mia``, ``inversion``, ``whitebox-audit``).

    Returns:
        The JSON document written to ``RUN_DIR/attacks/<attack>.json`` (its ``files`` entry lists
        every file written).

    Raises:
        AttackConfigError: If ``attack`` is unknown, the options are invalid, or the run cannot be
            attacked as configured (e.g. a partition scheme that cannot be replicated).
        RunDirError: If ``run_dir`` is not a readable run directory.
        attacks.replicas.ReplicaError: If a replica federation fails to train.
    """
    if attack not in ATTACKS:
        raise AttackConfigError(f"attack must be one of {sorted(ATTACKS)}, got {attack!r}")
    opts = options if options is not None else AttackOptions()
    if not isinstance(opts, AttackOptions):
        raise AttackConfigError(f"options must be AttackOptions, got {type(opts).__name__}")
    run = load_run(run_dir=run_dir)
    out_dir = Path(run_dir) / "attacks"
    if attack == "inversion":
        from attacks.secfed_inversion import run_inversion_attack

        doc = run_inversion_attack(run=run, options=opts, out_dir=out_dir, progress=progress)
    elif attack == "mia":
        from attacks.secfed_mia import run_mia_attack

        doc = run_mia_attack(run=run, options=opts, out_dir=out_dir, progress=progress)
    elif attack == "audit":
        from attacks.secfed_audit import run_audit_attack

        doc = run_audit_attack(run=run, options=opts, out_dir=out_dir)
    elif attack == "blackbox-init-audit":
        from attacks.secfed_whitebox import run_blackbox_init_audit_attack

        doc = run_blackbox_init_audit_attack(run=run, options=opts, out_dir=out_dir, progress=progress)
    else:
        from attacks.secfed_whitebox import run_whitebox_audit_attack

        doc = run_whitebox_audit_attack(run=run, options=opts, out_dir=out_dir, progress=progress)
    return doc
