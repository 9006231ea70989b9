"""The 2-D scattering transform (ScatterNet): a fixed, public feature front-end.

A scattering network (Mallat 2012, "Group Invariant Scattering"; Bruna & Mallat 2013, "Invariant
Scattering Convolution Networks", IEEE TPAMI; Oyallon & Mallat 2015, "Deep Roto-Translation
Scattering for Object Classification", CVPR) is a cascade of wavelet convolutions and complex
moduli followed by a low-pass average:

* order 0: ``x * phi_J``
* order 1: ``|x * psi_{j1, l1}| * phi_J`` for ``0 <= j1 < J`` and ``L`` orientations ``l1``
* order 2: ``||x * psi_{j1, l1}| * psi_{j2, l2}| * phi_J`` for ``j1 < j2 < J``

each subsampled by ``2^J``: ``1 + J L + L^2 J (J - 1) / 2`` channels per input channel (81 at
``J = 2, L = 8``; a 28x28 image gives 81 maps of 7x7). It is Lipschitz-continuous to
deformations and invariant to translations up to ``2^J`` pixels, and it has no trainable
parameter. Tramèr & Boneh 2021 ("Differentially Private Learning Needs Better Features (or Much
More Data)", ICLR) trained a linear model or a small CNN on ``J = 2`` scattering features with
DP-SGD and beat end-to-end CNNs at every ε they tried.

For differential privacy the point is that the transform is a *fixed public function of each
record*: the features of one record depend on that record only (no batch statistics, no
buffers, nothing learnt), so it spends no privacy budget and needs no per-sample gradient (there
is no parameter in it). :class:`Scattering2D` and :class:`ScatterFeatures` therefore register
no parameter and no buffer (the filters are plain tensors rebuilt from ``(H, W, J, L)``): nothing
of the front-end enters a model's ``state_dict``, the federated update or a checkpoint.

Filter bank (built directly in the Fourier domain, frequencies in radians per pixel on the DFT
grid of the ``H x W`` input, so convolutions are periodic — fine for Omniglot's dark
background): a Gabor function of scale ``sigma``, centre frequency ``xi`` along ``theta`` and
slant ``s`` has the Fourier transform ``g(w) = exp(-(sigma^2 a^2 + sigma^2 b^2 / s^2) / 2)`` with
``a, b`` the components of ``w - xi e_theta`` along and across ``e_theta``; sampling the
continuous filter on the pixel grid periodises ``g`` in frequency (a sum over ``w + 2 pi k``).
The Morlet wavelet subtracts the envelope (``xi = 0``) times the constant that makes its mean
zero. Parameters as in Bruna & Mallat / Oyallon & Mallat's implementation: ``sigma_j = 0.8 *
2^j``, ``xi_j = 3 pi / 4 / 2^j``, ``s = 4 / L``, ``theta_l = pi l / L``; ``phi_J`` is the
isotropic Gaussian with ``sigma = 0.8 * 2^J`` and ``phi_J(0) = 1`` (it averages). The wavelets
are scaled so that the Littlewood–Paley sum ``A(w) = |phi(w)|^2 + sum_{j,l} (|psi_{j,l}(w)|^2 +
|psi_{j,l}(-w)|^2) / 2`` has maximum 1: the first wavelet layer is then a contraction
(``||x * phi||^2 + sum ||x * psi||^2 <= ||x||^2``, with equality up to ``min A`` on the band
the filters cover), so the scattering operator is non-expansive (Mallat 2012, Prop. 2.5).

Convolutions are products of FFTs over the whole batch; subsampling by ``2^J`` after
``phi_J`` is done in the Fourier domain (averaging the spectrum's aliases), so every path is
computed at full resolution (no aliasing from intermediate subsampling). About 0.6-0.8 ms per
28x28 image on one CPU thread at J = 2, L = 8 (batches of 1-256, median of 5, quiet 2-core
machine; ``docs/scatternet.md`` has the loaded comparison with kymatio). Everything is ``torch.func``
compatible (``vmap``, ``grad``), so per-episode DP-SGD can run through it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from secfed.errors import ConfigError
from secfed.models.conv4 import Conv4
from secfed.models.mlp import MLP

__all__ = [
    "ScatterFeatures",
    "ScatterModel",
    "Scattering2D",
    "littlewood_paley",
    "morlet_filter_bank",
    "scatter_channels",
]

#: Scale of the finest wavelet (pixels) and centre frequency of the finest wavelet (rad/pixel).
_SIGMA0 = 0.8
_XI0 = 3.0 * math.pi / 4.0
#: Aliases summed on each side when periodising the Gaussians in frequency (|k| <= 2).
_ALIASES = 2


def scatter_channels(*, J: int, L: int) -> int:
    """Channels of a scattering transform of one input channel (orders 0, 1 and 2).

    Args:
        J: Number of scales.
        L: Number of orientations.

    Returns:
        ``1 + J L + L^2 J (J - 1) / 2`` (81 for ``J = 2, L = 8``).
    """
    return 1 + J * L + L * L * J * (J - 1) // 2


def _check_jl(*, J: int, L: int, shape: tuple[int, int] | None = None) -> None:
    if isinstance(J, bool) or not isinstance(J, int) or J < 1:
        raise ConfigError(f"model.scatter_j (J, number of scales) must be an int >= 1, got {J!r}")
    if isinstance(L, bool) or not isinstance(L, int) or not 1 <= L <= 32:
        raise ConfigError(f"model.scatter_l (L, number of orientations) must be an int in [1, 32], got {L!r}")
    if shape is not None:
        h, w = shape
        step = 2**J
        if h < step or w < step or h % step or w % step:
            raise ConfigError(
                f"the scattering transform subsamples by 2^J = {step}: the input's height and width "
                f"must be positive multiples of {step}, got {h}x{w} (lower model.scatter_j or change "
                f"data.image_size)"
            )


def _gaussian_hat(
    *, wy: np.ndarray, wx: np.ndarray, sigma: float, xi: float, theta: float, slant: float
) -> np.ndarray:
    """The periodised Fourier transform of a Gabor function (peak 1 before periodisation)."""
    cy, cx = xi * math.sin(theta), xi * math.cos(theta)
    out = np.zeros(np.broadcast(wy, wx).shape, dtype=np.float64)
    for ky in range(-_ALIASES, _ALIASES + 1):
        for kx in range(-_ALIASES, _ALIASES + 1):
            dy = wy + 2.0 * math.pi * ky - cy
            dx = wx + 2.0 * math.pi * kx - cx
            along = dx * math.cos(theta) + dy * math.sin(theta)
            across = -dx * math.sin(theta) + dy * math.cos(theta)
            out += np.exp(-0.5 * sigma**2 * (along**2 + (across / slant) ** 2))
    return out


def _bank(*, height: int, width: int, J: int, L: int, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled wavelets ``psi_j`` (``j = level .. J-1``) and ``phi_J`` on the grid of an image
    subsampled by ``2^level`` (``height x width`` is that grid; scales in its own pixels)."""
    wy = (2.0 * math.pi * np.fft.fftfreq(height))[:, None]
    wx = (2.0 * math.pi * np.fft.fftfreq(width))[None, :]
    slant = 4.0 / L
    psi = np.zeros((J - level, L, height, width), dtype=np.float64)
    for j in range(level, J):
        sigma = _SIGMA0 * 2.0 ** (j - level)
        xi = _XI0 / 2.0 ** (j - level)
        for ell in range(L):
            theta = math.pi * ell / L
            gabor = _gaussian_hat(wy=wy, wx=wx, sigma=sigma, xi=xi, theta=theta, slant=slant)
            envelope = _gaussian_hat(wy=wy, wx=wx, sigma=sigma, xi=0.0, theta=theta, slant=slant)
            psi[j - level, ell] = gabor - (gabor[0, 0] / envelope[0, 0]) * envelope
    phi = _gaussian_hat(wy=wy, wx=wx, sigma=_SIGMA0 * 2.0 ** (J - 1 - level), xi=0.0, theta=0.0, slant=1.0)
    return psi, phi / phi[0, 0]


