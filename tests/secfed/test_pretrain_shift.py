"""Shift-augmented public pretraining (``model.pretrain_shift``, ``secfed/pretrain.py``).

Every public pretraining episode's records are randomly shifted (public data, no privacy cost).
With ``model.cache_features`` the pretraining must run the scattering transform on the shifted
raw images. 0 keeps today's pretraining and cache key; a nonzero shift enters the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from secfed_config_dicts import omniglot_greek_public

from secfed.config import ExperimentConfig, config_from_dict
from secfed.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _config(*, shift: int | None, steps: int = 3, image_size: int = 28) -> ExperimentConfig:
    model: dict[str, Any] = {
        "frontend": "scatter",
        "cache_features": True,
        "norm": "group",
        "hidden": 16,
        "pretrain_steps": steps,
        "pretrain_n_way": 5,
    }
    if shift is not None:
        model["pretrain_shift"] = shift
    return config_from_dict(
        {
            "data": omniglot_greek_public(image_size=image_size),
            "model": model,
            "learner": {"name": "protonet"},
        },
        base_dir=REPO,
    )


def test_the_shift_enters_the_cache_key_only_when_nonzero() -> None:
    from secfed.pretrain import pretrain_cache_path

    unset = pretrain_cache_path(config=_config(shift=None))
    assert pretrain_cache_path(config=_config(shift=0)) == unset
    paths = {pretrain_cache_path(config=_config(shift=s)) for s in (0, 1, 2)}
    assert len(paths) == 3


def test_shifted_pretraining_differs_and_is_reproducible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shift 2 moves the pretrained state away from shift 0; the same seed gives it bit for bit."""
    from secfed import components
    from secfed.experiment import initial_model

    monkeypatch.setenv("SECFED_CACHE_DIR", str(tmp_path))
    val = components.load_validation(config=_config(shift=0))

    def pretrained(shift: int) -> dict[str, torch.Tensor]:
        for cached in (tmp_path / "pretrained").glob("*.safetensors"):
            cached.unlink()
        model = initial_model(config=_config(shift=shift), input_shape=val.input_shape, num_classes=5)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    plain, shifted, again = pretrained(0), pretrained(2), pretrained(2)
    assert any(not torch.equal(v, plain[k]) for k, v in shifted.items())
    for k, v in shifted.items():
        assert torch.equal(v, again[k]), k


@pytest.mark.parametrize(
    ("shift", "steps", "image_size", "why"),
    [(-1, 3, 28, ">= 0"), (14, 3, 28, "half the image side"), (2, 0, 28, "pretrain_steps")],
)
def test_bad_shifts_are_refused_naming_the_key(shift: int, steps: int, image_size: int, why: str) -> None:
    with pytest.raises(ConfigError, match=f"model.pretrain_shift.*{why}"):
        _config(shift=shift, steps=steps, image_size=image_size)


def test_shift_records_is_still_importable_from_the_dp_engines() -> None:
    from secfed.dp import engines
    from secfed.tasks import augment

    assert engines.shift_records is augment.shift_records
