"""The parts every process of a run builds from its configuration: the data splits, the model and
the learner, and the run's shape (:class:`RunShape`, what the DP planning needs of them).

Below the DP layer and the assembly of a run (:mod:`secfed.components`, which re-exports these
builders): :mod:`secfed.dp` reads a run's shape from here instead of from the assembly layer, and a
caller that already holds the splits and the model (``Experiment.run``) builds the shape itself
(:meth:`RunShape.of`) and hands it down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from secfed.config import ExperimentConfig, config_hash
from secfed.data.dataset import ImageDataset
from secfed.data.errors import DatasetFormatError
from secfed.errors import ConfigError
from secfed.federation.state import state_spec
from secfed.learners.base import Learner, LearnerConfig
from secfed.learners.settings import REPLACED_HEADS

__all__ = [
    "RunShape",
    "run_shape",
    "load_splits",
    "load_public",
    "load_validation",
    "model_num_classes",
    "build_model",
    "learner_config",
    "build_learner",
]


@dataclass(frozen=True, kw_only=True)
class RunShape:
    """What planning and encoding need to know of a run's data and model, and nothing else.

    Attributes:
        dim: Length of the flat federated state (:func:`secfed.federation.state.state_spec`): the
            length of every update, the dimension of the distributed DP encoding.
        train_classes: Number of classes of the meta-training split (the public class lists of
            the partition, the class-aware record accounting).
    """

    dim: int
    train_classes: int

    def __post_init__(self) -> None:
        for name in ("dim", "train_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RunShape.{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def of(cls, *, model: nn.Module, train: ImageDataset) -> RunShape:
        """The shape of a run from the model and training split its caller already holds.

        Args:
            model: The run's model (any replica: only its layout counts).
            train: The meta-training split.

        Returns:
            The shape.
        """
        return cls(dim=int(sum(e.size for e in state_spec(model))), train_classes=int(train.num_classes))


_SHAPE_CACHE: dict[tuple[str, str], RunShape] = {}


def run_shape(*, config: ExperimentConfig) -> RunShape:
    """The shape of the configured run, found by loading the splits and building the model
    (cached per configuration; torch's global RNG state is saved and restored, so the caller's
    random stream is untouched). For callers that hold only the configuration (the command line's
    planning, the tests); a run passes the shape it already holds.

    Args:
        config: The configuration.

    Returns:
        The shape.

    Raises:
        secfed.errors.DataError: If the data cannot be loaded.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    key = (config_hash(config), str(config.base_dir))
    if key not in _SHAPE_CACHE:
        train, test = load_splits(config=config)
        heads = model_num_classes(config=config, train=train)
        with torch.random.fork_rng(devices=[]):
            model = build_model(config=config, input_shape=test.input_shape, num_classes=heads)
        _SHAPE_CACHE[key] = RunShape.of(model=model, train=train)
    return _SHAPE_CACHE[key]


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


def _check_training_alphabets(*, key: str, train: ImageDataset, config: ExperimentConfig) -> None:
    """Refuse alphabets of ``data.<key>`` (``val_alphabets``, ``public_alphabets``) that are not
    training alphabets."""
    alphabets = sorted(set(train.class_groups))
    missing = sorted(set(getattr(config.data, key)) - set(alphabets))
    if missing:
        raise DatasetFormatError(
            f"data.{key} {missing} are not training alphabets; the training archives "
            f"{list(config.data.train_archives)} hold: {alphabets}"
        )


def _split_validation(*, train: ImageDataset, config: ExperimentConfig) -> tuple[ImageDataset, ImageDataset]:
    """``(train without the validation alphabets, validation)`` for ``data.val_alphabets``."""
    d = config.data
    alphabets = sorted(set(train.class_groups))
    _check_training_alphabets(key="val_alphabets", train=train, config=config)
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
    _check_training_alphabets(key="public_alphabets", train=train, config=config)
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
    if config.learner.head_init in REPLACED_HEADS:
        # Zeroed (or set from the support prototypes) before every task, the head is the same
        # for every class: train and test ways may differ, and each task uses its first n_way
        # outputs.
        return max(config.task.n_way, config.task.test_n_way)
    if config.task.n_way != config.task.test_n_way:
        raise ConfigError(
            f"{name} uses an n_way-output head: task.n_way ({config.task.n_way}) must equal "
            f"task.test_n_way ({config.task.test_n_way}) unless learner.head_init = 'zero' or 'proto'"
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
    """The learner hyperparameters of the configuration: the ``[learner]`` settings and
    ``federation.proximal_mu``."""
    return LearnerConfig.from_settings(config.learner, proximal_mu=config.federation.proximal_mu)


def build_learner(*, config: ExperimentConfig) -> Learner:
    """Build the configured learner."""
    from secfed.learners import build_learner as _build

    return _build(name=config.learner.name, config=learner_config(config=config))
