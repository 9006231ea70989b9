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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks.errors import AttackConfigError, AttackInputError, ThreatModelError
from attacks.image_metrics import as_images, label_accuracy, match_reconstructions, psnr, ssim
from attacks.image_metrics import mse as mse_metric
from attacks.label_recovery import batch_labels_from_last_layer, find_last_layer, label_counts_by_simulation
from attacks.observation import AggregateObservation, MultiStepObservation, ObservationModel
from attacks.plots import save_image_grid

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

_METHODS = ("dlg", "idlg", "ig")
_OPTIMIZERS = ("adam", "lbfgs")
_DISTANCES = ("cosine", "l2")
_LABELS = ("auto", "known", "analytic", "joint")
_INITS = ("uniform", "gaussian", "gray")


@dataclass(frozen=True)
class GroundTruth:
    """The client's private batch. Used only for scoring; no attack accepts it.

    Attributes:
        inputs: Private inputs ``(N, *input_shape)``.
        labels: Private labels ``(N,)`` (int64).
    """

    inputs: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not isinstance(self.labels, Tensor):
            raise AttackInputError("GroundTruth.inputs and .labels must be tensors")
        if self.inputs.shape[0] != self.labels.shape[0] or self.labels.ndim != 1:
            raise AttackInputError(
                f"GroundTruth needs labels of shape ({self.inputs.shape[0]},), got {tuple(self.labels.shape)}"
            )


def _refuse_truth(where: str, value: object) -> None:
    if isinstance(value, GroundTruth):
        raise ThreatModelError(f"{where} received a GroundTruth: ground truth is available to scoring only")


@dataclass(frozen=True)
class InversionInputs:
    """What an honest-but-curious server knows when it attacks one observation.

    Attributes:
        model: The global model (structure; its parameters are the defaults for ``params``).
            Its train/eval mode must match the client's (e.g. BatchNorm).
        observed: The observation the server received, by parameter name (gradient, update, or
            aggregate). Only these names are matched.
        observation: Public description of how the observation was produced.
        num_records: Records behind the observation (for an aggregate: the union over clients).
        input_shape: Shape of one input record, e.g. ``(1, 28, 28)``.
        num_classes: Output classes (``n_way`` for an episode).
        params: Global parameters the client started from (default: the model's own).
        buffers: Global buffers (default: the model's own).
        known_labels: Publicly known label layout, ``(num_records,)`` int64 (e.g. the relabelled
            ProtoNet episode from :func:`attacks.functional.protonet_episode_labels`); ``None`` when
            labels are private.
        box: Public input domain ``(low, high)``; reconstructions are kept inside it.
    """

    model: nn.Module
    observed: Mapping[str, Tensor]
    observation: ObservationModel
    num_records: int
    input_shape: tuple[int, ...]
    num_classes: int
    params: Mapping[str, Tensor] | None = None
    buffers: Mapping[str, Tensor] | None = None
    known_labels: Tensor | None = None
    box: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _refuse_truth(f"InversionInputs.{f.name}", getattr(self, f.name))
        if not isinstance(self.model, nn.Module):
            raise ThreatModelError(
                f"InversionInputs.model must be an nn.Module, got {type(self.model).__name__}"
            )
        if not isinstance(self.observation, ObservationModel):
            raise ThreatModelError(
                "InversionInputs.observation must be an ObservationModel, "
                f"got {type(self.observation).__name__}"
            )
        if not isinstance(self.observed, Mapping) or len(self.observed) == 0:
            raise AttackInputError("InversionInputs.observed must be a non-empty mapping of name -> tensor")
        if not all(isinstance(v, Tensor) for v in self.observed.values()):
            raise AttackInputError("every InversionInputs.observed value must be a tensor")
        if int(self.num_records) < 1 or int(self.num_classes) < 1:
            raise AttackInputError(
                f"num_records and num_classes must be >= 1, got {self.num_records} and {self.num_classes}"
            )
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) == 0 or any(s < 1 for s in shape):
            raise AttackInputError(
                f"input_shape must be a non-empty tuple of positive ints, got {self.input_shape}"
            )
        object.__setattr__(self, "input_shape", shape)
        lo, hi = (float(b) for b in self.box)
        if not lo < hi:
            raise AttackInputError(f"box must satisfy low < high, got {self.box}")
        object.__setattr__(self, "box", (lo, hi))
        params = (
            dict(self.params)
            if self.params is not None
            else {n: p.detach().clone() for n, p in self.model.named_parameters()}
        )
        buffers = (
            dict(self.buffers)
            if self.buffers is not None
            else {n: b.detach().clone() for n, b in self.model.named_buffers()}
        )
        missing = [k for k in self.observed if k not in params]
        if missing:
            raise AttackInputError(f"observed names not among the model's parameters: {missing[:5]}")
        for k, v in self.observed.items():
            if v.shape != params[k].shape:
                raise AttackInputError(
                    f"observed[{k!r}] has shape {tuple(v.shape)}, parameter has {tuple(params[k].shape)}"
                )
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "buffers", buffers)
        object.__setattr__(self, "observed", {k: v.detach() for k, v in self.observed.items()})
        if self.known_labels is not None:
            kl = self.known_labels
            if not isinstance(kl, Tensor) or kl.shape != (self.num_records,) or kl.is_floating_point():
                raise AttackInputError(
                    f"known_labels must be an integer tensor of shape ({self.num_records},)"
                )
            if int(kl.min()) < 0 or int(kl.max()) >= self.num_classes:
                raise AttackInputError(f"known_labels must lie in [0, {self.num_classes})")
        obs = self.observation
        if isinstance(obs, AggregateObservation) and obs.num_records != self.num_records:
            raise AttackInputError(
                f"the aggregate covers {obs.num_records} records but num_records={self.num_records}"
            )
        if isinstance(obs, MultiStepObservation):
            top = max(max(b) for b in obs.batches)
            if top >= self.num_records:
                raise AttackInputError(
                    f"the batch layout indexes record {top} but num_records={self.num_records}"
                )


