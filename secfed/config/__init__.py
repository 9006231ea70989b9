"""Experiment configuration: typed sections, strict TOML loading and validation.

Every key is declared in a frozen dataclass of :mod:`secfed.config.sections` (the learner's
hyperparameters in :class:`secfed.learners.settings.LearnerSettings`, which ``LearnerSection``
extends), which checks its own values; the rules that depend on the learner read what it declares
(:mod:`secfed.learners.declarations`, torch-free). :mod:`secfed.config.schema` holds the whole
:class:`ExperimentConfig` and the rules across sections (each written once);
:mod:`secfed.config.loading` reads TOML, applies ``--set`` overrides and writes and hashes the
resolved configuration. Loading rejects unknown sections and keys, wrong types and values outside
the allowed set *before any work is done*, with a :class:`~secfed.errors.ConfigError` that names
the key and what is allowed. The fully resolved configuration is written back as TOML into every
run directory.

Every public name is importable from here (``from secfed.config import ExperimentConfig``) and
reports this package as its module.
"""

from __future__ import annotations

import inspect as _inspect

# Each submodule's ``__all__`` is the one list of its public names; the package re-exports them all.
from secfed.config import loading as _loading
from secfed.config import schema as _schema
from secfed.config import sections as _sections
from secfed.config.loading import *  # noqa: F403
from secfed.config.schema import *  # noqa: F403
from secfed.config.sections import *  # noqa: F403

__all__: list[str] = []
__all__ += _sections.__all__
__all__ += _schema.__all__
__all__ += _loading.__all__

# the public home of these names is this package (documentation references, error reports and
# ``ExperimentConfig.__module__`` name ``secfed.config``, wherever the definition lives)
for _name in __all__:
    _obj = globals()[_name]
    if _inspect.isclass(_obj) or _inspect.isfunction(_obj):
        _obj.__module__ = __name__
del _name, _obj, _inspect
