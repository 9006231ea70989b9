"""The fast per-record gradient engine against torch.func (vmap of grad), layer by layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from privacy.per_sample_grads import FastGradSampler, is_attached, unsupported_modules


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    params = {k: v.detach() for k, v in ref.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(ref, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0), reduction="sum")

    return dict(vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y))


def _check(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    expected = _reference(model, x, y)
    sampler = FastGradSampler(model=model)
    sampler.attach()
    assert is_attached(model)
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    for name, p in model.named_parameters():
        assert p.grad is None, name  # the batch gradient is never computed
        torch.testing.assert_close(p.grad_sample, expected[name], rtol=1e-4, atol=1e-5, msg=name)
    sampler.remove()
    assert not is_attached(model)
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert all("forward" not in vars(m) for m in model.modules())


CONV_CASES = [
    # (in_channels, kernel, padding, stride, dilation, groups)
    (1, 3, 1, 1, 1, 1),
    (3, 5, 2, 1, 1, 1),
    (12, 3, 1, 1, 1, 1),
    (12, 5, 2, 1, 1, 1),
    (12, 3, 0, 1, 1, 1),
    (12, (3, 2), (1, 0), 1, 1, 1),
    (12, 3, 1, 2, 1, 1),  # stride
    (12, 3, 2, 1, 2, 1),  # dilation
    (12, 3, 1, 1, 1, 4),  # groups
]
# 9x8 = 72 input positions: the folded native path; 6x5 = 30: the shifted windows (stride 1)
INPUT_SIZES = [(9, 8), (6, 5)]


@pytest.mark.parametrize("hw", INPUT_SIZES)
@pytest.mark.parametrize(("cin", "k", "pad", "stride", "dil", "groups"), CONV_CASES)
def test_conv_groupnorm_linear_per_record_gradients_match_vmap(cin, k, pad, stride, dil, groups, hw) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(cin, 8, k, padding=pad, stride=stride, dilation=dil, groups=groups),
        nn.GroupNorm(2, 8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.GroupNorm(3, 12),
        nn.Flatten(),
        nn.LazyLinear(4),
    )
    x = torch.randn(7, cin, *hw)
    model(x)  # materialise the lazy layer
    _check(model, x, torch.randint(0, 4, (7,)))


def test_conv4_groupnorm_matches_vmap() -> None:
    from secfed.models.conv4 import Conv4  # noqa: PLC0415 (runtime model, test only)

    torch.manual_seed(1)
    model = Conv4(input_shape=(1, 28, 28), num_classes=5, norm="group")
    _check(model, torch.randn(5, 1, 28, 28), torch.randint(0, 5, (5,)))


def test_a_layer_used_twice_sums_its_per_record_gradients() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 5)
            self.out = nn.Linear(5, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))

    torch.manual_seed(2)
    _check(Twice(), torch.randn(6, 5), torch.randint(0, 3, (6,)))


def test_linear_on_sequences_sums_over_positions() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Flatten(), nn.Linear(18, 2))
    _check(model, torch.randn(5, 3, 4), torch.randint(0, 2, (5,)))


def test_unsupported_layers_are_named_and_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv2d(1, 1, 3, padding="same"))
    bad = unsupported_modules(model)
    assert bad == ["1 (LayerNorm)", "2 (Conv2d)"]
    with pytest.raises(ValueError, match="LayerNorm"):
        FastGradSampler(model=model)
    frozen = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    for p in frozen[1].parameters():
        p.requires_grad_(False)
    assert unsupported_modules(frozen) == []


def test_subclasses_with_their_own_forward_are_not_replaced() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(x)

    assert unsupported_modules(nn.Sequential(Scaled(3, 2))) == ["0 (Scaled)"]


def test_attaching_twice_is_refused() -> None:
    model = nn.Linear(3, 2)
    FastGradSampler(model=model).attach()
    with pytest.raises(ValueError, match="already attached"):
        FastGradSampler(model=model).attach()


def test_both_conv_paths_agree_with_an_unfold_reference_on_either_side_of_the_switch() -> None:
    import torch.nn.functional as F  # noqa: N812

    from privacy import per_sample_grads as psg

    # the sizes used above straddle the switch, so both paths are exercised there too
    assert 6 * 5 < psg._SHIFTED_BELOW_POSITIONS <= 9 * 8
    torch.manual_seed(5)
    for h, w in [(4, 5), (14, 14)]:
        conv = nn.Conv2d(6, 5, 3, padding=1)
        x, g = torch.randn(4, 6, h, w), torch.randn(4, 5, h, w)
        cols = F.unfold(x, 3, padding=1)  # (B, C*9, H*W)
        expected = torch.einsum("nol,npl->nop", g.reshape(4, 5, -1), cols).reshape(4, 5, 6, 3, 3)
        shifted = psg._conv_weight_shifted(x, g, 3, 3, 1, 1)
        folded = psg._conv_weight_folded(x, g, conv)
        torch.testing.assert_close(shifted, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
