"""Builds the run's parts from a configuration: data splits, sites, models, learners, aggregators.

Both the server process and every client process call these builders with the same
configuration; each client keeps only its own shard (:func:`build_site`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secfed.builders import (
    RunShape,
    build_learner,
    build_model,
    learner_config,
    load_public,
    load_splits,
    load_validation,
    model_num_classes,
    run_shape,
)
from secfed.config import ExperimentConfig, check_distributed_dp_aggregation, config_from_dict, config_to_dict
from secfed.data.dataset import ImageDataset
from secfed.data.partition import partition_dataset, site_class_lists
from secfed.dp.params import DPParams
from secfed.errors import ConfigError
from secfed.federation.aggregation import ClientAggregator, ServerAggregator
from secfed.federation.client import ClientRuntime
from secfed.models.feature_cache import featurize
from secfed.site import Site
from secfed.tasks.base import TaskSource

__all__ = [
    "load_splits",
    "load_validation",
    "build_site",
    "build_model",
    "build_learner",
    "learner_config",
    "build_test_source",
    "build_client_aggregator",
    "build_server_aggregator",
    "build_site_privacy",
    "model_num_classes",
    "build_client_runtime",
    "ClientFactory",
    "load_public",
    "RunShape",
    "run_shape",
]


class SupervisedSource:
    """Minibatches of a site's records with their global labels (FedAvg's local data)."""

    def __init__(self, *, dataset: ImageDataset) -> None:
        """Wrap a site's dataset.

        Args:
            dataset: The site's records.
        """
        self._x = torch.from_numpy(np.array(dataset.images, dtype=np.float32))
        self._y = torch.from_numpy(np.array(dataset.labels, dtype=np.int64))

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` records uniformly without replacement (all if fewer)."""
        n = int(self._y.shape[0])
        idx = torch.from_numpy(rng.choice(n, size=min(batch_size, n), replace=False))
        return self._x[idx], self._y[idx]


def _partition(
    *, config: ExperimentConfig, dataset: ImageDataset, num_sites: int, seed: int
) -> list[np.ndarray]:
    p = config.partition
    return partition_dataset(dataset=dataset, scheme=p.scheme, num_sites=num_sites, seed=seed, alpha=p.alpha)


def _task_source(*, config: ExperimentConfig, dataset: ImageDataset, train: bool) -> TaskSource:
    from secfed.learners.declarations import declaration

    t = config.task
    if not declaration(config.learner.name).trains_on_tasks and train:
        # a head over every training class (FedAvg) trains on supervised batches, not tasks
        return SupervisedSource(dataset=dataset)  # type: ignore[return-value]
    if t.source == "client_as_task":
        from secfed.tasks.client_task import ClientTaskSource

        return ClientTaskSource(dataset=dataset, support_fraction=t.support_fraction)
    from secfed.tasks.episodic import EpisodicTaskSource

    if train:
        return EpisodicTaskSource(dataset=dataset, n_way=t.n_way, k_shot=t.k_shot, q_query=t.q_query)
    return EpisodicTaskSource(
        dataset=dataset, n_way=t.test_n_way, k_shot=t.test_k_shot, q_query=t.test_q_query
    )


def build_site(*, config: ExperimentConfig, site_id: int) -> Site:
    """Load the data, keep only this site's shard, and build its task source.

    Args:
        config: The configuration.
        site_id: The site.

    Returns:
        The site.

    Raises:
        ConfigError: If ``site_id`` is out of range.
        secfed.errors.DataError: If the shard cannot support the configured tasks.
    """
    if not 0 <= site_id < config.partition.num_sites:
        raise ConfigError(f"site id {site_id} is outside [0, {config.partition.num_sites})")
    train, _ = load_splits(config=config)
    p = config.partition
    shard = _partition(config=config, dataset=train, num_sites=p.num_sites, seed=config.experiment.seed)[
        site_id
    ]
    dataset = train.subset(indices=shard, name=f"site{site_id}")
    classes = site_class_lists(
        scheme=p.scheme, num_classes=train.num_classes, num_sites=p.num_sites, seed=config.experiment.seed
    )[site_id]
    # model.cache_features: the tasks and the DP samplers get the records' scattering features
    # (a public per-record function, computed once); Site.dataset keeps the raw records.
    inputs = featurize(model=config.model, dataset=dataset)
    return Site(
        site_id=site_id,
        dataset=dataset,
        tasks=_task_source(config=config, dataset=inputs, train=True),
        public_classes=classes,
        record_ids=np.asarray(shard, dtype=np.int64),
        inputs=None if inputs is dataset else inputs.images,
    )


