"""Model factory: one entry point that builds any supported architecture by name."""

from __future__ import annotations

from torch import nn

from secfed.errors import ConfigError
from secfed.models.conv4 import Conv4
from secfed.models.mlp import MLP
from secfed.models.norm import NORMS
from secfed.models.recipes import freeze_except, standardize_weights
from secfed.models.scatter import ScatterFeatures, ScatterModel

__all__ = ["ARCHS", "FRONTENDS", "build_model"]

#: Allowed values of ``arch``.
ARCHS: tuple[str, ...] = ("conv4", "mlp")
#: Allowed values of ``frontend``: none, or the fixed 2-D scattering transform
#: (:mod:`secfed.models.scatter`).
FRONTENDS: tuple[str, ...] = ("none", "scatter")


def build_model(
    *,
    arch: str,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    hidden: int = 64,
    norm: str = "batch",
    num_groups: int = 8,
    depth: int | None = None,
    frontend: str = "none",
    scatter_j: int = 2,
    scatter_l: int = 8,
    weight_standardization: bool = False,
    trainable: str = "all",
) -> nn.Module:
    """Build a model.

    Both architectures expose ``embed(x)`` (the embedding), ``head`` (``nn.Linear`` or ``None``)
    and ``embedding_dim``; ``forward`` returns logits, or the embedding when ``num_classes`` is None.

    With ``frontend = "scatter"`` the model's first stage is the fixed 2-D scattering transform
    (Bruna & Mallat 2013; Oyallon & Mallat 2015; for DP, Tramèr & Boneh 2021), log-compressed
    and standardised per record (:class:`secfed.models.scatter.ScatterFeatures`), and the body
    (Conv-4 on the ``(C * K, H / 2^J, W / 2^J)`` maps, or the MLP on their flattening; ``K = 81``
    at ``J = 2, L = 8``) is built for its output. The front-end has no parameter and no buffer,
    so the trainable parameters, their names and the state dict are those of the body alone.

    Args:
        arch: ``"conv4"`` (Conv-4, input ``(C, H, W)``) or ``"mlp"`` (any input shape, flattened).
        input_shape: Shape of one record, without the batch dimension.
        num_classes: Outputs of the linear head, or ``None`` for an embedding-only model
            (ProtoNet). MAML/FOMAML/Reptile expect ``num_classes == n_way``; FedAvg expects the
            number of global training classes.
        hidden: Filters per conv block (conv4) or width of every hidden layer (mlp).
        norm: ``"batch"``, ``"group"`` (needed for differential privacy) or ``"none"``.
        num_groups: GroupNorm groups; must divide ``hidden``.
        depth: Conv blocks (conv4, default 4) or hidden layers (mlp, default 2; 0 = the embedding
            is the flattened input, e.g. the scattering features themselves).
        frontend: ``"none"`` or ``"scatter"``.
        scatter_j: Scales ``J`` of the scattering transform (the input's height and width must be
            multiples of ``2^J``).
        scatter_l: Orientations ``L`` of the scattering transform.
        weight_standardization: Use weight-standardised convolutions
            (:class:`secfed.models.recipes.WSConv2d`; Qiao et al. 2019, De et al. 2022).
        trainable: ``"all"``, ``"last"`` or ``"norm"``: the other parameters get
            ``requires_grad = False`` (:func:`secfed.models.recipes.freeze_except`).

    Returns:
        The model, in training mode, initialised from torch's global RNG (seed it for determinism).

    Raises:
        ConfigError: Naming the offending option and its allowed values.
    """
    if arch not in ARCHS:
        raise ConfigError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    if frontend not in FRONTENDS:
        raise ConfigError(f"model.frontend must be one of {list(FRONTENDS)}, got {frontend!r}")
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(d, int) for d in input_shape):
        raise ConfigError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    if hidden < 1:
        raise ConfigError(f"hidden must be >= 1, got {hidden}")
    if depth is not None and depth < (1 if arch == "conv4" else 0):
        raise ConfigError(f"depth must be >= {1 if arch == 'conv4' else 0} for arch={arch!r}, got {depth}")
    front: ScatterFeatures | None = None
    body_shape = tuple(input_shape)
    if frontend == "scatter":
        front = ScatterFeatures(input_shape=body_shape, J=scatter_j, L=scatter_l)
        body_shape = front.output_shape
    body: Conv4 | MLP
    if arch == "conv4":
        body = Conv4(
            input_shape=body_shape,
            num_classes=num_classes,
            hidden=hidden,
            norm=norm,
            num_groups=num_groups,
            blocks=4 if depth is None else depth,
        )
    else:
        layers = 2 if depth is None else depth
        body = MLP(
            input_shape=body_shape,
            num_classes=num_classes,
            hidden_sizes=(hidden,) * layers,
            norm=norm,
            num_groups=num_groups,
        )
    if weight_standardization:
        standardize_weights(body)
    model: nn.Module = body
    if front is not None:
        model = ScatterModel(frontend=front, body=body, input_shape=tuple(input_shape))
    return freeze_except(model, trainable=trainable)
