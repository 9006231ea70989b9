"""FedAvg: supervised local training with global labels, prototype-initialised test-time head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_blobs import BlobProblem, mean_accuracy
from torch import nn

from secfed.errors import ConfigError, DataError
from secfed.learners import FedAvgLearner, LearnerConfig, SupervisedBatchSource
from secfed.learners.protonet import prototype_logits
from secfed.models import build_model
from secfed.tasks.base import Task


class _TasksOnly:
    """A plain TaskSource (no sample_batch): FedAvg's documented fallback."""

    def __init__(self, problem: BlobProblem) -> None:
        self._problem = problem

    def sample(self, *, rng: np.random.Generator) -> Task:
        return self._problem.sample(rng=rng)


def _model(num_classes: int = 30, norm: str = "batch", arch: str = "conv4") -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        arch=arch, input_shape=(1, 8, 8), num_classes=num_classes, hidden=16, norm=norm, num_groups=4
    )


def test_source_kinds_are_recognised() -> None:
    assert isinstance(BlobProblem(), SupervisedBatchSource)
    assert not isinstance(_TasksOnly(BlobProblem()), SupervisedBatchSource)


@pytest.mark.parametrize("arch", ["conv4", "mlp"])
def test_supervised_training_improves_few_shot_accuracy_on_novel_classes(arch: str) -> None:
    train = BlobProblem(classes=np.arange(30))
    test = BlobProblem(classes=np.arange(30, 40))
    model = _model(num_classes=30, arch=arch)
    learner = FedAvgLearner(
        config=LearnerConfig(local_steps=100, local_lr=3e-3, test_inner_steps=10, test_inner_lr=0.1)
    )
    before = mean_accuracy(learner=learner, model=model, problem=test)
    update = learner.local_update(model=model, tasks=train, rng=np.random.default_rng(1))
    after = mean_accuracy(learner=learner, model=model, problem=test)
    assert after > before + 0.2, (before, after)
    assert update.num_tasks == 100 and update.num_examples == 100 * 32


def test_task_source_fallback_trains_on_task_labels() -> None:
    model = _model(num_classes=5)
    learner = FedAvgLearner(config=LearnerConfig(local_steps=3, meta_batch=2))
    update = learner.local_update(model=model, tasks=_TasksOnly(BlobProblem()), rng=np.random.default_rng(0))
    assert update.num_tasks == 6 and update.num_examples == 6 * 30
    assert any(float(d.abs().max()) > 0 for d in update.delta.values())


def test_label_outside_head_is_rejected_before_training() -> None:
    model = _model(num_classes=10)  # the source's labels go up to 39
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(DataError, match="outside"):
        FedAvgLearner(config=LearnerConfig(local_steps=5, batch_size=64)).local_update(
            model=model, tasks=BlobProblem(), rng=np.random.default_rng(0)
        )
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_unknown_source_is_rejected() -> None:
    with pytest.raises(ConfigError, match="SupervisedBatchSource"):
        FedAvgLearner(config=LearnerConfig()).local_update(
            model=_model(), tasks=object(), rng=np.random.default_rng(0)
        )


def test_untrained_head_equals_prototype_classifier() -> None:
    """With zero fine-tuning steps the fresh head is the ProtoNet classifier (up to a per-query constant)."""
    model = _model(norm="group")
    task = BlobProblem().sample(rng=np.random.default_rng(3))
    logits = FedAvgLearner(config=LearnerConfig(test_inner_steps=0)).predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    with torch.no_grad():
        proto = prototype_logits(
            support_emb=model.embed(task.support_x),
            support_y=task.support_y,
            n_way=5,
            query_emb=model.embed(task.query_x),
        )
    shift = logits - proto
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=1e-3, rtol=1e-4)


def test_predict_is_independent_of_torch_rng() -> None:
    model = _model()
    task = BlobProblem().sample(rng=np.random.default_rng(4))
    learner = FedAvgLearner(config=LearnerConfig(test_inner_steps=5, test_inner_lr=0.1))
    torch.manual_seed(1)
    a = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    torch.manual_seed(2)
    b = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    assert torch.equal(a, b)


def test_model_without_embed_is_rejected() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    task = BlobProblem().sample(rng=np.random.default_rng(5))
    with pytest.raises(ConfigError, match="embed"):
        FedAvgLearner(config=LearnerConfig()).predict(
            model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
        )


def test_support_missing_a_class_is_accepted_by_head_learners_not_by_protonet() -> None:
    """Client tasks under label skew may miss classes: a head learner adapts on what is there and
    never predicts an absent class; ProtoNet (a prototype per class) still refuses."""
    from secfed.learners import ProtoNet

    model = _model(norm="group")
    task = BlobProblem().sample(rng=np.random.default_rng(5))
    keep = task.support_y != 2
    sx, sy = task.support_x[keep], task.support_y[keep]
    logits = FedAvgLearner(config=LearnerConfig(test_inner_steps=5, test_inner_lr=0.01)).predict(
        model=model, support_x=sx, support_y=sy, n_way=5, query_x=task.query_x
    )
    assert torch.isfinite(logits).all()
    assert not bool((logits.argmax(dim=-1) == 2).any())
    with pytest.raises(DataError, match="classes \\[2\\] have none"):
        ProtoNet(config=LearnerConfig()).predict(
            model=model, support_x=sx, support_y=sy, n_way=5, query_x=task.query_x
        )
