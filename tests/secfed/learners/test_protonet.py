"""ProtoNet: prototype logits, functional loss, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from learner_blobs import BlobProblem, mean_accuracy
from torch.func import grad, vmap

from secfed.errors import DataError
from secfed.learners import LearnerConfig, ProtoNet
from secfed.learners.protonet import prototype_logits
from secfed.models import build_model
from secfed.tasks.base import Task


def test_prototype_logits_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    support = torch.randn(7, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    queries = torch.randn(5, 4, generator=gen)
    logits = prototype_logits(support_emb=support, support_y=labels, n_way=3, query_emb=queries)
    protos = torch.stack([support[labels == k].mean(dim=0) for k in range(3)])
    expected = torch.tensor([[-float(((q - c) ** 2).sum()) for c in protos] for q in queries])
    torch.testing.assert_close(logits, expected)


def _model(norm: str = "group") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        arch="conv4", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm=norm, num_groups=2
    )


def test_task_loss_is_query_cross_entropy_of_predict_logits() -> None:
    model = _model("none")
    task = BlobProblem().sample(rng=np.random.default_rng(0))
    learner = ProtoNet(config=LearnerConfig())
    loss = learner.task_loss(
        model=model, params=dict(model.named_parameters()), buffers=dict(model.named_buffers()), task=task
    )
    logits = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    torch.testing.assert_close(loss.detach(), F.cross_entropy(logits, task.query_y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_vmap_of_grad_matches_per_task_loop(dtype: torch.dtype, tol: float) -> None:
    model = _model("group").to(dtype)
    problem = BlobProblem(k_shot=2, q_query=3)
    rng = np.random.default_rng(1)
    tasks = [problem.sample(rng=rng) for _ in range(3)]
    learner = ProtoNet(config=LearnerConfig())
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, sx, sy, qx, qy):
        return learner.task_loss(model=model, params=p, buffers={}, task=Task(sx, sy, qx, qy, 5))

    fields = ("support_x", "support_y", "query_x", "query_y")
    stacked = [torch.stack([getattr(t, f) for t in tasks]) for f in fields]
    stacked = [s.to(dtype) if s.is_floating_point() else s for s in stacked]
    batched = vmap(grad(loss), in_dims=(None, 0, 0, 0, 0))(params, *stacked)
    for i in range(len(tasks)):
        p = {n: v.detach().clone().requires_grad_(True) for n, v in params.items()}
        one = learner.task_loss(model=model, params=p, buffers={}, task=Task(*(s[i] for s in stacked), 5))
        looped = dict(zip(p, torch.autograd.grad(one, list(p.values())), strict=True))
        for name in params:
            torch.testing.assert_close(batched[name][i], looped[name], atol=tol, rtol=10 * tol)


def test_predict_rejects_missing_class() -> None:
    model = _model()
    task = BlobProblem().sample(rng=np.random.default_rng(2))
    with pytest.raises(DataError, match="no"):
        ProtoNet(config=LearnerConfig()).predict(
            model=model, support_x=task.support_x, support_y=task.support_y, n_way=6, query_x=task.query_x
        )


@pytest.mark.parametrize(("arch", "norm", "lr"), [("conv4", "group", 3e-3), ("mlp", "batch", 1e-2)])
def test_training_improves_few_shot_accuracy(arch: str, norm: str, lr: float) -> None:
    problem = BlobProblem()
    torch.manual_seed(0)
    model = build_model(
        arch=arch, input_shape=(1, 8, 8), num_classes=None, hidden=16, norm=norm, num_groups=4
    )
    learner = ProtoNet(config=LearnerConfig(local_steps=100, local_lr=lr))
    before = mean_accuracy(learner=learner, model=model, problem=problem)
    update = learner.local_update(model=model, tasks=problem, rng=np.random.default_rng(1))
    after = mean_accuracy(learner=learner, model=model, problem=problem)
    # Measured: conv4/group 0.24 -> 0.61.
    assert after > before + 0.2, (before, after)
    assert update.num_tasks == 100 and update.num_examples == 100 * 30
