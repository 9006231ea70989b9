"""The white-box audit's configuration and result (:mod:`attacks.whitebox_audit` runs it).

:class:`WhiteBoxAuditConfig` holds the claimed mechanism (mode, ``z``, ``C``, ``q``, steps), the
canary design and the negative-control fields; :class:`WhiteBoxAuditResult` the bounds next to
their ceilings, the idealised reference and the accountant's ε.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from attacks import audit_common as common
from attacks.errors import AttackConfigError

__all__ = ["MODES", "WhiteBoxAuditConfig", "WhiteBoxAuditResult"]

#: Privacy modes the white-box audit covers.
MODES: tuple[str, ...] = ("record", "episode", "client", "distributed", "none")


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
        z = self.noise_multiplier
        if isinstance(z, bool) or not isinstance(z, int | float) or not math.isfinite(z) or z < 0:
            raise AttackConfigError(f"noise_multiplier must be finite and >= 0, got {z!r}")
        if self.mode != "none" and z == 0:
            raise AttackConfigError(f"mode {self.mode!r} needs noise_multiplier > 0 (use mode 'none')")
        common.check_audit_config(
            config=self,
            positive=("max_grad_norm", "canary_scale", "noise_factor", "clip_factor"),
            minimums=(("steps", 1), ("num_canaries", 2), ("dim", 2), ("background", 0), ("group_size", 1)),
            choices=(("distributed_mechanism", ("ddg", "skellam")),),
        )
        if self.dim < self.num_canaries or (self.background and self.dim == self.num_canaries):
            raise AttackConfigError(
                f"dim ({self.dim}) must be >= num_canaries ({self.num_canaries}), "
                "and > num_canaries with background records"
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
class WhiteBoxAuditResult(common.AuditReport):
    """Bounds, their ceilings and the accountant's ε (see :meth:`to_dict`)."""

    one_run: dict[str, Any]
    gdp: dict[str, Any]
    idealised: dict[str, Any]
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

    def reported_epsilon(self) -> float | None:
        """The accountant's ε, ``None`` when infinite (mode ``"none"``)."""
        acc = self.accountant_epsilon
        return acc if math.isfinite(acc) else None

    def findings(self) -> dict[str, Any]:
        """The proven bounds (one-run ε-DP, GDP, one-run GDP, one-run f-DP) and the idealised reference."""
        return {
            "one_run": self.one_run,
            "gdp": self.gdp,
            "one_run_gdp": self.one_run_gdp,
            "fdp_one_run": self.fdp_one_run,
            "idealised_gaussian": self.idealised,
        }
