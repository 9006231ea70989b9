"""The Conv-4 backbone of the few-shot literature.

Four blocks of ``3x3 conv (hidden filters, padding 1) -> norm -> ReLU -> 2x2 max-pool``
(Vinyals et al. 2016, "Matching Networks"; used by Finn et al. 2017 for MAML and Snell et al. 2017
for ProtoNet). A 28x28 Omniglot image gives a ``hidden``-dimensional embedding
(28 -> 14 -> 7 -> 3 -> 1). Pooling is skipped along an axis whose size has already reached 1,
so small inputs such as 8x8 digits (8 -> 4 -> 2 -> 1 -> 1) never collapse to an empty map.
"""

from __future__ import annotations

import torch
from torch import nn

from secfed.errors import ConfigError
from secfed.models.norm import check_norm, make_norm

__all__ = ["Conv4"]


class Conv4(nn.Module):
    """Conv-4 embedding network with an optional linear classification head.

    Attributes:
        features: The convolutional blocks followed by a flatten.
        head: ``nn.Linear(embedding_dim, num_classes)`` or ``None`` (embedding only, e.g. ProtoNet).
        embedding_dim: Length of the flattened embedding.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int | None = None,
        hidden: int = 64,
        norm: str = "batch",
        num_groups: int = 8,
        blocks: int = 4,
    ) -> None:
        """Build the network.

        Args:
            input_shape: ``(C, H, W)`` of one record, e.g. ``(1, 28, 28)``.
            num_classes: Outputs of the linear head; ``None`` for an embedding-only network.
            hidden: Filters per convolution.
            norm: ``"batch"``, ``"group"`` or ``"none"``.
            num_groups: GroupNorm groups (must divide ``hidden``).
            blocks: Number of conv blocks (4 for Conv-4).

        Raises:
            ConfigError: If any argument is invalid.
        """
        super().__init__()
        if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
            raise ConfigError(
                f"Conv4 input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}"
            )
        if hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {hidden}")
        if blocks < 1:
            raise ConfigError(f"blocks must be >= 1, got {blocks}")
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1 or None, got {num_classes}")
        check_norm(norm=norm, channels=hidden, num_groups=num_groups)
        channels, height, width = (int(d) for d in input_shape)
        layers: list[nn.Module] = []
        in_ch = channels
        for _ in range(blocks):
            layers += [
                nn.Conv2d(in_ch, hidden, kernel_size=3, padding=1),
                make_norm(norm=norm, channels=hidden, num_groups=num_groups, spatial=True),
                nn.ReLU(),
            ]
            kh, kw = (2 if height >= 2 else 1), (2 if width >= 2 else 1)
            if kh > 1 or kw > 1:
                layers.append(nn.MaxPool2d(kernel_size=(kh, kw)))
            height, width = height // kh, width // kw
            in_ch = hidden
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.embedding_dim = hidden * height * width
        self.input_shape = (channels, int(input_shape[1]), int(input_shape[2]))
        self.num_classes = num_classes
        self.head: nn.Linear | None = (
            nn.Linear(self.embedding_dim, num_classes) if num_classes is not None else None
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of a batch ``(N, C, H, W) -> (N, embedding_dim)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``, or the embedding when there is no head."""
        z = self.features(x)
        return self.head(z) if self.head is not None else z
