"""Properties every learner must have, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_blobs import BlobProblem

from secfed.errors import ConfigError, DataError
from secfed.learners import LEARNERS, Learner, LearnerConfig, LocalUpdate, build_learner
from secfed.models import build_model
from secfed.tasks.base import Task

NAMES = ["protonet", "matching", "siamese", "maml", "fomaml", "reptile", "fedavg"]
CONFIG = LearnerConfig(
    local_steps=3, meta_batch=2, local_lr=1e-2, inner_steps=2, inner_lr=0.3, test_inner_steps=2
)


def _model(name: str, norm: str = "batch", seed: int = 0) -> torch.nn.Module:
    heads = {"none": None, "global": 40, "n_way": 5}[LEARNERS[name].head]
    torch.manual_seed(seed)
    model = build_model(
        arch="conv4", input_shape=(1, 8, 8), num_classes=heads, hidden=8, norm=norm, num_groups=2
    )
    return LEARNERS[name].extend_model(model=model, config=CONFIG)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}


def _update(name: str, model: torch.nn.Module, seed: int = 0) -> LocalUpdate:
    return build_learner(name=name, config=CONFIG).local_update(
        model=model, tasks=BlobProblem(), rng=np.random.default_rng(seed)
    )


def test_registry_names_and_types() -> None:
    assert sorted(LEARNERS) == sorted(NAMES)
    for name in NAMES:
        learner = build_learner(name=name, config=CONFIG)
        assert isinstance(learner, Learner) and learner.name == name
    assert [n for n in NAMES if LEARNERS[n].episodic] == ["protonet", "matching", "siamese", "maml", "fomaml"]


def test_unknown_learner_names_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        build_learner(name="anil", config=CONFIG)
    assert all(name in str(err.value) for name in NAMES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("local_steps", 0),
        ("meta_batch", 0),
        ("local_lr", 0.0),
        ("inner_lr", -1.0),
        ("test_inner_lr", float("nan")),
        ("local_optimizer", "rmsprop"),
        ("inner_optimizer", "lbfgs"),
        ("test_inner_steps", -1),
        ("reptile_inner_batch", -2),
        ("batch_size", 0),
        ("inner_steps", 1.5),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_invalid_config_is_rejected_naming_the_field(name: str, field: str, value: object) -> None:
    bad = LearnerConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=field):
        build_learner(name=name, config=bad)


@pytest.mark.parametrize("name", NAMES)
def test_delta_equals_parameter_change_and_buffers_are_returned(name: str) -> None:
    model = _model(name)
    before = _state(model)
    model.eval()  # the learner must restore the caller's mode
    update = _update(name, model)
    assert not model.training
    params = dict(model.named_parameters())
    assert list(update.delta) == list(params)
    for n, d in update.delta.items():
        assert d.dtype == torch.float32
        torch.testing.assert_close(d, params[n].detach() - before[n], atol=0, rtol=0)
    assert max(float(d.abs().max()) for d in update.delta.values()) > 0
    buffers = dict(model.named_buffers())
    assert update.buffers and set(update.buffers) == {n for n, b in buffers.items() if b.is_floating_point()}
    for n, b in update.buffers.items():
        assert torch.equal(b, buffers[n])
    assert any(not torch.equal(update.buffers[n], before[n]) for n in update.buffers)  # running stats moved
    assert np.isfinite(update.train_loss) and 0.0 <= update.extra["train_accuracy"] <= 1.0
    if name != "fedavg":
        assert update.num_tasks == CONFIG.local_steps * CONFIG.meta_batch
        assert update.num_examples == update.num_tasks * 30


@pytest.mark.parametrize("name", NAMES)
def test_local_update_is_deterministic(name: str) -> None:
    a, b = _model(name), _model(name)
    ua, ub = _update(name, a, seed=5), _update(name, b, seed=5)
    assert ua.train_loss == ub.train_loss
    for n in ua.delta:
        assert torch.equal(ua.delta[n], ub.delta[n])
    uc = _update(name, _model(name), seed=6)
    assert any(not torch.equal(ua.delta[n], uc.delta[n]) for n in ua.delta)


#: Learners whose test-time adaptation uses batch statistics (transductive batch norm).
TRANSDUCTIVE_BN = ("maml", "fomaml", "reptile")


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("name", NAMES)
def test_predict_leaves_the_model_untouched(name: str, norm: str) -> None:
    model = _model(name, norm=norm)
    _update(name, model)  # move BatchNorm statistics away from their defaults
    task = BlobProblem().sample(rng=np.random.default_rng(9))
    learner = build_learner(name=name, config=CONFIG)
    before = _state(model)
    model.train()
    with torch.no_grad():  # callers may evaluate under no_grad; adaptation must still work
        logits = learner.predict(
            model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
        )
    assert logits.shape == (25, 5) and torch.isfinite(logits).all()
    assert model.training
    after = _state(model)
    for n, t in before.items():
        assert torch.equal(t, after[n]), n
    again = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    assert torch.equal(logits, again)
    half = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x[:7]
    )
    if norm == "batch" and name in TRANSDUCTIVE_BN:
        # MAML-family and Reptile use transductive batch norm at test time (batch statistics of
        # the query set, as in their reference evaluations): queries influence each other
        assert not torch.allclose(half, logits[:7], atol=1e-5, rtol=1e-5)
    else:
        # each query's logits do not depend on the other queries
        torch.testing.assert_close(half, logits[:7], atol=1e-5, rtol=1e-5)
    assert 0.0 <= learner.evaluate(model=model, task=task) <= 1.0


class _BadLabels:
    def sample(self, *, rng: np.random.Generator) -> Task:
        t = BlobProblem().sample(rng=rng)
        return Task(t.support_x, t.support_y + 1, t.query_x, t.query_y, t.n_way)


@pytest.mark.parametrize("name", ["protonet", "maml", "fomaml", "reptile"])
def test_malformed_task_is_rejected_before_training(name: str) -> None:
    model = _model(name)
    before = _state(model)
    with pytest.raises(DataError, match="support_y"):
        build_learner(name=name, config=CONFIG).local_update(
            model=model, tasks=_BadLabels(), rng=np.random.default_rng(0)
        )
    after = _state(model)
    assert all(torch.equal(t, after[n]) for n, t in before.items())


@pytest.mark.parametrize("name", NAMES)
def test_predict_rejects_mismatched_inputs(name: str) -> None:
    task = BlobProblem().sample(rng=np.random.default_rng(0))
    learner = build_learner(name=name, config=CONFIG)
    with pytest.raises(DataError, match="query_x"):
        learner.predict(
            model=_model(name),
            support_x=task.support_x,
            support_y=task.support_y,
            n_way=5,
            query_x=task.query_x[:, :, :4],
        )
