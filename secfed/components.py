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
from torch import nn

from secfed.config import ExperimentConfig, config_from_dict, config_to_dict
from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError
from secfed.data.partition import partition_dataset, site_class_lists
from secfed.errors import ConfigError
from secfed.federation.aggregation import ClientAggregator, ServerAggregator
from secfed.federation.client import ClientRuntime
from secfed.learners.base import Learner, LearnerConfig
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
]


def _rotate(dataset: ImageDataset) -> ImageDataset:
    """Add 90/180/270-degree rotations of every class as new classes (Santoro et al. 2016)."""
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    groups: list[str] = []
    for c in range(dataset.num_classes):
        rows = np.flatnonzero(dataset.labels == c)
        for k in range(4):
            blocks.append(np.rot90(dataset.images[rows], k=k, axes=(2, 3)))
            labels.append(np.full(rows.size, len(names), dtype=np.int64))
            names.append(f"{dataset.class_names[c]}/rot{90 * k:03d}")
            groups.append(dataset.class_groups[c])
    return ImageDataset(
        images=np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32),
        labels=np.concatenate(labels),
        class_names=tuple(names),
        class_groups=tuple(groups),
        name=dataset.name + "+rot",
        source=dataset.source,
    )


def _omniglot_train_test(*, config: ExperimentConfig) -> tuple[ImageDataset, ImageDataset]:
    """Omniglot's meta-train (every training alphabet, validation ones included) and meta-test.

    ``data.root`` empty or ``"embedded"`` reads the copy shipped inside secfed (the same split,
    bit-identical to the official small archives at 28x28), otherwise the official archives.
    """
    from secfed.data.omniglot import load_omniglot_split

    d = config.data
    if d.embedded:
        from secfed.data.omniglot_embedded import load_embedded_omniglot_split

        return load_embedded_omniglot_split(
            train_archives=d.train_archives,
            test_archives=d.test_archives,
            train_rotations=d.rotations,
            test_rotations=d.test_rotations,
            image_size=d.image_size,
        )
    return load_omniglot_split(
        root=config.data_root(),
        train_archives=d.train_archives,
        test_archives=d.test_archives,
        train_rotations=d.rotations,
        test_rotations=d.test_rotations,
        image_size=d.image_size,
    )


def _split_validation(*, train: ImageDataset, config: ExperimentConfig) -> tuple[ImageDataset, ImageDataset]:
    """``(train without the validation alphabets, validation)`` for ``data.val_alphabets``."""
    d = config.data
    alphabets = sorted(set(train.class_groups))
    missing = sorted(set(d.val_alphabets) - set(alphabets))
    if missing:
        raise DatasetFormatError(
            f"data.val_alphabets {missing} are not training alphabets; the training archives "
            f"{list(d.train_archives)} hold: {alphabets}"
        )
    kept = [a for a in alphabets if a not in d.val_alphabets]
    if not kept:
        raise DatasetFormatError(
            f"data.val_alphabets holds out every training alphabet ({alphabets}); keep at least one"
        )
    rest = train.select_groups(groups=kept, name=train.name)
    val = train.select_groups(groups=list(d.val_alphabets), name="omniglot-val")
    # validation mirrors the test protocol: rotated classes exactly when the test classes are
    if d.rotations and not d.test_rotations:
        val = val.select_classes(
            classes=[c for c, n in enumerate(val.class_names) if n.endswith("/rot000")], name=val.name
        )
    elif d.test_rotations and not d.rotations:
        val = _rotate(val)
    return rest, val


def load_splits(*, config: ExperimentConfig) -> tuple[ImageDataset, ImageDataset]:
    """Load the meta-train and meta-test datasets (disjoint classes, or sites for client-as-task).

    With ``data.val_alphabets`` the meta-train set excludes the validation alphabets (see
    :func:`load_validation`).

    Args:
        config: The configuration.

    Returns:
        ``(train, test)``.

    Raises:
        secfed.errors.DataError: When the data is missing or malformed, or a validation alphabet
            is not a training alphabet.
    """
    d = config.data
    if d.dataset == "digits":
        from secfed.data.digits import load_digits_dataset

        full = load_digits_dataset()
        test_cls = sorted(d.test_classes)
        train_cls = [c for c in range(full.num_classes) if c not in test_cls]
        train = full.select_classes(classes=train_cls, name="digits-train")
        test = full.select_classes(classes=test_cls, name="digits-test")
        return (_rotate(train) if d.rotations else train), (_rotate(test) if d.test_rotations else test)
    if d.dataset == "omniglot":
        train, test = _omniglot_train_test(config=config)
        if d.val_alphabets:
            train = _split_validation(train=train, config=config)[0]
        if d.public_alphabets:
            train = _without_public(train=train, config=config)
        return train, test
    from secfed.data.medmnist import load_medmnist

    return (
        load_medmnist(path=config.data_root(), split="train"),
        load_medmnist(path=config.data_root(), split="test"),
    )


