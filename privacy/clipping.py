"""Per-record clipping that reads per-record gradients in whatever memory layout they were made.

Opacus' :meth:`opacus.optimizers.DPOptimizer.clip_and_accumulate` flattens every
``p.grad_sample`` with ``reshape(len(g), -1)``, which copies a tensor whose batch dimension is not
the outermost one in memory. The per-record engine (:mod:`privacy.per_sample_grads`) computes
convolution weight gradients as ``(kh, kw, B, O, C)`` blocks (one batched matrix product per
kernel offset); handing them over as a permuted view instead of a contiguous copy saves one full
pass over the largest per-record tensors, *provided* the clipping reads them in place.

:class:`LayoutAwareDPOptimizer` is Opacus' ``DPOptimizer`` with only ``clip_and_accumulate``
replaced. The mathematics is Opacus' (Abadi et al. 2016, Algorithm 1): per-record norm over all
parameters, factor ``min(1, C / (norm + 1e-6))``, clipped sum accumulated into ``p.summed_grad``;
scaling, the step hooks and the "gradients used twice" checks are Opacus' own. The tests check it
against the stock optimiser on contiguous and permuted gradients.

Noise: :class:`CryptoNoiseDPOptimizer` (the base of :class:`LayoutAwareDPOptimizer`, and the
optimiser of :mod:`privacy.episodic`) replaces only Opacus' ``add_noise``: instead of
``torch.normal`` from a ``torch.Generator`` (MT19937, 32 bits of seed entropy) the clipped sum of
all parameters, taken as one vector, goes through :func:`privacy.noise.add_gaussian_noise`
(AES-256-CTR keystream, lattice snapping, exact discrete Gaussian; Canonne, Kamath & Steinke 2020),
so the noise cannot be brute-forced and the release does not leak the low bits of the clipped sum
(Mironov 2012; Jin et al. 2022, arXiv 2112.05307). Opacus' ``secure_mode`` and ``generator`` are
not used.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

from privacy.errors import InvalidInputError
from privacy.noise import NoiseSource, add_gaussian_noise_to_tensors
from privacy.noise import noise_source as default_noise_source

__all__ = [
    "CryptoNoiseDPOptimizer",
    "LayoutAwareDPOptimizer",
    "batch_major_view",
    "clip_factors",
    "clipped_sum",
]

#: Opacus' stabiliser in the clipping factor ``C / (norm + eps)``.
OPACUS_CLIP_EPS = 1e-6


def batch_major_view(g: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]] | None:
    """A copy-free ``(A, B, R)`` view of per-record rows ``g`` (record ``i`` at ``g[i]``).

    Args:
        g: Per-record gradients, batch dimension first (any strides).

    Returns:
        ``(view, order)``: ``view[a, i, r]`` runs over record ``i``'s entries in memory order, and
        ``order`` is the permutation of ``g``'s dimensions that is contiguous (``order[0]`` is the
        outermost). ``None`` when ``g`` is not a permutation of a contiguous tensor (overlapping or
        gapped strides); the caller then copies.
    """
    if g.ndim == 0:
        return None
    if g.is_contiguous():
        return g.reshape(1, g.shape[0], -1), tuple(range(g.ndim))
    strides = g.stride()
    order = tuple(sorted(range(g.ndim), key=lambda d: (-strides[d], d)))
    permuted = g.permute(order)
    if not permuted.is_contiguous():
        return None
    j = order.index(0)
    outer = 1
    for d in order[:j]:
        outer *= g.shape[d]
    return permuted.reshape(outer, g.shape[0], -1), order


def clip_factors(*, grad_samples: list[torch.Tensor], max_grad_norm: float) -> torch.Tensor:
    """Opacus' per-record clipping factors ``min(1, C / (‖g_i‖ + 1e-6))`` over all parameters.

    Args:
        grad_samples: One ``(B, *shape)`` tensor per parameter (any memory layout).
        max_grad_norm: The clipping norm ``C``.

    Returns:
        ``(B,)`` factors.
    """
    squares = []
    for g in grad_samples:
        view = batch_major_view(g)
        if view is None:
            squares.append(g.reshape(len(g), -1).pow(2).sum(dim=1))
        else:
            squares.append(view[0].pow(2).sum(dim=(0, 2)))
    norms = torch.stack(squares, dim=1).sum(dim=1).sqrt()
    return (max_grad_norm / (norms + OPACUS_CLIP_EPS)).clamp(max=1.0)


def clipped_sum(*, g: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``sum_i factors[i] * g[i]``, read in ``g``'s own memory layout.

    Args:
        g: Per-record gradients ``(B, *shape)``.
        factors: ``(B,)`` weights.

    Returns:
        A contiguous tensor of shape ``shape``.
    """
    view = batch_major_view(g) if len(g) > 0 else None
    if view is None:
        return torch.einsum("i,i...", factors, g)
    rows, order = view
    total = torch.matmul(factors, rows)  # (A, R): the batch dimension contracted away
    rest = [d for d in order if d != 0]
    total = total.reshape([g.shape[d] for d in rest])
    return total.permute([rest.index(d) for d in range(1, g.ndim)]).contiguous()


