"""secfed: privacy-focused secure federated meta-learning.

The runtime package: configuration, data, tasks, models, learners, federation, backends and the
CLI. See :mod:`secfed.experiment` for the Python API.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

__all__ = ["ExperimentConfig", "load_config", "Experiment", "RunResult", "__version__"]

# The public API is imported on first use (PEP 562), so that ``import secfed`` (and with it
# ``secfed --help``) does not load torch: ``from secfed import Experiment`` works as before.
if TYPE_CHECKING:  # pragma: no cover
    from secfed.config import ExperimentConfig, load_config
    from secfed.experiment import Experiment, RunResult


def __getattr__(name: str) -> Any:
    """Import the public API lazily (PEP 562)."""
    if name in ("ExperimentConfig", "load_config"):
        from secfed import config as module
    elif name in ("Experiment", "RunResult"):
        from secfed import experiment as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'secfed' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
