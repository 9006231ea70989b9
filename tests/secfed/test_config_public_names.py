"""The public names of :mod:`secfed.config` and the module they report stay what the package
exported when it was split from one module (each submodule's ``__all__`` is the one list of its
names; the package re-exports them all)."""

from __future__ import annotations

import secfed.config as config_module

#: Pinned on the package before its re-export lists were derived from the submodules' ``__all__``.
PUBLIC_NAMES = {
    "AggregatorOptions", "CHOICES", "DataSection", "ExperimentConfig", "ExperimentSection",
    "FederationSection", "LearnerSection", "ModelSection", "PartitionSection", "PrivacySection",
    "SECTIONS", "SecAggOptions", "SecAggSection", "TaskSection", "apply_overrides",
    "check_distributed_dp_aggregation", "check_noise_sharing_config", "check_protocol_options",
    "config_from_dict", "config_hash", "config_to_dict", "config_to_toml", "load_config",
    "max_sites_per_round", "protocol_options", "supervised_eval_applies", "threshold_floor", "validate",
}  # fmt: skip


def test_the_public_names_are_pinned() -> None:
    assert sorted(config_module.__all__) == sorted(PUBLIC_NAMES)  # no name twice, none lost or added
    for name in PUBLIC_NAMES:
        assert getattr(config_module, name) is not None


def test_every_public_class_and_function_names_the_package_as_its_module() -> None:
    modules = {name: getattr(getattr(config_module, name), "__module__", None) for name in PUBLIC_NAMES}
    assert {n for n, m in modules.items() if m != "secfed.config"} == {"CHOICES", "SECTIONS"}