class CryptoNoiseDPOptimizer(DPOptimizer):
    """Opacus' ``DPOptimizer`` with its Gaussian noise drawn by :mod:`privacy.noise`.

    Opacus' constructor arguments, plus ``noise_source`` (keyword; default
    :func:`privacy.noise.noise_source`: a fresh AES-256-CTR source, or the test hook's fixed one).
    ``secure_mode`` and ``generator`` are accepted for compatibility and ignored: the noise never
    comes from a ``torch.Generator``. Clipping, scaling and hooks are Opacus'.

    Raises:
        InvalidInputError: If ``noise_source`` is not a :class:`privacy.noise.NoiseSource`.
    """

    def __init__(self, *args: Any, noise_source: NoiseSource | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if noise_source is not None and not isinstance(noise_source, NoiseSource):
            raise InvalidInputError(
                f"noise_source must be a privacy.noise.NoiseSource, got {type(noise_source).__name__}"
            )
        self.noise_source: NoiseSource = default_noise_source() if noise_source is None else noise_source

    def add_noise(self) -> None:
        """Set ``p.grad = p.summed_grad + noise`` for every parameter (std ``noise_multiplier * C``).

        The clipped sums of all parameters are noised together as one vector by
        :func:`privacy.noise.add_gaussian_noise_to_tensors` (one lattice, one discrete Gaussian
        draw per coordinate); without noise (``noise_multiplier == 0``) ``p.grad`` is the clipped
        sum itself, as in Opacus.
        """
        for p in self.params:
            _check_processed_flag(p.summed_grad)
        std = self.noise_multiplier * self.max_grad_norm
        sums = [p.summed_grad for p in self.params]
        if std == 0:
            noisy = [g.clone() for g in sums]
        else:
            noisy = add_gaussian_noise_to_tensors(tensors=sums, sigma=std, source=self.noise_source)
        for p, g in zip(self.params, noisy, strict=True):
            p.grad = g.view_as(p)
            _mark_as_processed(p.summed_grad)


class LayoutAwareDPOptimizer(CryptoNoiseDPOptimizer):
    """Opacus' ``DPOptimizer`` whose clipping reads permuted per-record gradients without a copy.

    Same constructor and behaviour as :class:`CryptoNoiseDPOptimizer` (Opacus' optimiser with the
    noise of :mod:`privacy.noise`); see the module docstring.
    """

    def clip_and_accumulate(self) -> None:
        """Clip every record's gradient to ``max_grad_norm`` and add the sum to ``p.summed_grad``."""
        grad_samples = self.grad_samples
        if len(grad_samples[0]) == 0:
            factors = torch.zeros((0,), device=grad_samples[0].device)
        else:
            factors = clip_factors(grad_samples=grad_samples, max_grad_norm=self.max_grad_norm)
        for p, g in zip(self.params, grad_samples, strict=True):
            _check_processed_flag(p.grad_sample)
            g = g.to(p.dtype)
            grad = clipped_sum(g=g, factors=factors.to(g.device).to(p.dtype))
            if p.summed_grad is not None:
                p.summed_grad += grad
            else:
                p.summed_grad = grad
            _mark_as_processed(p.grad_sample)
