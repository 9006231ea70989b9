"""Fixtures for runtime tests."""

from __future__ import annotations

import pytest
from runtime_cfg import REPO, tiny_config_dict

from secfed.config import ExperimentConfig, config_from_dict


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    return config_from_dict(tiny_config_dict(), base_dir=REPO)
