"""Federated meta-learners: ProtoNet, Matching Networks, Siamese networks, MAML, FOMAML, Reptile
and the FedAvg baseline (FedProx: ``proximal_mu`` in any of them).

Use :func:`build_learner` to build one by name. Each learner declares what the rest of the
framework needs to know about it in :mod:`secfed.learners.declarations` (``episodic``,
``needs_every_class``, ``head``, the settings it reads, and for DP planning ``dp_plan`` and
``noise_sharing``; its class adds ``extend_model`` and ``dp_steps_per_local_step``); its class
attributes are copied from that declaration. Other modules read the declarations
(:func:`~secfed.learners.declarations.declaration`, torch-free: the configuration loads without
torch) or the classes (:func:`learner_class`) instead of listing learner names. The
hyperparameters are declared once, in :class:`~secfed.learners.settings.LearnerSettings`.

The learner classes are imported on first use (PEP 562), so that importing
:mod:`secfed.learners.declarations` or :mod:`secfed.learners.settings` loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secfed.learners.declarations import episodic_learner_names, sharing_learner_names

if TYPE_CHECKING:  # pragma: no cover
    from secfed.learners.base import Learner, LearnerConfig, LocalUpdate
    from secfed.learners.fedavg import FedAvgLearner, SupervisedBatchSource
    from secfed.learners.maml import FOMAML, MAML
    from secfed.learners.matching import MatchingNet
    from secfed.learners.protonet import ProtoNet
    from secfed.learners.reptile import Reptile
    from secfed.learners.siamese import SiameseNet

    #: Learner classes by name, in the order of :data:`~secfed.learners.declarations.DECLARATIONS`
    #: (a test checks that every declared learner has its class here and the reverse).
    LEARNERS: dict[str, type[Learner]]

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


def _learner_classes() -> dict[str, Any]:
    """Every public class of the package by name (imports torch)."""
    from secfed.learners.base import Learner, LearnerConfig, LocalUpdate
    from secfed.learners.fedavg import FedAvgLearner, SupervisedBatchSource
    from secfed.learners.maml import FOMAML, MAML
    from secfed.learners.matching import MatchingNet
    from secfed.learners.protonet import ProtoNet
    from secfed.learners.reptile import Reptile
    from secfed.learners.siamese import SiameseNet

    classes: tuple[type[Learner], ...] = (
        ProtoNet,
        MatchingNet,
        SiameseNet,
        MAML,
        FOMAML,
        Reptile,
        FedAvgLearner,
    )
    return {
        "LEARNERS": {cls.name: cls for cls in classes},
        "Learner": Learner,
        "LearnerConfig": LearnerConfig,
        "LocalUpdate": LocalUpdate,
        "SupervisedBatchSource": SupervisedBatchSource,
        **{cls.__name__: cls for cls in classes},
    }


def __getattr__(name: str) -> Any:
    """Import the learner classes on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module 'secfed.learners' has no attribute {name!r}")
    if "LEARNERS" not in globals():
        globals().update(_learner_classes())
    return globals()[name]


def learner_class(name: str) -> type[Learner]:
    """The learner class registered under ``name``.

    Args:
        name: A key of :data:`LEARNERS`.

    Returns:
        The class.

    Raises:
        ConfigError: If ``name`` is unknown.
    """
    from secfed.errors import ConfigError

    learners: dict[str, type[Learner]] = __getattr__("LEARNERS")
    if name not in learners:
        raise ConfigError(f"learner name must be one of {sorted(learners)}, got {name!r}")
    return learners[name]


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
