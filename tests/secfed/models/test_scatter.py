"""The 2-D scattering front-end (secfed.models.scatter): known properties of the transform
(Bruna & Mallat 2013; Mallat 2012) and what record-level DP needs from a front-end.

Properties checked: the Littlewood–Paley sum of the filter bank (a contraction, close to 1 on
the band the filters cover) and the energy it implies by Parseval; zero-mean wavelets and a
mean-preserving low-pass; exact covariance to shifts by 2^J and near-invariance to a 1-pixel
shift (against raw pixels); the channel count 1 + J L + L^2 J (J - 1) / 2; determinism. For DP:
no parameter and no buffer (nothing of the front-end in the state, the update or a
checkpoint), each record's features independent of the rest of the batch, the model accepted by
``privacy.dpsgd.check_record_independent_model``, per-sample gradients (FastGradSampler and
``torch.func.vmap``) equal to one-record gradients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from privacy.dpsgd import RecordCouplingModelError, check_record_independent_model
from privacy.per_sample_grads import FastGradSampler, unsupported_modules
from secfed import components
from secfed.config import config_from_dict
from secfed.errors import ConfigError
from secfed.models import build_model
from secfed.models.scatter import (
    ScatterFeatures,
    Scattering2D,
    ScatterModel,
    littlewood_paley,
    morlet_filter_bank,
    scatter_channels,
)


def _strokes(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Omniglot-like images: a few pen strokes (value ~1) on a dark background, ``(n, 1, s, s)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((n, 1, size, size))
    for i in range(n):
        img = np.zeros((size, size))
        for _ in range(rng.integers(2, 4)):
            pts = rng.uniform(5, size - 5, size=(3, 2))
            for a, b in zip(pts[:-1], pts[1:], strict=True):
                for t in np.linspace(0.0, 1.0, 3 * size):
                    cy, cx = a + t * (b - a)
                    img = np.maximum(img, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.6**2)))
        out[i, 0] = img
    return torch.from_numpy(out.astype(np.float32))


def _radius(h: int, w: int) -> np.ndarray:
    wy = 2 * np.pi * np.fft.fftfreq(h)[:, None]
    wx = 2 * np.pi * np.fft.fftfreq(w)[None, :]
    return np.sqrt(wy**2 + wx**2)


# --- the filter bank -------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "J"), [(28, 2), (32, 2), (32, 3), (16, 1)])
def test_littlewood_paley_sum_is_a_contraction_close_to_one_on_the_band(size: int, J: int) -> None:
    psi, phi = morlet_filter_bank(height=size, width=size, J=J, L=8)
    assert psi.shape == (J, 8, size, size) and phi.shape == (size, size)
    assert np.abs(psi[..., 0, 0]).max() < 1e-12  # wavelets: zero mean
    assert phi[0, 0] == pytest.approx(1.0)  # low-pass: averages
    lp = littlewood_paley(psi=psi, phi=phi)
    assert lp.max() <= 1.0 + 1e-9  # non-expansive first layer (Mallat 2012)
    assert lp.max() >= 1.0 - 1e-9  # and not needlessly shrunk
    r = _radius(size, size)
    # Morlet wavelets are not a tight frame; on the band the J scales cover (|w| <= 2 rad/px,
    # where drawings keep most of their energy) the sum stays within [0.6, 1], and within
    # [0.8, 1] below 1 rad/px (measured minima at L = 8: 0.70 and 0.84 at J = 2, 0.64 and 0.83
    # at J = 3).
    assert lp[r <= 2.0].min() >= 0.6
    assert lp[r <= 1.0].min() >= 0.8


def test_first_layer_energy_by_parseval() -> None:
    """``||x * phi||^2 + sum ||x * psi||^2`` (computed by convolution) is ``||x||^2`` up to the
    Littlewood–Paley bounds: at most ``||x||^2``, and most of it for drawings."""
    x = _strokes(6).double()[:, 0]
    psi, phi = morlet_filter_bank(height=28, width=28, J=2, L=8)
    spec = torch.fft.fft2(x)
    low = torch.fft.ifft2(spec * torch.from_numpy(phi)).real
    waves = torch.fft.ifft2(spec[:, None, None] * torch.from_numpy(psi))
    energy = low.square().sum(dim=(-2, -1)) + waves.abs().square().sum(dim=(1, 2, 3, 4))
    total = x.square().sum(dim=(-2, -1))
    lp = torch.from_numpy(littlewood_paley(psi=psi, phi=phi))
    predicted = (spec.abs().square() * lp).sum(dim=(-2, -1)) / (28 * 28)
    assert torch.allclose(energy, predicted, rtol=1e-9)
    ratio = energy / total
    assert bool((ratio <= 1.0 + 1e-9).all()) and bool((ratio >= 0.75).all()), ratio


# --- the transform ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "J", "L", "expected"),
    [((1, 28, 28), 2, 8, (81, 7, 7)), ((1, 32, 32), 3, 4, (61, 4, 4)), ((3, 16, 16), 2, 4, (75, 4, 4))],
)
def test_output_shape(shape: tuple[int, int, int], J: int, L: int, expected: tuple[int, int, int]) -> None:
    assert scatter_channels(J=J, L=L) == 1 + J * L + L * L * J * (J - 1) // 2
    assert scatter_channels(J=2, L=8) == 81
    front = ScatterFeatures(input_shape=shape, J=J, L=L)
    assert front.output_shape == expected
    assert front(torch.rand(5, *shape)).shape == (5, *expected)
    assert Scattering2D(shape=shape[1:], J=J, L=L)(torch.rand(2, *shape)).shape == (2, *expected)


def test_constant_image_has_only_the_average() -> None:
    """Order 0 is a mean-preserving average; every wavelet has zero mean, so higher orders of a
    constant image vanish."""
    s = Scattering2D(shape=(28, 28), J=2, L=8)(torch.full((1, 1, 28, 28), 0.3, dtype=torch.float64))
    assert torch.allclose(s[0, 0], torch.full((7, 7), 0.3, dtype=torch.float64), atol=1e-12)
    assert s[0, 1:].abs().max() < 1e-12


def test_shift_by_2_to_the_j_is_exactly_a_shift_of_the_maps() -> None:
    """With periodic convolutions and subsampling by 2^J, shifting the image by 2^J pixels
    shifts every scattering map by one cell: no coefficient is lost or invented."""
    x = _strokes(3).double()
    scat = Scattering2D(shape=(28, 28), J=2, L=8)
    shifted = scat(torch.roll(x, shifts=(4, -8), dims=(-2, -1)))
    assert torch.allclose(shifted, torch.roll(scat(x), shifts=(1, -2), dims=(-2, -1)), atol=1e-10)


def test_every_path_is_sampled_on_the_same_grid() -> None:
    """A dot on a sampling point (pixel (12, 8) -> cell (3, 2)) gives maps that are point-symmetric
    about that cell in every channel (each |x * psi| of a symmetric input is symmetric, since the
    filters' Fourier transforms are real), and orders 0 and 1 peak there: no path is offset."""
    x = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    x[0, 0, 12, 8] = 1.0
    s = Scattering2D(shape=(28, 28), J=2, L=8)(x)[0]
    centred = torch.roll(s, shifts=(-3, -2), dims=(-2, -1))
    mirrored = torch.roll(torch.flip(centred, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    assert torch.allclose(centred, mirrored, atol=1e-12)
    peaks = s[:17].flatten(1).argmax(dim=1)
    assert bool((peaks == 3 * 7 + 2).all())


def test_one_pixel_shift_changes_features_little_relative_to_pixels() -> None:
    """Translation invariance up to 2^J: a 1-pixel shift moves thin-stroke drawings by most of
    their norm but the scattering coefficients by a fraction of theirs (real Omniglot test
    drawings at 28 px: 73 % for pixels, 21 % for the coefficients; docs/scatternet.md)."""
    x = _strokes(8)
    scat = Scattering2D(shape=(28, 28), J=2, L=8)
    for dims in ((-1,), (-2,)):
        moved = torch.roll(x, shifts=1, dims=dims)
        pixel = ((moved - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
        sx, sm = scat(x), scat(moved)
        feat = ((sm - sx).flatten(1).norm(dim=1) / sx.flatten(1).norm(dim=1)).mean()
        assert pixel > 0.6
        assert feat < 0.4 * pixel, (float(feat), float(pixel))


def test_deterministic_and_independent_of_the_batch() -> None:
    """Same input, same output (bit for bit, also from a fresh instance); a record's features do
    not depend on which other records share its batch (what record-level DP needs)."""
    x = _strokes(6)
    front = ScatterFeatures(input_shape=(1, 28, 28))
    a = front(x)
    assert torch.equal(a, front(x))
    assert torch.equal(a, ScatterFeatures(input_shape=(1, 28, 28))(x))
    for i in range(6):
        assert torch.allclose(front(x[i : i + 1])[0], a[i], atol=1e-5)
    assert torch.allclose(front(x[[3, 1]]), a[[3, 1]], atol=1e-5)
    # per-record standardisation: every record's features have mean 0 and std 1
    flat = a.flatten(1)
    assert torch.allclose(flat.mean(dim=1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(flat.std(dim=1), torch.ones(6), atol=1e-3)


def test_bad_inputs_are_refused_with_the_option_named() -> None:
    with pytest.raises(ConfigError, match="scatter_j"):
        Scattering2D(shape=(28, 28), J=0, L=8)
    with pytest.raises(ConfigError, match="scatter_l"):
        Scattering2D(shape=(28, 28), J=2, L=0)
    with pytest.raises(ConfigError, match="multiples of 8"):
        Scattering2D(shape=(28, 28), J=3, L=8)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        ScatterFeatures(input_shape=(784,))
    with pytest.raises(ConfigError, match="expects floating"):
        Scattering2D(shape=(28, 28))(torch.zeros(2, 1, 16, 16))


# --- the model: what DP and the federation see -----------------------------------------------


def _scatter_model(*, arch: str = "conv4", **body: Any) -> nn.Module:
    """A model for 1 x 28 x 28 records behind the scattering front-end."""
    return build_model(arch=arch, input_shape=(1, 28, 28), frontend="scatter", **body)


@pytest.mark.parametrize("arch", ["conv4", "mlp"])
def test_model_has_exactly_the_body_parameters_and_no_front_end_state(arch: str) -> None:
    torch.manual_seed(0)
    model = _scatter_model(arch=arch, num_classes=5, hidden=16, norm="group", num_groups=4)
    torch.manual_seed(0)
    body = build_model(
        arch=arch, input_shape=(81, 7, 7), num_classes=5, hidden=16, norm="group", num_groups=4
    )
    assert isinstance(model, ScatterModel)
    assert list(model.state_dict()) == list(body.state_dict())  # nothing of the front-end is state
    assert list(model.named_buffers()) == []
    assert sum(p.numel() for p in model.frontend.parameters()) == 0
    for (name, p), (bname, q) in zip(model.named_parameters(), body.named_parameters(), strict=True):
        assert name == bname and torch.equal(p, q)
    x = _strokes(4)
    assert torch.allclose(model(x), body(model.frontend(x)), atol=1e-6)
    assert model.embed(x).shape == (4, model.embedding_dim)
    assert isinstance(model.head, nn.Linear) and model.input_shape == (1, 28, 28)


def test_front_end_passes_the_record_coupling_check_and_batch_norm_still_fails() -> None:
    ok = _scatter_model(num_classes=None, norm="group")
    check_record_independent_model(model=ok)
    assert unsupported_modules(ok) == []
    bad = _scatter_model(num_classes=None, norm="batch")
    with pytest.raises(RecordCouplingModelError):
        check_record_independent_model(model=bad)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y, reduction="sum")


def test_per_sample_gradients_skip_the_front_end() -> None:
    """FastGradSampler (per-record DP-SGD) and torch.func (per-episode DP-SGD) both give each
    record/episode exactly its own gradient through the front-end model."""
    torch.manual_seed(1)
    model = _scatter_model(num_classes=3, hidden=8, norm="group", num_groups=2)
    x, y = _strokes(4, seed=3), torch.tensor([0, 2, 1, 2])
    singles = []
    for i in range(4):
        model.zero_grad()
        _loss(model, x[i : i + 1], y[i : i + 1]).backward()
        singles.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    sampler = FastGradSampler(model=model)
    sampler.attach()
    try:
        model.zero_grad()
        _loss(model, x, y).backward()
        for name, p in model.named_parameters():
            per = p.grad_sample  # type: ignore[attr-defined]
            for i in range(4):
                assert torch.allclose(per[i], singles[i][name], atol=1e-4, rtol=1e-3), name
    finally:
        sampler.remove()
    params = {n: p.detach() for n, p in model.named_parameters()}

    def episode_loss(p: dict[str, torch.Tensor], xe: torch.Tensor, ye: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(torch.func.functional_call(model, p, (xe,)), ye, reduction="sum")

    episodes_x, episodes_y = x.reshape(2, 2, 1, 28, 28), y.reshape(2, 2)
    grads = torch.func.vmap(torch.func.grad(episode_loss), in_dims=(None, 0, 0))(
        params, episodes_x, episodes_y
    )
    for e in range(2):
        model.zero_grad()
        _loss(model, episodes_x[e], episodes_y[e]).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.allclose(grads[name][e], p.grad, atol=1e-4, rtol=1e-3), name


# --- configuration ---------------------------------------------------------------------------


def test_config_builds_the_front_end_model_and_names_bad_options() -> None:
    cfg = config_from_dict(
        {
            "data": {"dataset": "digits"},
            "model": {"frontend": "scatter", "scatter_j": 1, "scatter_l": 4, "norm": "group", "groups": 8},
        }
    )
    model = components.build_model(config=cfg, input_shape=(1, 8, 8))
    assert isinstance(model, ScatterModel)
    assert model.frontend.output_shape == (1 + 4, 4, 4)
    default = components.build_model(
        config=config_from_dict({"data": {"dataset": "digits"}}), input_shape=(1, 8, 8)
    )
    assert not isinstance(default, ScatterModel)
    with pytest.raises(ConfigError, match="model.frontend"):
        config_from_dict({"model": {"frontend": "wavelets"}})
    with pytest.raises(ConfigError, match="model.scatter_j"):
        config_from_dict({"data": {"dataset": "digits"}, "model": {"frontend": "scatter", "scatter_j": 4}})
    with pytest.raises(ConfigError, match="model.scatter_j"):
        config_from_dict({"model": {"frontend": "scatter", "scatter_j": 0}})
    with pytest.raises(ConfigError, match="model.scatter_l"):
        config_from_dict({"model": {"frontend": "scatter", "scatter_l": 0}})
    with pytest.raises(ConfigError, match="model.layers"):
        config_from_dict({"model": {"arch": "conv4", "layers": 0}})
    features_only = config_from_dict(
        {
            "data": {"dataset": "digits"},
            "model": {"frontend": "scatter", "scatter_j": 1, "arch": "mlp", "layers": 0},
        }
    )
    model = components.build_model(config=features_only, input_shape=(1, 8, 8), num_classes=None)
    assert model.embedding_dim == (1 + 1 * 8) * 4 * 4 and not list(model.parameters())
    assert math.isfinite(float(model(torch.rand(2, 1, 8, 8)).sum()))
