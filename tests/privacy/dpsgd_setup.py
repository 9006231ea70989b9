"""Test helper (not a test module): DP-SGD trainers with the settings a test names and, for the
rest, z = 1, C = 1, lr 0.1 and a fresh Opacus RDP accountant."""

from __future__ import annotations

from typing import Any

import torch
from opacus.accountants import RDPAccountant as OpacusRDP
from torch import nn

from privacy.dpsgd import PerSampleDPSGD
from privacy.episodic import EpisodicDPSGD


def per_sample_dpsgd(
    model: nn.Module, *, x: torch.Tensor, y: torch.Tensor, **settings: Any
) -> PerSampleDPSGD:
    """Record-level DP-SGD; by default q = 0.25 and a public batch size of 16."""
    args: dict[str, Any] = {
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.25,
        "expected_batch_size": 16,
        "lr": 0.1,
        "accountant": OpacusRDP(),
    }
    return PerSampleDPSGD(model=model, x=x, y=y, **{**args, **settings})


def episodic_kwargs(model: nn.Module, **settings: Any) -> dict[str, Any]:
    """The arguments of an episode-level DP-SGD; by default q = 0.1 and 4 expected episodes."""
    args: dict[str, Any] = {
        "model": model,
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.1,
        "expected_episodes": 4,
        "lr": 0.1,
        "accountant": OpacusRDP(),
    }
    return {**args, **settings}


def episodic_dpsgd(model: nn.Module, **settings: Any) -> EpisodicDPSGD:
    return EpisodicDPSGD(**episodic_kwargs(model, **settings))
