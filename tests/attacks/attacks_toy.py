"""Small deterministic models and images shared by the attack tests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from secfed.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]


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


def tiny_config(learner: str, /, **sections: dict[str, Any]) -> ExperimentConfig:
    """A two-round digits run of ``learner`` on four class-disjoint sites; ``sections`` update its tables."""
    from secfed.config import config_from_dict

    raw: dict[str, dict[str, Any]] = {
        "experiment": {"rounds": 2, "eval_every": 0, "final_eval_episodes": 10, "seed": 3},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": learner, "local_steps": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, base_dir=REPO)
