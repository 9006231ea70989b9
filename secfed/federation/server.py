"""The federated server: sampling, simulated dropouts, aggregation and the server optimiser.

The server holds the global model and a :class:`~secfed.federation.backends.Backend`; it never
holds a client's data, model or update. Per round it samples sites, asks them to train, obtains
the weighted sum of their updates through the pluggable aggregator, and applies it with SGD
(FedAvg with a server learning rate) or Adam (FedAdam; Reddi et al., "Adaptive Federated
Optimization", ICLR 2021).

Every random choice is derived from ``(seed, round)``, so a run resumed from a checkpoint makes
the same choices as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secfed.config import ExperimentConfig
from secfed.federation.aggregation import AggregateResult, ServerAggregator
from secfed.federation.backends import Backend
from secfed.federation.messages import decode_message, encode_message
from secfed.seeding import derive_seed

__all__ = [
    "RoundPlan",
    "RoundOutcome",
    "DropoutChannel",
    "ServerOptimizer",
    "FederatedServer",
    "plan_round",
    "planned_participation",
    "public_normaliser",
    "sampled_sites",
]

TRAIN_STAGE = "train"


@dataclass(frozen=True)
class RoundPlan:
    """The simulated events of one round, drawn from the seed.

    Attributes:
        sampled: Sites asked to take part.
        drop_stage: For each site that drops: index of the stage it stops at (0 = training,
            1.. = aggregation stages in order).
        straggle_stage: For each straggler: the stage whose answer arrives too late.
    """

    sampled: tuple[int, ...]
    drop_stage: dict[int, int] = field(default_factory=dict)
    straggle_stage: dict[int, int] = field(default_factory=dict)

    def silent_at(self, sid: int, stage_idx: int) -> bool:
        """Whether ``sid`` gives no (timely) answer at ``stage_idx``."""
        if sid in self.drop_stage and stage_idx >= self.drop_stage[sid]:
            return True
        return sid in self.straggle_stage and stage_idx >= self.straggle_stage[sid]


def plan_round(*, config: ExperimentConfig, round_idx: int, num_stages: int) -> RoundPlan:
    """Draw the sampled sites, dropouts and stragglers of a round from the seed.

    Args:
        config: The experiment configuration.
        round_idx: The round.
        num_stages: Stages of the round (training plus the aggregator's stages).

    Returns:
        The round's plan.
    """
    fed = config.federation
    n = config.partition.num_sites
    rng = _round_rng(config, round_idx)
    sampled = _draw_sample(rng, config)
    drop_u = rng.random(n)
    drop_s = rng.integers(0, num_stages, size=n)
    strag_u = rng.random(n)
    strag_s = rng.integers(0, num_stages, size=n)
    drops = {s: int(drop_s[s]) for s in sampled if drop_u[s] < fed.dropout_rate}
    strag = {s: int(strag_s[s]) for s in sampled if s not in drops and strag_u[s] < fed.straggler_rate}
    return RoundPlan(sampled=sampled, drop_stage=drops, straggle_stage=strag)


def _round_rng(config: ExperimentConfig, round_idx: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(config.experiment.seed, "server", round_idx))


def _draw_sample(rng: np.random.Generator, config: ExperimentConfig) -> tuple[int, ...]:
    """The round's sampled sites: the first draw from the round's generator."""
    fed = config.federation
    n = config.partition.num_sites
    if fed.sampling == "poisson":
        return tuple(int(i) for i in np.flatnonzero(rng.random(n) < fed.sample_rate))
    m = fed.clients_per_round or n
    return tuple(sorted(int(i) for i in rng.choice(n, size=m, replace=False)))


def sampled_sites(*, config: ExperimentConfig, round_idx: int) -> tuple[int, ...]:
    """The sites :func:`plan_round` samples in round ``round_idx`` (before budget exclusions).

    Args:
        config: The experiment configuration.
        round_idx: The round (1-based).

    Returns:
        Sorted site ids.
    """
    return _draw_sample(_round_rng(config, round_idx), config)


def planned_participation(*, config: ExperimentConfig) -> list[int]:
    """How many of the run's rounds sample each site: an upper bound on the rounds it trains in.

    The sample is public randomness, drawn from ``experiment.seed`` and independent of the data;
    a site trains only in rounds that sample it (and not in those where it is excluded or drops
    out before training), so record-level DP can be calibrated for the largest count.

    Args:
        config: The experiment configuration.

    Returns:
        One count per site, indexed by site id.
    """
    counts = [0] * config.partition.num_sites
    for rnd in range(1, config.experiment.rounds + 1):
        for sid in sampled_sites(config=config, round_idx=rnd):
            counts[sid] += 1
    return counts


def public_normaliser(*, config: ExperimentConfig) -> float:
    """The public constant that divides the aggregate under client-level DP: expected participants.

    ``federation.sample_rate * num_sites`` (``q·N``) for Poisson sampling, ``clients_per_round``
    (``m``, or ``N`` when every site takes part) for fixed-size sampling: McMahan, Ramage, Talwar &
    Zhang (ICLR 2018, arXiv 1710.06963), fixed-denominator estimator. Dividing the noisy sum by the
    number of updates that actually survived would let anyone holding two successive models read
    that number off the noise scale (the noise std of the release is ``z·C / normaliser``), and
    under add/remove adjacency the count itself depends on whether a site's data is present. The
    weights are uniform (1 per site) under DP, so the sum of weights is the survivor count.

    Args:
        config: The experiment configuration.

    Returns:
        The normaliser (> 0).
    """
    fed = config.federation
    n = config.partition.num_sites
    if fed.sampling == "poisson":
        return float(fed.sample_rate) * float(n)
    return float(fed.clients_per_round or n)


class DropoutChannel:
    """A :class:`~secfed.federation.aggregation.Channel` over a backend that applies a round plan.

    Aggregation requests are wrapped in runtime ``agg`` messages; answers of sites that dropped
    (or straggled) at or before a stage are withheld from the aggregator. Straggler answers are
    computed by the client but discarded, as a late message would be.
    """

    def __init__(self, *, backend: Backend, plan: RoundPlan, round_idx: int) -> None:
        self._backend = backend
        self._plan = plan
        self._round = round_idx
        self._stage_idx = 0  # 0 is training; aggregation stages follow
        self.bytes_up: dict[int, int] = {}
        self.bytes_down: dict[int, int] = {}
        self.stages: list[str] = []

    def exchange(self, *, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        """Send one aggregation stage's requests; return the timely answers.

        Args:
            stage: Stage name.
            requests: Inner protocol request bytes by site.

        Returns:
            Inner protocol answers of the sites that answered in time.
        """
        self._stage_idx += 1
        self.stages.append(stage)
        alive = {
            sid: encode_message(kind="agg", meta={"round": self._round, "stage": stage}, blob=req)
            for sid, req in requests.items()
            if not (sid in self._plan.drop_stage and self._stage_idx >= self._plan.drop_stage[sid])
        }
        replies = self._backend.request(messages=alive)
        out: dict[int, bytes] = {}
        for sid, data in replies.items():
            self.bytes_down[sid] = self.bytes_down.get(sid, 0) + len(alive[sid])
            self.bytes_up[sid] = self.bytes_up.get(sid, 0) + len(data)
            if self._plan.silent_at(sid, self._stage_idx):
                continue
            out[sid] = decode_message(data, expect="agg_reply").blob
        return out


class ServerOptimizer:
    """Applies the aggregated pseudo-gradient to the global state (SGD or Adam).

    Buffers (the non-parameter part of the flat state) are averaged, never optimised.
    """

    def __init__(
        self,
        *,
        name: str,
        lr: float,
        param_mask: np.ndarray,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-3,
    ) -> None:
        """Create the optimiser.

        Args:
            name: ``sgd`` or ``adam``.
            lr: Server learning rate.
            param_mask: True where the flat state holds parameters.
            betas: Adam moment decay rates (FedAdam defaults of Reddi et al. 2021).
            eps: Adam adaptivity ``tau``.
        """
        self.name, self.lr, self.mask, self.betas, self.eps = name, lr, param_mask, betas, eps
        self.m = np.zeros(int(param_mask.sum()), dtype=np.float64)
        self.v = np.zeros_like(self.m)
        self.t = 0

    def apply(self, *, state: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        """Return the new global state.

        Args:
            state: Current flat global state.
            mean_delta: Weighted mean of the client updates.

        Returns:
            The new flat state (float32).
        """
        new = state.astype(np.float64).copy()
        new[~self.mask] += mean_delta[~self.mask]
        d = mean_delta[self.mask]
        if self.name == "sgd":
            new[self.mask] += self.lr * d
        else:
            self.t += 1
            b1, b2 = self.betas
            self.m = b1 * self.m + (1 - b1) * d
            self.v = b2 * self.v + (1 - b2) * d * d
            new[self.mask] += self.lr * self.m / (np.sqrt(self.v) + self.eps)
        return new.astype(np.float32)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Optimiser state as arrays (for safetensors checkpoints)."""
        return {"adam_m": self.m, "adam_v": self.v, "adam_t": np.array([self.t], dtype=np.int64)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore state saved by :meth:`state_arrays`."""
        self.m, self.v, self.t = arrays["adam_m"].copy(), arrays["adam_v"].copy(), int(arrays["adam_t"][0])


@dataclass
class RoundOutcome:
    """What one round produced (before evaluation).

    Attributes:
        round: Round index (1-based).
        train_loss: Mean training loss of the sites that trained (None under DP, where sites do
            not release losses computed on their private records).
        clients: Sites whose update is in the aggregate.
        dropped: Sites sampled but not in the aggregate.
        stragglers: Sites whose late answers were discarded.
        aggregation: The aggregator's metrics.
        site_reports: Per-site training metadata (losses, privacy reports).
        skipped: True when no update survived (the model is unchanged, except under client-level
            DP with central noise, where the model moves by the noise alone).
    """

    round: int
    train_loss: float | None
    clients: list[int]
    dropped: list[int]
    stragglers: list[int]
    aggregation: dict[str, Any]
    site_reports: dict[int, dict[str, Any]]
    skipped: bool = False


class FederatedServer:
    """Runs federated rounds over a backend with a pluggable aggregator."""

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        backend: Backend,
        aggregator: ServerAggregator,
        state: np.ndarray,
        param_mask: np.ndarray,
        central_noise: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
    ) -> None:
        """Create the server.

        Args:
            config: Experiment configuration.
            backend: Started backend.
            aggregator: Server side of the aggregation scheme.
            state: Initial flat global state.
            param_mask: True where the flat state holds parameters.
            central_noise: Optional trusted-aggregator noise ``f(total, n_survivors, round)``
                applied to the aggregate before averaging (client-level DP-FedAvg); in ``client``
                mode it is called every round, with a zero total and ``n_survivors = 0`` when no
                update survived, and the noisy sum is divided by :func:`public_normaliser`.
        """
        self.config = config
        self._backend = backend
        self._aggregator = aggregator
        self.state = state.astype(np.float32)
        self.optimizer = ServerOptimizer(
            name=config.federation.server_optimizer, lr=config.federation.server_lr, param_mask=param_mask
        )
        self._central_noise = central_noise
        #: EMA of the released global states (``federation.ema``), or None when off.
        self.ema_state: np.ndarray | None = self.state.copy() if config.federation.ema > 0 else None

    @property
    def eval_state(self) -> np.ndarray:
        """The state evaluated and reported as the model: the EMA when ``federation.ema > 0``."""
        return self.state if self.ema_state is None else self.ema_state

    def update_ema(self) -> None:
        """Fold the current released state into the EMA (Polyak & Juditsky 1992; De et al. 2022).

        ``ema <- beta * ema + (1 - beta) * state``: a function of released states only
        (post-processing), so it costs no privacy. Called once per round, skipped rounds included.
        """
        if self.ema_state is not None:
            beta = float(self.config.federation.ema)
            self.ema_state = (beta * self.ema_state + (1.0 - beta) * self.state).astype(np.float32)

    def ema_arrays(self) -> dict[str, np.ndarray]:
        """Checkpoint arrays of the EMA (empty when off)."""
        return {} if self.ema_state is None else {"ema_state": self.ema_state}

    def load_ema(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Restore the EMA from checkpoint arrays; returns the other arrays.

        Raises:
            ValueError: If the EMA is on and the arrays hold no EMA state of the right shape.
        """
        rest = dict(arrays)
        ema = rest.pop("ema_state", None)
        if self.ema_state is not None:
            if ema is None or ema.shape != self.state.shape:
                raise ValueError("the checkpoint holds no EMA state of the model's size")
            self.ema_state = ema.astype(np.float32)
        return rest

    @property
    def num_stages(self) -> int:
        """Stages per round: training plus the aggregator's stages."""
        return 1 + len(getattr(self._aggregator, "stages", ("upload",)))

    def site_info(self) -> dict[int, dict[str, Any]]:
        """Ask every site for its public summary (records and classes)."""
        n = self.config.partition.num_sites
        replies = self._backend.request(messages={s: encode_message(kind="info") for s in range(n)})
        return {s: decode_message(replies[s], expect="info_reply").meta for s in range(n)}

    def run_round(self, *, round_idx: int, excluded: frozenset[int] = frozenset()) -> RoundOutcome:
        """Run one round.

        Args:
            round_idx: 1-based round number.
            excluded: Sites that may no longer take part (for example exhausted privacy budget).

        Returns:
            The round's outcome; ``self.state`` holds the new global state.
        """
        plan = plan_round(config=self.config, round_idx=round_idx, num_stages=self.num_stages)
        sampled = [s for s in plan.sampled if s not in excluded]
        train_req = encode_message(kind="train", meta={"round": round_idx}, tensors={"state": self.state})
        to_train = [s for s in sampled if s not in plan.drop_stage or plan.drop_stage[s] > 0]
        replies = self._backend.request(messages={s: train_req for s in to_train})
        reports: dict[int, dict[str, Any]] = {}
        for sid, data in replies.items():
            if plan.silent_at(sid, 0):
                continue
            reports[sid] = decode_message(data, expect="train_reply").meta
        participants = sorted(reports)
        channel = DropoutChannel(backend=self._backend, plan=plan, round_idx=round_idx)
        agg: AggregateResult | None = None
        if participants:
            agg = self._aggregator.aggregate(
                round_idx=round_idx,
                participants=participants,
                weights={s: float(reports[s]["weight"]) for s in participants},
                dim=int(self.state.shape[0]),
                channel=channel,
            )
        survivors = sorted(agg.survivors) if agg is not None else []
        stragglers = sorted(plan.straggle_stage)
        skipped = not survivors
        mode = self.config.privacy.mode
        # Client-level DP (trusted aggregator): noise is released every round, also when no update
        # survived (then the release is the noise alone), so the model's movement never tells
        # whether anyone's update was in the sum.
        always_release = mode == "client" and self._central_noise is not None
        if (agg is not None and survivors) or always_release:
            total = agg.total if agg is not None and survivors else np.zeros(self.state.shape[0])
            if self._central_noise is not None:
                total = self._central_noise(total, len(survivors), round_idx)
            # Under client-level DP (client, distributed) the divisor is public: the survivor count
            # must not set the scale of the released noise (see public_normaliser).
            if mode in ("client", "distributed"):
                divisor = public_normaliser(config=self.config)
            else:
                assert agg is not None  # no central noise outside client mode: survivors exist
                divisor = agg.weight_sum
            self.state = self.optimizer.apply(state=self.state, mean_delta=total / divisor)
        self.update_ema()
        losses = [
            float(reports[s]["train_loss"]) for s in participants if reports[s].get("train_loss") is not None
        ]
        metrics = dict(agg.metrics) if agg is not None else {}
        metrics["bytes_up_per_client"] = (
            float(np.mean(list(channel.bytes_up.values()))) if channel.bytes_up else 0.0
        )
        return RoundOutcome(
            round=round_idx,
            train_loss=float(np.mean(losses)) if losses else None,
            clients=survivors,
            dropped=sorted(set(sampled) - set(survivors)),
            stragglers=stragglers,
            aggregation=metrics,
            site_reports=reports,
            skipped=skipped,
        )
