"""Tiny synthetic few-shot problems for the learner tests.

Classes are Gaussian blobs shaped as 1x8x8 images: a class is defined only by the 16 pixels of the
top two rows (its mean there), while the other 48 pixels carry large class-independent noise. An
untrained network mixes signal and nuisance pixels; a trained one learns to ignore the nuisance,
so few-shot accuracy can rise well above its starting point.
"""

from __future__ import annotations

import numpy as np
import torch

from secfed.learners.common import head_names
from secfed.models import build_model
from secfed.tasks.base import Task

SIGNAL = 16
SHAPE = (1, 8, 8)


class BlobProblem:
    """Episodic tasks and supervised batches over a fixed pool of blob classes."""

    def __init__(
        self,
        *,
        num_classes: int = 40,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 5,
        seed: int = 0,
        separation: float = 2.0,
        signal_noise: float = 0.5,
        nuisance: float = 2.0,
        classes: np.ndarray | None = None,
    ) -> None:
        g = np.random.default_rng(seed)
        self.means = g.normal(size=(num_classes, SIGNAL)) * separation
        self.classes = np.arange(num_classes) if classes is None else np.asarray(classes)
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.signal_noise, self.nuisance = signal_noise, nuisance

    def _records(self, *, rng: np.random.Generator, labels: np.ndarray) -> torch.Tensor:
        n = labels.shape[0]
        x = np.empty((n, 64), dtype=np.float32)
        x[:, :SIGNAL] = self.means[labels] + self.signal_noise * rng.standard_normal((n, SIGNAL))
        x[:, SIGNAL:] = self.nuisance * rng.standard_normal((n, 64 - SIGNAL))
        return torch.from_numpy(x.reshape(n, *SHAPE))

    def sample(self, *, rng: np.random.Generator) -> Task:
        """One task: class-major support, then queries; labels relabelled to 0..n_way-1."""
        chosen = rng.choice(self.classes, size=self.n_way, replace=False)
        sy = np.repeat(np.arange(self.n_way), self.k_shot)
        qy = np.repeat(np.arange(self.n_way), self.q_query)
        return Task(
            support_x=self._records(rng=rng, labels=chosen[sy]),
            support_y=torch.from_numpy(sy.astype(np.int64)),
            query_x=self._records(rng=rng, labels=chosen[qy]),
            query_y=torch.from_numpy(qy.astype(np.int64)),
            n_way=self.n_way,
        )

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Records of the pool classes with their global labels (index into ``self.classes``)."""
        y = rng.integers(0, len(self.classes), size=batch_size)
        return self._records(rng=rng, labels=self.classes[y]), torch.from_numpy(y.astype(np.int64))


def mean_accuracy(*, learner, model, problem: BlobProblem, episodes: int = 40, seed: int = 123) -> float:
    """Mean query accuracy over a fixed set of evaluation episodes."""
    rng = np.random.default_rng(seed)
    return float(
        np.mean([learner.evaluate(model=model, task=problem.sample(rng=rng)) for _ in range(episodes)])
    )


def vmap_task_grads(*, learner, model, tasks: list[Task]) -> dict[str, torch.Tensor]:
    """``vmap(grad(task_loss))`` over same-shaped tasks: per-task meta-gradients stacked on dim 0."""
    from torch.func import grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    n_way = tasks[0].n_way

    def loss(p, sx, sy, qx, qy):
        return learner.task_loss(model=model, params=p, buffers=buffers, task=Task(sx, sy, qx, qy, n_way))

    fields = ("support_x", "support_y", "query_x", "query_y")
    stacked = [torch.stack([getattr(t, f) for t in tasks]) for f in fields]
    return vmap(grad(loss), in_dims=(None, 0, 0, 0, 0))(params, *stacked)


def mlp_model(*, num_classes: int | None, norm: str = "group", seed: int = 0) -> torch.nn.Module:
    """A small MLP for the blob problems (linear head of ``num_classes`` outputs), seeded."""
    torch.manual_seed(seed)
    return build_model(
        arch="mlp", input_shape=SHAPE, num_classes=num_classes, hidden=16, norm=norm, num_groups=4
    )


def scramble_head(model: torch.nn.Module, seed: int) -> None:
    """Overwrite the model's linear head with large random values (so a head init is visible)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in head_names(model):
            p = model.get_parameter(name)
            p.copy_(torch.randn(p.shape, generator=g) * 3)
