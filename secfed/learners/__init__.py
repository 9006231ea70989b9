"""Federated meta-learners: ProtoNet, Matching Networks, Siamese networks, MAML, FOMAML, Reptile
and the FedAvg baseline (FedProx: ``proximal_mu`` in any of them).

Use :func:`build_learner` to build one by name. Each learner class declares what the rest of the
framework needs to know about it (``episodic``, ``needs_every_class``, ``head``,
``extend_model``, and for DP planning ``dp_plan``, ``dp_steps_per_local_step`` and
``noise_sharing``); other modules read those attributes through :func:`learner_class` and
:func:`episodic_learner_names` instead of listing learner names.
"""

from secfed.errors import ConfigError
from secfed.learners.base import Learner, LearnerConfig, LocalUpdate
from secfed.learners.fedavg import FedAvgLearner, SupervisedBatchSource
from secfed.learners.maml import FOMAML, MAML
from secfed.learners.matching import MatchingNet
from secfed.learners.protonet import ProtoNet
from secfed.learners.reptile import Reptile
from secfed.learners.siamese import SiameseNet

__all__ = [
    "LEARNERS",
    "Learner",
    "LearnerConfig",
    "LocalUpdate",
    "ProtoNet",
    "MatchingNet",
    "SiameseNet",
    "MAML",
    "FOMAML",
    "Reptile",
    "FedAvgLearner",
    "SupervisedBatchSource",
    "build_learner",
    "episodic_learner_names",
    "sharing_learner_names",
    "learner_class",
]

#: Learner classes by name.
LEARNERS: dict[str, type[Learner]] = {
    cls.name: cls for cls in (ProtoNet, MatchingNet, SiameseNet, MAML, FOMAML, Reptile, FedAvgLearner)
}


def learner_class(name: str) -> type[Learner]:
    """The learner class registered under ``name``.

    Args:
        name: A key of :data:`LEARNERS`.

    Returns:
        The class.

    Raises:
        ConfigError: If ``name`` is unknown.
    """
    if name not in LEARNERS:
        raise ConfigError(f"learner name must be one of {sorted(LEARNERS)}, got {name!r}")
    return LEARNERS[name]


def episodic_learner_names() -> tuple[str, ...]:
    """Names of the learners with a per-episode meta-loss (record-level DP: per-episode units)."""
    return tuple(name for name, cls in LEARNERS.items() if cls.episodic)


def sharing_learner_names() -> tuple[str, ...]:
    """Names of the learners that noise sharing supports (their class declares ``noise_sharing``)."""
    return tuple(name for name, cls in LEARNERS.items() if cls.noise_sharing)


def build_learner(*, name: str, config: LearnerConfig) -> Learner:
    """Build a learner by name.

    Args:
        name: One of :data:`LEARNERS` (``"protonet"``, ``"matching"``, ``"siamese"``, ``"maml"``,
            ``"fomaml"``, ``"reptile"``, ``"fedavg"``).
        config: Hyperparameters.

    Returns:
        The learner.

    Raises:
        ConfigError: If ``name`` is unknown or ``config`` is invalid.
    """
    return learner_class(name)(config=config)
