"""Layout-aware clipping against Opacus' own DPOptimizer clipping."""

from __future__ import annotations

import pytest
import torch
from opacus.optimizers import DPOptimizer
from torch import nn

from privacy.clipping import LayoutAwareDPOptimizer, batch_major_view, clip_factors, clipped_sum


def _permuted(shape: tuple[int, ...], order: tuple[int, ...], seed: int) -> torch.Tensor:
    """A tensor of ``shape`` whose memory holds its dimensions in ``order`` (batch dim 0)."""
    gen = torch.Generator().manual_seed(seed)
    stored = torch.randn([shape[d] for d in order], generator=gen)
    return stored.permute([order.index(d) for d in range(len(shape))])


LAYOUTS = [
    ((6, 4, 3, 3, 3), (0, 1, 2, 3, 4)),  # contiguous
    ((6, 4, 3, 3, 3), (3, 4, 0, 1, 2)),  # the conv engine's (kh, kw, B, O, C)
    ((6, 4, 3, 3, 3), (1, 0, 2, 3, 4)),  # batch second
    ((6, 5), (1, 0)),  # batch innermost
    ((6, 4, 2), (2, 1, 0)),
]


@pytest.mark.parametrize("shape,order", LAYOUTS)
def test_view_is_copy_free_and_holds_each_record(shape: tuple[int, ...], order: tuple[int, ...]) -> None:
    g = _permuted(shape, order, seed=1)
    assert tuple(g.shape) == shape
    got = batch_major_view(g)
    assert got is not None
    rows, _ = got
    assert rows.data_ptr() == g.data_ptr()  # no copy was made
    for i in range(shape[0]):
        torch.testing.assert_close(rows[:, i, :].pow(2).sum(), g[i].pow(2).sum())
        torch.testing.assert_close(rows[:, i, :].sum(), g[i].sum())


def test_overlapping_strides_have_no_view() -> None:
    g = torch.randn(1, 4).expand(3, 4)  # stride 0 on the batch dimension
    assert batch_major_view(g) is None
    factors = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(clipped_sum(g=g, factors=factors), 3.5 * g[0])


@pytest.mark.parametrize("shape,order", LAYOUTS)
def test_factors_and_clipped_sum_equal_opacus_formula(shape: tuple[int, ...], order: tuple[int, ...]) -> None:
    g = _permuted(shape, order, seed=2)
    other = torch.randn(shape[0], 7)
    c = 0.8
    norms = torch.cat([g.reshape(shape[0], -1), other], dim=1).norm(dim=1)
    expected = (c / (norms + 1e-6)).clamp(max=1.0)
    factors = clip_factors(grad_samples=[g, other], max_grad_norm=c)
    torch.testing.assert_close(factors, expected)
    assert (factors < 1).any()  # some records really are clipped
    reference = torch.einsum("i,i...", expected, g.contiguous())
    torch.testing.assert_close(clipped_sum(g=g, factors=factors), reference)


def _optimizers(
    params_a: list[nn.Parameter], params_b: list[nn.Parameter]
) -> tuple[DPOptimizer, DPOptimizer]:
    kw = {"noise_multiplier": 0.0, "max_grad_norm": 0.5, "expected_batch_size": 6}
    return (
        DPOptimizer(torch.optim.SGD(params_a, lr=1.0), **kw),
        LayoutAwareDPOptimizer(torch.optim.SGD(params_b, lr=1.0), **kw),
    )


def test_steps_equal_stock_dpoptimizer_on_permuted_rows() -> None:
    shapes = [((4, 3, 3, 3), (3, 4, 0, 1, 2)), ((4,), (1, 0)), ((5, 2), (0, 1, 2))]
    pa = [nn.Parameter(torch.zeros(s)) for s, _ in shapes]
    pb = [nn.Parameter(torch.zeros(s)) for s, _ in shapes]
    stock, ours = _optimizers(pa, pb)
    for step in range(2):
        for i, (s, order) in enumerate(shapes):
            rows = _permuted((6, *s), order, seed=10 * step + i)
            pa[i].grad_sample = rows.contiguous().clone()
            pb[i].grad_sample = rows
        stock.step()
        ours.step()
        for a, b in zip(pa, pb, strict=True):
            torch.testing.assert_close(a.detach(), b.detach())
            assert a.detach().abs().sum() > 0
        stock.zero_grad()
        ours.zero_grad()


def test_empty_batch_and_reused_gradients_behave_as_opacus() -> None:
    pa, pb = [nn.Parameter(torch.ones(3))], [nn.Parameter(torch.ones(3))]
    stock, ours = _optimizers(pa, pb)
    pa[0].grad_sample, pb[0].grad_sample = torch.zeros(0, 3), torch.zeros(0, 3)
    stock.step()
    ours.step()
    torch.testing.assert_close(pa[0].detach(), pb[0].detach())
    # a step on gradients that were already used is refused (zero_grad was not called)
    with pytest.raises(ValueError, match="zero_grad"):
        ours.step()
