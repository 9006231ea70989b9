"""Replica federations: the run's own training pipeline on data the attacker controls.

Membership inference needs models whose training data is known (reference / shadow models,
Carlini et al. 2022) and targets with a fair member / non-member split; a canary audit needs the
run's training with canaries inserted. Both are produced here by running the **unchanged secfed
pipeline** (:class:`secfed.experiment.Experiment`: the same learner, model, federation, secure
aggregation and DP mechanism, seed and rounds) on a training set written by the attacker:

* the run's configuration is copied and only its data source is replaced by a MedMNIST-format
  ``.npz`` file (``data.dataset = "medmnist"``; the file holds the training records the replica
  should have and the run's test split). Images are stored as uint8, so pixel values are rounded
  to multiples of 1/255 (digits' k/16 levels move by at most 0.002); the replicas are scored on
  the same rounded records;
* with ``partition.scheme = "class_disjoint"`` a site receives every record of its classes and
  the class-to-site deal depends only on the set of classes and the seed. Keeping a site's classes
  therefore keeps its records with it: removing records from (or adding canaries to) one site leaves
  every other site's shard exactly as in the run, and whole sites can be left out by relabelling
  the classes of the sites that stay so that the deal gives each of them its own classes.
  Every replica is checked: each site's shard is rebuilt through :func:`secfed.components.build_site`
  and compared with the intended records before training. Other partition schemes move records
  between sites when the data changes and are refused.

Replicas reuse the run's seed: the server that initialised the model and shares ``config.toml``
knows it. Under DP the sites' secret randomness (``os.urandom``) still differs between replicas.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.errors import AttackConfigError, AttackError
from secfed import components
from secfed.config import ExperimentConfig, config_from_dict, config_to_dict
from secfed.data.dataset import ImageDataset
from secfed.data.partition import partition_dataset
from secfed.errors import SecfedError

__all__ = [
    "ReplicaError",
    "RunData",
    "ReplicaSpec",
    "load_run_data",
    "quantize",
    "record_replica",
    "site_subset_replica",
    "train_replica",
]


class ReplicaError(AttackError, RuntimeError):
    """A replica federation could not be built or trained as intended."""


@dataclass(frozen=True)
class RunData:
    """The run's training split, its partition and test split (the attacker's simulation of the run).

    Attributes:
        train: The training split the run's sites were cut from.
        shards: Record indices of every site (as :func:`secfed.components.build_site` cuts them).
        test: The test split.
    """

    train: ImageDataset
    shards: list[np.ndarray]
    test: ImageDataset

    def site_images(self, site: int) -> np.ndarray:
        """Images of one site's shard (float32, ``(n, C, H, W)``)."""
        return np.asarray(self.train.images[self.shards[site]])

    def site_labels(self, site: int) -> np.ndarray:
        """Global labels of one site's shard."""
        return np.asarray(self.train.labels[self.shards[site]])


@dataclass(frozen=True)
class ReplicaSpec:
    """The training data of one replica federation.

    Attributes:
        images: Training records (float32, already rounded by :func:`quantize`).
        labels: Their labels in the replica.
        site_records: For every replica site, the row indices of ``images`` it must hold, in order.
        site_origin: For every replica site, the run's site it stands for.
    """

    images: np.ndarray
    labels: np.ndarray
    site_records: list[np.ndarray]
    site_origin: list[int]

    @property
    def num_sites(self) -> int:
        """Sites of the replica federation."""
        return len(self.site_records)


def _require_class_disjoint(config: ExperimentConfig) -> None:
    if config.partition.scheme != "class_disjoint":
        raise AttackConfigError(
            f"replica federations need partition.scheme = 'class_disjoint' (the run uses "
            f"{config.partition.scheme!r}): with other schemes changing one site's data moves records "
            "between sites, so no replica can keep the other sites' shards as in the run"
        )


def load_run_data(*, config: ExperimentConfig) -> RunData:
    """Load the run's splits and cut the sites' shards exactly as the runtime does.

    Args:
        config: The run's configuration.

    Returns:
        The training split, the shards and the test split.

    Raises:
        AttackConfigError: If the partition scheme does not allow replicas.
        ReplicaError: If the data cannot be loaded or the shards disagree with ``build_site``.
    """
    _require_class_disjoint(config)
    try:
        train, test = components.load_splits(config=config)
        p = config.partition
        shards = partition_dataset(
            dataset=train, scheme=p.scheme, num_sites=p.num_sites, seed=config.experiment.seed, alpha=p.alpha
        )
        check = components.build_site(config=config, site_id=0).dataset
    except SecfedError as exc:
        raise ReplicaError(f"cannot load the run's data: {exc}") from exc
    if not np.array_equal(check.labels, train.labels[shards[0]]):
        raise ReplicaError("the simulated partition disagrees with secfed.components.build_site")
    return RunData(train=train, shards=[np.asarray(s) for s in shards], test=test)


