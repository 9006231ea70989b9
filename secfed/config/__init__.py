"""Experiment configuration: typed sections, strict TOML loading and validation.

Every key is declared in a frozen dataclass of :mod:`secfed.config.sections`, which checks its own
values; :mod:`secfed.config.schema` holds the whole :class:`ExperimentConfig` and the rules across
sections (each written once); :mod:`secfed.config.loading` reads TOML, applies ``--set``
overrides and writes and hashes the resolved configuration. Loading rejects unknown sections and
keys, wrong types and values outside the allowed set *before any work is done*, with a
:class:`~secfed.errors.ConfigError` that names the key and what is allowed. The fully resolved
configuration is written back as TOML into every run directory.

Every public name is importable from here (``from secfed.config import ExperimentConfig``) and
reports this package as its module.
"""

from __future__ import annotations

from secfed.config.loading import (
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    config_to_toml,
    load_config,
)
from secfed.config.schema import (
    SECTIONS,
    AggregatorOptions,
    ExperimentConfig,
    SecAggOptions,
    check_distributed_dp_aggregation,
    check_noise_sharing_config,
    check_protocol_options,
    max_sites_per_round,
    protocol_options,
    supervised_eval_applies,
    threshold_floor,
    validate,
)
from secfed.config.sections import (
    CHOICES,
    DataSection,
    ExperimentSection,
    FederationSection,
    LearnerSection,
    ModelSection,
    PartitionSection,
    PrivacySection,
    SecAggSection,
    TaskSection,
)

__all__ = [
    "CHOICES",
    "SECTIONS",
    "validate",
    "ExperimentSection",
    "DataSection",
    "PartitionSection",
    "TaskSection",
    "ModelSection",
    "LearnerSection",
    "FederationSection",
    "SecAggSection",
    "PrivacySection",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "config_to_dict",
    "config_to_toml",
    "config_hash",
    "max_sites_per_round",
    "check_distributed_dp_aggregation",
    "AggregatorOptions",
    "SecAggOptions",
    "protocol_options",
    "check_protocol_options",
    "threshold_floor",
    "check_noise_sharing_config",
    "supervised_eval_applies",
]

# the public home of these names is this package (documentation references, error reports and
# ``ExperimentConfig.__module__`` name ``secfed.config``, wherever the definition lives)
for _obj in (
    ExperimentSection,
    DataSection,
    PartitionSection,
    TaskSection,
    ModelSection,
    LearnerSection,
    FederationSection,
    SecAggSection,
    PrivacySection,
    ExperimentConfig,
    SecAggOptions,
    load_config,
    config_from_dict,
    apply_overrides,
    config_to_dict,
    config_to_toml,
    config_hash,
    max_sites_per_round,
    check_distributed_dp_aggregation,
    AggregatorOptions,
    SecAggOptions,
    protocol_options,
    check_protocol_options,
    threshold_floor,
    check_noise_sharing_config,
    supervised_eval_applies,
    validate,
):
    _obj.__module__ = __name__
del _obj
