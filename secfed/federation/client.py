"""The client (site) runtime: everything one site runs, behind a bytes-in / bytes-out handler.

A :class:`ClientRuntime` holds its own data shard, trains locally when asked, keeps its update to
itself and releases it only through its aggregation scheme's client side. Its parts (data, model,
learner, aggregator, privacy hook) are built by the assembly layer
(:class:`secfed.components.ClientFactory`) inside the site's process; on the multi-process backend
each runtime lives in its own OS process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from secfed.config import ExperimentConfig
from secfed.errors import MessageError
from secfed.federation.aggregation import ClientAggregator
from secfed.federation.egress import SiteEgress, SiteFacts, TrainFacts
from secfed.federation.messages import Message, decode_message, encode_message
from secfed.federation.state import flat_state, load_flat_state, state_spec
from secfed.learners.base import Learner, LocalUpdate
from secfed.seeding import derive_seed
from secfed.site import Site

__all__ = ["ClientRuntime", "SitePrivacyHook"]


class SitePrivacyHook(Protocol):
    """What the runtime needs of a site's privacy mechanism (:class:`secfed.dp.site.SitePrivacy`
    implements it; the DP layer wraps the runtime, the runtime does not import it)."""

    def describe(self) -> dict[str, Any]:
        """Public facts of the mechanism, for the server's registration."""
        ...

    def local_update(
        self, *, learner: Learner, model: nn.Module, site: Site, rng: np.random.Generator, round_idx: int
    ) -> LocalUpdate:
        """Train locally under the mechanism."""
        ...

    def finalize_update(self, *, update: np.ndarray, round_idx: int) -> np.ndarray:
        """Post-process the flat update before it leaves the site."""
        ...

    def round_report(self, *, round_idx: int) -> dict[str, Any]:
        """Public facts about this round's mechanism, for the server's ledger."""
        ...


class ClientRuntime:
    """One site: its data, learner, model replica and client-side aggregation."""

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        site_id: int,
        site: Site,
        model: nn.Module,
        learner: Learner,
        client_aggregator: ClientAggregator,
        privacy: SitePrivacyHook | None,
    ) -> None:
        """Hold one site's ready-made parts (built by the assembly layer,
        :class:`secfed.components.ClientFactory`, inside the site's own process).

        Args:
            config: The experiment configuration (seeds, weighting, what the site may release).
            site_id: This site's id in ``[0, num_sites)``.
            site: The site's own data shard and tasks.
            model: The site's model replica (its parameters are overwritten by each round's state).
            learner: The configured learner.
            client_aggregator: The client side of the aggregation scheme.
            privacy: The site's privacy hook (:class:`secfed.dp.site.SitePrivacy`), ``None``
                without DP.
        """
        self._cfg = config
        self.site_id = site_id
        self._site = site
        self._model = model
        self._learner = learner
        self._client_agg = client_aggregator
        self._privacy = privacy
        self._egress = SiteEgress(config=config)
        self._spec = state_spec(self._model)
        self._update: np.ndarray | None = None
        self._weight = 1.0
        self._round = -1
        # aggregation stages answered, as (round, stage); one update is bound to one run
        self._agg_answered: set[tuple[int, str]] = set()
        self._agg_round = -1  # the latest round in which an aggregation stage was answered

    # ------------------------------------------------------------------ dispatch
    def handle(self, request: bytes) -> bytes:
        """Answer one runtime message.

        Args:
            request: Message bytes from the server.

        Returns:
            The reply bytes.

        Raises:
            MessageError: For a malformed message or one that arrives out of order.
        """
        msg = decode_message(request)
        handlers: dict[str, Callable[[Message], bytes]] = {
            "info": self._info,
            "train": self._train,
            "agg": self._agg,
            "shutdown": lambda m: encode_message(kind="shutdown_reply"),
        }
        if msg.kind not in handlers:
            raise MessageError(f"site {self.site_id} cannot handle a {msg.kind!r} message")
        return handlers[msg.kind](msg)

    def _info(self, msg: Message) -> bytes:
        summary = self._site.summary()
        facts = SiteFacts(
            site=self.site_id,
            records=int(summary["records"]),
            public_classes=int(summary["classes"]),
            privacy=self._privacy.describe() if self._privacy is not None else None,
        )
        return encode_message(kind="info_reply", meta=self._egress.info(facts))

    def _train(self, msg: Message) -> bytes:
        rnd = int(msg.meta["round"])
        if rnd <= self._round and not msg.meta.get("replay", False):
            raise MessageError(
                f"site {self.site_id}: train request for round {rnd} after round {self._round}"
            )
        load_flat_state(self._model, msg.tensors["state"], spec=self._spec)
        seed = self._cfg.experiment.seed
        torch.manual_seed(derive_seed(seed, "torch", rnd, self.site_id))
        rng = np.random.default_rng(derive_seed(seed, "tasks", rnd, self.site_id))
        start = time.perf_counter()
        before = flat_state(self._model, spec=self._spec)
        if self._privacy is not None:
            result = self._privacy.local_update(
                learner=self._learner, model=self._model, site=self._site, rng=rng, round_idx=rnd
            )
        else:
            result = self._learner.local_update(model=self._model, tasks=self._site.tasks, rng=rng)
        after = flat_state(self._model, spec=self._spec)
        update = (after - before).astype(np.float32)
        if self._privacy is not None:
            update = self._privacy.finalize_update(update=update, round_idx=rnd)
        self._update = update
        self._weight = 1.0 if self._cfg.federation.weighting == "uniform" else float(self._site.num_records)
        self._round = rnd
        facts = TrainFacts(
            round=rnd,
            weight=self._weight,
            train_s=time.perf_counter() - start,
            train_loss=float(result.train_loss),
            num_tasks=int(result.num_tasks),
            extra=result.extra,
            privacy=self._privacy.round_report(round_idx=rnd) if self._privacy is not None else None,
        )
        return encode_message(kind="train_reply", meta=self._egress.train_reply(facts))

    def _agg(self, msg: Message) -> bytes:
        """Answer one aggregation stage for the current round's update.

        One update is bound to one aggregation run: every stage is answered at most once per
        round and never for a round before the latest one aggregated. A server that re-ran the
        protocol on the same update and left one site's masked input out of the second run
        would learn that input as the difference of the two sums (issue 16, item 8). A
        ``train`` request with ``meta["replay"]`` may retrain an earlier round, but that update
        can never be released: its round was already aggregated (this check), and the secure
        aggregator refuses a second protocol setup for a round on its own
        (:class:`protocols.DuplicateRunError`), whatever the runtime does.

        Raises:
            MessageError: Without a local update for the round, for an earlier round than the
                latest aggregated one, or for a stage already answered in this round.
        """
        rnd = int(msg.meta["round"])
        stage = str(msg.meta["stage"])
        if self._update is None or rnd != self._round:
            raise MessageError(
                f"site {self.site_id}: aggregation request for round {rnd} without a local update"
            )
        if rnd < self._agg_round or (rnd, stage) in self._agg_answered:
            raise MessageError(
                f"site {self.site_id}: refusing a second aggregation run ({stage!r}) for round {rnd}; "
                f"latest aggregated round {self._agg_round}"
            )
        if rnd > self._agg_round:
            self._agg_answered = set()
            self._agg_round = rnd
        self._agg_answered.add((rnd, stage))
        reply = self._client_agg.handle(
            stage=stage,
            request=msg.blob,
            update=self._update,
            weight=self._weight,
            round_idx=rnd,
        )
        return encode_message(kind="agg_reply", meta={"round": rnd, "stage": msg.meta["stage"]}, blob=reply)
