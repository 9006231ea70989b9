"""The client (site) runtime: everything one site runs, behind a bytes-in / bytes-out handler.

A :class:`ClientRuntime` loads and holds its own data shard, trains locally when asked, keeps
its update to itself and releases it only through its aggregation scheme's client side. On the
multi-process backend each runtime lives in its own OS process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secfed.config import ExperimentConfig, config_from_dict, config_to_dict
from secfed.errors import MessageError
from secfed.federation.egress import SiteEgress, SiteFacts, TrainFacts
from secfed.federation.messages import Message, decode_message, encode_message
from secfed.federation.state import flat_state, load_flat_state, state_spec
from secfed.seeding import derive_seed

__all__ = ["ClientRuntime", "ClientFactory"]


class ClientRuntime:
    """One site: its data, learner, model replica and client-side aggregation."""

    def __init__(
        self, *, config: ExperimentConfig, site_id: int, state_dir: str | Path | None = None
    ) -> None:
        """Load the site's own data and build its learner.

        Args:
            config: The experiment configuration (every site derives its own shard from it).
            site_id: This site's id in ``[0, num_sites)``.
            state_dir: The site's own state directory (its durable privacy ledger, so its ε budget
                survives restarts; see :mod:`secfed.dp.site`). ``None``: nothing is persisted.

        Raises:
            secfed.errors.DataError: If the site's data cannot support the configured tasks.
        """
        from secfed import components

        self._cfg = config
        self.site_id = site_id
        self._site = components.build_site(config=config, site_id=site_id)
        self._model = components.build_model(config=config, input_shape=self._site.input_shape)
        self._learner = components.build_learner(config=config)
        self._client_agg = components.build_client_aggregator(config=config, site_id=site_id)
        self._privacy = components.build_site_privacy(
            config=config, site_id=site_id, site=self._site, state_dir=state_dir
        )
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


@dataclass(frozen=True)
class ClientFactory:
    """Picklable factory of site handlers holding only the configuration as plain data.

    It crosses into client processes at spawn time; it carries no data, model or update.
    ``site_state_dir`` (empty: none) is the folder holding one state directory per site,
    ``<site_state_dir>/site-<id>/`` (the site's durable privacy ledger).
    """

    config_data: dict[str, dict[str, Any]]
    base_dir: str
    site_state_dir: str = ""

    @classmethod
    def from_config(
        cls, config: ExperimentConfig, *, site_state_dir: str | Path | None = None
    ) -> ClientFactory:
        """Wrap a configuration (and the folder of the sites' state directories, if any)."""
        return cls(
            config_data=config_to_dict(config),
            base_dir=config.base_dir,
            site_state_dir="" if site_state_dir is None else str(site_state_dir),
        )

    def __call__(self, site_id: int) -> Callable[[bytes], bytes]:
        state_dir = Path(self.site_state_dir) / f"site-{int(site_id)}" if self.site_state_dir else None
        runtime = ClientRuntime(
            config=config_from_dict(self.config_data, base_dir=self.base_dir),
            site_id=site_id,
            state_dir=state_dir,
        )
        return runtime.handle
