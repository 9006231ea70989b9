"""Normalisation-layer factory shared by the Conv-4 and MLP models.

``"batch"`` is BatchNorm (Ioffe & Szegedy 2015), ``"group"`` is GroupNorm (Wu & He 2018), which
normalises each record on its own and is therefore what per-record / per-episode differential
privacy needs; ``"none"`` disables normalisation.
"""

from __future__ import annotations

from torch import nn

from secfed.errors import ConfigError

__all__ = ["NORMS", "make_norm", "check_norm"]

#: Allowed values of the ``norm`` option.
NORMS: tuple[str, ...] = ("batch", "group", "none")


def check_norm(*, norm: str, channels: int, num_groups: int) -> None:
    """Validate a normalisation choice before any layer is built.

    Args:
        norm: One of :data:`NORMS`.
        channels: Number of channels/features the layer normalises.
        num_groups: GroupNorm groups (only checked for ``norm == "group"``).

    Raises:
        ConfigError: If ``norm`` is unknown or ``num_groups`` does not divide ``channels``.
    """
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    if norm == "group":
        if num_groups < 1:
            raise ConfigError(f"num_groups must be >= 1 for norm='group', got {num_groups}")
        if channels % num_groups != 0:
            raise ConfigError(
                f"num_groups={num_groups} must divide the number of channels ({channels}) for norm='group'"
            )


def make_norm(*, norm: str, channels: int, num_groups: int, spatial: bool) -> nn.Module:
    """Build one normalisation layer.

    Args:
        norm: One of :data:`NORMS`.
        channels: Number of channels (conv) or features (linear).
        num_groups: GroupNorm groups.
        spatial: True for ``(N, C, H, W)`` activations (BatchNorm2d), False for ``(N, C)``
            (BatchNorm1d).

    Returns:
        The layer (``nn.Identity`` for ``"none"``).

    Raises:
        ConfigError: As :func:`check_norm`.
    """
    check_norm(norm=norm, channels=channels, num_groups=num_groups)
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if norm == "group":
        return nn.GroupNorm(num_groups, channels)
    return nn.Identity()