def _without_public(*, train: ImageDataset, config: ExperimentConfig) -> ImageDataset:
    """``train`` without ``data.public_alphabets`` (no site holds a public alphabet)."""
    public = set(config.data.public_alphabets)
    alphabets = sorted(set(train.class_groups))
    kept = [a for a in alphabets if a not in public]
    if not kept:
        raise DatasetFormatError(f"data.public_alphabets leaves no alphabet to the sites ({alphabets})")
    return train.select_groups(groups=kept, name=train.name)


def load_public(*, config: ExperimentConfig) -> ImageDataset:
    """The data the configuration declares public: the classes of ``data.public_alphabets``.

    No site holds them (:func:`load_splits` removes them from meta-train); they serve only the
    non-private pretraining of the initial model (``model.pretrain_steps``). Rotated as the
    training classes are (``data.rotations``).

    Args:
        config: A configuration with a non-empty ``data.public_alphabets``.

    Returns:
        The public dataset.

    Raises:
        ConfigError: If no public alphabets are configured.
        secfed.errors.DataError: If one of them is not a training alphabet.
    """
    d = config.data
    if not d.public_alphabets:
        raise ConfigError("data.public_alphabets is empty: no public data is configured")
    train, _ = _omniglot_train_test(config=config)
    missing = sorted(set(d.public_alphabets) - set(train.class_groups))
    if missing:
        raise DatasetFormatError(
            f"data.public_alphabets {missing} are not training alphabets; the training archives "
            f"{list(d.train_archives)} hold: {sorted(set(train.class_groups))}"
        )
    return train.select_groups(groups=list(d.public_alphabets), name="omniglot-public")


def load_validation(*, config: ExperimentConfig) -> ImageDataset:
    """The meta-validation set: the classes of ``data.val_alphabets``, never trained on.

    Its classes are rotated as the test classes are (``data.test_rotations``), so tasks drawn
    from it follow the test protocol.

    Args:
        config: A configuration with a non-empty ``data.val_alphabets``.

    Returns:
        The validation dataset.

    Raises:
        ConfigError: If no validation alphabets are configured.
        secfed.errors.DataError: If one of them is not a training alphabet.
    """
    if not config.data.val_alphabets:
        raise ConfigError("data.val_alphabets is empty: no meta-validation set is configured")
    train, _ = _omniglot_train_test(config=config)
    return _split_validation(train=train, config=config)[1]


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
    t = config.task
    if config.learner.name == "fedavg" and train:
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
    return Site(
        site_id=site_id,
        dataset=dataset,
        tasks=_task_source(config=config, dataset=dataset, train=True),
        public_classes=classes,
        record_ids=np.asarray(shard, dtype=np.int64),
    )


def build_test_source(*, config: ExperimentConfig, test: ImageDataset) -> TaskSource:
    """Task source over the held-out (meta-test) data.

    Episodic tasks: N-way K-shot episodes of the held-out classes, or with
    ``task.test_protocol = "within_alphabet"`` Lake et al.'s within-alphabet tasks
    (:class:`secfed.tasks.within_alphabet.WithinAlphabetTaskSource`). Client-as-task: the held-out
    split is partitioned (``partition.scheme``, seeded by the experiment seed) into
    ``partition.test_sites`` held-out sites, and every test task is a support/query split of one
    of them.

    Args:
        config: The configuration.
        test: The held-out split.

    Returns:
        The test task source.

    Raises:
        secfed.errors.DataError: If a held-out site is too small for a client task.
    """
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


def model_num_classes(*, config: ExperimentConfig, train: ImageDataset | None = None) -> int | None:
    """Output units of the model head, as the learner declares it (``Learner.head``): none for an
    embedding network (ProtoNet, Matching Networks, Siamese networks), n_way for the task-local
    heads (MAML, FOMAML, Reptile), all training classes for a global head (FedAvg)."""
    from secfed.learners import learner_class

    name = config.learner.name
    head = learner_class(name).head
    if head == "none":
        return None
    if head == "global":
        if train is None:
            train, _ = load_splits(config=config)
        return train.num_classes
    if config.learner.head_init == "zero":
        # Zeroed before every task, the head is the same for every class: train and test ways
        # may differ, and each task uses its first n_way outputs.
        return max(config.task.n_way, config.task.test_n_way)
    if config.task.n_way != config.task.test_n_way:
        raise ConfigError(
            f"{name} uses an n_way-output head: task.n_way ({config.task.n_way}) must equal "
            f"task.test_n_way ({config.task.test_n_way}) unless learner.head_init = 'zero'"
        )
    return config.task.n_way


def build_model(
    *, config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int | None = -1
) -> nn.Module:
    """Build the configured model, with the learner's own modules (``Learner.extend_model``: the
    Siamese distance head, the Matching Networks FCE LSTMs).

    Args:
        config: The configuration.
        input_shape: Shape of one record.
        num_classes: Head size; ``-1`` derives it from the learner (see :func:`model_num_classes`).

    Returns:
        The model (seed torch before calling for reproducible initialisation).
    """
    from secfed.learners import learner_class
    from secfed.models.build import build_model as _build

    m = config.model
    heads = model_num_classes(config=config) if num_classes == -1 else num_classes
    model = _build(
        arch=m.arch,
        input_shape=input_shape,
        num_classes=heads,
        hidden=m.hidden,
        norm=m.norm,
        num_groups=m.groups,
        depth=m.layers if m.arch == "mlp" else None,
        frontend=m.frontend,
        scatter_j=m.scatter_j,
        scatter_l=m.scatter_l,
        weight_standardization=m.weight_standardization,
        trainable=m.trainable,
    )
    return learner_class(config.learner.name).extend_model(model=model, config=learner_config(config=config))


