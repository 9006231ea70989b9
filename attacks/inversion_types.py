"""What the gradient-inversion attack takes and returns (:mod:`attacks.inversion` runs it).

* :class:`InversionInputs`: everything an honest-but-curious server knows about one observation
  (the threat model); it refuses a :class:`GroundTruth` (:class:`~attacks.errors.ThreatModelError`).
* :class:`GroundTruth`: the client's private batch, for scoring only (:mod:`attacks.inversion_scoring`).
* :class:`InversionConfig`: the method (DLG, iDLG, Inverting Gradients) and its options.
* :class:`InversionResult`: the reconstruction, its labels and the optimisation's record.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from attacks.errors import AttackConfigError, AttackInputError, ThreatModelError
from attacks.observation import AggregateObservation, MultiStepObservation, ObservationModel

__all__ = ["GroundTruth", "InversionInputs", "InversionConfig", "InversionResult"]

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
