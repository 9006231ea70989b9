"""Helpers shared by the learners: config validation, heads, optimisers, deltas, modes.

The allowed values of the enumerated settings (``OPTIMIZERS``, ``HEAD_INITS``, ``PAIR_LOSSES``,
``REPLACED_HEADS``) are declared in :mod:`secfed.learners.settings` and re-exported here, as
are the task checks of :mod:`secfed.learners.support` (``check_task``, ``check_support_query``).

Pure helpers with no learner state; every learner validates its inputs through here so that bad
input fails with a typed error before any work is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from secfed.errors import ConfigError
from secfed.learners.base import FunctionalModel, LearnerConfig, SupportSet
from secfed.learners.settings import HEAD_INITS, OPTIMIZERS, PAIR_LOSSES, REPLACED_HEADS
from secfed.learners.support import check_support_query, check_task

__all__ = [
    "OPTIMIZERS",
    "HEAD_INITS",
    "PAIR_LOSSES",
    "REPLACED_HEADS",
    "head_names",
    "zero_head",
    "EmbeddingView",
    "embed_functional",
    "proto_head",
    "set_proto_head",
    "add_embedding_module",
    "check_config",
    "check_task",
    "check_support_query",
    "make_optimizer",
    "head_logits",
    "trainable_params",
    "snapshot_params",
    "params_delta",
    "training_mode",
]


def _positive_int(config: LearnerConfig, key: str, minimum: int) -> None:
    value = getattr(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"learner config {key} must be an int >= {minimum}, got {value!r}")


def _positive_float(config: LearnerConfig, key: str) -> None:
    value = getattr(config, key)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"learner config {key} must be a finite number > 0, got {value!r}")


def check_config(*, config: LearnerConfig, min_inner_steps: int = 0) -> None:
    """Validate every field of a learner config.

    Args:
        config: The config.
        min_inner_steps: Smallest allowed ``inner_steps`` (Reptile needs 1).

    Raises:
        ConfigError: Naming the first invalid key and its allowed values.
    """
    if not isinstance(config, LearnerConfig):
        raise ConfigError(f"config must be a LearnerConfig, got {type(config).__name__}")
    _positive_int(config, "local_steps", 1)
    _positive_int(config, "meta_batch", 1)
    _positive_int(config, "inner_steps", min_inner_steps)
    _positive_int(config, "test_inner_steps", 0)
    _positive_int(config, "reptile_inner_batch", 0)
    _positive_int(config, "batch_size", 1)
    _positive_int(config, "fce_steps", 1)
    if not isinstance(config.fce, bool):
        raise ConfigError(f"learner config fce must be a bool, got {config.fce!r}")
    tau = config.cosine_scale
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0.0 < float(tau) < float("inf"):
        raise ConfigError(f"learner config cosine_scale must be a finite number > 0, got {tau!r}")
    if config.pair_loss not in PAIR_LOSSES:
        raise ConfigError(f"learner config pair_loss must be one of {PAIR_LOSSES}, got {config.pair_loss!r}")
    mu = config.proximal_mu
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
        raise ConfigError(f"learner config proximal_mu must be a finite number >= 0, got {mu!r}")
    for key in ("local_lr", "inner_lr", "test_inner_lr"):
        _positive_float(config, key)
    for key in ("local_optimizer", "inner_optimizer"):
        if getattr(config, key) not in OPTIMIZERS:
            raise ConfigError(
                f"learner config {key} must be one of {list(OPTIMIZERS)}, got {getattr(config, key)!r}"
            )
    if config.head_init not in HEAD_INITS:
        raise ConfigError(
            f"learner config head_init must be one of {list(HEAD_INITS)}, got {config.head_init!r}"
        )
    if config.head_init == "zero" and config.test_inner_steps < 1:
        raise ConfigError(
            "learner config test_inner_steps must be >= 1 with head_init='zero' "
            "(a zero head predicts nothing)"
        )


def make_optimizer(*, name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Build a fresh optimiser (Adam with torch defaults, or plain SGD).

    Args:
        name: ``"adam"`` or ``"sgd"``.
        params: Tensors to optimise.
        lr: Learning rate.

    Returns:
        The optimiser.

    Raises:
        ConfigError: If ``name`` is unknown.
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ConfigError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def head_logits(*, outputs: torch.Tensor, n_way: int) -> torch.Tensor:
    """The first ``n_way`` outputs of a classification head.

    Works under ``torch.func.vmap`` (only static shapes are inspected).

    Args:
        outputs: Model outputs ``(N, num_outputs)``.
        n_way: Number of classes of the task.

    Returns:
        ``outputs[:, :n_way]``.

    Raises:
        ConfigError: If the model has fewer than ``n_way`` outputs.
    """
    if outputs.shape[-1] < n_way:
        raise ConfigError(
            f"model has {outputs.shape[-1]} outputs but the task is {n_way}-way; "
            f"build the model with num_classes >= n_way (num_classes == n_way for MAML/FOMAML/Reptile)"
        )
    return outputs if outputs.shape[-1] == n_way else outputs[..., :n_way]


def head_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the trainable parameters of the model's linear head (``model.head``).

    Args:
        model: A model built by :func:`secfed.models.build.build_model` with a head.

    Returns:
        The head's parameter names as in ``model.named_parameters()`` (e.g. ``head.weight``).

    Raises:
        ConfigError: If the model has no linear head.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"head_init='zero'/'proto' needs a model with a linear head (model.head), "
            f"got {type(model).__name__}"
        )
    return tuple(f"head.{name}" for name, p in head.named_parameters() if p.requires_grad)


def zero_head(*, params: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``params`` with the head's tensors replaced by zeros (Kao et al. 2022's zeroing trick).

    The zeros are ``p * 0``: they stay in the autograd (and ``torch.func``) graph of ``p`` so that
    inner gradients can be taken with respect to them, and the meta-gradient reaching the stored
    head is exactly zero (the head never changes; only the body is meta-learned).

    Args:
        params: Parameters by name.
        names: The head's parameter names (:func:`head_names`).

    Returns:
        A new dict; ``params`` itself is not modified.

    Raises:
        ConfigError: If a head name is missing from ``params``.
    """
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"head parameters {missing} are not among the trainable parameters")
    return {n: (p * 0 if n in names else p) for n, p in params.items()}


