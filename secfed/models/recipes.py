"""Model-side DP training recipes: weight standardisation and partial training (frozen layers).

* **Weight standardisation** (Qiao et al. 2019, "Micro-Batch Training with Batch-Channel
  Normalization and Weight Standardization"): every convolution uses its weight standardised per
  output channel, ``(w - mean(w)) / sqrt(var(w) + eps)`` over ``(in, kh, kw)``. De et al. 2022
  ("Unlocking High-Accuracy Differentially Private Image Classification through Scale") pair it
  with GroupNorm for DP-SGD from scratch. It is a function of the parameters only — never of the
  batch — so a record's output depends on that record alone and per-record / per-episode
  sensitivity arguments are unchanged (tested in ``tests/secfed/test_recipes.py``).
* **Partial training** (``model.trainable``): the sites train only a small part of a model whose
  other parameters are fixed (pretrained on declared-public data, or fixed at initialisation):
  ``last`` (the body's last weight layer, what follows it, and the head) or ``norm`` (the
  normalisation layers' per-channel scale and shift and the head: FiLM-style adapters, Perez et
  al. 2018, which Tobaben et al. 2023, "On the Efficacy of Differentially Private Few-shot Image
  Classification", train under DP over a frozen backbone). Frozen parameters get
  ``requires_grad = False``: DP engines clip and noise :func:`secfed.learners.common.trainable_params`
  only, so fewer parameters receive noise, and a frozen parameter's update is exactly zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from secfed.errors import ConfigError

__all__ = ["TRAINABLE", "WSConv2d", "freeze_except", "standardize_weights"]

#: Allowed values of ``model.trainable``.
TRAINABLE: tuple[str, ...] = ("all", "last", "norm")

_NORMS = (nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


class WSConv2d(nn.Conv2d):
    """A ``Conv2d`` whose weight is standardised per output channel at every use (Qiao et al. 2019).

    The standardisation reads only the weight, so the layer maps each record independently.
    (:class:`privacy.per_sample_grads.FastGradSampler` does not accept this subclass; per-episode
    DP-SGD differentiates it with ``torch.func``.)

    Attributes:
        eps: Added to the per-channel variance.
    """

    eps: float = 1e-5

    def standardized_weight(self) -> torch.Tensor:
        """The weight the convolution uses: zero mean, unit variance per output channel."""
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (w - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with the standardised weight."""
        return F.conv2d(
            x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )


def standardize_weights(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``model`` by a :class:`WSConv2d` with the same parameters.

    Args:
        model: The model (modified in place).

    Returns:
        The same model.

    Raises:
        ConfigError: If a convolution uses a padding mode other than zeros.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv2d:
                if child.padding_mode != "zeros":
                    raise ConfigError("weight standardisation supports zero-padded convolutions only")
                ws = WSConv2d(
                    child.in_channels,
                    child.out_channels,
                    kernel_size=child.kernel_size,  # type: ignore[arg-type]
                    stride=child.stride,  # type: ignore[arg-type]
                    padding=child.padding,  # type: ignore[arg-type]
                    dilation=child.dilation,  # type: ignore[arg-type]
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                ws.weight = child.weight
                ws.bias = child.bias
                setattr(parent, name, ws)
    return model


def freeze_except(model: nn.Module, *, trainable: str) -> nn.Module:
    """Set ``requires_grad = False`` on every parameter outside the ``trainable`` part.

    Args:
        model: The model (modified in place). Its linear classifier, if any, is the module named
            ``head`` and is always trainable.
        trainable: ``all`` (nothing frozen), ``last`` or ``norm`` (see the module docstring).

    Returns:
        The same model.

    Raises:
        ConfigError: If ``trainable`` is unknown, or the selection leaves nothing to train.
    """
    if trainable not in TRAINABLE:
        raise ConfigError(f"model.trainable must be one of {list(TRAINABLE)}, got {trainable!r}")
    if trainable == "all":
        return model
    keep: set[str] = set()
    owners = [
        (name, m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) and name.split(".")[-1] != "head"
    ]
    if trainable == "norm":
        keep = {name for name, m in owners if isinstance(m, _NORMS)}
    else:
        weights = [i for i, (_, m) in enumerate(owners) if isinstance(m, (nn.Conv2d, nn.Linear))]
        if weights:
            keep = {name for name, _ in owners[weights[-1] :]}
    for name, _ in model.named_modules():
        if name.split(".")[-1] == "head":
            keep.add(name)
    trained = 0
    for name, m in model.named_modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(name in keep)
            trained += int(name in keep)
    if trained == 0:
        raise ConfigError(f"model.trainable = {trainable!r} leaves no trainable parameter in this model")
    return model
