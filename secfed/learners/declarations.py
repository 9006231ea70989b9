"""What each learner declares to the rest of secfed, torch-free: one :class:`LearnerDeclaration`.

The configuration (:mod:`secfed.config`: allowed names, which settings apply to which learner, the
rules across sections), ``secfed config`` (:mod:`secfed.config_doc`), the public pretraining
(:mod:`secfed.pretrain`), DP planning (:mod:`secfed.dp`) and the attacks read these facts instead
of listing learner names. Each learner class takes its class attributes (``name``, ``episodic``,
``head``, ...) from its declaration (:class:`secfed.learners.base.Learner`), so the two cannot
disagree; :data:`secfed.learners.LEARNERS` holds the classes in the order of
:data:`DECLARATIONS`, and a test checks that they match.

This module imports no torch: the configuration loads from it without loading any learner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from secfed.errors import ConfigError
from secfed.learners.settings import COMMON_SETTINGS, setting_names

__all__ = [
    "LearnerDeclaration",
    "DECLARATIONS",
    "DEFAULT_LEARNER",
    "HEADS",
    "DP_PLANS",
    "MESSAGES",
    "declaration",
    "learner_names",
    "names_where",
    "episodic_learner_names",
    "sharing_learner_names",
    "readers_of",
    "embedding_pretrainer_names",
    "spoken_list",
]

#: Allowed values of :attr:`LearnerDeclaration.head`.
HEADS: tuple[str, ...] = ("none", "n_way", "global")
#: Allowed values of :attr:`LearnerDeclaration.dp_plan`.
DP_PLANS: tuple[str, ...] = ("slots", "tasks", "every_step")
#: Allowed values of :attr:`LearnerDeclaration.message`.
MESSAGES: tuple[str, ...] = ("episode_gradient", "meta_gradient", "task_update", "batch_update")


@dataclass(frozen=True, kw_only=True)
class LearnerDeclaration:
    """The facts about one learner that other modules need.

    Attributes:
        name: ``learner.name`` in a configuration.
        episodic: The meta-objective is a per-episode loss usable with ``torch.func``
            (``Learner.task_loss``): record-level DP clips per episode. ``False``: per-record
            DP-SGD (Reptile's inner steps, FedAvg's steps).
        head: What the model's linear head must be (:func:`secfed.builders.model_num_classes`):
            ``"none"`` (an embedding network), ``"n_way"`` (task-local logits) or ``"global"``
            (one output per training class; the learner trains on supervised batches of a site's
            records, not on tasks).
        needs_every_class: Adaptation needs a support record of every class (prototype learners);
            learners with a shared head accept support sets missing classes.
        dp_plan: How the DP planner replays a site's public record-level plan to count the steps
            of its most exposed class (:func:`secfed.dp.planning.record_class_aware_steps`):
            ``"slots"`` (the site's public slot plan, one episodic DP step per local step),
            ``"tasks"`` (the public class tasks drawn every sampled round) or ``"every_step"``
            (no replay, every planned step counts for every record: an upper bound).
        noise_sharing: Noise sharing (:mod:`secfed.dp.sharing`) supports the learner: one DP
            step per round makes its update an affine function of the clipped sum plus the noise
            share (:func:`secfed.config.check_noise_sharing_config`).
        reads: The settings it reads beyond :data:`~secfed.learners.settings.COMMON_SETTINGS`
            (keys of :class:`~secfed.learners.settings.LearnerSettings`). ``secfed config`` shows
            only the keys the run's learner reads; ``fce`` and ``head_init`` other than
            ``learned`` are refused for a learner that does not read them.
        min_inner_steps: Fewest ``learner.inner_steps`` a configuration may set (0: no rule).
        zero_head_min_inner_steps: Fewest ``learner.inner_steps`` with ``head_init = "zero"``
            (0: no rule): a learner whose update is the parameter difference after its inner steps
            needs 2, since its first step from a zero head moves only the head.
        message: What a site's update is, which the attacks' replays reproduce
            (:mod:`attacks.secfed_replay`): ``"episode_gradient"`` (the gradient of the learner's
            own episode loss), ``"meta_gradient"`` (the meta-gradient after inner SGD steps on the
            support set), ``"task_update"`` (inner SGD steps on one task, scaled by the outer step)
            or ``"batch_update"`` (local SGD steps on record batches). Required: a new learner
            says what it sends rather than inheriting a guess.
        embedding_pretrainer: It pretrains as an embedding network: any learner's body can be
            pretrained with it (``model.pretrain_learner`` may name it; :mod:`secfed.pretrain`),
            always with Adam at ``model.pretrain_lr`` on ``model.pretrain_n_way``-way episodes.
    """

    name: str
    episodic: bool
    head: str
    message: str
    needs_every_class: bool = False
    dp_plan: str = "every_step"
    noise_sharing: bool = False
    reads: tuple[str, ...] = ()
    min_inner_steps: int = 0
    zero_head_min_inner_steps: int = 0
    embedding_pretrainer: bool = False

    def __post_init__(self) -> None:
        """Refuse a declaration that other modules could not read.

        Raises:
            ConfigError: Naming the field and what is allowed.
        """
        if not self.name or not self.name.isidentifier() or self.name != self.name.lower():
            raise ConfigError(f"learner declaration name must be a lower-case identifier, got {self.name!r}")
        if self.head not in HEADS:
            raise ConfigError(f"learner {self.name!r}: head must be one of {list(HEADS)}, got {self.head!r}")
        if self.message not in MESSAGES:
            raise ConfigError(
                f"learner {self.name!r}: message must be one of {list(MESSAGES)}, got {self.message!r}"
            )
        if self.dp_plan not in DP_PLANS:
            raise ConfigError(
                f"learner {self.name!r}: dp_plan must be one of {list(DP_PLANS)}, got {self.dp_plan!r}"
            )
        unknown = sorted(set(self.reads) - set(setting_names()))
        if unknown:
            raise ConfigError(f"learner {self.name!r} reads unknown settings {unknown}")
        common = sorted(set(self.reads) & set(COMMON_SETTINGS))
        if common:
            raise ConfigError(f"learner {self.name!r}: {common} are read by every learner; do not list them")

    @property
    def trains_on_tasks(self) -> bool:
        """Whether local training draws tasks (every learner but one with a global head, which
        trains on supervised batches; public pretraining draws tasks too)."""
        return self.head != "global"

    def uses(self, setting: str) -> bool:
        """Whether the learner reads a setting.

        Args:
            setting: A key of :class:`~secfed.learners.settings.LearnerSettings`.

        Returns:
            True for the common settings and the ones in :attr:`reads`.
        """
        return setting in COMMON_SETTINGS or setting in self.reads


_INNER_LOOP = ("inner_steps", "inner_lr", "test_inner_steps", "test_inner_lr", "head_init")
_MAML = LearnerDeclaration(
    name="maml",
    episodic=True,
    head="n_way",
    message="meta_gradient",
    dp_plan="slots",
    noise_sharing=True,
    reads=_INNER_LOOP,
    min_inner_steps=1,
)

#: Every learner, by name, in the order the configuration lists them. The learner classes of
#: :data:`secfed.learners.LEARNERS` follow this order.
DECLARATIONS: dict[str, LearnerDeclaration] = {
    d.name: d
    for d in (
        LearnerDeclaration(
            name="protonet",
            episodic=True,
            head="none",
            message="episode_gradient",
            needs_every_class=True,
            dp_plan="slots",
            noise_sharing=True,
            embedding_pretrainer=True,
        ),
        LearnerDeclaration(
            name="matching",
            episodic=True,
            head="none",
            message="episode_gradient",
            needs_every_class=True,
            reads=("fce", "fce_steps", "cosine_scale"),
        ),
        LearnerDeclaration(
            name="siamese",
            episodic=True,
            head="none",
            message="episode_gradient",
            needs_every_class=True,
            reads=("pair_loss",),
        ),
        _MAML,
        replace(_MAML, name="fomaml"),  # first-order MAML: the same facts
        LearnerDeclaration(
            name="reptile",
            episodic=False,
            head="n_way",
            message="task_update",
            dp_plan="tasks",
            reads=(*_INNER_LOOP, "inner_optimizer", "reptile_inner_batch"),
            min_inner_steps=1,
            zero_head_min_inner_steps=2,
        ),
        LearnerDeclaration(
            name="fedavg",
            episodic=False,
            head="global",
            message="batch_update",
            noise_sharing=True,
            reads=("test_inner_steps", "test_inner_lr", "inner_optimizer", "batch_size"),
        ),
    )
}

#: ``learner.name`` when a configuration sets none.
DEFAULT_LEARNER: str = DECLARATIONS["protonet"].name


def declaration(name: str) -> LearnerDeclaration:
    """The declaration of the learner called ``name``.

    Args:
        name: A key of :data:`DECLARATIONS`.

    Returns:
        The declaration.

    Raises:
        ConfigError: If no learner has that name.
    """
    if name not in DECLARATIONS:
        raise ConfigError(f"learner name must be one of {sorted(DECLARATIONS)}, got {name!r}")
    return DECLARATIONS[name]


def learner_names() -> tuple[str, ...]:
    """Every learner's name, in the order of :data:`DECLARATIONS`."""
    return tuple(DECLARATIONS)


def names_where(test: Callable[[LearnerDeclaration], bool]) -> tuple[str, ...]:
    """Names of the learners whose declaration passes a test.

    Args:
        test: A predicate on a declaration.

    Returns:
        The names, in the order of :data:`DECLARATIONS`.
    """
    return tuple(name for name, d in DECLARATIONS.items() if test(d))


def episodic_learner_names() -> tuple[str, ...]:
    """Names of the learners with a per-episode meta-loss (record-level DP: per-episode units)."""
    return names_where(lambda d: d.episodic)


def sharing_learner_names() -> tuple[str, ...]:
    """Names of the learners that noise sharing supports (their declaration says ``noise_sharing``)."""
    return names_where(lambda d: d.noise_sharing)


def readers_of(setting: str) -> tuple[str, ...]:
    """Names of the learners that read a setting.

    Args:
        setting: A key of :class:`~secfed.learners.settings.LearnerSettings`.

    Returns:
        The names, in the order of :data:`DECLARATIONS`.
    """
    return names_where(lambda d: d.uses(setting))


def embedding_pretrainer_names() -> tuple[str, ...]:
    """Names of the learners that can pretrain any learner's body (``model.pretrain_learner``)."""
    return names_where(lambda d: d.embedding_pretrainer)


def spoken_list(names: tuple[str, ...], *, last: str = "and", quote: bool = False) -> str:
    """Names as an English list for messages: ``"a, b and c"``.

    Args:
        names: The names (at least one).
        last: The word before the last name (``"and"``, ``"or"``).
        quote: Write each name in quotes (``'a'``).

    Returns:
        The list.
    """
    items = [repr(n) if quote else n for n in names]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"
