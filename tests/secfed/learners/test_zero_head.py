"""head_init = "zero" (Kao, Chiu & Chen 2022's zeroing trick) for MAML, FOMAML and Reptile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_blobs import BlobProblem, mean_accuracy, mlp_model, scramble_head, vmap_task_grads

from secfed.errors import ConfigError
from secfed.learners import FOMAML, MAML, LearnerConfig, Reptile
from secfed.learners.base import FunctionalModel, SupportSet
from secfed.learners.common import head_names, zero_head
from secfed.models import build_model
from secfed.tasks.base import Task

ZERO = LearnerConfig(head_init="zero", local_steps=3, test_inner_steps=2, inner_lr=0.5, test_inner_lr=0.5)


def _model(*, num_classes: int = 5, norm: str = "group") -> torch.nn.Module:
    return mlp_model(num_classes=num_classes, norm=norm)


def _learner(cls: type, **changes: object) -> MAML | Reptile:
    cfg = LearnerConfig(**{**ZERO.__dict__, **changes})
    if cls is Reptile:
        cfg = LearnerConfig(**{**cfg.__dict__, "inner_steps": 3, "inner_lr": 0.05, "test_inner_lr": 0.05})
    return cls(config=cfg)


@pytest.mark.parametrize("cls", [MAML, FOMAML, Reptile])
def test_predictions_do_not_depend_on_the_stored_head(cls: type) -> None:
    """With a zeroed head, the stored head's values cannot matter; with the learned head they do."""
    task = BlobProblem().sample(rng=np.random.default_rng(0))
    outs = {}
    for head_init in ("zero", "learned"):
        learner = _learner(cls, head_init=head_init)
        got = []
        for seed in (1, 2):
            model = _model()
            scramble_head(model, seed)
            got.append(
                learner.predict(
                    model=model,
                    support_x=task.support_x,
                    support_y=task.support_y,
                    n_way=5,
                    query_x=task.query_x,
                )
            )
        outs[head_init] = got
    torch.testing.assert_close(outs["zero"][0], outs["zero"][1])
    assert not torch.allclose(outs["learned"][0], outs["learned"][1])


@pytest.mark.parametrize("cls", [MAML, FOMAML, Reptile])
def test_update_leaves_the_head_and_trains_the_body(cls: type) -> None:
    model = _model(norm="batch")
    update = _learner(cls).local_update(model=model, tasks=BlobProblem(), rng=np.random.default_rng(1))
    names = head_names(model)
    assert names == ("head.weight", "head.bias")
    for name, delta in update.delta.items():
        if name in names:
            assert torch.count_nonzero(delta) == 0, name
    assert any(torch.count_nonzero(d) > 0 for n, d in update.delta.items() if n not in names)


def test_meta_gradient_of_the_head_is_zero_under_vmap_of_grad() -> None:
    """The privacy layer's per-episode gradients (torch.func) see the zeroed head too."""
    model = _model()
    learner = MAML(config=ZERO)
    problem = BlobProblem(k_shot=2, q_query=3)
    rng = np.random.default_rng(2)
    tasks = [problem.sample(rng=rng) for _ in range(3)]
    g = vmap_task_grads(learner=learner, model=model, tasks=tasks)
    assert torch.count_nonzero(g["head.weight"]) == 0 and torch.count_nonzero(g["head.bias"]) == 0
    assert all(torch.count_nonzero(v) > 0 for n, v in g.items() if not n.startswith("head."))


def test_one_inner_step_from_zero_sets_class_weights_to_centred_support_means() -> None:
    """Kao et al. 2022: after one step from a zero head, w_k = lr/N * (sum of class-k embeddings - mean)."""
    model = _model()
    task = BlobProblem(k_shot=3).sample(rng=np.random.default_rng(3))
    params = zero_head(
        params={n: p.detach().requires_grad_(True) for n, p in model.named_parameters()},
        names=head_names(model),
    )
    from secfed.learners.maml import inner_adapt

    net = FunctionalModel(module=model, params=params, buffers={})
    adapted = inner_adapt(net=net, support=SupportSet.of(task), steps=1, lr=0.7, create_graph=False)
    with torch.no_grad():
        z = model.embed(task.support_x)
        n = z.shape[0]
        onehot = torch.nn.functional.one_hot(task.support_y, 5).float()
        expected = 0.7 / n * (onehot - 1.0 / 5).T @ z
    torch.testing.assert_close(adapted["head.weight"], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(adapted["head.bias"], torch.zeros(5), atol=1e-7, rtol=0)


def test_training_way_may_exceed_test_way() -> None:
    """A zero-head model meta-trained on 10-way tasks (10 outputs) adapts to 5-way tasks."""
    problem = BlobProblem(n_way=10)
    model = _model(num_classes=10, norm="batch")
    learner = MAML(
        config=LearnerConfig(head_init="zero", local_steps=60, local_lr=1e-2, inner_lr=0.5, test_inner_lr=0.5)
    )
    five = BlobProblem(n_way=5)
    before = mean_accuracy(learner=learner, model=model, problem=five)
    learner.local_update(model=model, tasks=problem, rng=np.random.default_rng(4))
    after = mean_accuracy(learner=learner, model=model, problem=five)
    assert after > before + 0.1, (before, after)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="head_init"):
        MAML(config=LearnerConfig(head_init="random"))
    with pytest.raises(ConfigError, match="test_inner_steps"):
        Reptile(config=LearnerConfig(head_init="zero", inner_steps=2, test_inner_steps=0))
    with pytest.raises(ConfigError, match="inner_steps must be >= 2"):
        Reptile(config=LearnerConfig(head_init="zero", inner_steps=1))
    embed_only = build_model(arch="mlp", input_shape=(1, 8, 8), num_classes=None, hidden=16, norm="none")
    with pytest.raises(ConfigError, match="linear head"):
        head_names(embed_only)
    with pytest.raises(ConfigError, match="head parameters"):
        zero_head(params={"x": torch.zeros(1)}, names=("head.weight",))


def test_zero_head_meta_loss_is_invariant_to_relabelling() -> None:
    """What lets the inversion attack treat a zeroed-head episode's label layout as public."""
    model = _model()
    task = BlobProblem(k_shot=2).sample(rng=np.random.default_rng(5))
    perm = torch.tensor([3, 0, 4, 1, 2])
    renamed = Task(task.support_x, perm[task.support_y], task.query_x, perm[task.query_y], 5)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    losses = {}
    for head_init in ("zero", "learned"):
        learner = MAML(config=LearnerConfig(head_init=head_init))
        losses[head_init] = [
            float(learner.task_loss(model=model, params=params, buffers=buffers, task=t).detach())
            for t in (task, renamed)
        ]
    assert abs(losses["zero"][0] - losses["zero"][1]) < 1e-5
    assert abs(losses["learned"][0] - losses["learned"][1]) > 1e-3
