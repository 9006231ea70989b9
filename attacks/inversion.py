"""Gradient inversion: reconstruct a client's private inputs from what an honest-but-curious server sees.

Threat model. The attacker is the server. It knows the global model (structure, parameters and
buffers), the public training hyperparameters captured by an
:class:`~attacks.observation.ObservationModel` (loss, learning rates, step counts, batch layout,
number of records per client), and the observation it received (a gradient, a local update, or a
secure aggregate). This is :class:`InversionInputs`. The private inputs and labels are held only
by :class:`GroundTruth`, which the attack entry point refuses (:class:`~attacks.errors.ThreatModelError`,
a ``TypeError``) and which enters only the scoring functions.

Methods:

* ``"dlg"`` — Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019): joint optimisation of
  inputs and soft labels, squared-L2 observation matching, L-BFGS.
* ``"idlg"`` — improved DLG (Zhao, Mopuri, Bilen 2020): the label is read analytically from the
  sign of the last-layer gradient, then DLG optimises the inputs only.
* ``"ig"`` — Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020): cosine
  distance plus total-variation prior, Adam on signed gradients with step decay at 3/8, 5/8, 7/8
  of the iterations, box constraint, several restarts keeping the best matching one.

Every method works with every observation model, so the same code attacks single gradients,
multi-step FedAvg / Reptile updates (by differentiable replay), ProtoNet episode gradients,
MAML / FOMAML meta-gradients and secure aggregates (reconstructing the union of the batches).

The threat model's types live in :mod:`attacks.inversion_types` and the scoring in
:mod:`attacks.inversion_scoring`; both are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor

from attacks.errors import AttackConfigError, AttackInputError, ThreatModelError
from attacks.inversion_scoring import InversionScore, save_inversion_grid, score_inversion
from attacks.inversion_types import (
    _DISTANCES,
    GroundTruth,
    InversionConfig,
    InversionInputs,
    InversionResult,
    _refuse_truth,
)
from attacks.label_recovery import batch_labels_from_last_layer, find_last_layer, label_counts_by_simulation

__all__ = [
    "InversionInputs",
    "GroundTruth",
    "InversionConfig",
    "InversionResult",
    "InversionScore",
    "run_inversion",
    "score_inversion",
    "save_inversion_grid",
    "total_variation",
    "observation_distance",
]


def total_variation(*, x: Tensor) -> Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels (Geiping et al. 2020).

    Args:
        x: ``(N, ..., H, W)`` with at least two spatial dimensions.

    Returns:
        A scalar tensor.
    """
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def observation_distance(
    *, simulated: Mapping[str, Tensor], observed: Mapping[str, Tensor], kind: str
) -> Tensor:
    """Distance between a simulated and the observed observation over the observed names.

    Args:
        simulated: Simulated observation by name.
        observed: Observed values by name.
        kind: ``"l2"``: sum of squared differences (DLG); ``"cosine"``: one minus the cosine
            similarity of the concatenated tensors (Geiping et al. 2020).

    Returns:
        A scalar tensor.

    Raises:
        AttackConfigError: If ``kind`` is unknown.
    """
    if kind == "l2":
        return sum((((simulated[k] - v) ** 2).sum() for k, v in observed.items()), torch.zeros(()))
    if kind == "cosine":
        dot = sum(((simulated[k] * v).sum() for k, v in observed.items()), torch.zeros(()))
        ns = sum(((simulated[k] ** 2).sum() for k in observed), torch.zeros(()))
        no = sum(((v**2).sum() for v in observed.values()), torch.zeros(()))
        return 1.0 - dot / (ns.sqrt() * no.sqrt() + 1e-12)
    raise AttackConfigError(f"distance must be one of {_DISTANCES}, got {kind!r}")


