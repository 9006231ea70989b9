"""Shapes and structure of the Conv-4 and MLP models and the build_model factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secfed.errors import ConfigError
from secfed.models import ARCHS, MLP, NORMS, Conv4, build_model


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("size", [28, 8])
def test_conv4_shapes(norm: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch="conv4", input_shape=(1, size, size), num_classes=None, hidden=16, norm=norm)
    x = torch.randn(5, 1, size, size)
    emb = model(x)
    # 28 -> 14 -> 7 -> 3 -> 1 and 8 -> 4 -> 2 -> 1 -> 1 (no pooling below size 1).
    assert emb.shape == (5, 16)
    assert model.embedding_dim == 16
    assert torch.isfinite(emb).all()
    head = build_model(arch="conv4", input_shape=(1, size, size), num_classes=7, hidden=16, norm=norm)
    assert head(x).shape == (5, 7)
    norm_types = {type(m) for m in head.modules()}
    expected = {"batch": nn.BatchNorm2d, "group": nn.GroupNorm, "none": None}[norm]
    if expected is None:
        assert not norm_types & {nn.BatchNorm2d, nn.GroupNorm}
    else:
        assert expected in norm_types


def test_conv4_default_is_64_filters_and_larger_inputs_keep_spatial_map() -> None:
    model = Conv4(input_shape=(3, 84, 84))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 64 for c in convs)
    # 84 -> 42 -> 21 -> 10 -> 5
    assert model.embedding_dim == 64 * 5 * 5
    assert model(torch.randn(2, 3, 84, 84)).shape == (2, 1600)


def test_conv4_non_square_tiny_input() -> None:
    model = Conv4(input_shape=(2, 1, 5), hidden=8, norm="group", num_groups=2, num_classes=3)
    assert model(torch.randn(4, 2, 1, 5)).shape == (4, 3)


def test_group_norm_model_treats_records_independently() -> None:
    """GroupNorm (unlike BatchNorm) gives each record an output that ignores the rest of the batch."""
    torch.manual_seed(0)
    x = torch.randn(6, 1, 8, 8)
    gn = build_model(
        arch="conv4", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="group", num_groups=2
    )
    assert torch.allclose(gn(x)[:2], gn(x[:2]), atol=1e-6)
    bn = build_model(arch="conv4", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="batch")
    assert not torch.allclose(bn(x)[:2], bn(x[:2]), atol=1e-4)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_mlp_shapes(norm: str) -> None:
    model = build_model(
        arch="mlp", input_shape=(1, 8, 8), num_classes=4, hidden=12, norm=norm, num_groups=3, depth=3
    )
    assert isinstance(model, MLP)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 4)
    assert model.embed(torch.randn(5, 1, 8, 8)).shape == (5, 12)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 4  # three hidden layers and the head
    tabular = MLP(input_shape=(10,), hidden_sizes=(), num_classes=None)
    assert tabular(torch.randn(3, 10)).shape == (3, 10)


def test_build_model_is_deterministic_under_seed() -> None:
    torch.manual_seed(3)
    a = build_model(arch="conv4", input_shape=(1, 8, 8), num_classes=5, hidden=8, norm="group", num_groups=4)
    torch.manual_seed(3)
    b = build_model(arch="conv4", input_shape=(1, 8, 8), num_classes=5, hidden=8, norm="group", num_groups=4)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"arch": "resnet"}, "arch must be one of"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"norm": "group", "num_groups": 5}, "num_groups=5 must divide"),
        ({"input_shape": (28, 28)}, "(C, H, W)"),
        ({"hidden": 0}, "hidden must be >= 1"),
        ({"num_classes": 0}, "num_classes must be >= 1"),
        ({"depth": 0}, "depth must be >= 1"),
    ],
)
def test_build_model_errors_name_the_problem(kwargs: dict, needle: str) -> None:
    args = {"arch": "conv4", "input_shape": (1, 8, 8), "num_classes": 5, "hidden": 8, "norm": "batch"}
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        build_model(**args)
    assert needle in str(err.value)
    assert isinstance(err.value, ValueError)


def test_error_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(arch="vit", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="batch")
    assert all(a in str(err.value) for a in ARCHS)
    with pytest.raises(ConfigError) as err:
        build_model(arch="mlp", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="instance")
    assert all(n in str(err.value) for n in NORMS)