class EmbeddingView(nn.Module):
    """A module whose ``forward`` is ``model.embed``: the body without the linear head.

    Its parameters are ``model``'s, named ``model.<name>`` (nothing is copied), so it can be
    trained in place (public ProtoNet pretraining of a model that has a head,
    :mod:`secfed.pretrain`) or called with :func:`torch.func.functional_call`
    (:func:`embed_functional`).

    Args:
        model: A model with an ``embed(x)`` method (every model of :mod:`secfed.models`).

    Raises:
        ConfigError: If ``model`` has no ``embed`` method.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(model, "embed", None)):
            raise ConfigError(f"{type(model).__name__} has no embed(x) method: cannot take its embedding")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened embedding ``(N, D)`` of a batch."""
        emb = self.model.embed(x)  # type: ignore[operator]
        return emb.reshape(emb.shape[0], -1)


def embed_functional(
    *, model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``model.embed(x)`` evaluated at ``params`` / ``buffers`` (``torch.func``-compatible).

    Args:
        model: The model (its own tensors fill any name missing from ``params``/``buffers``).
        params: Parameters by name, as in ``model.named_parameters()``.
        buffers: Buffers by name.
        x: Inputs ``(N, ...)``.

    Returns:
        The flattened embeddings ``(N, D)``, differentiable with respect to ``params``.
    """
    view = EmbeddingView(model)
    prefixed = {f"model.{n}": t for n, t in params.items()}
    prefixed_buffers = {f"model.{n}": t for n, t in buffers.items()}
    out: torch.Tensor = functional_call(view, (prefixed, prefixed_buffers), (x,))
    return out


def proto_head(*, net: FunctionalModel, support: SupportSet) -> dict[str, torch.Tensor]:
    """``net.params`` with the linear head set from the support prototypes (Proto-MAML).

    Triantafillou et al. 2020 ("Meta-Dataset", ICLR, Sec. 3): with ``c_k`` the mean embedding of
    class ``k``'s support records, the head ``W_k = 2 c_k``, ``b_k = -||c_k||^2`` gives logits
    ``2 q.c_k - ||c_k||^2 = -||q - c_k||^2 + ||q||^2``: the ProtoNet logits (Snell et al. 2017) up
    to a per-query constant, hence the same softmax, loss and predictions before any inner step.
    Output rows beyond ``n_way`` are zero (only the first ``n_way`` logits are read).

    The new head is ``p * 0 + f(prototypes)``: it stays in the graph of the stored head ``p``
    (whose meta-gradient is therefore exactly zero) and of the body's parameters, through which
    the meta-gradient flows (the prototypes are differentiated, as in Proto-MAML). Static shapes
    only, so it composes with ``torch.func.grad`` and ``vmap``.

    Privacy: the head is a function of the episode's own support records, so a per-episode DP
    unit (PRIVACY_NOTES §1: clip each episode's meta-gradient) keeps sensitivity 2C. It couples
    the records of an episode, so it must not be used where the DP unit is one record (Reptile's
    per-record DP-SGD inner steps); :class:`~secfed.learners.reptile.Reptile` refuses that.

    Args:
        net: The model (``net.module``: linear head ``head`` with a bias, ``embed(x)`` for the
            body) at its parameters (which must include the head's) and buffers.
        support: The support set (the head must have >= ``support.n_way`` outputs).

    Returns:
        A new dict; ``net.params`` itself is not modified.

    Raises:
        ConfigError: If the model has no linear head with a bias, the head is not among
            ``net.params``, or it has fewer than ``support.n_way`` outputs.
    """
    model, params, n_way, support_y = net.module, net.params, support.n_way, support.y
    names = head_names(model)
    if set(names) != {"head.weight", "head.bias"}:
        raise ConfigError(f"head_init='proto' needs a trainable linear head with a bias, got {list(names)}")
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"head parameters {missing} are not among the trainable parameters")
    weight, bias = params["head.weight"], params["head.bias"]
    outputs = weight.shape[0]
    if outputs < n_way:
        raise ConfigError(f"model has {outputs} outputs but the task is {n_way}-way")
    emb = embed_functional(model=model, params=params, buffers=net.buffers, x=support.x)
    classes = torch.arange(n_way, device=support_y.device)
    onehot = (support_y.unsqueeze(-1) == classes).to(emb.dtype)  # (S, n_way)
    counts = onehot.sum(dim=0).clamp(min=1.0)
    protos = (onehot.transpose(0, 1) @ emb) / counts.unsqueeze(-1)  # (n_way, D)
    pad = outputs - n_way
    new_w = torch.nn.functional.pad(2 * protos, (0, 0, 0, pad))
    new_b = torch.nn.functional.pad(-(protos * protos).sum(dim=-1), (0, pad))
    out = dict(params)
    out["head.weight"] = weight * 0 + new_w.to(weight.dtype)
    out["head.bias"] = bias * 0 + new_b.to(bias.dtype)
    return out


@torch.no_grad()
def set_proto_head(*, model: nn.Module, support: SupportSet) -> None:
    """Write the Proto-MAML head of a support set into ``model.head`` in place (no gradients).

    The module-level counterpart of :func:`proto_head` for learners that train a model copy in
    place (Reptile). The model's current train/eval mode is used for the embedding.

    Args:
        model: The model (modified in place: its head only).
        support: The support set.

    Raises:
        ConfigError: As :func:`proto_head`.
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    new = proto_head(net=FunctionalModel(module=model, params=params, buffers=buffers), support=support)
    for name in ("head.weight", "head.bias"):
        model.get_parameter(name).copy_(new[name])


def add_embedding_module(
    *, model: nn.Module, name: str, build: Callable[[int], nn.Module], needs: str
) -> nn.Module:
    """Add a learner's own trainable module, sized by the model's ``embedding_dim``.

    For :meth:`~secfed.learners.base.Learner.extend_model` of the metric learners (Matching
    Networks' full context embeddings, the Siamese distance head).

    Args:
        model: The embedding network (an int ``embedding_dim`` >= 1).
        name: The new submodule's attribute name (the model must not have one).
        build: The new submodule of an embedding size.
        needs: The start of the error message, e.g. ``"a Siamese network needs"``.

    Returns:
        ``model``, with the new submodule.

    Raises:
        ConfigError: If the model has no ``embedding_dim`` or already has an attribute ``name``.
    """
    dim = getattr(model, "embedding_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"{needs} a model with an embedding_dim, got {dim!r}")
    if hasattr(model, name):
        raise ConfigError(f"the model already has an attribute {name!r}")
    model.add_module(name, build(dim))
    return model


def trainable_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's trainable parameters by name, in ``named_parameters()`` order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's trainable parameters."""
    return {name: p.detach().clone() for name, p in trainable_params(model).items()}


def params_delta(*, model: nn.Module, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``current - initial`` for every trainable parameter, as float32.

    Args:
        model: The model after training.
        initial: The snapshot taken before training (:func:`snapshot_params`).

    Returns:
        ``{name: delta}`` (float32, detached, same names and order as ``initial``).
    """
    current = trainable_params(model)
    return {name: (current[name].detach() - start).to(torch.float32) for name, start in initial.items()}


@contextmanager
def training_mode(model: nn.Module, *, train: bool) -> Iterator[nn.Module]:
    """Put ``model`` in training or eval mode and restore each submodule's previous mode on exit.

    Args:
        model: The model.
        train: Mode to use inside the block.

    Yields:
        The model.
    """
    previous = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for module, mode in previous:
            module.training = mode
