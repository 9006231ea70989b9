"""Small deterministic models and images shared by the attack tests."""

from __future__ import annotations

import torch
from torch import nn


def blob_images(*, n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth images in [0, 1], shape (n, 1, size, size): a Gaussian blob of random place and width."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=g) * 1.2 - 0.6).tolist()
        w = 0.15 + 0.35 * float(torch.rand(1, generator=g))
        base = 0.1 + 0.2 * float(torch.rand(1, generator=g))
        img = base + (1 - base) * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / w)
        out.append(img.clamp(0, 1))
    return torch.stack(out).unsqueeze(1)


def mlp8(*, num_classes: int = 10, hidden: int = 32, seed: int = 0) -> nn.Module:
    """Flatten -> Linear(64, hidden) -> ReLU -> Linear(hidden, num_classes)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def conv4(*, channels: int = 8, num_classes: int | None = 5, seed: int = 0) -> nn.Module:
    """Conv-4 for 28x28 inputs: 4 x (conv3x3 -> ReLU -> maxpool2), then an optional linear head."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = 1
    for _ in range(4):
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = channels
    layers.append(nn.Flatten())
    if num_classes is not None:
        layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's parameters."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}