def quantize(images: np.ndarray) -> np.ndarray:
    """Round images in [0, 1] to the uint8 grid the replica files store (returned as float32)."""
    return (np.round(np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0) * 255.0) / 255.0).astype(
        np.float32
    )


def _to_uint8(images: np.ndarray) -> np.ndarray:
    arr = np.round(np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise AttackConfigError(f"replicas need (N, 1 or 3, H, W) images, got shape {arr.shape}")
    return arr[:, 0] if arr.shape[1] == 1 else np.transpose(arr, (0, 2, 3, 1))


def record_replica(
    *,
    data: RunData,
    site: int,
    keep: np.ndarray,
    extra_images: np.ndarray | None = None,
    extra_labels: np.ndarray | None = None,
) -> ReplicaSpec:
    """A replica in which one site holds a subset of its records (plus optional extra records).

    Args:
        data: The run's data.
        site: The site whose data changes.
        keep: Indices into that site's shard of the records it keeps.
        extra_images: Records added to the site (e.g. canaries), float32 ``(m, C, H, W)``.
        extra_labels: Their labels; each must be one of the site's classes.

    Returns:
        The replica's data; every other site keeps its shard as in the run.

    Raises:
        AttackConfigError: If a kept index is out of range, an extra label is not one of the site's
            classes, or the site would lose a class (the deal of classes to sites would change).
    """
    n_sites = len(data.shards)
    if not 0 <= site < n_sites:
        raise AttackConfigError(f"site must be in [0, {n_sites}), got {site}")
    keep = np.asarray(keep, dtype=np.int64)
    own = data.site_labels(site)
    if keep.size and (keep.min() < 0 or keep.max() >= own.size):
        raise AttackConfigError(f"kept indices must lie in [0, {own.size})")
    ex = (
        np.zeros((0, *data.train.images.shape[1:]), dtype=np.float32)
        if extra_images is None
        else extra_images
    )
    ey = np.zeros(0, dtype=np.int64) if extra_labels is None else np.asarray(extra_labels, dtype=np.int64)
    if ex.shape[0] != ey.shape[0] or ex.shape[1:] != data.train.images.shape[1:]:
        raise AttackConfigError("extra_images and extra_labels must describe the same number of records")
    if not np.isin(ey, own).all():
        raise AttackConfigError("extra records must carry one of the site's own classes")
    new_labels = np.concatenate([own[keep], ey])
    lost = sorted(set(np.unique(own).tolist()) - set(np.unique(new_labels).tolist()))
    if lost:
        raise AttackConfigError(
            f"site {site} would lose every record of classes {lost[:5]}: the class deal would change"
        )
    x_parts = [
        np.concatenate([data.site_images(j)[keep], np.asarray(ex, dtype=np.float32)])
        if j == site
        else data.site_images(j)
        for j in range(n_sites)
    ]
    y_parts = [new_labels if j == site else data.site_labels(j) for j in range(n_sites)]
    images = quantize(np.concatenate(x_parts))
    labels = np.concatenate(y_parts)
    starts = np.cumsum([0] + [len(y) for y in y_parts])
    site_records = [np.arange(starts[j], starts[j + 1]) for j in range(n_sites)]
    return ReplicaSpec(
        images=images, labels=labels, site_records=site_records, site_origin=list(range(n_sites))
    )


def site_subset_replica(*, data: RunData, sites: Sequence[int], seed: int) -> ReplicaSpec:
    """A replica federation of a subset of the run's sites, each with its own shard.

    The kept sites' classes are relabelled ``0 .. C'-1`` so that the class-disjoint deal of
    ``len(sites)`` sites with ``seed`` gives every replica site exactly the classes of one kept site
    (``numpy.array_split`` of the seeded permutation: sites with more classes take the first,
    larger groups).

    Args:
        data: The run's data.
        sites: The run's sites taking part (at least one).
        seed: The run's seed (the replica's partition seed).

    Returns:
        The replica's data.

    Raises:
        AttackConfigError: If ``sites`` is empty, repeats a site or names an unknown one.
    """
    chosen = [int(s) for s in sites]
    if not chosen or len(set(chosen)) != len(chosen) or any(not 0 <= s < len(data.shards) for s in chosen):
        raise AttackConfigError(f"sites must be distinct ids in [0, {len(data.shards)}), got {chosen}")
    classes = {s: np.unique(data.site_labels(s)) for s in chosen}
    order = sorted(chosen, key=lambda s: (-classes[s].size, s))
    total = sum(classes[s].size for s in order)
    perm = np.random.default_rng(seed).permutation(np.arange(total))
    groups = np.array_split(perm, len(order))
    if [g.size for g in groups] != [classes[s].size for s in order]:
        raise ReplicaError("the kept sites' class counts do not fit a class-disjoint deal")
    x_parts, y_parts = [], []
    for s, group in zip(order, groups, strict=True):
        mapping = {int(c): int(new) for c, new in zip(classes[s], group, strict=True)}
        x_parts.append(data.site_images(s))
        y_parts.append(np.array([mapping[int(c)] for c in data.site_labels(s)], dtype=np.int64))
    starts = np.cumsum([0] + [len(y) for y in y_parts])
    return ReplicaSpec(
        images=quantize(np.concatenate(x_parts)),
        labels=np.concatenate(y_parts),
        site_records=[np.arange(starts[i], starts[i + 1]) for i in range(len(order))],
        site_origin=order,
    )


def _test_split(test: ImageDataset, *, max_classes: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.flatnonzero(test.labels < max_classes)
    return np.asarray(test.images[keep]), np.asarray(test.labels[keep])


def _replica_config(
    *, config: ExperimentConfig, data_path: Path, spec: ReplicaSpec, rounds: int, name: str
) -> ExperimentConfig:
    raw: dict[str, Any] = config_to_dict(config)
    # the replica reads the site records as written (rotations already applied); the Omniglot-only
    # keys (test rotations, held-out alphabets) do not apply to its arrays and are refused there
    raw["data"] = {
        **raw["data"],
        "dataset": "medmnist",
        "root": str(data_path.resolve()),
        "test_rotations": False,
        "val_alphabets": [],
        "public_alphabets": [],
    }
    raw["experiment"] = {
        **raw["experiment"],
        "name": name,
        "rounds": int(rounds),
        "eval_every": 0,
        "final_eval_episodes": 10,
        "backend": "sequential",
        "untrained_baseline": False,  # the attack scores replicas itself; no baseline needed
    }
    raw["partition"] = {**raw["partition"], "num_sites": spec.num_sites}
    fed = dict(raw["federation"])
    if fed["clients_per_round"]:
        fed["clients_per_round"] = min(int(fed["clients_per_round"]), spec.num_sites)
    if fed["aggregation"] != "plain" and spec.num_sites < 3:
        if config.privacy.mode == "distributed":
            raise AttackConfigError(
                f"a replica of {spec.num_sites} site(s) cannot run distributed DP "
                "(secure aggregation needs 3 sites)"
            )
        fed["aggregation"] = "plain"  # the same sum, without the masking protocol
    raw["federation"] = fed
    raw["privacy"] = {**raw["privacy"], "target_epsilon": 0.0}  # keep the run's noise multiplier
    try:
        return config_from_dict(raw, base_dir=config.base_dir)
    except SecfedError as exc:
        raise ReplicaError(f"replica configuration is invalid: {exc}") from exc


def _verify(config: ExperimentConfig, spec: ReplicaSpec) -> None:
    for i, rows in enumerate(spec.site_records):
        site = components.build_site(config=config, site_id=i).dataset
        if not (
            np.array_equal(site.labels, spec.labels[rows])
            and np.allclose(site.images, spec.images[rows], atol=1e-6)
        ):
            raise ReplicaError(f"replica site {i} does not hold the intended records")


def train_replica(
    *,
    config: ExperimentConfig,
    data: RunData,
    spec: ReplicaSpec,
    out_dir: Path,
    rounds: int,
    name: str = "replica",
    quiet: bool = True,
) -> Path:
    """Write the replica's data file and train it with :class:`secfed.experiment.Experiment`.

    Args:
        config: The run's configuration.
        data: The run's data (for the test split).
        spec: The replica's training data.
        out_dir: A fresh folder for the data file and the replica's run directory (``run/``).
        rounds: Federated rounds.
        name: Experiment name of the replica.
        quiet: Silence the runtime's per-round log lines.

    Returns:
        The replica's run directory.

    Raises:
        ReplicaError: If the replica's shards differ from the spec or training fails.
    """
    from secfed.experiment import Experiment

    out_dir.mkdir(parents=True, exist_ok=True)
    head = int(spec.labels.max()) + 1 if spec.labels.size else 1
    tx, ty = _test_split(data.test, max_classes=max(head, config.task.test_n_way))
    path = out_dir / "data.npz"
    np.savez(
        path,
        allow_pickle=False,
        train_images=_to_uint8(spec.images),
        train_labels=spec.labels.astype(np.int64)[:, None],
        test_images=_to_uint8(tx),
        test_labels=ty.astype(np.int64)[:, None],
    )
    cfg = _replica_config(config=config, data_path=path, spec=spec, rounds=rounds, name=name)
    try:
        _verify(cfg, spec)
        sink = io.StringIO()
        logger = logging.getLogger("secfed")
        level = logger.level
        with contextlib.ExitStack() as stack:
            if quiet:
                stack.enter_context(contextlib.redirect_stderr(sink))
                logger.setLevel(logging.ERROR)
            try:
                Experiment(config=cfg).run(out_dir=out_dir / "run", progress=False)
            finally:
                logger.setLevel(level)
    except ReplicaError:  # _verify's own error, already naming the site (a SecfedError too)
        raise
    except SecfedError as exc:
        raise ReplicaError(f"replica {name} failed: {exc}") from exc
    return out_dir / "run"