def learner_config(*, config: ExperimentConfig) -> LearnerConfig:
    """The learner hyperparameters of the configuration."""
    lr = config.learner
    return LearnerConfig(
        local_steps=lr.local_steps,
        meta_batch=lr.meta_batch,
        local_lr=lr.local_lr,
        local_optimizer=lr.local_optimizer,
        inner_steps=lr.inner_steps,
        inner_lr=lr.inner_lr,
        test_inner_steps=lr.test_inner_steps,
        test_inner_lr=lr.test_inner_lr,
        inner_optimizer=lr.inner_optimizer,
        reptile_inner_batch=lr.reptile_inner_batch,
        batch_size=lr.batch_size,
        head_init=lr.head_init,
        fce=lr.fce,
        fce_steps=lr.fce_steps,
        proximal_mu=float(config.federation.proximal_mu),
    )


def build_learner(*, config: ExperimentConfig) -> Learner:
    """Build the configured learner."""
    from secfed.learners import build_learner as _build

    return _build(name=config.learner.name, config=learner_config(config=config))


def build_client_aggregator(*, config: ExperimentConfig, site_id: int) -> ClientAggregator:
    """Client side of the configured aggregation scheme.

    With ``privacy.mode = "distributed"`` the secure aggregator encodes with the per-round
    distributed-DP encoder of :func:`secfed.dp.distributed.make_distributed_encoder_factory` (the
    client's noise share is added there) and otherwise uses the options of
    :func:`secfed.federation.secure.make_client_aggregator`.

    Raises:
        ConfigError: If distributed DP is asked for without secure aggregation.
    """
    agg = config.federation.aggregation
    distributed = config.privacy.mode == "distributed"
    if agg == "plain":
        if distributed:
            raise ConfigError(
                "privacy.mode = 'distributed' needs federation.aggregation = 'secagg' or 'secagg+'"
            )
        from secfed.federation.plain import PlainClientAggregator

        return PlainClientAggregator()
    sharing = config.privacy.mode == "record" and config.privacy.noise_sharing
    if distributed or sharing:
        from secfed.dp.distributed import make_distributed_encoder_factory
        from secfed.dp.sharing import make_noise_sharing_encoder_factory
        from secfed.federation.secure import (
            SecureClientAggregator,
            protocol_options,
            simulated_identity,
            simulated_pki,
        )

        signing_key = pki = None
        if config.secagg.active:
            pki = simulated_pki(config)
            signing_key = simulated_identity(seed=config.experiment.seed, client_id=site_id)
        return SecureClientAggregator(
            client_id=site_id,
            **protocol_options(config),  # type: ignore[arg-type]
            encoder_factory=(
                make_noise_sharing_encoder_factory(config=config)
                if sharing
                else make_distributed_encoder_factory(config=config)
            ),
            signing_key=signing_key,
            pki=pki,
        )
    from secfed.federation.secure import make_client_aggregator

    return make_client_aggregator(config=config, site_id=site_id)


def build_server_aggregator(*, config: ExperimentConfig) -> ServerAggregator:
    """Server side of the configured aggregation scheme.

    With ``privacy.mode = "distributed"`` the secure aggregator decodes with the per-round
    distributed-DP encoder (see :func:`build_client_aggregator`); a round that cannot finish
    safely is skipped, as with :func:`secfed.federation.secure.make_server_aggregator`.

    Raises:
        ConfigError: If distributed DP is asked for without secure aggregation.
    """
    agg = config.federation.aggregation
    distributed = config.privacy.mode == "distributed"
    if agg == "plain":
        if distributed:
            raise ConfigError(
                "privacy.mode = 'distributed' needs federation.aggregation = 'secagg' or 'secagg+'"
            )
        from secfed.federation.plain import PlainServerAggregator

        return PlainServerAggregator()
    sharing = config.privacy.mode == "record" and config.privacy.noise_sharing
    if distributed or sharing:
        from secfed.dp.distributed import make_distributed_encoder_factory
        from secfed.dp.sharing import make_noise_sharing_encoder_factory
        from secfed.federation.secure import SecureServerAggregator, protocol_options, simulated_pki

        pki = simulated_pki(config) if config.secagg.active else None
        return SecureServerAggregator(
            **protocol_options(config),  # type: ignore[arg-type]
            encoder_factory=(
                make_noise_sharing_encoder_factory(config=config)
                if sharing
                else make_distributed_encoder_factory(config=config)
            ),
            pki=pki,
            on_abort="skip",
        )
    from secfed.federation.secure import make_server_aggregator

    return make_server_aggregator(config=config)


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
        client_aggregator=build_client_aggregator(config=config, site_id=site_id),
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
