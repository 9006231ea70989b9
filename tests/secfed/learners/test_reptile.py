"""Reptile: the update is the (scaled) mean task difference; learning."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from learner_blobs import BlobProblem, mean_accuracy

from secfed.errors import ConfigError
from secfed.learners import LearnerConfig, Reptile
from secfed.models import build_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        arch="mlp", input_shape=(1, 8, 8), num_classes=5, hidden=16, norm="group", num_groups=4
    )


def _mean_task_difference(
    *, model: torch.nn.Module, tasks: list, steps: int, lr: float
) -> dict[str, torch.Tensor]:
    """Nichol et al.'s phi - theta, averaged over tasks, written out with plain SGD."""
    diffs = []
    for task in tasks:
        work = copy.deepcopy(model)
        opt = torch.optim.SGD(work.parameters(), lr=lr)
        x = torch.cat([task.support_x, task.query_x])
        y = torch.cat([task.support_y, task.query_y])
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(work(x), y).backward()
            opt.step()
        diffs.append(
            {
                n: (w.detach() - p.detach())
                for (n, w), p in zip(work.named_parameters(), model.parameters(), strict=True)
            }
        )
    return {n: torch.stack([d[n] for d in diffs]).mean(dim=0) for n in diffs[0]}


@pytest.mark.parametrize("outer_lr", [1.0, 0.5])
def test_single_step_delta_is_scaled_mean_task_difference(outer_lr: float) -> None:
    model = _model()
    problem = BlobProblem()
    cfg = LearnerConfig(
        local_steps=1, meta_batch=3, local_lr=outer_lr, local_optimizer="sgd", inner_steps=4, inner_lr=0.1
    )
    rng = np.random.default_rng(7)
    reference_tasks = [problem.sample(rng=rng) for _ in range(3)]
    expected = _mean_task_difference(model=model, tasks=reference_tasks, steps=4, lr=0.1)
    update = Reptile(config=cfg).local_update(model=model, tasks=problem, rng=np.random.default_rng(7))
    assert update.num_tasks == 3
    for name, diff in expected.items():
        torch.testing.assert_close(update.delta[name], outer_lr * diff, atol=1e-6, rtol=1e-5)


def test_inner_minibatches_change_the_update() -> None:
    problem = BlobProblem()
    full = Reptile(config=LearnerConfig(local_steps=1, inner_steps=3, inner_lr=0.1))
    mini = Reptile(config=LearnerConfig(local_steps=1, inner_steps=3, inner_lr=0.1, reptile_inner_batch=7))
    a = full.local_update(model=_model(), tasks=problem, rng=np.random.default_rng(0))
    b = mini.local_update(model=_model(), tasks=problem, rng=np.random.default_rng(0))
    assert any(not torch.allclose(a.delta[n], b.delta[n]) for n in a.delta)


def test_zero_inner_steps_is_rejected() -> None:
    with pytest.raises(ConfigError, match="inner_steps"):
        Reptile(config=LearnerConfig(inner_steps=0))


def test_meta_training_improves_few_shot_accuracy() -> None:
    problem = BlobProblem()
    torch.manual_seed(0)
    model = build_model(
        arch="mlp", input_shape=(1, 8, 8), num_classes=5, hidden=32, norm="group", num_groups=4
    )
    cfg = LearnerConfig(
        local_steps=120,
        local_lr=0.5,
        local_optimizer="sgd",
        inner_steps=8,
        inner_lr=0.3,
        test_inner_steps=8,
        test_inner_lr=0.3,
        reptile_inner_batch=10,
    )
    learner = Reptile(config=cfg)
    before = mean_accuracy(learner=learner, model=model, problem=problem)
    learner.local_update(model=model, tasks=problem, rng=np.random.default_rng(1))
    after = mean_accuracy(learner=learner, model=model, problem=problem)
    # Measured (3 seeds): 0.49..0.53 -> 0.68..0.79.
    assert after > before + 0.1, (before, after)
