"""Model factory: one entry point that builds any supported architecture by name."""

from __future__ import annotations

from torch import nn

from secfed.errors import ConfigError
from secfed.models.conv4 import Conv4
from secfed.models.mlp import MLP
from secfed.models.norm import NORMS

__all__ = ["ARCHS", "build_model"]

#: Allowed values of ``arch``.
ARCHS: tuple[str, ...] = ("conv4", "mlp")


def build_model(
    *,
    arch: str,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    hidden: int = 64,
    norm: str = "batch",
    num_groups: int = 8,
    depth: int | None = None,
) -> nn.Module:
    """Build a model.

    Both architectures expose ``embed(x)`` (the embedding), ``head`` (``nn.Linear`` or ``None``)
    and ``embedding_dim``; ``forward`` returns logits, or the embedding when ``num_classes`` is None.

    Args:
        arch: ``"conv4"`` (Conv-4, input ``(C, H, W)``) or ``"mlp"`` (any input shape, flattened).
        input_shape: Shape of one record, without the batch dimension.
        num_classes: Outputs of the linear head, or ``None`` for an embedding-only model
            (ProtoNet). MAML/FOMAML/Reptile expect ``num_classes == n_way``; FedAvg expects the
            number of global training classes.
        hidden: Filters per conv block (conv4) or width of every hidden layer (mlp).
        norm: ``"batch"``, ``"group"`` (needed for differential privacy) or ``"none"``.
        num_groups: GroupNorm groups; must divide ``hidden``.
        depth: Conv blocks (conv4, default 4) or hidden layers (mlp, default 2).

    Returns:
        The model, in training mode, initialised from torch's global RNG (seed it for determinism).

    Raises:
        ConfigError: Naming the offending option and its allowed values.
    """
    if arch not in ARCHS:
        raise ConfigError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(d, int) for d in input_shape):
        raise ConfigError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    if hidden < 1:
        raise ConfigError(f"hidden must be >= 1, got {hidden}")
    if depth is not None and depth < (1 if arch == "conv4" else 0):
        raise ConfigError(f"depth must be >= {1 if arch == 'conv4' else 0} for arch={arch!r}, got {depth}")
    if arch == "conv4":
        return Conv4(
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            hidden=hidden,
            norm=norm,
            num_groups=num_groups,
            blocks=4 if depth is None else depth,
        )
    layers = 2 if depth is None else depth
    return MLP(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        hidden_sizes=(hidden,) * layers,
        norm=norm,
        num_groups=num_groups,
    )