@dataclass(frozen=True)
class InversionConfig:
    """Attack hyperparameters. ``None`` fields take the method's default (see :meth:`resolved`).

    Attributes:
        method: ``"dlg"``, ``"idlg"`` or ``"ig"``.
        iterations: Optimisation steps per restart.
        restarts: Independent restarts; the one with the lowest observation distance is kept.
        lr: Step size (default 0.1 for Adam, 1.0 for L-BFGS).
        optimizer: ``"adam"`` or ``"lbfgs"`` (default: L-BFGS for DLG/iDLG, Adam for IG).
        signed_gradients: Use the sign of the input gradient in Adam (default: True for IG).
        tv_weight: Total-variation weight (default: 1e-4 for IG, 0 for DLG/iDLG).
        distance: ``"cosine"`` or ``"l2"`` (default: cosine for IG, L2 for DLG/iDLG).
        label_strategy: ``"known"`` (use the public layout), ``"analytic"`` (iDLG for one record;
            for a batch, label counts from the last-layer bias by replay, see
            :func:`attacks.label_recovery.label_counts_by_simulation`), ``"joint"`` (optimise soft
            labels, DLG) or ``"auto"``: known if given, else joint for DLG and analytic for
            iDLG/IG (joint when no classification layer exists).
        init: ``"uniform"`` in the box, ``"gaussian"`` around its centre, or ``"gray"`` (centre
            plus tiny noise).
        clamp: Project inputs into the box after every step (default: True for IG).
        lr_decay: Multiply the Adam step size by 0.1 at 3/8, 5/8 and 7/8 of the iterations.
        seed: Seed of the initialisation (restart ``r`` uses ``seed + r``).
        record_every: Record the loss every this many iterations.
        max_seconds: Optional wall-clock budget per restart.
    """

    method: str = "ig"
    iterations: int = 200
    restarts: int = 1
    lr: float | None = None
    optimizer: str | None = None
    signed_gradients: bool | None = None
    tv_weight: float | None = None
    distance: str | None = None
    label_strategy: str = "auto"
    init: str = "uniform"
    clamp: bool | None = None
    lr_decay: bool = True
    seed: int = 0
    record_every: int = 10
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        checks = (
            ("method", self.method, _METHODS),
            ("label_strategy", self.label_strategy, _LABELS),
            ("init", self.init, _INITS),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise AttackConfigError(f"InversionConfig.{name} must be one of {allowed}, got {value!r}")
        if self.optimizer is not None and self.optimizer not in _OPTIMIZERS:
            raise AttackConfigError(
                f"InversionConfig.optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.distance is not None and self.distance not in _DISTANCES:
            raise AttackConfigError(
                f"InversionConfig.distance must be one of {_DISTANCES}, got {self.distance!r}"
            )
        if self.iterations < 1 or self.restarts < 1 or self.record_every < 1:
            raise AttackConfigError("InversionConfig.iterations, restarts and record_every must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise AttackConfigError(f"InversionConfig.lr must be > 0, got {self.lr}")
        if self.tv_weight is not None and self.tv_weight < 0:
            raise AttackConfigError(f"InversionConfig.tv_weight must be >= 0, got {self.tv_weight}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise AttackConfigError(f"InversionConfig.max_seconds must be > 0, got {self.max_seconds}")
        if self.method == "idlg" and self.label_strategy == "joint":
            raise AttackConfigError(
                "method 'idlg' recovers labels analytically; label_strategy='joint' is DLG"
            )

    def resolved(self) -> InversionConfig:
        """A copy with every ``None`` field replaced by the method's default."""
        ig = self.method == "ig"
        opt = self.optimizer or ("adam" if ig else "lbfgs")
        return dataclasses.replace(
            self,
            optimizer=opt,
            lr=self.lr if self.lr is not None else (0.1 if opt == "adam" else 1.0),
            signed_gradients=self.signed_gradients if self.signed_gradients is not None else ig,
            tv_weight=self.tv_weight if self.tv_weight is not None else (1e-4 if ig else 0.0),
            distance=self.distance or ("cosine" if ig else "l2"),
            clamp=self.clamp if self.clamp is not None else ig,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


@dataclass
class InversionResult:
    """Output of :func:`run_inversion`.

    Attributes:
        reconstruction: Reconstructed inputs ``(num_records, *input_shape)``, inside the box.
        labels: Hard labels the attack used or recovered, ``(num_records,)``.
        label_source: ``"known"``, ``"analytic"`` or ``"joint"``.
        distance: Observation distance of the kept restart (the method's distance, no prior).
        restart_distances: Final distance of every restart.
        history: ``(iteration, total loss)`` of the kept restart every ``record_every`` steps.
        seconds: Wall-clock time of the whole attack.
        config: The resolved configuration.
        observation: Description of the attacked observation model.
        box: Input domain.
    """

    reconstruction: Tensor
    labels: Tensor
    label_source: str
    distance: float
    restart_distances: list[float]
    history: list[tuple[int, float]]
    seconds: float
    config: InversionConfig
    observation: dict[str, Any]
    box: tuple[float, float]

    def to_dict(self, *, include_reconstruction: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary.

        Args:
            include_reconstruction: Also include the reconstruction as nested lists.

        Returns:
            A dict of plain Python values.
        """
        out: dict[str, Any] = {
            "labels": [int(v) for v in self.labels.tolist()],
            "label_source": self.label_source,
            "distance": _finite(self.distance),
            "restart_distances": [_finite(d) for d in self.restart_distances],
            "history": [[int(i), _finite(v)] for i, v in self.history],
            "seconds": self.seconds,
            "config": self.config.to_dict(),
            "observation": self.observation,
            "box": list(self.box),
            "reconstruction_shape": list(self.reconstruction.shape),
        }
        if include_reconstruction:
            out["reconstruction"] = self.reconstruction.tolist()
        return out

    def save_reconstruction(self, *, path: str | Path) -> Path:
        """Write the reconstruction as a ``.npy`` file (no pickle).

        Args:
            path: Output path.

        Returns:
            The written path.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, self.reconstruction.numpy(), allow_pickle=False)
        return out


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


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


@dataclass
class InversionScore:
    """How close a reconstruction came to the private batch (scoring side only).

    Attributes:
        mse: Mean MSE over matched pairs.
        psnr: Mean PSNR (dB) over matched pairs.
        ssim: Mean SSIM over matched pairs (``None`` when records are not images).
        label_accuracy: Label agreement over matched pairs (``None`` when labels were public).
        flat_baseline_psnr: Mean PSNR of the best flat image (each original's own mean value): a
            reconstruction below this carries no more than the average brightness.
        per_record: Per matched pair: reconstruction index, original index, mse, psnr, ssim.
        num_reconstructed: Records reconstructed.
        num_original: Records in the ground truth.
    """

    mse: float
    psnr: float
    ssim: float | None
    label_accuracy: float | None
    flat_baseline_psnr: float
    per_record: list[dict[str, Any]] = field(default_factory=list)
    num_reconstructed: int = 0
    num_original: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


def _pairs(result: InversionResult, truth: GroundTruth) -> tuple[np.ndarray, np.ndarray]:
    if tuple(result.reconstruction.shape[1:]) != tuple(truth.inputs.shape[1:]):
        raise AttackInputError(
            f"reconstruction records {tuple(result.reconstruction.shape[1:])} differ from ground truth "
            f"{tuple(truth.inputs.shape[1:])}"
        )
    return match_reconstructions(reconstructions=result.reconstruction, originals=truth.inputs)


def score_inversion(
    *, result: InversionResult, truth: GroundTruth, image_shape: tuple[int, ...] | None = None
) -> InversionScore:
    """Score a reconstruction against the private batch after optimal (Hungarian) matching.

    Args:
        result: Output of :func:`run_inversion`.
        truth: The private batch.
        image_shape: ``(C, H, W)`` to view flat records as images for SSIM (default: the record shape
            when it is 2-D or 3-D; otherwise SSIM is skipped).

    Returns:
        The score.

    Raises:
        AttackInputError: If shapes are inconsistent.
    """
    if not isinstance(result, InversionResult) or not isinstance(truth, GroundTruth):
        raise AttackInputError("score_inversion needs an InversionResult and a GroundTruth")
    rows, cols = _pairs(result, truth)
    rng = float(result.box[1] - result.box[0])
    rec = result.reconstruction.detach().double()
    org = truth.inputs.detach().double()
    images = None
    try:
        images = (
            as_images(batch=rec, image_shape=image_shape),
            as_images(batch=org, image_shape=image_shape),
        )
    except AttackInputError:
        if image_shape is not None:
            raise
    per: list[dict[str, Any]] = []
    base: list[float] = []
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        entry: dict[str, Any] = {
            "reconstruction": int(r),
            "original": int(c),
            "mse": mse_metric(x=rec[r], y=org[c]),
            "psnr": psnr(x=rec[r], y=org[c], data_range=rng),
            "ssim": None,
        }
        if images is not None:
            entry["ssim"] = ssim(x=images[0][r], y=images[1][c], data_range=rng)
        per.append(entry)
        base.append(psnr(x=torch.full_like(org[c], float(org[c].mean())), y=org[c], data_range=rng))
    lab = None
    if result.label_source != "known":
        lab = label_accuracy(predicted=result.labels, true=truth.labels, rows=rows, cols=cols)
    return InversionScore(
        mse=float(np.mean([p["mse"] for p in per])),
        psnr=float(np.mean([p["psnr"] for p in per])),
        ssim=float(np.mean([p["ssim"] for p in per])) if images is not None else None,
        label_accuracy=lab,
        flat_baseline_psnr=float(np.mean(base)),
        per_record=per,
        num_reconstructed=int(result.reconstruction.shape[0]),
        num_original=int(truth.inputs.shape[0]),
    )


def save_inversion_grid(
    *,
    path: str | Path,
    result: InversionResult,
    truth: GroundTruth,
    image_shape: tuple[int, ...] | None = None,
) -> Path:
    """PNG with the originals in the top row and their matched reconstructions below (scoring side).

    Args:
        path: Output ``.png`` path.
        result: Output of :func:`run_inversion`.
        truth: The private batch.
        image_shape: ``(C, H, W)`` to view flat records as images.

    Returns:
        The written path.

    Raises:
        AttackInputError: If records cannot be viewed as images.
    """
    rows, cols = _pairs(result, truth)
    rec = as_images(batch=result.reconstruction, image_shape=image_shape)[rows]
    org = as_images(batch=truth.inputs, image_shape=image_shape)[cols]
    return save_image_grid(
        path=path,
        rows=[("original", org), (f"{result.config.method} reconstruction", rec)],
        value_range=result.box,
    )
