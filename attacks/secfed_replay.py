"""What a secfed site computes, replayed as the attack library's losses and observation models.

* :func:`message_kind`, :func:`task_local_head`, :func:`global_head` and :func:`is_metric_learner`
  read what a site sends from its learner's declarations (``Learner.episodic``, ``Learner.head``),
  never from its name.
* :func:`supervised_loss_fn`, :func:`protonet_loss_fn` and :func:`episode_loss_fn` turn a secfed
  model / learner into the attack library's functional loss ``loss_fn(params, buffers, inputs, labels)``
  (:data:`attacks.functional.LossFn`); :func:`gradient_observation`, :func:`update_observation`
  and :func:`episode_observation` build the public observation models
  (:mod:`attacks.observation`) of what a secfed client sends under a run's hyperparameters.

Everything here is what an honest-but-curious server knows: the global model, the learner and the
configuration of the run. Nothing reads a site's data. :mod:`attacks.secfed_adapter` loads the run
and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.func import functional_call

from attacks.errors import AttackConfigError, AttackInputError
from attacks.functional import LossFn, protonet_episode_loss, soft_cross_entropy
from attacks.observation import GradientObservation, MAMLObservation, MultiStepObservation, ObservationModel
from secfed.config import ExperimentConfig
from secfed.learners import learner_class
from secfed.learners.base import Learner
from secfed.learners.common import head_names
from secfed.learners.declarations import MESSAGES, declaration
from secfed.learners.maml import MAML
from secfed.learners.protonet import ProtoNet
from secfed.tasks.base import Task

__all__ = [
    "MESSAGE_KINDS",
    "supervised_loss_fn",
    "protonet_loss_fn",
    "episode_loss_fn",
    "is_metric_learner",
    "message_kind",
    "task_local_head",
    "global_head",
    "head_size",
    "gradient_observation",
    "update_observation",
    "episode_observation",
]

#: What a site's message is (:func:`message_kind`), from the learner's declarations.
MESSAGE_KINDS = MESSAGES


def task_local_head(name: str) -> bool:
    """Whether a learner's model has an ``n_way``-output head trained on task-local labels.

    Read from the learner's declaration (``Learner.head == "n_way"``: MAML, FOMAML, Reptile).

    Args:
        name: A registered learner name.

    Returns:
        True for a task-local head.

    Raises:
        ConfigError: If ``name`` is not a registered learner.
    """
    return learner_class(name).head == "n_way"


def global_head(name: str) -> bool:
    """Whether a learner's model has one output per training class (``Learner.head == "global"``: FedAvg).

    Args:
        name: A registered learner name.

    Returns:
        True for a global head.

    Raises:
        ConfigError: If ``name`` is not a registered learner.
    """
    return learner_class(name).head == "global"


def message_kind(name: str) -> str:
    """What a site of this learner sends: its declaration's ``message``.

    * ``"episode_gradient"`` (ProtoNet, Matching Networks, Siamese networks): the gradient of the
      learner's own episode loss.
    * ``"meta_gradient"`` (MAML, FOMAML): the meta-gradient after inner SGD steps on the support set.
    * ``"task_update"`` (Reptile): inner SGD steps on one task, scaled by the outer step
      ``learner.local_lr``.
    * ``"batch_update"`` (FedAvg): local SGD steps on record batches.

    Args:
        name: A registered learner name.

    Returns:
        One of :data:`MESSAGE_KINDS` (:data:`secfed.learners.declarations.MESSAGES`).

    Raises:
        ConfigError: If ``name`` is not a registered learner.
    """
    return declaration(name).message


def head_size(*, config: ExperimentConfig, model: nn.Module) -> int | None:
    """Outputs of the model's classification head (``None`` when ``Learner.head == "none"``)."""
    head = getattr(model, "head", None)
    if learner_class(config.learner.name).head == "none" or head is None:
        return None
    return int(head.out_features)