def build_test_source(*, config: ExperimentConfig, test: ImageDataset) -> TaskSource:
    """Task source over the held-out (meta-test) data.

    Episodic tasks: N-way K-shot episodes of the held-out classes, or with
    ``task.test_protocol = "within_alphabet"`` Lake et al.'s within-alphabet tasks
    (:class:`secfed.tasks.within_alphabet.WithinAlphabetTaskSource`). Client-as-task: the held-out
    split is partitioned (``partition.scheme``, seeded by the experiment seed) into
    ``partition.test_sites`` held-out sites, and every test task is a support/query split of one
    of them.

    With ``model.cache_features`` the tasks hold the records' scattering features, computed
    once (:func:`secfed.models.feature_cache.featurize`).

    Args:
        config: The configuration.
        test: The held-out split (raw records).

    Returns:
        The test task source.

    Raises:
        secfed.errors.DataError: If a held-out site is too small for a client task.
    """
    test = featurize(model=config.model, dataset=test)
    if config.task.source == "client_as_task" and config.partition.test_sites > 1:
        from secfed.seeding import derive_seed
        from secfed.tasks.client_task import ClientTaskSource, HeldOutSitesSource

        shards = _partition(
            config=config,
            dataset=test,
            num_sites=config.partition.test_sites,
            seed=derive_seed(config.experiment.seed, "test-sites"),
        )
        return HeldOutSitesSource(
            sites=[
                ClientTaskSource(
                    dataset=test.subset(indices=shard, name=f"test-site{i}"),
                    support_fraction=config.task.support_fraction,
                )
                for i, shard in enumerate(shards)
            ]
        )
    if config.task.test_protocol == "within_alphabet":
        from secfed.tasks.within_alphabet import WithinAlphabetTaskSource

        t = config.task
        return WithinAlphabetTaskSource(
            dataset=test, n_way=t.test_n_way, k_shot=t.test_k_shot, q_query=t.test_q_query
        )
    return _task_source(config=config, dataset=test, train=False)


def build_client_aggregator(
    *, config: ExperimentConfig, site_id: int, state_dir: str | Path | None = None
) -> ClientAggregator:
    """Client side of the configured aggregation scheme.

    With ``state_dir`` a secure client keeps the latest round it bound its update to in
    ``state_dir/secagg_bound_round.json`` (:meth:`SecureClientAggregator.persist_bound_round`), so
    a restarted client still refuses a second protocol run for that round.

    With ``privacy.mode = "distributed"`` the secure aggregator encodes with the per-round
    distributed-DP encoder of :func:`secfed.dp.distributed.make_distributed_encoder_factory` (the
    client's noise share is added there) and otherwise uses the options of
    :func:`secfed.federation.secure.make_client_aggregator`.

    Raises:
        ConfigError: If distributed DP is asked for without secure aggregation.
    """
    aggregator = _client_aggregator(config=config, site_id=site_id)
    if state_dir is not None and config.federation.aggregation != "plain":
        from secfed.federation.secure import SecureClientAggregator

        if isinstance(aggregator, SecureClientAggregator):
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            aggregator.persist_bound_round(path=Path(state_dir) / "secagg_bound_round.json")
    return aggregator


def _dp_encoder_factory(*, config: ExperimentConfig, params: DPParams | None = None) -> Callable[[int], Any]:
    """The per-round encoder of a noise-sharing or distributed-DP run, from its typed privacy
    parameters (``params``, else :func:`secfed.dp.params.dp_params` of ``config``; the update
    length found on first use)."""
    from secfed.dp.distributed import make_distributed_encoder_factory, model_dim
    from secfed.dp.params import given_or_built
    from secfed.dp.sharing import make_noise_sharing_encoder_factory

    params = given_or_built(config=config, params=params)

    def dim() -> int:
        return model_dim(config=config)

    if params.noise_sharing is not None:
        return make_noise_sharing_encoder_factory(params=params, dim=dim)
    return make_distributed_encoder_factory(params=params, dim=dim)


