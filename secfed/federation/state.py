"""Flat, deterministic views of a model's state for the wire and the aggregator.

The federation layer moves one flat float32 vector per model: every trainable parameter
followed by every floating-point buffer (e.g. BatchNorm running statistics), in
``named_parameters`` / ``named_buffers`` order. Integer buffers (``num_batches_tracked``) are
not federated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["StateEntry", "state_spec", "flat_state", "load_flat_state", "param_mask"]


@dataclass(frozen=True)
class StateEntry:
    """One tensor of the flat state.

    Attributes:
        name: Parameter or buffer name.
        shape: Tensor shape.
        is_param: True for trainable parameters, False for floating buffers.
        offset: Start of the tensor in the flat vector.
    """

    name: str
    shape: tuple[int, ...]
    is_param: bool
    offset: int

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def state_spec(model: nn.Module) -> tuple[StateEntry, ...]:
    """The flat layout of ``model``'s federated state.

    Args:
        model: The model.

    Returns:
        Entries in flat order.
    """
    entries: list[StateEntry] = []
    offset = 0
    for name, p in model.named_parameters():
        entries.append(StateEntry(name=name, shape=tuple(p.shape), is_param=True, offset=offset))
        offset += p.numel()
    for name, b in model.named_buffers():
        if b.is_floating_point():
            entries.append(StateEntry(name=name, shape=tuple(b.shape), is_param=False, offset=offset))
            offset += b.numel()
    return tuple(entries)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return out


def flat_state(model: nn.Module, *, spec: tuple[StateEntry, ...]) -> np.ndarray:
    """Concatenate the model's federated state into one float32 vector.

    Args:
        model: The model.
        spec: Its layout from :func:`state_spec`.

    Returns:
        A new float32 vector.
    """
    tensors = _tensors(model)
    return np.concatenate(
        [tensors[e.name].detach().reshape(-1).to(torch.float32).cpu().numpy() for e in spec]
    ).astype(np.float32, copy=False)


def load_flat_state(model: nn.Module, vector: np.ndarray, *, spec: tuple[StateEntry, ...]) -> None:
    """Copy a flat vector into the model's parameters and floating buffers.

    Args:
        model: The model (modified in place).
        vector: The flat state.
        spec: The layout.

    Raises:
        ValueError: If the vector length does not match the layout.
    """
    total = spec[-1].offset + spec[-1].size if spec else 0
    if vector.shape != (total,):
        raise ValueError(f"flat state has shape {vector.shape}, the model needs ({total},)")
    tensors = _tensors(model)
    with torch.no_grad():
        for e in spec:
            chunk = torch.from_numpy(np.ascontiguousarray(vector[e.offset : e.offset + e.size])).reshape(
                e.shape
            )
            tensors[e.name].copy_(chunk)


def param_mask(spec: tuple[StateEntry, ...]) -> np.ndarray:
    """Boolean mask of the flat vector: True on trainable parameters, False on buffers."""
    total = spec[-1].offset + spec[-1].size if spec else 0
    mask = np.zeros(total, dtype=bool)
    for e in spec:
        if e.is_param:
            mask[e.offset : e.offset + e.size] = True
    return mask