def _labels_for(threat: InversionInputs, cfg: InversionConfig) -> tuple[str, Tensor | None]:
    strategy = cfg.label_strategy
    if strategy == "auto":
        if threat.known_labels is not None:
            strategy = "known"
        elif cfg.method == "dlg":
            strategy = "joint"
        else:
            try:
                find_last_layer(observed=threat.observed, num_classes=threat.num_classes)
                strategy = "analytic"
            except AttackInputError:
                if cfg.method == "idlg":
                    raise
                strategy = "joint"
    if strategy == "known":
        if threat.known_labels is None:
            raise AttackConfigError("label_strategy='known' but InversionInputs.known_labels is None")
        return "known", threat.known_labels.long()
    if strategy == "analytic":
        assert threat.params is not None and threat.buffers is not None
        _, bias = find_last_layer(observed=threat.observed, num_classes=threat.num_classes)
        if threat.num_records == 1 or bias is None:
            # iDLG for one record (exact); the negative-entry rule of Yin et al. otherwise.
            labels = batch_labels_from_last_layer(
                observed=threat.observed,
                num_classes=threat.num_classes,
                num_records=threat.num_records,
                sign=threat.observation.sign,
            )
        else:
            labels = label_counts_by_simulation(
                observation=threat.observation,
                params=threat.params,
                buffers=threat.buffers,
                observed=threat.observed,
                num_records=threat.num_records,
                num_classes=threat.num_classes,
                input_shape=threat.input_shape,
                box=threat.box,
                seed=cfg.seed,
            )
        return "analytic", labels
    return "joint", None


def _device(threat: InversionInputs) -> torch.device:
    assert threat.params is not None
    first = next(iter(threat.params.values()), None)
    return first.device if first is not None else torch.device("cpu")


def _init_inputs(threat: InversionInputs, cfg: InversionConfig, gen: torch.Generator) -> Tensor:
    lo, hi = threat.box
    shape = (threat.num_records, *threat.input_shape)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    if cfg.init == "uniform":
        x = lo + (hi - lo) * torch.rand(shape, generator=gen)
    elif cfg.init == "gaussian":
        x = mid + 0.5 * half * torch.randn(shape, generator=gen)
    else:
        x = mid + 0.01 * half * torch.randn(shape, generator=gen)
    return x.clamp(lo, hi).to(_device(threat))


