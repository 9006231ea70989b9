"""The one egress point of a site: everything a site says passes :class:`SiteEgress`.

A differential-privacy guarantee covers everything an observer sees, not only the noised vector:
every message field, metric, summary, file and timing (the observers are the server, the other
sites, and whoever reads the run directory, the report or the logs). Under record-level
add/remove adjacency each released item must be (a) the output of an accounted mechanism, (b)
public — declared by the configuration or by the dataset's public description — or (c) withheld.
A record count, a class count computed from the shard, a loss on private records or a training
time (it grows with the Poisson batch sizes) differs between neighbouring datasets and would make
ε infinite on its own.

The client runtime builds its replies only through :meth:`SiteEgress.info` and
:meth:`SiteEgress.train_reply`; the server and the run directory (``sites.json``,
``metrics.jsonl``, ``summary.json``, the checkpoint, the console) record timings only when
:func:`releases_timing` allows it. The update itself leaves only through the aggregation scheme's
client side, after the privacy hook produced it.

What is released, per ``privacy.mode``:

* ``none``: everything (no guarantee is claimed): record count, losses, counts, timings.
* ``record``, ``client``, ``distributed``: the site id, the size of its *public* class list
  (:attr:`secfed.site.Site.public_classes`), the mechanism's public description and round
  report (configuration values and step counts), the aggregation weight (uniform under DP), and
  nothing else: ``records`` is ``None`` (listed in ``withheld``), ``train_loss`` is ``None``, no
  per-site or per-round time is sent or recorded. Client-level adjacency (add/remove a whole site)
  is broken by a site's record count just as well, so the rule is the same in every DP mode.

What this cannot hide: the time at which a site's reply reaches the server. Sites that must hide it
from the server have to pad their work to a public deadline; secfed does not do this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from secfed.config import ExperimentConfig

__all__ = ["SiteEgress", "SiteFacts", "TrainFacts", "WITHHELD_NOTE", "releases_timing"]

#: What the report says in place of a withheld value.
WITHHELD_NOTE = "withheld under differential privacy"


@dataclass(frozen=True)
class SiteFacts:
    """Everything a site knows about its data that it might describe (not all of it is public).

    Attributes:
        site: The site's id (public).
        records: Number of records (private under DP).
        public_classes: Size of the site's public class list (public).
        privacy: The privacy hook's public description, or ``None`` without DP.
    """

    site: int
    records: int
    public_classes: int
    privacy: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TrainFacts:
    """Everything one round of local training produced besides the update itself.

    Attributes:
        round: The round (public).
        weight: The aggregation weight (uniform, i.e. public, under DP).
        train_s: Local training time (private under DP: it grows with the Poisson batch sizes).
        train_loss: Mean loss on the site's records (private under DP).
        num_tasks: Tasks or episodes trained on (private under DP).
        extra: The learner's other diagnostics (private under DP).
        privacy: The privacy hook's public round report, or ``None`` without DP.
    """

    round: int
    weight: float
    train_s: float
    train_loss: float
    num_tasks: int
    extra: Mapping[str, float] = field(default_factory=dict)
    privacy: Mapping[str, Any] | None = None


def releases_timing(*, config: ExperimentConfig) -> bool:
    """Whether wall-clock and training times may be sent or recorded (only without DP).

    Args:
        config: The experiment configuration.

    Returns:
        ``True`` when ``privacy.mode`` is ``"none"``.
    """
    return config.privacy.mode == "none"


class SiteEgress:
    """The privacy mode's filter over everything a site sends (see the module docstring).

    Args:
        config: The experiment configuration (its ``privacy.mode`` decides).
    """

    def __init__(self, *, config: ExperimentConfig) -> None:
        self._private = config.privacy.mode != "none"

    @property
    def withholds(self) -> bool:
        """``True`` under any DP mode: only public facts and mechanism outputs leave."""
        return self._private

    def info(self, facts: SiteFacts) -> dict[str, Any]:
        """The site's answer to the server's ``info`` request.

        Args:
            facts: What the site knows about its data.

        Returns:
            ``site``, ``records`` (``None`` under DP), ``classes`` (the public class list's size),
            ``withheld`` (names of withheld fields) and, under DP, ``privacy``.
        """
        out: dict[str, Any] = {"site": int(facts.site), "classes": int(facts.public_classes)}
        if self._private:
            out.update(records=None, withheld=["records"])
        else:
            out.update(records=int(facts.records), withheld=[])
        if facts.privacy is not None:
            out["privacy"] = dict(facts.privacy)
        return out

    def train_reply(self, facts: TrainFacts) -> dict[str, Any]:
        """The metadata of the site's answer to a ``train`` request.

        Args:
            facts: What the round produced.

        Returns:
            ``round``, ``weight``, ``train_loss`` (``None`` under DP) and, without DP,
            ``train_s``, ``num_tasks`` and the learner's diagnostics; under DP the mechanism's
            round report as ``privacy``.
        """
        out: dict[str, Any] = {"round": int(facts.round), "weight": float(facts.weight)}
        if self._private:
            out["train_loss"] = None
        else:
            out.update(
                train_loss=float(facts.train_loss),
                num_tasks=int(facts.num_tasks),
                train_s=float(facts.train_s),
            )
            out.update({k: float(v) for k, v in facts.extra.items()})
        if facts.privacy is not None:
            out["privacy"] = dict(facts.privacy)
        return out
