"""Optional dependencies, imported only when a configuration selects the feature that needs them.

A missing package is reported as a :class:`~secfed.errors.MissingDependencyError` (a
:class:`~secfed.errors.ConfigError`) that names the setting and the ``pip install`` command, when
a run starts (:meth:`secfed.experiment.Experiment.run`), before any data is loaded or anything is
written. Loading a configuration that selects the feature (for example to report on a finished
run) does not need the package.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from secfed.errors import MissingDependencyError

__all__ = ["import_optional", "require_ray"]


def import_optional(*, module: str, extra: str, needed_for: str) -> ModuleType:
    """Import an optional package or say how to install it.

    Args:
        module: Importable name of the package (``"ray"``).
        extra: The secfed extra that installs it (``pip install "secfed[EXTRA]"``).
        needed_for: What needs it, as the user wrote it (for example ``experiment.backend = 'ray'``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If the package is not installed or fails to import.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{needed_for} needs the optional package {module!r}, which could not be imported ({exc}); "
            f'install it with: pip install "secfed[{extra}]"'
        ) from exc


def require_ray() -> ModuleType:
    """Import Ray for the ``ray`` backend.

    Returns:
        The ``ray`` module.

    Raises:
        MissingDependencyError: If Ray is not installed (the message says ``pip install "secfed[ray]"``).
    """
    return import_optional(module="ray", extra="ray", needed_for="experiment.backend = 'ray'")
