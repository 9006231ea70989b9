"""A deterministic flat view of a model's parameters and floating-point buffers.

The federation layer moves parameters, updates and buffers as flat float32 vectors. The order
is the order of ``model.named_parameters()`` restricted to trainable parameters (resp.
``model.named_buffers()`` restricted to floating-point buffers), which is fixed by the module
definition and identical on every site that builds the same architecture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from secfed.errors import ConfigError

__all__ = [
    "param_names",
    "param_shapes",
    "num_params",
    "flatten_params",
    "unflatten_into",
    "flatten_named",
    "unflatten_named",
    "buffer_names",
    "floating_buffers",
]


def param_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters in flat-vector order.

    Args:
        model: The model.

    Returns:
        Names of parameters with ``requires_grad``, in ``named_parameters()`` order.
    """
    return [name for name, p in model.named_parameters() if p.requires_grad]


def param_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Shapes of the trainable parameters, in flat-vector order.

    Args:
        model: The model.

    Returns:
        ``{name: shape}`` (insertion-ordered).
    """
    return {name: p.shape for name, p in model.named_parameters() if p.requires_grad}


def num_params(model: nn.Module) -> int:
    """Length of the flat parameter vector.

    Args:
        model: The model.

    Returns:
        Number of trainable scalars.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flatten_named(*, tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """Concatenate named tensors into one flat float32 vector.

    Args:
        tensors: Tensors by name (e.g. ``LocalUpdate.delta``).
        names: The order (e.g. :func:`param_names`); every name must be present.

    Returns:
        A new float32 array of length ``sum(numel)``.

    Raises:
        ConfigError: If a name is missing from ``tensors``.
    """
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ConfigError(f"tensors are missing entries for {missing[:5]} (of {len(missing)} missing names)")
    if not names:
        return np.zeros(0, dtype=np.float32)
    parts = [tensors[n].detach().reshape(-1).to(device="cpu", dtype=torch.float32) for n in names]
    return torch.cat(parts).numpy().copy()


def unflatten_named(*, vector: np.ndarray, shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Split a flat vector into named float32 tensors.

    Args:
        vector: 1-D array of length ``sum(prod(shape))``.
        shapes: ``{name: shape}`` in flat order (e.g. :func:`param_shapes`).

    Returns:
        ``{name: tensor}`` (float32 tensors that own their memory).

    Raises:
        ConfigError: If ``vector`` is not 1-D or has the wrong length.
    """
    arr = np.asarray(vector)
    total = sum(int(np.prod(tuple(s), dtype=np.int64)) for s in shapes.values())
    if arr.ndim != 1 or arr.shape[0] != total:
        raise ConfigError(f"vector must be 1-D of length {total} to fill the model, got shape {arr.shape}")
    flat = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(tuple(shape), dtype=np.int64))
        out[name] = flat[offset : offset + size].reshape(shape).clone()
        offset += size
    return out


def flatten_params(*, model: nn.Module) -> np.ndarray:
    """The model's trainable parameters as one flat float32 vector.

    Args:
        model: The model.

    Returns:
        A new float32 array in :func:`param_names` order.
    """
    return flatten_named(tensors=dict(model.named_parameters()), names=param_names(model))


def unflatten_into(*, model: nn.Module, vector: np.ndarray | torch.Tensor) -> None:
    """Overwrite the model's trainable parameters from a flat vector (inverse of :func:`flatten_params`).

    Args:
        model: The model, modified in place (parameter dtypes and devices are kept).
        vector: 1-D array of length :func:`num_params`.

    Raises:
        ConfigError: If ``vector`` is not 1-D, has the wrong length, or is not finite.
    """
    arr = vector.detach().cpu().numpy() if isinstance(vector, torch.Tensor) else np.asarray(vector)
    if arr.dtype.kind not in "fiu":
        raise ConfigError(f"vector must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1 and not np.all(np.isfinite(arr)):
        raise ConfigError("vector contains NaN or infinite values")
    pieces = unflatten_named(vector=arr, shapes=param_shapes(model))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in pieces.items():
            params[name].copy_(value.to(dtype=params[name].dtype, device=params[name].device))


def buffer_names(model: nn.Module) -> list[str]:
    """Names of the floating-point buffers (e.g. BatchNorm running statistics), in order.

    Integer buffers such as BatchNorm's ``num_batches_tracked`` are excluded.

    Args:
        model: The model.

    Returns:
        Buffer names in ``named_buffers()`` order.
    """
    return [name for name, b in model.named_buffers() if b.is_floating_point()]


def floating_buffers(*, model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the floating-point buffers.

    Args:
        model: The model.

    Returns:
        ``{name: tensor}`` in :func:`buffer_names` order (float32 copies).
    """
    return {
        name: b.detach().to(dtype=torch.float32).clone()
        for name, b in model.named_buffers()
        if b.is_floating_point()
    }