def _call(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    # Buffers are cloned so that train-mode BatchNorm does not update the caller's statistics.
    return functional_call(model, ({**dict(params)}, {k: v.clone() for k, v in buffers.items()}), (x,))


def supervised_loss_fn(*, model: nn.Module, n_way: int | None = None) -> LossFn:
    """The per-record training loss of FedAvg local steps and Reptile / MAML inner steps.

    Mean cross-entropy on the model's outputs (all of them for FedAvg's global head, the first
    ``n_way`` for the task-local heads of Reptile / MAML / FOMAML, as
    :func:`secfed.learners.common.head_logits` takes them). Labels may be hard or soft.

    Args:
        model: The secfed model (structure only).
        n_way: Number of task-local classes, or ``None`` for every output.

    Returns:
        ``loss_fn(params, buffers, inputs, labels)``.

    Raises:
        AttackConfigError: If ``n_way`` is not positive.
    """
    if n_way is not None and n_way < 1:
        raise AttackConfigError(f"n_way must be >= 1 or None, got {n_way}")

    def loss_fn(
        params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> Tensor:
        out = _call(model, params, buffers, inputs)
        logits = out if n_way is None else out[:, :n_way]
        return soft_cross_entropy(logits=logits, labels=labels, reduction="mean")

    return loss_fn


def is_metric_learner(name: str) -> bool:
    """Whether a learner's whole message is the gradient of a per-episode loss with no inner loop.

    ProtoNet, Matching Networks and Siamese networks (episodic, no classification head): their
    episode loss couples the episode's records, has no one-record form, and is invariant to
    renaming the episode's classes, so the label layout of an episode is public.

    Args:
        name: A registered learner name.

    Returns:
        True for such a learner.

    Raises:
        ConfigError: If ``name`` is not a registered learner.
    """
    cls = learner_class(name)
    return bool(cls.episodic) and cls.head == "none"


def episode_loss_fn(*, learner: Learner, model: nn.Module, n_way: int, k_shot: int, n_query: int) -> LossFn:
    """A metric learner's own episode loss (``learner.task_loss``) as a :data:`~attacks.functional.LossFn`.

    ``inputs`` holds the ``n_way * k_shot`` support records followed by the ``n_way * n_query``
    queries, each class-sorted, as the learners' episode sources lay them out; they become a
    :class:`~secfed.tasks.base.Task` that goes through the learner's own ``task_loss`` (ProtoNet,
    Matching Networks with or without full context embeddings, Siamese networks). The replay
    therefore runs the site's code, not a copy of it.

    Args:
        learner: The run's learner (see :func:`is_metric_learner`).
        model: The model the learner trains (with the learner's own modules, e.g. ``pair_head``).
        n_way: Classes per episode.
        k_shot: Support records per class.
        n_query: Query records per class.

    Returns:
        ``loss_fn(params, buffers, inputs, labels)`` taking hard (integer) labels.

    Raises:
        AttackConfigError: If the learner is not a metric learner or a count is not positive.
        AttackInputError: (from the returned function) on soft labels or a batch that is not one
            such episode.
    """
    if not is_metric_learner(learner.name):
        raise AttackConfigError(
            f"episode_loss_fn needs a learner whose message is one episode's loss gradient "
            f"(ProtoNet, Matching Networks, Siamese networks), got {learner.name!r}"
        )
    for name, v in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
        if int(v) < 1:
            raise AttackConfigError(f"{name} must be >= 1, got {v}")
    n_support = n_way * k_shot
    n_records = n_way * (k_shot + n_query)

    def loss_fn(
        params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> Tensor:
        if labels.is_floating_point():
            raise AttackInputError(
                f"the {learner.name} episode loss takes the episode's hard label layout (public: "
                "attacks.functional.protonet_episode_labels), not soft labels"
            )
        if inputs.shape[0] != n_records or labels.shape[0] != inputs.shape[0]:
            raise AttackInputError(
                f"a {n_way}-way {k_shot}-shot episode with {n_query} queries per class has "
                f"{n_records} records, got {inputs.shape[0]} inputs and {labels.shape[0]} labels"
            )
        task = Task(
            support_x=inputs[:n_support],
            support_y=labels[:n_support].long(),
            query_x=inputs[n_support:],
            query_y=labels[n_support:].long(),
            n_way=n_way,
        )
        return learner.task_loss(
            model=model, params=dict(params), buffers={k: v.clone() for k, v in buffers.items()}, task=task
        )

    return loss_fn


def protonet_loss_fn(*, learner: Learner, model: nn.Module, n_way: int, k_shot: int, n_query: int) -> LossFn:
    """The secfed ProtoNet episode loss as a :data:`~attacks.functional.LossFn`.

    ``inputs`` holds the ``n_way * k_shot`` support records followed by the ``n_way * n_query``
    queries. With hard labels this is exactly the learner's own ``task_loss`` on the
    corresponding :class:`~secfed.tasks.base.Task` (:func:`episode_loss_fn`); soft labels
    (optimised jointly by DLG) go through :func:`attacks.functional.protonet_episode_loss`, which
    equals it on one-hot labels.

    Args:
        learner: The run's ProtoNet learner.
        model: The embedding network.
        n_way: Classes per episode.
        k_shot: Support records per class.
        n_query: Query records per class.

    Returns:
        ``loss_fn(params, buffers, inputs, labels)``: the learner's ``task_loss`` on hard labels,
        :func:`attacks.functional.protonet_episode_loss` on soft ones.

    Raises:
        AttackConfigError: If the learner is not ProtoNet or a count is not positive.
    """
    if not isinstance(learner, ProtoNet):
        raise AttackConfigError(f"protonet_loss_fn needs the ProtoNet learner, got {learner.name!r}")
    soft = protonet_episode_loss(model=model, n_way=n_way, k_shot=k_shot, n_query=n_query)
    hard = episode_loss_fn(learner=learner, model=model, n_way=n_way, k_shot=k_shot, n_query=n_query)

    def loss_fn(
        params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> Tensor:
        if labels.is_floating_point():
            return soft(params, buffers, inputs, labels)
        return hard(params, buffers, inputs, labels)

    return loss_fn


def gradient_observation(*, config: ExperimentConfig, model: nn.Module) -> GradientObservation:
    """One gradient of the per-record training loss at the global model (a FedSGD step).

    FedAvg: cross-entropy over the global classes; Reptile / MAML / FOMAML: cross-entropy over the
    ``task.n_way`` task-local outputs (the loss of one inner step).

    Args:
        config: The run's configuration.
        model: The global model.

    Returns:
        The observation model.

    Raises:
        AttackConfigError: For ProtoNet, Matching Networks and Siamese networks, which have no
            per-record loss.
    """
    name = config.learner.name
    if is_metric_learner(name):
        raise AttackConfigError(f"{name} has no per-record loss: use episode_observation")
    n_way = config.task.n_way if task_local_head(name) else None
    return GradientObservation(loss_fn=supervised_loss_fn(model=model, n_way=n_way))


def update_observation(
    *, config: ExperimentConfig, model: nn.Module, num_records: int
) -> MultiStepObservation:
    """A multi-step local update over ``num_records`` records, replayed as plain SGD.

    * FedAvg: ``learner.local_steps`` steps with ``learner.local_lr`` on consecutive batches of
      ``min(learner.batch_size, num_records)`` records; the update is ``theta_T - theta_0``.
    * Reptile: ``learner.inner_steps`` steps with ``learner.inner_lr`` on batches of
      ``learner.reptile_inner_batch`` records (0 = all), scaled by the outer step ``learner.local_lr``
      (one outer SGD step on one task; Nichol et al. 2018). With ``learner.head_init='zero'`` the
      replay starts from a zero head and leaves the head out of the update, as the client does.

    The attack library replays plain SGD (Geiping et al. 2020, Sec. 5); when the run's optimiser is
    Adam the replay is a model of the update, not its exact form (the caller reports this).

    Args:
        config: The run's configuration.
        model: The global model.
        num_records: Records the client trains on.

    Returns:
        The observation model.

    Raises:
        AttackConfigError: If the learner does not take plain local steps (ProtoNet, MAML, FOMAML)
            or ``num_records < 1``.
    """
    lr = config.learner
    if num_records < 1:
        raise AttackConfigError(f"num_records must be >= 1, got {num_records}")
    kind = message_kind(lr.name)
    if kind == "batch_update":
        batches = _sequential(num_records, min(lr.batch_size, num_records), lr.local_steps)
        return MultiStepObservation(
            loss_fn=supervised_loss_fn(model=model), lr=float(lr.local_lr), batches=batches, scale=1.0
        )
    if kind == "task_update":
        per = num_records if lr.reptile_inner_batch == 0 else min(lr.reptile_inner_batch, num_records)
        batches = _sequential(num_records, per, lr.inner_steps)
        return MultiStepObservation(
            loss_fn=supervised_loss_fn(model=model, n_way=config.task.n_way),
            lr=float(lr.inner_lr),
            batches=batches,
            scale=float(lr.local_lr),
            zeroed=head_names(model) if lr.head_init == "zero" else (),
        )
    raise AttackConfigError(
        f"learner {lr.name!r} sends episode (meta-)gradient steps, not plain SGD updates: "
        "use episode_observation"
    )


def _first_order(name: str) -> bool:
    # MAML declares first_order (FOMAML: True); the meta-gradient replay reads it.
    cls = learner_class(name)
    return issubclass(cls, MAML) and bool(cls.first_order)


def _sequential(n: int, batch: int, steps: int) -> tuple[tuple[int, ...], ...]:
    from attacks.observation import sequential_batches

    return sequential_batches(num_records=n, batch_size=batch, steps=steps)


def episode_observation(
    *, config: ExperimentConfig, learner: Learner, model: nn.Module, n_way: int, k_shot: int, n_query: int
) -> ObservationModel:
    """The (meta-)gradient of one episode at the global model.

    * ProtoNet, Matching Networks, Siamese networks: the gradient of the learner's own episode
      loss (Snell et al. 2017; Vinyals et al. 2016; Koch et al. 2015) on ``n_way * k_shot``
      support records followed by ``n_way * n_query`` queries (:func:`episode_loss_fn`).
    * MAML / FOMAML: the meta-gradient after ``learner.inner_steps`` inner SGD steps with
      ``learner.inner_lr`` on the support set (Finn et al. 2017).

    Args:
        config: The run's configuration.
        learner: The run's learner.
        model: The global model.
        n_way: Classes per episode.
        k_shot: Support records per class.
        n_query: Query records per class.

    Returns:
        The observation model.

    Raises:
        AttackConfigError: For learners without an episodic meta-loss.
    """
    name = config.learner.name
    kind = message_kind(name)
    if kind == "episode_gradient":
        build = protonet_loss_fn if issubclass(learner_class(name), ProtoNet) else episode_loss_fn
        return GradientObservation(
            loss_fn=build(learner=learner, model=model, n_way=n_way, k_shot=k_shot, n_query=n_query)
        )
    if kind == "meta_gradient":
        return MAMLObservation(
            loss_fn=supervised_loss_fn(model=model, n_way=config.task.n_way),
            n_support=n_way * k_shot,
            inner_steps=int(config.learner.inner_steps),
            inner_lr=float(config.learner.inner_lr),
            first_order=_first_order(name),
            zeroed=head_names(model) if config.learner.head_init == "zero" else (),
        )
    raise AttackConfigError(f"learner {name!r} has no episodic meta-gradient")
