"""Per-sample DP-SGD for non-episodic local training (Reptile inner loop, FedAvg local epochs).

Privacy unit and adjacency
--------------------------
The privacy unit is **one record of the site's dataset**, adjacency is **add/remove one record**.
Each step Poisson-samples every record independently with probability ``q``, clips every record's
own gradient to L2 norm ``C``, sums, adds ``N(0, (zC)^2 I)`` and divides by a **public** constant
(the configured expected batch size, never the private dataset size: Opacus issues #571, #819).
This is DP-SGD (Abadi et al., CCS 2016, arXiv 1607.00133); each step is a Poisson-subsampled
Gaussian mechanism with sensitivity ``C`` whose RDP is computed by Mironov, Talwar & Zhang (2019,
arXiv 1908.10530). The accountant is told ``(z, q)`` once per step and composes every local step the
site ever takes (keep one accountant per site across rounds).

This is valid only because the loss is a *sum of per-record losses*: a record influences only its
own gradient. It must not be used for episodic losses (ProtoNet prototypes, MAML inner loops couple
records) — use :mod:`privacy.episodic` there. Likewise modules that couple the records of a batch
(BatchNorm, running statistics) are refused with :class:`RecordCouplingModelError`.

Reptile's outer step (Nichol et al. 2018, arXiv 1803.02999) and FedAvg's averaging (McMahan et al.
2017) only read the parameters DP-SGD produced, so they are post-processing and cost no privacy.

Mechanics: per-sample gradients of the summed loss come from :mod:`privacy.per_sample_grads` for
Conv2d/Linear/GroupNorm models, otherwise from Opacus (expanded weights or
:class:`opacus.GradSampleModule`, ``loss_reduction="sum"``); clipping and noise always from
:class:`opacus.optimizers.DPOptimizer` (Yousefpour et al. 2021, arXiv 2109.12298), through
:class:`privacy.clipping.LayoutAwareDPOptimizer`, which computes Opacus' clipping without copying
per-record gradients the fast engine leaves in a permuted layout. Applying
Opacus twice to one module breaks its hooks (Opacus #608), so :class:`PerSampleDPSGD` is built
around a *fresh copy* of the model each round and :meth:`PerSampleDPSGD.finish` removes the hooks
(or the fast engine's patched layers) again.

Randomness: the Poisson coins are a keyed AES PRF (:class:`SecurePoissonSampler`). The Gaussian
noise comes from :mod:`privacy.noise` through :class:`privacy.clipping.LayoutAwareDPOptimizer`'s
``add_noise``: an AES-256-CTR keystream under a fresh 256-bit key from ``os.urandom`` (one source
per :class:`PerSampleDPSGD`, re-keyed after a fork), and the clipped sum is snapped to a lattice
``g`` far below the noise scale before exact discrete Gaussian noise (Canonne, Kamath & Steinke
2020, arXiv 2004.00010) is added, so the release does not depend on the low bits of the clipped
sum — the floating-point attack on textbook samplers (Mironov 2012; Jin et al. 2022, arXiv
2112.05307) — and the sensitivity grows by at most ``zC·2^-20`` (see :mod:`privacy.noise`). This
replaces a ``torch.Generator`` reseeded from 64 urandom bits at every step: MT19937 keeps only
the low 32 bits of a seed, so the noise of a step could be recovered by brute force over 2^32
seeds, and Opacus' ``secure_mode`` (summing several draws, Holohan & Braghin 2021, arXiv
2107.10138) only raises the cost of the floating-point attack. Consequence: a DP run is **not
reproducible from the experiment seed**; :func:`privacy.noise.fixed_noise_source` fixes the
noise in tests only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.data_loader import wrap_collate_with_empty
from opacus.grad_sample import GradSampleModuleExpandedWeights
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

from privacy.clipping import LayoutAwareDPOptimizer
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError, PrivacyError
from privacy.per_sample_grads import FastGradSampler, is_attached, unsupported_modules
from privacy.sampling import check_record_ids, derive_sampling_key, record_uniforms
from privacy.trainer_common import (
    OptimizerName,
    RecordCouplingModelError,
    StepAccountant,
    StepReport,
    UnsupportedModelError,
    check_accountant,
    check_positive_finite,
    check_positive_int,
    check_record_independent_model,
    check_sample_rate,
    find_record_coupling_modules,
    make_torch_optimizer,
)

__all__ = [
    "PerSampleDPSGD",
    "RecordCouplingModelError",
    "SecurePoissonSampler",
    "StepAccountant",
    "UnsupportedModelError",
    "check_record_independent_model",
    "find_record_coupling_modules",
    "make_poisson_loader",
    "make_torch_optimizer",
]


class SecurePoissonSampler(UniformWithReplacementSampler):
    """Opacus' Poisson batch sampler with keyed cryptographic inclusion coins.

    Every record is included in every batch independently with probability ``sample_rate`` — the
    sampling the Sampled Gaussian Mechanism accountant assumes (shuffled fixed-size batches are not,
    Opacus #80/#128). Opacus' own sampler draws from ``torch.rand`` (a non-cryptographic PRNG);
    this subclass keeps its interface and replaces only the coins: record ``i``'s coin at step
    ``t`` is :func:`privacy.sampling.record_uniforms` of ``(key, record_ids[i], t)``, an AES-256
    PRF under a key drawn from ``os.urandom``. A record's coins therefore depend on its own stable
    id only, never on which other records exist (removing one record leaves every other record's
    batches unchanged, which is what the neighbouring-dataset tests check).

    Args:
        num_samples: Number of records.
        sample_rate: Inclusion probability ``q`` in ``(0, 1]``.
        steps: Batches per iteration (default ``int(1/q)``, as in Opacus).
        record_ids: Stable unique ids of the records (default ``0..num_samples-1``).

    Raises:
        InvalidPrivacyConfigError: If ``num_samples`` or ``sample_rate`` is invalid.
        InvalidInputError: If ``record_ids`` is not ``num_samples`` unique non-negative integers.
    """

    def __init__(
        self,
        *,
        num_samples: int,
        sample_rate: float,
        steps: int | None = None,
        record_ids: np.ndarray | None = None,
    ) -> None:
        check_positive_int("num_samples", num_samples)
        sample_rate = check_sample_rate(sample_rate)
        if steps is not None and steps < 1:
            raise InvalidPrivacyConfigError(f"steps must be >= 1, got {steps}")
        super().__init__(num_samples=num_samples, sample_rate=sample_rate, generator=None, steps=steps)
        ids = np.arange(num_samples, dtype=np.int64) if record_ids is None else np.asarray(record_ids)
        if ids.shape != (num_samples,):
            raise InvalidInputError(f"record_ids must have shape ({num_samples},), got {ids.shape}")
        self._ids = check_record_ids(ids)
        self._key = derive_sampling_key(secret_seed=os.urandom(32))
        self._step = 0

    def sample_indices(self) -> list[int]:
        """Draw one Poisson batch (and advance the step counter).

        Returns:
            Sorted indices of the included records (possibly empty).
        """
        uniforms = record_uniforms(key=self._key, record_ids=self._ids, step=self._step)[:, 0]
        self._step += 1
        return np.flatnonzero(uniforms < self.sample_rate).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield self.sample_indices()


def _check_site_tensors(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InvalidInputError("x and y must be torch tensors")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise InvalidInputError(
            f"x and y must share their first dimension, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise InvalidInputError("the site dataset is empty")


def make_poisson_loader(*, x: torch.Tensor, y: torch.Tensor, sample_rate: float) -> DataLoader:
    """A ``DataLoader`` over ``(x, y)`` with CSPRNG Poisson batches and empty-batch support.

    Equivalent to Opacus' ``DPDataLoader`` (same empty-batch collate wrapper) but with
    :class:`SecurePoissonSampler` and the sample rate given explicitly (``DPDataLoader.from_data_loader``
    derives it from the private dataset size).

    Args:
        x: Site inputs, shape ``(n, ...)``.
        y: Site targets, shape ``(n, ...)``.
        sample_rate: Poisson inclusion probability ``q``.

    Returns:
        The data loader; each iteration yields ``int(1/q)`` batches ``(xb, yb)``.

    Raises:
        InvalidInputError: If the tensors are malformed.
        InvalidPrivacyConfigError: If the sample rate is invalid.
    """
    _check_site_tensors(x, y)
    sampler = SecurePoissonSampler(num_samples=int(x.shape[0]), sample_rate=sample_rate)
    collate = wrap_collate_with_empty(
        collate_fn=default_collate,
        sample_empty_shapes=[(0, *x.shape[1:]), (0, *y.shape[1:])],
        dtypes=[x.dtype, y.dtype],
    )
    return DataLoader(TensorDataset(x, y), batch_sampler=sampler, collate_fn=collate)


def _default_per_example_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


GradSampleMode = Literal["auto", "fast", "ew", "hooks"]


def _is_opacus_wrapped(model: nn.Module) -> bool:
    if isinstance(model, GradSampleModule):
        return True
    if is_attached(model):
        return True
    return any(hasattr(m, "autograd_grad_sample_hooks") for m in model.modules()) or any(
        hasattr(p, "grad_sample") for p in model.parameters()
    )


class PerSampleDPSGD(StepReport):
    """Record-level DP-SGD over one site's tensors for one round of local training.

    Build one per round around a **fresh copy** of the model loaded with the global weights (Opacus
    #608), call :meth:`step` for every local step, then :meth:`finish` to get the plain model back.
    Pass the **same accountant** every round: it composes every local step the site takes.

    Each step: Poisson batch (rate ``q``) -> per-record gradients of the per-record losses ->
    clip to ``C`` -> sum -> ``+ N(0, (zC)^2 I)`` -> divide by the public ``expected_batch_size`` ->
    optimiser step -> ``accountant.step(noise_multiplier=z, sample_rate=q)``.

    Args:
        model: A plain module (no Opacus hooks, no BatchNorm), trained in place.
        x: Site inputs, shape ``(n, ...)``.
        y: Site targets, shape ``(n, ...)``.
        noise_multiplier: ``z`` (noise std is ``z * max_grad_norm``); 0 disables noise (no privacy).
        max_grad_norm: Clipping norm ``C`` of every record's gradient.
        sample_rate: Poisson inclusion probability ``q`` (what the accountant is told).
        expected_batch_size: Public normaliser of the noisy sum (e.g. ``q`` times a public size bound).
        lr: Learning rate.
        accountant: Object with ``step(*, noise_multiplier, sample_rate)``.
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        per_example_loss: ``(outputs, targets) -> losses`` of shape ``(B,)`` (one loss per record;
            default cross-entropy). The step sums them, which is what makes clipping per record valid.
        grad_sample_mode: How per-record gradients are computed. ``"auto"`` (default): ``"fast"``
            when every trainable parameter lives in a ``Conv2d``, ``Linear`` or ``GroupNorm``
            layer, ``"ew"`` otherwise. ``"fast"``: :mod:`privacy.per_sample_grads` (per-record
            convolution gradients by shifted-window matrix products, no ``im2col`` copy, no batch
            gradient). ``"ew"``: Opacus'
            :class:`~opacus.grad_sample.GradSampleModuleExpandedWeights` (PyTorch expanded
            weights, which also skip the batch gradient). ``"hooks"``: Opacus'
            :class:`~opacus.GradSampleModule` hooks, which compute the batch gradient as well.
            All modes give the same per-record gradients (tested); clipping is Opacus'
            :class:`~opacus.optimizers.DPOptimizer`'s and the noise :mod:`privacy.noise`'s in
            every mode. Relative costs are
            measured by ``evaluations/benchmarks/dp_overhead.py``.
        record_ids: Stable unique ids of the records (default ``0..n-1``); the Poisson coins are
            keyed by them (:class:`SecurePoissonSampler`).

    Raises:
        InvalidInputError: If the tensors are malformed.
        InvalidPrivacyConfigError: If a privacy or optimiser parameter is invalid.
        RecordCouplingModelError: If the model contains BatchNorm or running statistics.
        UnsupportedModelError: If the model already carries Opacus hooks or Opacus cannot compute
            per-sample gradients for one of its modules.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        expected_batch_size: int,
        lr: float,
        accountant: StepAccountant,
        optimizer: OptimizerName = "sgd",
        momentum: float = 0.0,
        per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        grad_sample_mode: GradSampleMode = "auto",
        record_ids: np.ndarray | None = None,
    ) -> None:
        check_record_independent_model(model=model)
        if grad_sample_mode not in ("auto", "fast", "ew", "hooks"):
            raise InvalidPrivacyConfigError(
                f"grad_sample_mode must be 'auto', 'fast', 'ew' or 'hooks', got {grad_sample_mode!r}"
            )
        if _is_opacus_wrapped(model):
            raise UnsupportedModelError(
                "model already carries Opacus hooks or per-sample gradients; wrapping it twice breaks "
                "the hooks (Opacus #608): pass a fresh copy of the plain model each round"
            )
        _check_site_tensors(x, y)
        self._z = check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
        self._c = check_positive_finite("max_grad_norm", max_grad_norm)
        self._q = check_sample_rate(sample_rate)
        check_positive_int("expected_batch_size", expected_batch_size)
        check_accountant(accountant)
        if per_example_loss is not None and not callable(per_example_loss):
            raise InvalidPrivacyConfigError("per_example_loss must be callable")
        model.train()
        other = ModuleValidator.validate(model, strict=False)
        if other:
            raise UnsupportedModelError(
                "Opacus cannot train this model privately", problems=[str(e) for e in other]
            )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InvalidInputError("model has no trainable parameters")
        self._model = model
        self._x = x
        self._y = y
        self._accountant = accountant
        self._loss = per_example_loss or _default_per_example_loss
        self._sampler = SecurePoissonSampler(
            num_samples=int(x.shape[0]), sample_rate=self._q, record_ids=record_ids
        )
        self._batches: Iterator[list[int]] = iter(self._sampler)
        if grad_sample_mode in ("auto", "fast"):
            missing = unsupported_modules(model)
            if missing and grad_sample_mode == "fast":
                raise UnsupportedModelError(
                    "grad_sample_mode='fast' covers Conv2d, Linear and GroupNorm only",
                    problems=missing,
                )
            grad_sample_mode = "ew" if missing else "fast"
        self._mode = grad_sample_mode
        self._trainable = params
        # both modes: a layer Opacus cannot compute per-sample gradients for is refused up front
        unsupported = GradSampleModule.validate(model, strict=False)
        if unsupported:
            raise UnsupportedModelError(
                "Opacus cannot compute per-record gradients for this model",
                problems=[str(e) for e in unsupported],
            )
        self._fast: FastGradSampler | None = None
        self._module: nn.Module
        if grad_sample_mode == "fast":
            self._fast = FastGradSampler(model=model)
            self._module = self._fast.attach()
        elif grad_sample_mode == "ew":
            self._module = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="sum")
        else:
            self._module = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
        base = make_torch_optimizer(params=params, optimizer=optimizer, lr=lr, momentum=momentum)
        # loss_reduction="mean" in DPOptimizer only divides the noisy sum by expected_batch_size
        # (public); per-sample gradients are of the *summed* loss (GradSampleModule "sum").
        self._optimizer = LayoutAwareDPOptimizer(
            base,
            noise_multiplier=self._z,
            max_grad_norm=self._c,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
        )
        self._optimizer.attach_step_hook(self._account)
        self._device = params[0].device
        self._steps = 0
        self._finished = False

    @property
    def module(self) -> nn.Module:
        """The model that computes per-record gradients (valid until :meth:`finish`): the model
        itself with patched layers (``"fast"``) or the Opacus wrapper (``"ew"``, ``"hooks"``)."""
        return self._module

    @property
    def grad_sample_mode(self) -> str:
        """The per-record gradient engine in use: ``"fast"``, ``"ew"`` or ``"hooks"``."""
        return self._mode

    @property
    def optimizer(self) -> LayoutAwareDPOptimizer:
        """The DP optimiser (noise multiplier ``z``, clip ``C``; noise from :mod:`privacy.noise`)."""
        return self._optimizer

    @property
    def steps(self) -> int:
        """DP steps taken (and accounted) by this object."""
        return self._steps

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise added to the clipped sum: ``z * C``."""
        return self._z * self._c

    def _account(self, _optimizer: DPOptimizer) -> None:
        self._accountant.step(noise_multiplier=self._z, sample_rate=self._q)
        self._steps += 1

    def _next_batch(self) -> list[int]:
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self._sampler)
            return next(self._batches)

    def step(self, *, classes: Sequence[int] | None = None) -> dict[str, float]:
        """Take one DP-SGD step.

        Args:
            classes: Optional public class subset (chosen without looking at the data, e.g. the
                classes of a Reptile task): only sampled records whose label is in it are used and
                their labels are relabelled to positions in ``classes``. Each record's inclusion
                probability is then ``q`` or 0, so accounting with ``q`` stays valid.

        Returns:
            ``noise_std``, ``noise_multiplier``, ``sample_rate``, ``max_grad_norm`` and ``steps``
            (public), plus ``private/batch_size`` and ``private/loss_sum``: diagnostics computed
            from private data, **not** covered by the DP guarantee (do not release them).

        Raises:
            PrivacyError: If :meth:`finish` was already called.
            InvalidInputError: If ``classes`` is malformed or the loss has the wrong shape.
        """
        if self._finished:
            raise PrivacyError("PerSampleDPSGD.step called after finish()")
        index = torch.as_tensor(self._next_batch(), dtype=torch.long)
        xb, yb = self._x[index], self._y[index]
        if classes is not None:
            class_t = torch.as_tensor(list(classes), dtype=self._y.dtype)
            if class_t.ndim != 1 or class_t.numel() == 0 or torch.unique(class_t).numel() != class_t.numel():
                raise InvalidInputError("classes must be a non-empty list of distinct labels")
            match = yb.reshape(-1, 1) == class_t.reshape(1, -1)
            keep = match.any(dim=1)
            xb, yb = xb[keep], match[keep].to(torch.long).argmax(dim=1)
        return self.step_batch(x=xb, y=yb)

    def step_batch(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """One DP-SGD step on a batch the caller sampled (clip, sum, noise, divide, step, account).

        :meth:`step` draws the batch with this object's own Poisson sampler and calls this. A
        caller that samples itself (a learner's own loop fed by a private batch source) must give
        every record an independent inclusion probability of at most ``sample_rate`` with
        randomness that does not depend on the other records (e.g. :class:`SecurePoissonSampler`),
        or the accounting with ``(z, q)`` is void.

        Args:
            x: The batch's inputs ``(B, ...)`` (``B`` may be 0: the step adds noise only).
            y: The batch's targets ``(B, ...)``.
            per_example_loss: Per-record loss for this step (default: the constructor's).

        Returns:
            See :meth:`step`.

        Raises:
            PrivacyError: If :meth:`finish` was already called.
            InvalidInputError: If the batch or the loss has the wrong shape.
        """
        if self._finished:
            raise PrivacyError("PerSampleDPSGD.step_batch called after finish()")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.shape[0] != y.shape[0]:
            raise InvalidInputError("x and y must be tensors with the same number of records")
        if per_example_loss is not None and not callable(per_example_loss):
            raise InvalidPrivacyConfigError("per_example_loss must be callable")
        loss_of = per_example_loss or self._loss
        xb, yb = x.to(self._device), y.to(self._device)
        self._optimizer.zero_grad(set_to_none=True)
        if self._mode in ("ew", "fast") and xb.shape[0] == 0:
            # expanded weights refuse an empty batch ("fast" has nothing to compute); the step is
            # still taken (noise only)
            for p in self._trainable:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]
            return self._finish_step(batch=0, loss_sum=0.0)
        try:
            outputs = self._module(xb)
        except RuntimeError as exc:
            if "Expanded Weights" not in str(exc):
                raise
            raise UnsupportedModelError(
                f"the model uses an operation expanded weights cannot differentiate per record ({exc}); "
                "use grad_sample_mode='hooks' or standard layers (Linear, Conv, GroupNorm, ...)"
            ) from exc
        losses = loss_of(outputs, yb)
        if losses.shape != (xb.shape[0],):
            raise InvalidInputError(
                f"per_example_loss must return one loss per record, shape ({xb.shape[0]},), "
                f"got {tuple(losses.shape)}"
            )
        loss_sum = losses.sum()
        with warnings.catch_warnings():
            # Opacus' full backward hooks fire on module outputs when inputs need no grad (expected).
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            loss_sum.backward()
        for p in self._trainable:
            rows = getattr(p, "grad_sample", None)
            if rows is None or rows.shape[0] != xb.shape[0]:
                raise UnsupportedModelError(
                    f"no per-record gradient was computed for a parameter of shape {tuple(p.shape)} "
                    f"(grad_sample_mode={self._mode!r}); its module is not supported in this mode"
                )
        return self._finish_step(batch=int(xb.shape[0]), loss_sum=float(loss_sum.detach()))

    def _finish_step(self, *, batch: int, loss_sum: float) -> dict[str, float]:
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return self._step_report(batch_size=float(batch), loss_sum=loss_sum)

    def finish(self) -> nn.Module:
        """Remove the Opacus hooks and per-sample state and return the trained plain model.

        Returns:
            The model passed to the constructor (trained in place), free of Opacus attributes.
        """
        if not self._finished:
            self._optimizer.zero_grad(set_to_none=True)
            if self._fast is not None:
                self._fast.remove()
            else:
                self._module.remove_hooks()  # type: ignore[operator]
            for p in self._model.parameters():
                for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                    if hasattr(p, attr):
                        delattr(p, attr)
            for m in self._model.modules():
                for attr in ("activations", "max_batch_len"):
                    if hasattr(m, attr):
                        delattr(m, attr)
            self._finished = True
        return self._model