def _one_restart(
    threat: InversionInputs, cfg: InversionConfig, fixed_labels: Tensor | None, seed: int
) -> tuple[Tensor, Tensor, float, list[tuple[int, float]]]:
    gen = torch.Generator().manual_seed(int(seed))
    lo, hi = threat.box
    x = _init_inputs(threat, cfg, gen).requires_grad_(True)
    label_logits = None
    opt_vars = [x]
    if fixed_labels is None:
        label_logits = torch.randn((threat.num_records, threat.num_classes), generator=gen)
        label_logits = label_logits.to(x.device).requires_grad_(True)
        opt_vars.append(label_logits)
    assert threat.params is not None and threat.buffers is not None
    params, buffers = threat.params, threat.buffers
    tv_w = float(cfg.tv_weight or 0.0)
    use_tv = tv_w > 0 and len(threat.input_shape) >= 2
    dist_kind = str(cfg.distance)

    def current_labels() -> Tensor:
        if label_logits is None:
            assert fixed_labels is not None
            return fixed_labels
        return torch.softmax(label_logits, dim=-1)

    def objective() -> tuple[Tensor, Tensor]:
        sim = threat.observation.simulate(
            params=params, buffers=buffers, inputs=x, labels=current_labels(), create_graph=True
        )
        d = observation_distance(simulated=sim, observed=threat.observed, kind=dist_kind)
        total = d + tv_w * total_variation(x=x) if use_tv else d
        return total, d

    lbfgs = cfg.optimizer == "lbfgs"
    optimizer: torch.optim.Optimizer
    scheduler = None
    if lbfgs:
        # One L-BFGS iteration per step and no line search, as in DLG (Zhu et al. 2019); a strong-Wolfe
        # search with max_iter=1 was measured to stall on these problems.
        optimizer = torch.optim.LBFGS(opt_vars, lr=float(cfg.lr or 1.0), max_iter=1, history_size=100)
    else:
        optimizer = torch.optim.Adam(opt_vars, lr=float(cfg.lr or 0.1))
        if cfg.lr_decay:
            n = cfg.iterations
            milestones = sorted({max(1, int(n * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)

    history: list[tuple[int, float]] = []
    last = [math.inf]

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        total, _ = objective()
        total.backward()
        if cfg.signed_gradients and not lbfgs and x.grad is not None:
            x.grad.sign_()
        last[0] = float(total.detach())
        return total

    start = time.monotonic()
    good_x = x.detach().clone()
    good_logits = label_logits.detach().clone() if label_logits is not None else None
    for it in range(cfg.iterations):
        optimizer.step(closure)
        if scheduler is not None:
            scheduler.step()
        if not math.isfinite(last[0]) or not bool(torch.isfinite(x).all()):
            break  # diverged (L-BFGS without line search can): keep the last finite iterate
        if cfg.clamp:
            with torch.no_grad():
                x.clamp_(lo, hi)
        good_x = x.detach().clone()
        if label_logits is not None:
            good_logits = label_logits.detach().clone()
        if it % cfg.record_every == 0 or it == cfg.iterations - 1:
            history.append((it, last[0]))
        if cfg.max_seconds is not None and time.monotonic() - start > cfg.max_seconds:
            break

    final_x = good_x.clamp(lo, hi)
    labels = fixed_labels if good_logits is None else torch.softmax(good_logits, dim=-1)
    assert labels is not None
    hard = labels if not labels.is_floating_point() else labels.argmax(dim=-1)
    # Score the restart by the distance at the (projected) final point, without the prior.
    sim = threat.observation.simulate(
        params=params, buffers=buffers, inputs=final_x, labels=labels, create_graph=False
    )
    d = float(observation_distance(simulated=sim, observed=threat.observed, kind=dist_kind).detach())
    return final_x.detach(), hard.long(), d if math.isfinite(d) else math.inf, history


def run_inversion(*, threat: InversionInputs, config: InversionConfig) -> InversionResult:
    """Reconstruct the private batch behind an observation (DLG, iDLG or Inverting Gradients).

    Args:
        threat: What the honest-but-curious server knows (never ground truth).
        config: Attack hyperparameters.

    Returns:
        The reconstruction, the labels used or recovered, and the optimisation record.

    Raises:
        ThreatModelError: If ``threat`` is not an :class:`InversionInputs` (e.g. a :class:`GroundTruth`).
        AttackConfigError: If the configuration is inconsistent with the inputs.
        AttackInputError: If analytic label recovery is requested but impossible.
    """
    _refuse_truth("run_inversion(threat=...)", threat)
    _refuse_truth("run_inversion(config=...)", config)
    if not isinstance(threat, InversionInputs):
        raise ThreatModelError(f"threat must be InversionInputs, got {type(threat).__name__}")
    if not isinstance(config, InversionConfig):
        raise AttackConfigError(f"config must be InversionConfig, got {type(config).__name__}")
    cfg = config.resolved()
    t0 = time.monotonic()
    source, fixed = _labels_for(threat, cfg)
    if fixed is not None:
        fixed = fixed.to(_device(threat))
    best: tuple[Tensor, Tensor, float, list[tuple[int, float]]] | None = None
    dists: list[float] = []
    for r in range(cfg.restarts):
        out = _one_restart(threat, cfg, fixed, cfg.seed + r)
        dists.append(out[2])
        if best is None or out[2] < best[2]:
            best = out
    assert best is not None
    return InversionResult(
        reconstruction=best[0].cpu(),
        labels=best[1].cpu(),
        label_source=source,
        distance=best[2],
        restart_distances=dists,
        history=best[3],
        seconds=time.monotonic() - t0,
        config=cfg,
        observation=threat.observation.describe(),
        box=threat.box,
    )
