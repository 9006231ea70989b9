"""Class-aware accounting of record-level DP steps: the engines' step counter and per-class counts.

A step of the episodic learners has a public slot plan (``episodes_per_step`` slots of ``n_way``
classes, :func:`privacy.sampling.draw_slots`, from a public seed and the public class list), and a
Reptile inner step a public task class set (``n_way`` classes drawn from the public class list with
the runtime's public generator). A record of class ``c`` can join a step only if ``c`` is in that
step's plan: otherwise it is in no episode (the sampler gives it no slot) or filtered out of the
batch, and the step's output distribution does not depend on it at all. Because the plans are
public and fixed independently of the data, the steps containing ``c`` are fixed in advance, and
for a record of class ``c`` the training is the adaptive composition of the Poisson-subsampled
Gaussian mechanism ``(z, q)`` over the ``N_c`` steps whose plan contains ``c``, and of mechanisms that
do not read it (ε = 0) over the others. Every step has the same ``(z, q)``, so the site's ε is that
of ``max_c N_c`` steps, the maximum over its public classes. The site reports, per round, the
increase of that maximum (so the server's sum over rounds equals the maximum), composes the same
increase into its own accountant and writes it to its ledger. After a restart the per-class counts
are gone; the site then takes every class's count to be the replayed total (an upper bound on each
``N_c``), which keeps the bound sound. This is sound only because the plans do not depend on the
data: a class list read from the shard, or a plan chosen after looking at the records, would void
it. Example: 190 classes, 5-way, 4 slots, ``T = 1000``, ``q = 0.05``, ``z = 1``, ``δ = 1e-5`` (RDP):
``max_c N_c ≈ 125`` and ε ≈ 4.4 against 11.98 when every step is counted. FedAvg reads every
record in every step: no class-aware saving.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from secfed.dp.engines.steps import DPEngineError
from secfed.errors import ConfigError

__all__ = ["ClassStepCounts", "StepCounter"]


class StepCounter:
    """The accountant handed to the DP engines: counts their steps (the site composes them itself).

    Args:
        noise_multiplier: The configured ``z``.
        sample_rate: The configured ``q``.

    Raises:
        DPEngineError: (on :meth:`step`) if an engine reports another ``(z, q)``.
    """

    def __init__(self, *, noise_multiplier: float, sample_rate: float) -> None:
        self._z = float(noise_multiplier)
        self._q = float(sample_rate)
        self.steps = 0

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Count one step with ``(z, q)``."""
        if float(noise_multiplier) != self._z or float(sample_rate) != self._q:
            raise DPEngineError(
                f"an engine stepped with (z, q) = ({noise_multiplier}, {sample_rate}), "
                f"configured ({self._z}, {self._q})"
            )
        self.steps += 1


@dataclass
class ClassStepCounts:
    """Per public class, the DP steps whose public plan contained it (see the module docstring).

    Attributes:
        classes: The site's public class list.
        base: Steps every class is assumed to have taken already (after a restart: the replayed
            total, an upper bound on each class's count).
        counts: Steps counted since, per class.
    """

    classes: tuple[int, ...]
    base: int = 0
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError("the public class list must be non-empty and distinct")
        if self.base < 0:
            raise ConfigError(f"base must be >= 0, got {self.base}")
        for c in self.classes:
            self.counts.setdefault(int(c), 0)

    @property
    def worst(self) -> int:
        """``max_c N_c``: the step count the site's ε is composed over."""
        return self.base + max(self.counts.values())

    def _after(self, plans: Iterable[Iterable[int]]) -> dict[int, int]:
        counts = dict(self.counts)
        for plan in plans:
            for c in {int(c) for c in plan}:
                if c not in counts:
                    raise DPEngineError(f"a step plan contains class {c}, not a public class of the site")
                counts[c] += 1
        return counts

    def increment(self, plans: Iterable[Iterable[int]]) -> int:
        """How much :attr:`worst` would grow if the steps with these class plans were taken.

        Args:
            plans: One iterable of class ids per step.

        Returns:
            The increase of the worst class's count (0 if no step touches a worst class).
        """
        return self.base + max(self._after(plans).values()) - self.worst

    def record(self, plans: Iterable[Iterable[int]]) -> int:
        """Count the steps with these class plans.

        Args:
            plans: One iterable of class ids per step.

        Returns:
            The increase of :attr:`worst`.
        """
        before = self.worst
        self.counts = self._after(plans)
        return self.worst - before
