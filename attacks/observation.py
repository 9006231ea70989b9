"""Observation models: public descriptions of how a client turned its private batch into what the server saw.

An honest-but-curious server knows the global parameters, the training hyperparameters (loss,
learning rates, step counts, batch layout) and receives a gradient, an update, or a secure
aggregate. An :class:`ObservationModel` captures exactly that public knowledge and replays it
differentiably: ``simulate(inputs, labels)`` returns what the server *would* have observed had the
client held ``inputs``/``labels``. Gradient-inversion attacks optimise candidate inputs so that the
simulated observation matches the real one.

Implemented targets:

* :class:`GradientObservation` — a single (mean-reduced) gradient (Zhu et al. 2019; Geiping et al. 2020).
  With :func:`attacks.functional.protonet_episode_loss` it is the ProtoNet episode gradient.
* :class:`MultiStepObservation` — a FedAvg / Reptile update: the parameter difference after
  several local SGD steps, replayed inside autograd (Geiping et al. 2020, Sec. 5).
* :class:`MAMLObservation` — a MAML or first-order MAML meta-gradient (Finn et al. 2017) with the
  inner loop replayed.
* :class:`AggregateObservation` — a weighted sum of several clients' observations, each on its own
  slice of the batch: the secure aggregate (Bonawitz et al. 2017) or a meta-batch average.

No observation model holds private data; all hold only public structure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attacks.errors import AttackConfigError, AttackInputError
from attacks.functional import LossFn

__all__ = [
    "ObservationModel",
    "GradientObservation",
    "MultiStepObservation",
    "MAMLObservation",
    "AggregateObservation",
    "ClientBatch",
    "sequential_batches",
]


def _leaves(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


def _grad(loss: Tensor, params: Mapping[str, Tensor], *, create_graph: bool) -> dict[str, Tensor]:
    names = list(params)
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
    )
    return {n: (torch.zeros_like(params[n]) if g is None else g) for n, g in zip(names, grads, strict=True)}


@dataclass(frozen=True, eq=False)
class ClientBatch:
    """A client's batch at the global model: what an observation is computed from.

    Attributes:
        params: Global parameters by name.
        buffers: Global buffers by name.
        inputs: Inputs ``(N, *input_shape)`` (candidate ones for the attacker, private ones on the client).
        labels: Int64 ``(N,)`` or soft ``(N, C)`` labels.

    Raises:
        AttackInputError: If ``inputs`` and ``labels`` hold different numbers of records.
    """

    params: Mapping[str, Tensor]
    buffers: Mapping[str, Tensor]
    inputs: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.labels.shape[0]:
            raise AttackInputError(
                f"inputs have {self.inputs.shape[0]} records but labels have {self.labels.shape[0]}"
            )

    @property
    def num_records(self) -> int:
        """Records in the batch."""
        return int(self.inputs.shape[0])

    def rows(self, index: Tensor | slice) -> ClientBatch:
        """The same batch restricted to some records.

        Args:
            index: A slice or an int64 index tensor into the records.

        Returns:
            The sub-batch at the same parameters and buffers.
        """
        return ClientBatch(
            params=self.params, buffers=self.buffers, inputs=self.inputs[index], labels=self.labels[index]
        )

    def at(self, params: Mapping[str, Tensor]) -> ClientBatch:
        """The same records at other parameters (the next local step of a replay).

        Args:
            params: The parameters by name.

        Returns:
            The batch at ``params``.
        """
        return ClientBatch(params=params, buffers=self.buffers, inputs=self.inputs, labels=self.labels)


class ObservationModel(ABC):
    """Public, differentiable model of what the server observes from a client's private batch.

    Attributes:
        sign: ``+1`` when the observation is a gradient (loss-increasing direction), ``-1`` when it is
            a parameter difference ``new - old`` produced by descent steps. Analytic label recovery
            (iDLG) uses it.
    """

    sign: float = 1.0

    def simulate(
        self,
        *,
        params: Mapping[str, Tensor],
        buffers: Mapping[str, Tensor],
        inputs: Tensor,
        labels: Tensor,
        create_graph: bool,
    ) -> dict[str, Tensor]:
        """Replay the client's computation on candidate inputs.

        Args:
            params: Global parameters by name (treated as constants by the attacker).
            buffers: Global buffers by name.
            inputs: Candidate (or, on the client, real) inputs ``(N, *input_shape)``.
            labels: Int64 ``(N,)`` or soft ``(N, C)`` labels.
            create_graph: Keep the graph so the result can be differentiated w.r.t. ``inputs``/``labels``.

        Returns:
            The observation, a tensor per parameter name.

        Raises:
            AttackInputError: If the batch does not fit the model's public batch layout.
        """
        batch = ClientBatch(params=params, buffers=buffers, inputs=inputs, labels=labels)
        return self._replay(batch, create_graph=create_graph)

    @abstractmethod
    def _replay(self, batch: ClientBatch, *, create_graph: bool) -> dict[str, Tensor]:
        """:meth:`simulate` on a checked batch (each model's own computation)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the public hyperparameters."""

    def observe(
        self, *, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Tensor, labels: Tensor
    ) -> dict[str, Tensor]:
        """Compute the real observation on the client's side (for experiments and tests).

        Args:
            params: Global parameters by name.
            buffers: Global buffers by name.
            inputs: The client's private inputs.
            labels: The client's private labels.

        Returns:
            The detached observation, a tensor per parameter name.

        Raises:
            AttackInputError: If the batch does not fit the model's public batch layout.
        """
        return self.observe_batch(ClientBatch(params=params, buffers=buffers, inputs=inputs, labels=labels))

    def observe_batch(self, batch: ClientBatch) -> dict[str, Tensor]:
        """:meth:`observe` on a :class:`ClientBatch`.

        Args:
            batch: The client's private batch at the global parameters.

        Returns:
            The detached observation, a tensor per parameter name.

        Raises:
            AttackInputError: If the batch does not fit the model's public batch layout.
        """
        out = self._replay(batch, create_graph=False)
        return {k: v.detach() for k, v in out.items()}


@dataclass(frozen=True)
class GradientObservation(ObservationModel):
    """The gradient of ``loss_fn`` at the global parameters (one FedSGD step, or a ProtoNet episode).

    Attributes:
        loss_fn: Functional loss, e.g. :func:`attacks.functional.classification_loss` or
            :func:`attacks.functional.protonet_episode_loss`.
    """

    loss_fn: LossFn

    def _replay(self, batch: ClientBatch, *, create_graph: bool) -> dict[str, Tensor]:
        theta = _leaves(batch.params)
        loss = self.loss_fn(theta, batch.buffers, batch.inputs, batch.labels)
        return _grad(loss, theta, create_graph=create_graph)

    def describe(self) -> dict[str, Any]:
        """See :meth:`ObservationModel.describe`."""
        return {"kind": "gradient"}


def sequential_batches(*, num_records: int, batch_size: int, steps: int) -> tuple[tuple[int, ...], ...]:
    """Batch layout of ``steps`` local steps taking consecutive mini-batches, cycling over the records.

    Args:
        num_records: Records the client holds.
        batch_size: Records per step (``<= num_records``).
        steps: Local steps.

    Returns:
        A tuple of index tuples, one per step.

    Raises:
        AttackConfigError: If a count is out of range.
    """
    if num_records < 1 or steps < 1 or not 1 <= batch_size <= num_records:
        raise AttackConfigError(
            f"need num_records >= 1, steps >= 1 and 1 <= batch_size <= num_records; got "
            f"num_records={num_records}, batch_size={batch_size}, steps={steps}"
        )
    out = []
    pos = 0
    for _ in range(steps):
        out.append(tuple((pos + i) % num_records for i in range(batch_size)))
        pos = (pos + batch_size) % num_records
    return tuple(out)


@dataclass(frozen=True)
class MultiStepObservation(ObservationModel):
    """A local update ``scale * (theta_T - theta_0)`` after T plain SGD steps (FedAvg, Reptile).

    The replay ``theta_{t+1} = theta_t - lr * grad loss_fn(theta_t; batch_t)`` is differentiated end
    to end (Geiping et al. 2020, "Inverting Gradients", Sec. 5). A Reptile update (Nichol et al.
    2018) is exactly such a difference, with ``scale`` the outer step size.

    With ``zeroed`` (Reptile with ``head_init="zero"``, Kao, Chiu & Chen 2022) those parameters
    start the replay at zero (``p * 0``, in the graph) and their difference is not sent: the
    update holds zeros for them and ``scale * (theta_T - theta_0')`` for the rest, where
    ``theta_0'`` is the global model with the zeroed parameters set to zero.

    Attributes:
        loss_fn: Per-step functional loss.
        lr: Local SGD learning rate.
        batches: Indices into the client's records used at each step (see :func:`sequential_batches`).
        scale: Multiplier applied to the parameter difference (1 for FedAvg deltas).
        zeroed: Parameters the client zeroes before its steps and leaves out of the update.
    """

    loss_fn: LossFn
    lr: float
    batches: tuple[tuple[int, ...], ...]
    scale: float = 1.0
    zeroed: tuple[str, ...] = ()
    sign = -1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise AttackConfigError(f"lr must be > 0, got {self.lr}")
        if len(self.batches) == 0 or any(len(b) == 0 for b in self.batches):
            raise AttackConfigError("batches must hold at least one non-empty step")
        if any(int(i) < 0 for b in self.batches for i in b):
            raise AttackConfigError("batch indices must be non-negative")

    @property
    def steps(self) -> int:
        """Number of local steps."""
        return len(self.batches)

    def _replay(self, batch: ClientBatch, *, create_graph: bool) -> dict[str, Tensor]:
        top = max(max(b) for b in self.batches)
        if top >= batch.num_records:
            raise AttackInputError(
                f"batch layout indexes record {top} but only {batch.num_records} records were given"
            )
        theta0 = _zeroed_start(_leaves(batch.params), self.zeroed)
        theta = dict(theta0)
        for step in self.batches:
            idx = torch.tensor(step, dtype=torch.long, device=batch.inputs.device)
            g = _grad(
                self.loss_fn(theta, batch.buffers, batch.inputs[idx], batch.labels[idx]),
                theta,
                create_graph=create_graph,
            )
            if create_graph:
                theta = {k: theta[k] - self.lr * g[k] for k in theta}
            else:
                theta = {k: (theta[k] - self.lr * g[k]).detach().requires_grad_(True) for k in theta}
        out = {k: (theta0[k] if k in self.zeroed else self.scale * (theta[k] - theta0[k])) for k in theta}
        return out if create_graph else {k: v.detach() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        """See :meth:`ObservationModel.describe`."""
        return {
            "kind": "multi_step",
            "lr": self.lr,
            "steps": self.steps,
            "batches": [list(b) for b in self.batches],
            "scale": self.scale,
            "zeroed": list(self.zeroed),
        }


def _zeroed_start(theta: Mapping[str, Tensor], zeroed: tuple[str, ...]) -> dict[str, Tensor]:
    """``theta`` with the ``zeroed`` parameters set to zero as ``p * 0``: still in the graph, with a
    zero gradient, as the learners zero their heads (Kao, Chiu & Chen 2022)."""
    missing = [k for k in zeroed if k not in theta]
    if missing:
        raise AttackConfigError(f"zeroed parameters {missing} are not among the model's parameters")
    return {k: (v * 0 if k in zeroed else v) for k, v in theta.items()}


@dataclass(frozen=True)
class MAMLObservation(ObservationModel):
    """The MAML (or first-order MAML) meta-gradient of one episode (Finn et al. 2017).

    ``inputs`` holds the ``n_support`` support records followed by the query records. The inner
    loop takes ``inner_steps`` SGD steps of ``loss_fn`` on the support set; the observation is the
    gradient of the query loss at the adapted parameters, taken w.r.t. the initial parameters
    (MAML) or w.r.t. the adapted parameters (FOMAML). Either way the attacker's replay keeps the
    graph from the support inputs through the adapted parameters.

    Attributes:
        loss_fn: Functional loss of the inner and outer objective.
        n_support: Number of support records at the front of the batch.
        inner_steps: Inner SGD steps.
        inner_lr: Inner learning rate.
        first_order: True for FOMAML.
        zeroed: Parameters the client sets to zero before the inner loop (the linear head under
            ``head_init="zero"``, Kao et al. 2022); their observed gradient is zero.
    """

    loss_fn: LossFn
    n_support: int
    inner_steps: int
    inner_lr: float
    first_order: bool = False
    zeroed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n_support < 1:
            raise AttackConfigError(f"n_support must be >= 1, got {self.n_support}")
        if self.inner_steps < 0:
            raise AttackConfigError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if not self.inner_lr > 0:
            raise AttackConfigError(f"inner_lr must be > 0, got {self.inner_lr}")

    def _replay(self, batch: ClientBatch, *, create_graph: bool) -> dict[str, Tensor]:
        if batch.num_records <= self.n_support:
            raise AttackInputError(
                f"an episode needs more than n_support={self.n_support} records, got {batch.num_records}"
            )
        buffers = batch.buffers
        xs, ys = batch.inputs[: self.n_support], batch.labels[: self.n_support]
        xq, yq = batch.inputs[self.n_support :], batch.labels[self.n_support :]
        theta0 = _leaves(batch.params)
        # Second-order MAML needs the inner graph on the client too; the attacker always needs it.
        keep = create_graph or not self.first_order
        phi = _zeroed_start(theta0, self.zeroed)
        for _ in range(self.inner_steps):
            g = _grad(self.loss_fn(phi, buffers, xs, ys), phi, create_graph=keep)
            phi = {k: phi[k] - self.inner_lr * g[k] for k in phi}
        outer = self.loss_fn(phi, buffers, xq, yq)
        wrt = phi if self.first_order else theta0
        grads = _grad(outer, wrt, create_graph=create_graph)
        for k in self.zeroed:  # FOMAML's first-order gradient never reaches the stored head
            grads[k] = torch.zeros_like(grads[k])
        return grads

    def describe(self) -> dict[str, Any]:
        """See :meth:`ObservationModel.describe`."""
        return {
            "kind": "fomaml" if self.first_order else "maml",
            "n_support": self.n_support,
            "inner_steps": self.inner_steps,
            "inner_lr": self.inner_lr,
            "zeroed": list(self.zeroed),
        }


@dataclass(frozen=True)
class AggregateObservation(ObservationModel):
    """A weighted sum of several observations, each computed on its own consecutive slice of the batch.

    With unit weights and one part per client this is what secure aggregation (Bonawitz et al.
    2017) reveals: only the sum of the clients' updates. The attacker then reconstructs the union
    of all clients' batches without knowing which record came from which client beyond the public
    batch sizes. With weights ``1/T`` over T episodes it is a meta-batch average.

    Attributes:
        parts: ``(observation model, number of records)`` per summand, in batch order.
        weights: One weight per part (default all ones).
    """

    parts: tuple[tuple[ObservationModel, int], ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.parts) == 0:
            raise AttackConfigError("an aggregate needs at least one part")
        if any(int(n) < 1 for _, n in self.parts):
            raise AttackConfigError("every part must own at least one record")
        if any(not isinstance(m, ObservationModel) for m, _ in self.parts):
            raise AttackConfigError("every part must be an ObservationModel")
        signs = {m.sign for m, _ in self.parts}
        if len(signs) != 1:
            raise AttackConfigError("all parts of an aggregate must observe the same kind of quantity")
        if self.weights is not None and len(self.weights) != len(self.parts):
            raise AttackConfigError(f"weights has {len(self.weights)} entries for {len(self.parts)} parts")
        object.__setattr__(self, "sign", next(iter(signs)))

    @property
    def num_records(self) -> int:
        """Records in the union batch."""
        return sum(int(n) for _, n in self.parts)

    def _replay(self, batch: ClientBatch, *, create_graph: bool) -> dict[str, Tensor]:
        if batch.num_records != self.num_records:
            raise AttackInputError(
                f"the aggregate covers {self.num_records} records, got {batch.num_records}"
            )
        weights: Sequence[float] = self.weights if self.weights is not None else [1.0] * len(self.parts)
        total: dict[str, Tensor] = {}
        start = 0
        for (model, n), w in zip(self.parts, weights, strict=True):
            obs = model._replay(batch.rows(slice(start, start + n)), create_graph=create_graph)
            start += n
            for k, v in obs.items():
                total[k] = total[k] + w * v if k in total else w * v
        return total

    def describe(self) -> dict[str, Any]:
        """See :meth:`ObservationModel.describe`."""
        return {
            "kind": "aggregate",
            "parts": [{"records": int(n), **m.describe()} for m, n in self.parts],
            "weights": list(self.weights) if self.weights is not None else None,
        }
