"""Per-episode DP meta-gradients: record-level DP for episodic losses (ProtoNet, MAML, FOMAML).

Privacy unit and adjacency
--------------------------
The privacy unit is **one record of the site's dataset**, adjacency is **add/remove one record**.

Why per-episode clipping
------------------------
Per-record clipping (DP-SGD, Abadi et al. 2016, arXiv 1607.00133, as Opacus implements it) assumes a
record influences only its own gradient. An episodic meta-loss couples the records of an episode:
a ProtoNet prototype is a mean over support records (Snell, Swersky & Zemel 2017, arXiv
1703.05175) and MAML adapts on the support set before the query loss (Finn, Abbeel & Levine 2017,
arXiv 1703.03400). One record then moves every other record's gradient in its episode, and the sum
of per-record-clipped gradients can move by up to ``(2k-1)C`` for a ``k``-record episode instead
of the assumed ``C``. Per-record clipping of an episodic loss is therefore **not** record-level DP
and is not offered here. (Li, Khodak, Caldas & Talwalkar 2020, "Differentially Private
Meta-Learning", arXiv 1909.05830, likewise clip whole task gradients.)

The scheme
----------
1-2. Records are Poisson-sampled and assigned to episode slots/roles independently of each other
     (:mod:`privacy.sampling`), so removing one record changes **only its own episode**.
3.   Each episode's full meta-gradient ``g_e`` (through the MAML inner loop, second order) is
     computed with ``torch.func`` (``vmap(grad(loss))`` over episodes), clipped to ``‖g_e‖ <= C``,
     summed, and ``N(0, (2zC)^2 I)`` is added. Both versions of the changed episode's clipped
     gradient have norm ``<= C``, so the sum moves by at most ``2C``: the noise multiplier relative
     to the sensitivity ``2C`` is ``z``.
4.   The accountant is told ``(z, q)`` per step: conditioned on the other records' (independent)
     sampling and assignment, the output is ``N(A, s^2)`` vs ``(1-q) N(A, s^2) + q N(A+Δ, s^2)``
     with ``‖Δ‖ <= 2C`` and ``s = 2zC`` — the Poisson-subsampled Gaussian mechanism of Mironov,
     Talwar & Zhang (2019, arXiv 1908.10530) with noise multiplier ``z``; joint quasi-convexity of the
     Rényi divergence keeps the bound after mixing over the other records.

Opacus mechanics: :class:`opacus.optimizers.DPOptimizer` reads only ``p.grad_sample``; we fill it
with the per-episode gradients, construct it with ``noise_multiplier=2z, max_grad_norm=C`` and
install our own step hook that records ``(z, q)`` — Opacus' default accountant hook would record
``2z`` and understate ε. The noisy sum is divided by ``expected_episodes``, a **public** constant
(e.g. the number of slots), never by a data-dependent count (Opacus #571, #819).

Noise: the optimiser is :class:`privacy.clipping.CryptoNoiseDPOptimizer` — Opacus' clipping
unchanged, the noise ``N(0, (2zC)^2 I)`` drawn by :mod:`privacy.noise` (AES-256-CTR keystream
under a fresh 256-bit key, clipped sum snapped to a fine lattice, exact discrete Gaussian;
Canonne, Kamath & Steinke 2020, arXiv 2004.00010), never from a ``torch.Generator``. DP runs are
therefore not reproducible from the seed; tests fix the noise with
:func:`privacy.noise.fixed_noise_source`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from privacy.clipping import CryptoNoiseDPOptimizer, clip_factors, clipped_sum
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.sampling import EpisodeIndices
from privacy.trainer_common import (
    OptimizerName,
    StepAccountant,
    StepReport,
    check_accountant,
    check_positive_finite,
    check_positive_int,
    check_record_independent_model,
    check_sample_rate,
    make_torch_optimizer,
)

__all__ = [
    "EpisodeGradients",
    "EpisodicDPSGD",
    "EpisodeLossFn",
    "MaskedEpisode",
    "clip_and_sum",
    "gather_episodes",
    "per_episode_gradients",
    "per_episode_norms",
]

#: ``loss_fn(params, buffers, episode) -> scalar``; must be differentiable with ``torch.func.grad``
#: w.r.t. ``params`` (use ``torch.func.functional_call`` and ``torch.func.grad`` for inner loops).
EpisodeLossFn = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], Any], torch.Tensor]
GradMode = Literal["auto", "vmap", "loop"]


class MaskedEpisode(NamedTuple):
    """An episode padded to fixed sizes so that episodes can be stacked for ``vmap``.

    Masks are 1.0 for real records and 0.0 for padding; a loss must ignore padded rows (e.g.
    masked means, prototypes from masked sums, classes without support masked out). Padding rows
    have zero inputs and label 0.

    Attributes:
        support_x: ``(S, *input_shape)`` float.
        support_y: ``(S,)`` int64 episode labels.
        support_mask: ``(S,)`` float.
        query_x: ``(Q, *input_shape)`` float.
        query_y: ``(Q,)`` int64.
        query_mask: ``(Q,)`` float.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    support_mask: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    query_mask: torch.Tensor


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[0] == size:
        return x
    pad = torch.zeros((size - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=0)


def gather_episodes(
    *,
    x: torch.Tensor,
    episodes: Sequence[EpisodeIndices],
    support_size: int | None = None,
    query_size: int | None = None,
) -> list[MaskedEpisode]:
    """Materialise episode index sets as :class:`MaskedEpisode` tensors of common sizes.

    Padding only affects computation, never the (masked) loss value, so it may depend on the
    step's episodes; it must not be replaced by truncation (that would drop records).

    Args:
        x: The site's inputs, shape ``(n, *input_shape)``.
        episodes: Episodes from :class:`privacy.sampling.StepAssignment` (usually the usable ones).
        support_size: Padded support size (default: the largest support set).
        query_size: Padded query size (default: the largest query set).

    Returns:
        One masked episode per input episode, all with identical shapes.

    Raises:
        InvalidInputError: If ``x`` is not a tensor, an index is out of range, or an episode is
            larger than the requested padded size.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise InvalidInputError("x must be a tensor of shape (n, *input_shape)")
    max_s = max((int(e.support_index.shape[0]) for e in episodes), default=0)
    max_q = max((int(e.query_index.shape[0]) for e in episodes), default=0)
    s_size = max_s if support_size is None else int(support_size)
    q_size = max_q if query_size is None else int(query_size)
    if s_size < max_s or q_size < max_q:
        raise InvalidInputError(
            f"padded sizes ({s_size}, {q_size}) are smaller than the largest episode ({max_s}, {max_q}); "
            "use larger sizes or None"
        )
    n = int(x.shape[0])
    out = []
    for episode in episodes:
        for name, index in (("support", episode.support_index), ("query", episode.query_index)):
            if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
                raise InvalidInputError(f"episode {episode.slot}: {name} index out of range for {n} records")
        s_idx = torch.as_tensor(episode.support_index, dtype=torch.long, device=x.device)
        q_idx = torch.as_tensor(episode.query_index, dtype=torch.long, device=x.device)
        s_mask = torch.zeros(
            s_size, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device
        )
        q_mask = torch.zeros(q_size, dtype=s_mask.dtype, device=x.device)
        s_mask[: s_idx.shape[0]] = 1.0
        q_mask[: q_idx.shape[0]] = 1.0
        out.append(
            MaskedEpisode(
                support_x=_pad_rows(x[s_idx], s_size),
                support_y=_pad_rows(
                    torch.as_tensor(episode.support_label, dtype=torch.long, device=x.device), s_size
                ),
                support_mask=s_mask,
                query_x=_pad_rows(x[q_idx], q_size),
                query_y=_pad_rows(
                    torch.as_tensor(episode.query_label, dtype=torch.long, device=x.device), q_size
                ),
                query_mask=q_mask,
            )
        )
    return out


@dataclass(frozen=True)
class EpisodeGradients:
    """Per-episode gradients of a meta-loss.

    Attributes:
        grads: Parameter name -> tensor of shape ``(num_episodes, *param_shape)``.
        losses: Episode losses, shape ``(num_episodes,)``.
        mode: ``"vmap"`` or ``"loop"`` — how they were computed.
        num_nonfinite: Episodes whose gradient was not finite (their rows are zeroed).
    """

    grads: dict[str, torch.Tensor]
    losses: torch.Tensor
    mode: str
    num_nonfinite: int


def _stack_episodes(episodes: Sequence[Any]) -> Any | None:
    """Stack episodes leaf-wise when they are pytrees of same-shaped tensors, else ``None``."""
    flat0, spec0 = tree_flatten(episodes[0])
    if not flat0 or not all(isinstance(t, torch.Tensor) for t in flat0):
        return None
    rows = [flat0]
    for episode in episodes[1:]:
        flat, spec = tree_flatten(episode)
        if spec != spec0 or len(flat) != len(flat0):
            return None
        for leaf, ref in zip(flat, flat0, strict=True):
            if not isinstance(leaf, torch.Tensor) or leaf.shape != ref.shape or leaf.dtype != ref.dtype:
                return None
        rows.append(flat)
    stacked = [torch.stack([row[i] for row in rows]) for i in range(len(flat0))]
    return tree_unflatten(stacked, spec0)


def _check_tensor_dict(name: str, value: object) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        raise InvalidInputError(f"{name} must be a mapping from names to tensors")


def per_episode_gradients(
    *,
    loss_fn: EpisodeLossFn,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    episodes: Sequence[Any],
    mode: GradMode = "auto",
    chunk_size: int | None = None,
    frozen: Mapping[str, torch.Tensor] | None = None,
) -> EpisodeGradients:
    """Full meta-gradient of every episode w.r.t. ``params`` (``torch.func``).

    ``vmap(grad(loss_fn))`` over stacked episodes when they are pytrees of equal-shaped tensors
    (e.g. :class:`MaskedEpisode` from :func:`gather_episodes`), otherwise a loop of
    ``grad(loss_fn)``. Both differentiate through whatever ``loss_fn`` does, including a MAML inner
    loop written with ``torch.func.grad`` (second order). Episodes whose gradient is not finite get
    a zero row (a function of that episode alone, so the sensitivity argument is unaffected).

    Args:
        loss_fn: ``loss_fn(params, buffers, episode) -> scalar``.
        params: Tensors to differentiate with respect to (detached internally).
        buffers: Buffers passed through unchanged.
        episodes: The episodes (any objects in loop mode; tensor pytrees for vmap).
        mode: ``"auto"`` (vmap when possible), ``"vmap"`` (required) or ``"loop"``.
        chunk_size: Episodes per vmap chunk (memory bound); ``None`` = all at once.
        frozen: Extra parameters ``loss_fn`` needs but that are not differentiated.

    Returns:
        The per-episode gradients and losses.

    Raises:
        InvalidInputError: If the inputs are malformed, ``mode="vmap"`` is impossible, or the loss
            is not a scalar.
        InvalidPrivacyConfigError: If ``mode`` or ``chunk_size`` is invalid.
    """
    if not callable(loss_fn):
        raise InvalidInputError("loss_fn must be callable")
    _check_tensor_dict("params", params)
    _check_tensor_dict("buffers", buffers)
    if frozen is not None:
        _check_tensor_dict("frozen", frozen)
    if not params:
        raise InvalidInputError("params is empty")
    if mode not in ("auto", "vmap", "loop"):
        raise InvalidPrivacyConfigError(f"mode must be 'auto', 'vmap' or 'loop', got {mode!r}")
    if chunk_size is not None and chunk_size < 1:
        raise InvalidPrivacyConfigError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    if isinstance(episodes, str | bytes) or not isinstance(episodes, Sequence):
        raise InvalidInputError("episodes must be a sequence")
    detached = {k: v.detach() for k, v in params.items()}
    buf = {k: v.detach() for k, v in buffers.items()}
    fixed = {k: v.detach() for k, v in (frozen or {}).items()}

    def wrapped(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], episode: Any) -> torch.Tensor:
        loss = loss_fn({**fixed, **p}, b, episode)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise InvalidInputError("loss_fn must return a scalar tensor")
        return loss

    grad_fn = torch.func.grad_and_value(wrapped, argnums=0)
    num = len(episodes)
    if num == 0:
        grads = {k: torch.zeros((0, *v.shape), dtype=v.dtype, device=v.device) for k, v in detached.items()}
        return EpisodeGradients(grads=grads, losses=torch.zeros(0), mode="loop", num_nonfinite=0)
    stacked = None if mode == "loop" else _stack_episodes(episodes)
    if mode == "vmap" and stacked is None:
        raise InvalidInputError(
            "mode='vmap' needs episodes that are pytrees of equal-shaped tensors (pad them)"
        )
    if stacked is not None:
        grads, losses = torch.func.vmap(grad_fn, in_dims=(None, None, 0), chunk_size=chunk_size)(
            detached, buf, stacked
        )
        used = "vmap"
    else:
        rows = [grad_fn(detached, buf, episode) for episode in episodes]
        grads = {k: torch.stack([g[k] for g, _ in rows]) for k in detached}
        losses = torch.stack([loss for _, loss in rows])
        used = "loop"
    finite = torch.ones(num, dtype=torch.bool, device=losses.device)
    for g in grads.values():
        finite &= torch.isfinite(g.reshape(num, -1)).all(dim=1).to(finite.device)
    num_nonfinite = int((~finite).sum())
    if num_nonfinite:
        grads = {
            k: torch.where(finite.to(g.device).reshape(-1, *([1] * (g.ndim - 1))), g, torch.zeros_like(g))
            for k, g in grads.items()
        }
    return EpisodeGradients(
        grads={k: g.detach() for k, g in grads.items()},
        losses=losses.detach(),
        mode=used,
        num_nonfinite=num_nonfinite,
    )


def per_episode_norms(*, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """L2 norm of every episode's full gradient (all parameters together).

    Args:
        grads: Name -> ``(num_episodes, *shape)`` tensors.

    Returns:
        Norms, shape ``(num_episodes,)``.
    """
    tensors = list(grads.values())
    if not tensors:
        raise InvalidInputError("grads is empty")
    num = tensors[0].shape[0]
    if num == 0:
        return torch.zeros(0, device=tensors[0].device)
    per_param = torch.stack([g.reshape(num, -1).norm(2, dim=1) for g in tensors], dim=1)
    return per_param.norm(2, dim=1)


def clip_and_sum(*, grads: Mapping[str, torch.Tensor], max_grad_norm: float) -> dict[str, torch.Tensor]:
    """Clip every episode's gradient to norm ``max_grad_norm`` and sum (no noise; pure).

    Uses Opacus' factor ``min(1, C / (‖g‖ + 1e-6))``, so it equals what :class:`EpisodicDPSGD`
    feeds to the noise. Useful for sensitivity checks.

    Args:
        grads: Name -> ``(num_episodes, *shape)`` tensors.
        max_grad_norm: Clipping norm ``C`` > 0.

    Returns:
        Name -> clipped sum of shape ``shape``.

    Raises:
        InvalidPrivacyConfigError: If ``max_grad_norm`` is not positive and finite.
        InvalidInputError: If ``grads`` is empty.
    """
    if not math.isfinite(max_grad_norm) or max_grad_norm <= 0:
        raise InvalidPrivacyConfigError(f"max_grad_norm must be finite and > 0, got {max_grad_norm}")
    if not grads:
        raise InvalidInputError("grads is empty")
    factor = clip_factors(grad_samples=list(grads.values()), max_grad_norm=max_grad_norm)
    return {k: clipped_sum(g=g, factors=factor.to(g.dtype)) for k, g in grads.items()}


class EpisodicDPSGD(StepReport):
    """Record-level DP meta-training step for episodic losses (per-episode clipping, notes §1).

    Each :meth:`step`: per-episode meta-gradients (``torch.func``) -> ``p.grad_sample`` ->
    Opacus ``DPOptimizer(noise_multiplier=2z, max_grad_norm=C)`` clips each episode to ``C``, sums,
    adds ``N(0, (2zC)^2 I)`` and divides by the public ``expected_episodes`` -> optimiser step ->
    ``accountant.step(noise_multiplier=z, sample_rate=q)``.

    The episodes **must** come from a sampler with the independence property of
    :mod:`privacy.sampling` (Poisson rate ``q``, per-record keyed slot/role assignment); the
    accounting is only valid then.

    Args:
        model: The module whose parameters are trained (checked for record-coupling modules).
        noise_multiplier: ``z``, relative to the sensitivity ``2C`` (noise std ``2zC``); 0 = no noise.
        max_grad_norm: ``C``, the clipping norm of each episode's gradient.
        sample_rate: ``q``, the Poisson record sampling rate of the episode sampler.
        expected_episodes: Public normaliser of the noisy sum (e.g. the number of slots per step).
        lr: Learning rate.
        accountant: Object with ``step(*, noise_multiplier, sample_rate)``; persists across rounds.
        params: Trainable parameters by name (default: all of ``model``'s that require grad).
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        grad_mode: ``"auto"``, ``"vmap"`` or ``"loop"`` (see :func:`per_episode_gradients`).
        chunk_size: Episodes per vmap chunk.

    Raises:
        InvalidInputError: If ``model``/``params`` are malformed.
        InvalidPrivacyConfigError: If a privacy or optimiser parameter is invalid.
        RecordCouplingModelError: If the model contains BatchNorm or running statistics.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        expected_episodes: int,
        lr: float,
        accountant: StepAccountant,
        params: Mapping[str, nn.Parameter] | None = None,
        optimizer: OptimizerName = "sgd",
        momentum: float = 0.0,
        grad_mode: GradMode = "auto",
        chunk_size: int | None = None,
    ) -> None:
        check_record_independent_model(model=model)
        z = check_positive_finite("noise_multiplier", noise_multiplier, allow_zero=True)
        c = check_positive_finite("max_grad_norm", max_grad_norm)
        q = check_sample_rate(sample_rate)
        check_positive_int("expected_episodes", expected_episodes)
        check_accountant(accountant)
        if grad_mode not in ("auto", "vmap", "loop"):
            raise InvalidPrivacyConfigError(f"grad_mode must be 'auto', 'vmap' or 'loop', got {grad_mode!r}")
        if chunk_size is not None and chunk_size < 1:
            raise InvalidPrivacyConfigError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        model_params = {id(p) for p in model.parameters()}
        if params is None:
            params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise InvalidInputError("no trainable parameters")
        for name, p in params.items():
            if not isinstance(p, nn.Parameter) or id(p) not in model_params:
                raise InvalidInputError(f"params[{name!r}] is not a parameter of model")
            if not p.requires_grad or not p.is_floating_point():
                raise InvalidInputError(
                    f"params[{name!r}] must be a floating-point parameter that requires grad"
                )
        if len({id(p) for p in params.values()}) != len(params):
            raise InvalidInputError("params contains the same parameter twice")
        self._params: dict[str, nn.Parameter] = dict(params)
        self._z = z
        self._c = c
        self._q = q
        self._accountant = accountant
        self._grad_mode: GradMode = grad_mode
        self._chunk_size = chunk_size
        base = make_torch_optimizer(
            params=list(self._params.values()), optimizer=optimizer, lr=lr, momentum=momentum
        )
        # Noise std = (2z) * C: the sensitivity of the per-episode clipped sum under add/remove is 2C.
        # loss_reduction="mean" only divides the noisy sum by the public expected_episodes.
        self._optimizer = CryptoNoiseDPOptimizer(
            base,
            noise_multiplier=2.0 * self._z,
            max_grad_norm=self._c,
            expected_batch_size=expected_episodes,
            loss_reduction="mean",
        )
        self._optimizer.attach_step_hook(self._account)
        self._device = next(iter(self._params.values())).device
        self._steps = 0

    @property
    def optimizer(self) -> CryptoNoiseDPOptimizer:
        """The DP optimiser (noise multiplier ``2z``, clip ``C``; noise from :mod:`privacy.noise`)."""
        return self._optimizer

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The trained parameters by name."""
        return dict(self._params)

    @property
    def steps(self) -> int:
        """DP steps taken (and accounted)."""
        return self._steps

    @property
    def noise_std(self) -> float:
        """Std of the noise added to the clipped sum: ``2 z C``."""
        return 2.0 * self._z * self._c

    def _account(self, _optimizer: DPOptimizer) -> None:
        # z, not the optimizer's 2z: the sensitivity of the clipped sum is 2C (module docstring).
        self._accountant.step(noise_multiplier=self._z, sample_rate=self._q)
        self._steps += 1

    def step(
        self,
        *,
        episodes: Sequence[Any],
        loss_fn: EpisodeLossFn,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """One DP meta-step on this step's episodes (possibly none: noise is still added).

        Args:
            episodes: The step's usable episodes, e.g. ``gather_episodes(x=..., episodes=
                assignment.usable_episodes())``; Task-like objects work in loop mode.
            loss_fn: ``loss_fn(params, buffers, episode) -> scalar`` (e.g. a wrapper of a
                learner's ``task_loss``).
            params: Every parameter ``loss_fn`` needs, by name; must contain the trained ones
                (the very same tensors); others are treated as frozen.
            buffers: Buffers by name.

        Returns:
            Public values ``noise_std`` (of the sum), ``noise_multiplier`` (z), ``sample_rate``,
            ``max_grad_norm``, ``steps``; and diagnostics computed from private data, **not**
            covered by DP (prefixed ``private/``): ``num_episodes``, ``mean_loss``,
            ``clip_fraction``, ``mean_grad_norm``, ``nonfinite_episodes``.

        Raises:
            InvalidInputError: If ``params`` misses or replaces a trained parameter, or the
                episodes/loss are malformed.
        """
        _check_tensor_dict("params", params)
        for name, p in self._params.items():
            if name not in params or params[name] is not p:
                raise InvalidInputError(f"params[{name!r}] must be the trained parameter itself")
        frozen = {k: v for k, v in params.items() if k not in self._params}
        result = per_episode_gradients(
            loss_fn=loss_fn,
            params=self._params,
            buffers=buffers,
            episodes=episodes,
            mode=self._grad_mode,
            chunk_size=self._chunk_size,
            frozen=frozen,
        )
        norms = per_episode_norms(grads=result.grads)
        self._optimizer.zero_grad(set_to_none=True)
        for name, p in self._params.items():
            # DPOptimizer reads only p.grad_sample (one row per episode).
            row = result.grads[name].to(device=p.device, dtype=p.dtype)
            p.grad_sample = row  # type: ignore[attr-defined]
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        num = len(episodes)
        return self._step_report(
            num_episodes=float(num),
            mean_loss=float(result.losses.mean()) if num else float("nan"),
            clip_fraction=float((norms > self._c).float().mean()) if num else float("nan"),
            mean_grad_norm=float(norms.mean()) if num else float("nan"),
            nonfinite_episodes=float(result.num_nonfinite),
        )
