"""The flat parameter view used by the federation layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from secfed.errors import ConfigError
from secfed.models import (
    buffer_names,
    build_model,
    flatten_named,
    flatten_params,
    floating_buffers,
    num_params,
    param_names,
    param_shapes,
    unflatten_into,
    unflatten_named,
)


def _model(seed: int = 0, norm: str = "batch") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch="conv4", input_shape=(1, 8, 8), num_classes=5, hidden=8, norm=norm, num_groups=4)


def test_flatten_order_follows_named_parameters() -> None:
    model = _model()
    vec = flatten_params(model=model)
    assert vec.dtype == np.float32 and vec.shape == (num_params(model),)
    expected = np.concatenate([p.detach().numpy().reshape(-1) for _, p in model.named_parameters()])
    np.testing.assert_array_equal(vec, expected)
    assert param_names(model) == [n for n, _ in model.named_parameters()]


def test_round_trip_between_models() -> None:
    src, dst = _model(seed=1), _model(seed=2)
    assert not np.array_equal(flatten_params(model=src), flatten_params(model=dst))
    unflatten_into(model=dst, vector=flatten_params(model=src))
    np.testing.assert_array_equal(flatten_params(model=src), flatten_params(model=dst))
    for (_, a), (_, b) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        assert torch.equal(a, b)
    # float64 and torch inputs are accepted too
    vec = flatten_params(model=src).astype(np.float64) * 2
    unflatten_into(model=dst, vector=torch.from_numpy(vec))
    np.testing.assert_allclose(flatten_params(model=dst), 2 * flatten_params(model=src))


def test_flatten_returns_a_copy() -> None:
    model = _model()
    vec = flatten_params(model=model)
    vec[:] = 0
    assert np.abs(flatten_params(model=model)).sum() > 0


def test_frozen_parameters_are_excluded() -> None:
    model = _model()
    first = next(iter(model.parameters()))
    first.requires_grad_(False)
    assert param_names(model) == [n for n, p in model.named_parameters()][1:]
    assert flatten_params(model=model).shape == (num_params(model),)


def test_named_round_trip() -> None:
    model = _model()
    shapes = param_shapes(model)
    tensors = {n: torch.randn(s) for n, s in shapes.items()}
    vec = flatten_named(tensors=tensors, names=list(shapes))
    back = unflatten_named(vector=vec, shapes=shapes)
    assert list(back) == list(shapes)
    for n in shapes:
        assert torch.equal(back[n], tensors[n])


@pytest.mark.parametrize("bad", [np.zeros(3, dtype=np.float32), np.zeros((2, 5), dtype=np.float32)])
def test_wrong_vector_is_rejected_and_model_untouched(bad: np.ndarray) -> None:
    model = _model()
    before = flatten_params(model=model)
    with pytest.raises(ConfigError, match="length"):
        unflatten_into(model=model, vector=bad)
    np.testing.assert_array_equal(before, flatten_params(model=model))


def test_non_finite_vector_is_rejected() -> None:
    model = _model()
    vec = flatten_params(model=model)
    vec[3] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        unflatten_into(model=model, vector=vec)


def test_missing_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="missing"):
        flatten_named(tensors={"a": torch.zeros(2)}, names=["a", "b"])


def test_floating_buffers_exclude_counters() -> None:
    model = _model(norm="batch")
    names = buffer_names(model)
    assert names and all("num_batches_tracked" not in n for n in names)
    bufs = floating_buffers(model=model)
    assert list(bufs) == names
    bufs[names[0]].add_(1.0)  # a copy: the model's buffer is unchanged
    assert not torch.equal(bufs[names[0]], dict(model.named_buffers())[names[0]])
    assert buffer_names(_model(norm="group")) == []