def _secure_encoder_factory(
    *, config: ExperimentConfig, params: DPParams | None = None
) -> Callable[[int], Any] | None:
    """The DP encoder a secure aggregator needs: distributed DP's or noise sharing's, else ``None``
    (the default quantiser)."""
    sharing = config.privacy.mode == "record" and config.privacy.noise_sharing
    if config.privacy.mode == "distributed" or sharing:
        return _dp_encoder_factory(config=config, params=params)
    return None


def _client_aggregator(*, config: ExperimentConfig, site_id: int) -> ClientAggregator:
    check_distributed_dp_aggregation(config=config)
    if config.federation.aggregation == "plain":
        from secfed.federation.plain import PlainClientAggregator

        return PlainClientAggregator()
    from secfed.federation.secure import make_client_aggregator

    return make_client_aggregator(
        config=config, site_id=site_id, encoder_factory=_secure_encoder_factory(config=config)
    )


def build_server_aggregator(*, config: ExperimentConfig, params: DPParams | None = None) -> ServerAggregator:
    """Server side of the configured aggregation scheme.

    With ``privacy.mode = "distributed"`` the secure aggregator decodes with the per-round
    distributed-DP encoder (see :func:`build_client_aggregator`); a round that cannot finish
    safely is skipped, as with :func:`secfed.federation.secure.make_server_aggregator`.

    Args:
        config: The configuration.
        params: The run's privacy parameters when the caller holds them (``Experiment.run``
            builds them once); ``None`` builds them here when the encoder needs them.

    Returns:
        The aggregator.

    Raises:
        ConfigError: If distributed DP is asked for without secure aggregation, or ``params``
            were built from another configuration.
    """
    check_distributed_dp_aggregation(config=config)
    if config.federation.aggregation == "plain":
        from secfed.federation.plain import PlainServerAggregator

        return PlainServerAggregator()
    from secfed.federation.secure import make_server_aggregator

    return make_server_aggregator(
        config=config, encoder_factory=_secure_encoder_factory(config=config, params=params)
    )


def build_site_privacy(
    *, config: ExperimentConfig, site_id: int, site: Site, state_dir: str | Path | None = None
) -> Any:
    """The site's local privacy mechanism (None when ``privacy.mode`` is ``none``); ``state_dir``
    holds its durable ledger (record mode; see :func:`secfed.dp.site.build_site_privacy`)."""
    if config.privacy.mode == "none":
        return None
    from secfed.dp import build_site_privacy as _build

    return _build(config=config, site_id=site_id, site=site, state_dir=state_dir)


def build_client_runtime(
    *, config: ExperimentConfig, site_id: int, state_dir: str | Path | None = None
) -> ClientRuntime:
    """One site's runtime with its own data shard, model replica, learner, aggregator and privacy hook.

    Args:
        config: The experiment configuration (every site derives its own shard from it).
        site_id: This site's id in ``[0, num_sites)``.
        state_dir: The site's own state directory (its durable privacy ledger, so its ε budget
            survives restarts; see :mod:`secfed.dp.site`). ``None``: nothing is persisted.

    Returns:
        The runtime.

    Raises:
        secfed.errors.DataError: If the site's data cannot support the configured tasks.
    """
    site = build_site(config=config, site_id=site_id)
    return ClientRuntime(
        config=config,
        site_id=site_id,
        site=site,
        model=build_model(config=config, input_shape=site.input_shape),
        learner=build_learner(config=config),
        client_aggregator=build_client_aggregator(config=config, site_id=site_id, state_dir=state_dir),
        privacy=build_site_privacy(config=config, site_id=site_id, site=site, state_dir=state_dir),
    )


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
        """Build site ``site_id``'s runtime from the configuration (in the calling process) and
        return its message handler.

        Args:
            site_id: The site's id in ``[0, num_sites)``.

        Returns:
            The site's bytes-in / bytes-out handler.

        Raises:
            secfed.errors.DataError: If the site's data cannot support the configured tasks.
        """
        return build_client_runtime(
            config=config_from_dict(self.config_data, base_dir=self.base_dir),
            site_id=site_id,
            state_dir=Path(self.site_state_dir) / f"site-{int(site_id)}" if self.site_state_dir else None,
        ).handle
