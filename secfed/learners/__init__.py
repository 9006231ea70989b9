"""Federated meta-learners: ProtoNet, MAML, FOMAML, Reptile and the FedAvg baseline.

Use :func:`build_learner` to build one by name.
"""

from secfed.errors import ConfigError
from secfed.learners.base import Learner, LearnerConfig, LocalUpdate
from secfed.learners.fedavg import FedAvgLearner, SupervisedBatchSource
from secfed.learners.maml import FOMAML, MAML
from secfed.learners.protonet import ProtoNet
from secfed.learners.reptile import Reptile

__all__ = [
    "LEARNERS",
    "Learner",
    "LearnerConfig",
    "LocalUpdate",
    "ProtoNet",
    "MAML",
    "FOMAML",
    "Reptile",
    "FedAvgLearner",
    "SupervisedBatchSource",
    "build_learner",
]

#: Learner classes by name.
LEARNERS: dict[str, type[Learner]] = {
    "protonet": ProtoNet,
    "maml": MAML,
    "fomaml": FOMAML,
    "reptile": Reptile,
    "fedavg": FedAvgLearner,
}


def build_learner(*, name: str, config: LearnerConfig) -> Learner:
    """Build a learner by name.

    Args:
        name: One of ``"protonet"``, ``"maml"``, ``"fomaml"``, ``"reptile"``, ``"fedavg"``.
        config: Hyperparameters.

    Returns:
        The learner.

    Raises:
        ConfigError: If ``name`` is unknown or ``config`` is invalid.
    """
    if name not in LEARNERS:
        raise ConfigError(f"learner name must be one of {sorted(LEARNERS)}, got {name!r}")
    return LEARNERS[name](config=config)
