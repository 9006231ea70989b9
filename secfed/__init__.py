"""secfed: privacy-focused secure federated meta-learning.

The runtime package: configuration, data, tasks, models, learners, federation, backends and the
CLI. See :mod:`secfed.experiment` for the Python API.
"""

from __future__ import annotations

__version__ = "0.1.0"

from secfed.config import ExperimentConfig, load_config  # noqa: E402
from secfed.experiment import Experiment, RunResult  # noqa: E402

__all__ = ["ExperimentConfig", "load_config", "Experiment", "RunResult", "__version__"]