def _wavelet_scale(*, psi: np.ndarray, phi: np.ndarray) -> float:
    """The factor on the wavelets that makes the Littlewood–Paley sum's maximum 1."""
    wave = _wavelet_power(psi)
    mask = wave > 1e-12 * wave.max()
    return math.sqrt(float(np.min((1.0 - phi**2)[mask] / wave[mask])))


def morlet_filter_bank(*, height: int, width: int, J: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Fourier transforms of the Morlet wavelets and of the low-pass filter on an ``H x W`` grid.

    Args:
        height: Input height ``H``.
        width: Input width ``W``.
        J: Number of scales (wavelets ``j = 0 .. J-1``, low-pass at scale ``2^J``).
        L: Number of orientations in ``[0, pi)``.

    Returns:
        ``(psi, phi)``: ``psi`` of shape ``(J, L, H, W)`` and ``phi`` of shape ``(H, W)``, real
        float64 arrays in FFT frequency order (``numpy.fft.fftfreq``). The wavelets have zero
        mean (``psi[..., 0, 0] == 0``), ``phi[0, 0] == 1`` and the Littlewood–Paley sum has
        maximum 1 (see the module docstring).

    Raises:
        ConfigError: If ``J`` or ``L`` is out of range or the grid is not a multiple of ``2^J``.
    """
    _check_jl(J=J, L=L, shape=(height, width))
    psi, phi = _bank(height=height, width=width, J=J, L=L, level=0)
    return psi * _wavelet_scale(psi=psi, phi=phi), phi


def _wavelet_power(psi: np.ndarray) -> np.ndarray:
    """``sum_{j,l} (|psi(w)|^2 + |psi(-w)|^2) / 2`` on the DFT grid."""
    power = (psi**2).sum(axis=(0, 1))
    flipped = np.roll(np.flip(power, axis=(0, 1)), shift=(1, 1), axis=(0, 1))  # w -> -w
    return 0.5 * (power + flipped)


def littlewood_paley(*, psi: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The Littlewood–Paley sum ``A(w)`` of a filter bank (for real inputs).

    ``||x * phi||^2 + sum_{j,l} ||x * psi_{j,l}||^2 = (1 / HW) sum_w |x_hat(w)|^2 A(w)`` for a
    real image ``x`` (Parseval), so ``min A`` and ``max A`` are the frame bounds of the first
    layer.

    Args:
        psi: Wavelets ``(J, L, H, W)`` as :func:`morlet_filter_bank` returns them.
        phi: Low-pass ``(H, W)``.

    Returns:
        ``A`` of shape ``(H, W)``.
    """
    return phi**2 + _wavelet_power(psi)


class Scattering2D(nn.Module):
    """Second-order 2-D scattering transform of images (no parameters, no buffers).

    Attributes:
        J: Number of scales (output subsampled by ``2^J``).
        L: Number of orientations.
        shape: ``(H, W)`` the filters were built for.
        channels: Output channels per input channel (:func:`scatter_channels`).
    """

    def __init__(self, *, shape: tuple[int, int], J: int = 2, L: int = 8) -> None:
        """Build the filter bank.

        Args:
            shape: ``(H, W)`` of the inputs (multiples of ``2^J``).
            J: Number of scales, >= 1.
            L: Number of orientations, in ``[1, 32]``.

        Raises:
            ConfigError: On an invalid ``J``, ``L`` or shape.
        """
        super().__init__()
        if len(shape) != 2 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ConfigError(f"Scattering2D shape must be (H, W) with positive ints, got {shape!r}")
        _check_jl(J=J, L=L, shape=(shape[0], shape[1]))
        self.J, self.L = J, L
        self.shape = (int(shape[0]), int(shape[1]))
        self.channels = scatter_channels(J=J, L=L)
        # One bank per resolution 2^-level (kymatio-style: a path is subsampled to the
        # resolution of its coarsest wavelet before its modulus), all with the scale of the
        # full-resolution bank. Plain attributes, not buffers: constants of (H, W, J, L).
        full_psi, full_phi = _bank(height=self.shape[0], width=self.shape[1], J=J, L=L, level=0)
        scale = _wavelet_scale(psi=full_psi, phi=full_phi)
        self._banks: list[tuple[np.ndarray, np.ndarray]] = []
        for level in range(J):
            psi, phi = _bank(
                height=self.shape[0] // 2**level, width=self.shape[1] // 2**level, J=J, L=L, level=level
            )
            self._banks.append((psi * scale, phi))
        self._cache: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _filters(self, like: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The banks as real tensors of ``like``'s device and dtype (a complex spectrum times a
        real filter is cheaper than a complex product)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = [
                (
                    torch.as_tensor(psi, dtype=like.dtype, device=like.device),
                    torch.as_tensor(phi, dtype=like.dtype, device=like.device),
                )
                for psi, phi in self._banks
            ]
        return self._cache[key]

    @staticmethod
    def _fold(spectrum: torch.Tensor, step: int) -> torch.Tensor:
        """Spectrum of the signal subsampled by ``step`` (the mean of the spectrum's aliases)."""
        if step == 1:
            return spectrum
        h, w = spectrum.shape[-2] // step, spectrum.shape[-1] // step
        # slice sums (contiguous blocks) are ~10x faster than a strided mean over complex dims
        rows = spectrum[..., :h, :]
        for a in range(1, step):
            rows = rows + spectrum[..., a * h : (a + 1) * h, :]
        out = rows[..., :w]
        for b in range(1, step):
            out = out + rows[..., b * w : (b + 1) * w]
        return out / float(step * step)

    def _lowpass(self, spectrum: torch.Tensor, phi: torch.Tensor, step: int) -> torch.Tensor:
        """``(y * phi)`` subsampled by ``step``, from the spectrum of ``y`` (``(..., h, w)``)."""
        return torch.fft.ifft2(self._fold(spectrum * phi, step)).real

    def _lowpass_real(self, u: torch.Tensor, phi: torch.Tensor, step: int) -> torch.Tensor:
        """``(u * phi)`` subsampled by ``step`` for a real ``u`` (half spectrum: ``rfft2`` is ~3x
        faster than ``fft2`` of a real input; ``phi`` is real and even, so the product stays
        Hermitian)."""
        half = phi[..., : u.shape[-1] // 2 + 1]
        y = torch.fft.irfft2(torch.fft.rfft2(u) * half, s=tuple(u.shape[-2:]))
        return y[..., ::step, ::step]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scattering coefficients.

        Args:
            x: Images ``(N, C, H, W)`` (floating point).

        Returns:
            ``(N, C * channels, H / 2^J, W / 2^J)``, channels ordered as order 0, order 1
            ``(j1, l1)``, order 2 ``(j1, l1, j2, l2)`` per input channel.

        Raises:
            ConfigError: If ``x`` is not a floating ``(N, C, H, W)`` tensor of the built shape.
        """
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shape or not x.is_floating_point():
            raise ConfigError(
                f"Scattering2D expects floating (N, C, {self.shape[0]}, {self.shape[1]}) inputs, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        n, c = x.shape[0], x.shape[1]
        banks = self._filters(x)
        J = self.J
        spec = torch.fft.fft2(x.reshape(n * c, *self.shape))  # (B, H, W)
        order0 = self._lowpass(spec, banks[0][1], 2**J).unsqueeze(1)
        order1, order2 = [], []
        for j1 in range(J):
            # U1 = |x * psi_j1| at resolution 2^-j1, shape (B, L, H / 2^j1, W / 2^j1)
            u1 = torch.fft.ifft2(self._fold(spec[:, None] * banks[0][0][j1], 2**j1)).abs()
            if j1 == J - 1:  # no second order from the coarsest scale
                order1.append(self._lowpass_real(u1, banks[j1][1], 2 ** (J - j1)))
                continue
            u1_spec = torch.fft.fft2(u1)
            order1.append(self._lowpass(u1_spec, banks[j1][1], 2 ** (J - j1)))
            paths = []
            for j2 in range(j1 + 1, J):
                # U2 = |U1 * psi_j2| at resolution 2^-j2, shape (B, L1, L2, ...)
                wave = banks[j1][0][j2 - j1]
                u2 = torch.fft.ifft2(self._fold(u1_spec[:, :, None] * wave, 2 ** (j2 - j1))).abs()
                paths.append(self._lowpass_real(u2, banks[j2][1], 2 ** (J - j2)))
            if paths:
                s2 = torch.stack(paths, dim=2)  # (B, L1, J2, L2, h, w)
                order2.append(s2.reshape(n * c, -1, *s2.shape[-2:]))
        s = torch.cat([order0, *order1, *order2], dim=1)
        return s.reshape(n, c * self.channels, *s.shape[-2:])


class ScatterFeatures(nn.Module):
    """Scattering coefficients, log-compressed and standardised per record.

    ``f = log(1 + scale |S x|)``, then ``(f - mean(f)) / (std(f) + eps)`` over all features of
    the record (not over the batch: each record's features depend on that record only). The
    log compresses the heavy-tailed coefficients, as Oyallon & Mallat 2015 and Tramèr & Boneh
    2021 do before a linear model.

    Attributes:
        scattering: The :class:`Scattering2D` transform.
        output_shape: ``(C * channels, H / 2^J, W / 2^J)``.
    """

    def __init__(
        self, *, input_shape: tuple[int, ...], J: int = 2, L: int = 8, log_scale: float = 10.0
    ) -> None:
        """Build the front-end.

        Args:
            input_shape: ``(C, H, W)`` of one record.
            J: Number of scales.
            L: Number of orientations.
            log_scale: ``scale`` in ``log(1 + scale |S x|)`` (> 0).

        Raises:
            ConfigError: On an invalid shape, ``J``, ``L`` or ``log_scale``.
        """
        super().__init__()
        if len(input_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in input_shape):
            raise ConfigError(
                "the scattering front-end needs image records (C, H, W), "
                f"got input_shape {tuple(input_shape)}"
            )
        if not (isinstance(log_scale, int | float) and math.isfinite(log_scale) and log_scale > 0):
            raise ConfigError(f"log_scale must be finite and > 0, got {log_scale!r}")
        c, h, w = (int(d) for d in input_shape)
        self.scattering = Scattering2D(shape=(h, w), J=J, L=L)
        self.log_scale = float(log_scale)
        step = 2**J
        self.output_shape = (c * self.scattering.channels, h // step, w // step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, *output_shape)`` of images ``(N, C, H, W)``."""
        f = torch.log1p(self.log_scale * self.scattering(x).abs())
        flat = f.reshape(f.shape[0], -1)
        mean = flat.mean(dim=1, keepdim=True)
        std = flat.std(dim=1, keepdim=True)
        return ((flat - mean) / (std + 1e-6)).reshape(f.shape)


class ScatterModel(nn.Module):
    """A fixed scattering front-end followed by a trainable body (Conv-4 or MLP).

    Exposes the interface of the bodies (``embed``, ``head``, ``embedding_dim``,
    ``input_shape``, ``num_classes``) with the body's parameter names (``features.*``,
    ``head.*``): the front-end owns no parameter or buffer, so the flat parameter vector, the
    state dict and the federated updates are exactly those of the body.

    Attributes:
        frontend: The :class:`ScatterFeatures` front-end.
        features: The body's feature layers.
        head: The body's linear head, or ``None``.
        embedding_dim: The body's embedding size.
        input_shape: Shape of one raw record ``(C, H, W)``.
        num_classes: Head outputs, or ``None``.
    """

    def __init__(self, *, frontend: ScatterFeatures, body: Conv4 | MLP, input_shape: tuple[int, ...]) -> None:
        """Wrap a body built for ``frontend.output_shape``.

        Args:
            frontend: The front-end.
            body: A :class:`secfed.models.conv4.Conv4` or :class:`secfed.models.mlp.MLP` built
                with ``input_shape = frontend.output_shape``.
            input_shape: Shape of one raw record.

        Raises:
            ConfigError: If the body is not a Conv4 or an MLP.
        """
        super().__init__()
        if not isinstance(body, Conv4 | MLP):
            raise ConfigError(f"the body must be a Conv4 or an MLP, got {type(body).__name__}")
        self.frontend = frontend
        self.features = body.features
        self.head: nn.Linear | None = body.head
        self.embedding_dim = int(body.embedding_dim)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = body.num_classes

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The front-end's output for raw records, or cached features passed through.

        Raw records ``(N, *input_shape)`` go through the scattering front-end; features already
        computed by :mod:`secfed.models.feature_cache` (``model.cache_features``), of shape
        ``(N, *frontend.output_shape)``, are used as they are. The two shapes always differ (the
        transform subsamples by ``2^J``), so the shape alone tells them apart.

        Args:
            x: Raw records or their features.

        Returns:
            Features ``(N, *frontend.output_shape)``.

        Raises:
            ConfigError: If ``x`` has neither shape (e.g. features of another ``J``, ``L`` or
                image size).
        """
        per_record = tuple(x.shape[1:])
        if per_record == tuple(self.frontend.output_shape):
            return x
        if per_record == self.input_shape:
            return self.frontend(x)
        raise ConfigError(
            f"the scattering model takes raw records (N, {', '.join(map(str, self.input_shape))}) or "
            f"their cached features (N, {', '.join(map(str, self.frontend.output_shape))}); got "
            f"{tuple(x.shape)} (features of another model.scatter_j / scatter_l / image size?)"
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding ``(N, embedding_dim)`` of raw records ``(N, C, H, W)`` or of their cached
        features (see :meth:`front`)."""
        return self.features(self.front(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``, or the embedding when there is no head (raw records or
        cached features, see :meth:`front`)."""
        z = self.embed(x)
        return self.head(z) if self.head is not None else z
