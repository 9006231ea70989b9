"""A multilayer perceptron for tabular records and small images (e.g. 8x8 digits).

The input is flattened, then passed through ``Linear -> norm -> ReLU`` hidden layers and an
optional linear head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from secfed.errors import ConfigError
from secfed.models.norm import check_norm, make_norm

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected network with an optional linear classification head.

    Attributes:
        features: Flatten followed by the hidden layers.
        head: ``nn.Linear(embedding_dim, num_classes)`` or ``None``.
        embedding_dim: Width of the last hidden layer (the flattened input size if there is none).
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int | None = None,
        hidden_sizes: tuple[int, ...] = (64, 64),
        norm: str = "none",
        num_groups: int = 8,
    ) -> None:
        """Build the network.

        Args:
            input_shape: Shape of one record (any number of dimensions, flattened).
            num_classes: Outputs of the linear head; ``None`` for an embedding-only network.
            hidden_sizes: Width of each hidden layer (may be empty).
            norm: ``"batch"``, ``"group"`` or ``"none"`` after each hidden linear layer.
            num_groups: GroupNorm groups (must divide every hidden width).

        Raises:
            ConfigError: If any argument is invalid.
        """
        super().__init__()
        if len(input_shape) < 1 or any(int(d) < 1 for d in input_shape):
            raise ConfigError(
                f"MLP input_shape must be non-empty with positive sizes, got {tuple(input_shape)}"
            )
        if any(int(h) < 1 for h in hidden_sizes):
            raise ConfigError(f"hidden_sizes must all be >= 1, got {tuple(hidden_sizes)}")
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1 or None, got {num_classes}")
        for width in hidden_sizes:
            check_norm(norm=norm, channels=int(width), num_groups=num_groups)
        in_features = math.prod(int(d) for d in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden_sizes:
            layers += [
                nn.Linear(in_features, int(width)),
                make_norm(norm=norm, channels=int(width), num_groups=num_groups, spatial=False),
                nn.ReLU(),
            ]
            in_features = int(width)
        self.features = nn.Sequential(*layers)
        self.embedding_dim = in_features
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self.head: nn.Linear | None = nn.Linear(in_features, num_classes) if num_classes is not None else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of a batch ``(N, *input_shape) -> (N, embedding_dim)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``, or the embedding when there is no head."""
        z = self.features(x)
        return self.head(z) if self.head is not None else z
