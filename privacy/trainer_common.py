"""What both record-level DP trainers (:mod:`privacy.dpsgd`, :mod:`privacy.episodic`) share.

The model must not couple records (:func:`check_record_independent_model`), the privacy arguments
must be valid (:func:`check_positive_finite`, :func:`check_sample_rate`, :func:`check_positive_int`,
:func:`check_accountant`), the plain optimiser that the DP optimiser wraps is built the same way
(:func:`make_torch_optimizer`), and every step reports the same figures (:class:`StepReport`).
Every name but :class:`StepReport` is also importable from :mod:`privacy.dpsgd`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from privacy.errors import InvalidInputError, InvalidPrivacyConfigError, PrivacyError

__all__ = [
    "OptimizerName",
    "RecordCouplingModelError",
    "StepAccountant",
    "StepReport",
    "UnsupportedModelError",
    "check_accountant",
    "check_positive_finite",
    "check_positive_int",
    "check_record_independent_model",
    "check_sample_rate",
    "find_record_coupling_modules",
    "make_torch_optimizer",
]

OptimizerName = Literal["sgd", "adam"]


class UnsupportedModelError(PrivacyError, ValueError):
    """The model cannot be trained with record-level DP as given.

    Attributes:
        problems: One human-readable problem per offending module.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = ()) -> None:
        super().__init__(message if not problems else f"{message}: " + "; ".join(problems))
        self.problems = tuple(problems)


class RecordCouplingModelError(UnsupportedModelError):
    """The model contains a module that couples records (BatchNorm, tracked running statistics).

    Such a module makes one record's output depend on the other records of the batch (and leaks
    batch statistics through its buffers), so per-record (or per-episode) clipping no longer bounds
    one record's influence. Replace BatchNorm by GroupNorm/LayerNorm.
    """


@runtime_checkable
class StepAccountant(Protocol):
    """Anything that composes Poisson-subsampled Gaussian steps (e.g. ``opacus`` ``RDPAccountant``)."""

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Record one step with noise multiplier ``noise_multiplier`` and sampling rate ``sample_rate``."""
        ...


def find_record_coupling_modules(*, model: nn.Module) -> list[str]:
    """List the submodules of ``model`` that couple the records of a batch.

    Checks every submodule (with or without trainable parameters, unlike Opacus' validator which
    skips e.g. ``BatchNorm(affine=False)``): all BatchNorm variants (incl. SyncBatchNorm and lazy
    ones) and InstanceNorm with ``track_running_stats=True``.

    Args:
        model: The model to inspect.

    Returns:
        ``"name (Type): reason"`` strings, empty when the model is record-independent.
    """
    found = []
    for name, module in model.named_modules():
        label = f"{name or '<root>'} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            found.append(f"{label}: BatchNorm normalises each record with statistics of the whole batch")
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
            found.append(f"{label}: running statistics are updated from the data")
    return found


def check_record_independent_model(*, model: nn.Module) -> None:
    """Refuse models whose modules couple records.

    Args:
        model: The model to check.

    Raises:
        InvalidInputError: If ``model`` is not an ``nn.Module``.
        RecordCouplingModelError: If a BatchNorm (or a norm with running statistics) is present.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    problems = find_record_coupling_modules(model=model)
    if problems:
        raise RecordCouplingModelError(
            "model couples records within a batch, so record-level DP cannot be guaranteed "
            "(replace BatchNorm by GroupNorm)",
            problems=problems,
        )


def check_positive_finite(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float, if it is a finite number > 0 (>= 0 with ``allow_zero``).

    Args:
        name: the argument's name, for the error.
        value: the value.
        allow_zero: accept 0.

    Returns:
        ``float(value)``.

    Raises:
        InvalidPrivacyConfigError: not a number (bools included), not finite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyConfigError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidPrivacyConfigError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_sample_rate(sample_rate: float) -> float:
    """``sample_rate`` as a float, if it is a number in (0, 1].

    Args:
        sample_rate: the Poisson sampling rate q.

    Returns:
        ``float(sample_rate)``.

    Raises:
        InvalidPrivacyConfigError: not a number (bools included) or outside (0, 1].
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float):
        raise InvalidPrivacyConfigError(f"sample_rate must be a number, got {type(sample_rate).__name__}")
    if not 0.0 < float(sample_rate) <= 1.0:
        raise InvalidPrivacyConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return float(sample_rate)


def check_positive_int(name: str, value: int) -> int:
    """``value`` if it is an ``int`` >= 1 (bools refused).

    Args:
        name: the argument's name, for the error.
        value: the value.

    Returns:
        ``value``.

    Raises:
        InvalidPrivacyConfigError: not a positive int.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidPrivacyConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def check_accountant(accountant: object) -> None:
    """Refuse an accountant without a ``step`` method.

    Args:
        accountant: the accountant a trainer will tell every step.

    Raises:
        InvalidPrivacyConfigError: ``accountant.step`` is missing or not callable.
    """
    if not callable(getattr(accountant, "step", None)):
        raise InvalidPrivacyConfigError(
            "accountant must have a step(*, noise_multiplier, sample_rate) method (e.g. opacus RDPAccountant)"
        )


def make_torch_optimizer(
    *, params: Sequence[nn.Parameter], optimizer: OptimizerName, lr: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """Build the plain optimiser that DPOptimizer wraps.

    Args:
        params: Parameters to optimise.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: Learning rate (> 0).
        momentum: SGD momentum in ``[0, 1)`` (ignored for Adam).

    Returns:
        A ``torch.optim.SGD`` or ``torch.optim.Adam``.

    Raises:
        InvalidPrivacyConfigError: If the name, learning rate or momentum is invalid.
    """
    lr = check_positive_finite("lr", lr)
    if not 0.0 <= momentum < 1.0:
        raise InvalidPrivacyConfigError(f"momentum must be in [0, 1), got {momentum}")
    if optimizer == "sgd":
        return torch.optim.SGD(list(params), lr=lr, momentum=momentum)
    if optimizer == "adam":
        return torch.optim.Adam(list(params), lr=lr)
    raise InvalidPrivacyConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")


class StepReport:
    """The per-step figures both trainers return (a mixin: the trainer sets ``_z``, ``_q``, ``_c``,
    ``_steps`` and defines :attr:`noise_std`)."""

    _z: float
    _q: float
    _c: float
    _steps: int

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the clipped sum (defined by each trainer)."""
        raise NotImplementedError

    def _step_report(self, **private: float) -> dict[str, float]:
        """``noise_std``, ``noise_multiplier``, ``sample_rate``, ``max_grad_norm``, ``steps``, then each
        of ``private`` as ``private/<name>`` (figures of the private data, not to be published)."""
        return {
            "noise_std": self.noise_std,
            "noise_multiplier": self._z,
            "sample_rate": self._q,
            "max_grad_norm": self._c,
            "steps": float(self._steps),
            **{f"private/{name}": value for name, value in private.items()},
        }
