"""Options of the attacks run against a secfed run directory (:func:`attacks.runner.run_attack`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from attacks.errors import AttackConfigError

__all__ = ["AttackOptions", "INVERSION_SCENARIOS", "MIA_LEVELS"]

#: Observation scenarios of the inversion attack (see :mod:`attacks.secfed_inversion`).
INVERSION_SCENARIOS: tuple[str, ...] = (
    "gradient_b1",
    "gradient_b4",
    "update_b1",
    "update_b4",
    "episode",
    "secure_aggregate",
)
#: Granularities of membership inference.
MIA_LEVELS: tuple[str, ...] = ("record", "client")


@dataclass(frozen=True)
class AttackOptions:
    """Knobs of the attacks (defaults keep every attack to minutes on a laptop CPU).

    Attributes:
        site: The attacked site (its records are reconstructed, its membership inferred, its data
            receives the canaries).
        seed: Seed of the attacker's own random choices (records attacked, inclusion masks,
            episodes, canaries). Not a security parameter.
        iterations: Inversion optimisation steps per restart.
        restarts: Inversion restarts.
        method: Inversion method: ``"ig"`` (Geiping et al. 2020), ``"dlg"`` or ``"idlg"``.
        scenarios: Inversion scenarios to run (default: all that apply to the run's learner).
        aggregate_clients: Clients summed in the secure-aggregate scenario.
        grid_columns: Records shown per scenario in ``inversion_grid.png``.
        references: Reference models per target in membership inference (``references + 1``
            replica federations are trained per level; each serves once as the target).
        rounds: Rounds of the replica federations of membership inference and of the audit run
            (default: the run's rounds).
        levels: Membership-inference granularities: ``"record"`` and/or ``"client"``.
        population_fraction: Fraction of the site's records held out of every replica (the RMIA
            population and the support pool of the scoring episodes).
        shots: Support records per class of the scoring episodes of few-shot models.
        passes: Scoring episodes per record (queries per record).
        client_queries: Records per site scored at the client level.
        canaries: Canaries of the audit (each included with probability 1/2).
        significance: Error probability of the audit's lower bounds.
        keep_work: Keep the replica federations' run directories under ``RUN_DIR/attacks/work``.
        save_scores: Also write the per-record statistics and inclusion masks of membership
            inference to ``RUN_DIR/attacks/mia_scores.npz`` (for comparisons with other tools).
        quiet: Silence the replica federations' per-round log lines.
    """

    site: int = 0
    seed: int = 0
    iterations: int = 300
    restarts: int = 1
    method: str = "ig"
    scenarios: tuple[str, ...] | None = None
    aggregate_clients: int = 4
    grid_columns: int = 8
    references: int = 6
    rounds: int | None = None
    levels: tuple[str, ...] = MIA_LEVELS
    population_fraction: float = 0.2
    shots: int = 10
    passes: int = 2
    client_queries: int = 64
    canaries: int = 200
    significance: float = 0.05
    keep_work: bool = False
    save_scores: bool = False
    quiet: bool = True

    def __post_init__(self) -> None:
        ints = {
            "site": (self.site, 0),
            "seed": (self.seed, 0),
            "iterations": (self.iterations, 1),
            "restarts": (self.restarts, 1),
            "aggregate_clients": (self.aggregate_clients, 1),
            "grid_columns": (self.grid_columns, 1),
            "references": (self.references, 2),
            "shots": (self.shots, 1),
            "passes": (self.passes, 1),
            "client_queries": (self.client_queries, 1),
            "canaries": (self.canaries, 2),
        }
        for name, (value, low) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise AttackConfigError(f"AttackOptions.{name} must be an int >= {low}, got {value!r}")
        if self.rounds is not None and (
            isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1
        ):
            raise AttackConfigError(f"AttackOptions.rounds must be None or an int >= 1, got {self.rounds!r}")
        if self.method not in ("ig", "dlg", "idlg"):
            raise AttackConfigError(
                f"AttackOptions.method must be 'ig', 'dlg' or 'idlg', got {self.method!r}"
            )
        if self.scenarios is not None:
            bad = [s for s in self.scenarios if s not in INVERSION_SCENARIOS]
            if bad or not self.scenarios:
                raise AttackConfigError(
                    f"AttackOptions.scenarios must be a non-empty subset of {INVERSION_SCENARIOS}, "
                    f"got {self.scenarios}"
                )
        if not self.levels or any(lv not in MIA_LEVELS for lv in self.levels):
            raise AttackConfigError(
                f"AttackOptions.levels must be a non-empty subset of {MIA_LEVELS}, got {self.levels}"
            )
        if not 0.0 < self.population_fraction < 1.0:
            raise AttackConfigError(
                f"AttackOptions.population_fraction must lie in (0, 1), got {self.population_fraction}"
            )
        if not 0.0 < self.significance < 1.0:
            raise AttackConfigError(f"AttackOptions.significance must lie in (0, 1), got {self.significance}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = dataclasses.asdict(self)
        out["scenarios"] = list(self.scenarios) if self.scenarios is not None else None
        out["levels"] = list(self.levels)
        return out
