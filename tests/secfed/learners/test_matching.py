"""Matching Networks (Vinyals et al. 2016): attention kernel, FCE, training, record-level DP end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad

from secfed import components
from secfed.config import config_from_dict
from secfed.errors import ConfigError, DataError
from secfed.experiment import Experiment
from secfed.learners import LearnerConfig, MatchingNet, build_learner
from secfed.learners.base import FunctionalModel
from secfed.learners.matching import FullContextEmbedding, matching_log_probs
from secfed.models.build import build_model
from tests.secfed.learners.learner_blobs import BlobProblem, mean_accuracy

REPO = Path(__file__).resolve().parents[3]


def _model(fce: bool = False, steps: int = 2) -> torch.nn.Module:
    model = build_model(arch="mlp", input_shape=(1, 8, 8), num_classes=None, hidden=16, norm="none", depth=2)
    return MatchingNet.extend_model(model=model, config=LearnerConfig(fce=fce, fce_steps=steps))


def test_attention_kernel_is_the_cosine_softmax_over_support_labels() -> None:
    torch.manual_seed(1)
    s, q = torch.randn(6, 4), torch.randn(3, 4)
    sy = torch.tensor([0, 1, 2, 0, 1, 2])
    got = matching_log_probs(support_emb=s, support_y=sy, n_way=3, query_emb=q)
    for i in range(3):
        cos = torch.stack([F.cosine_similarity(q[i], s[j], dim=0) for j in range(6)])
        a = torch.exp(cos) / torch.exp(cos).sum()
        expected = torch.stack([a[sy == k].sum() for k in range(3)])
        assert torch.allclose(got[i].exp(), expected, atol=1e-6)
    assert torch.allclose(got.exp().sum(dim=1), torch.ones(3), atol=1e-6)
    # cosine: scaling an embedding changes nothing
    assert torch.allclose(matching_log_probs(support_emb=3 * s, support_y=sy, n_way=3, query_emb=q), got)


def test_cosine_scale_sharpens_the_attention_and_is_validated() -> None:
    """``tau`` multiplies the cosines before the softmax (metric scaling); with tau = 1 the 20-way
    kernel gives the correct class only e / (e + 19) on orthogonal class embeddings (and never more
    than e / (e + 19 / e))."""
    eye = torch.eye(20)
    sy = torch.arange(20)
    plain = matching_log_probs(support_emb=eye, support_y=sy, n_way=20, query_emb=eye).exp().diagonal()
    assert torch.allclose(plain, torch.full((20,), math.e / (math.e + 19)), atol=1e-6)
    sharp = matching_log_probs(support_emb=eye, support_y=sy, n_way=20, query_emb=eye, scale=10.0)
    assert bool((sharp.exp().diagonal() > 0.99).all())
    torch.manual_seed(2)
    s, q = torch.randn(6, 4), torch.randn(3, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    cos = F.normalize(q, dim=-1) @ F.normalize(s, dim=-1).T
    a = torch.softmax(7.0 * cos, dim=-1)
    expected = torch.stack([a[:, y == k].sum(dim=1) for k in range(3)], dim=1)
    got = matching_log_probs(support_emb=s, support_y=y, n_way=3, query_emb=q, scale=7.0).exp()
    assert torch.allclose(got, expected, atol=1e-6)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="cosine_scale"):
            MatchingNet(config=LearnerConfig(cosine_scale=bad))


@pytest.mark.parametrize("fce", [False, True])
def test_shapes_and_predict_leaves_the_model_alone(fce: bool) -> None:
    problem = BlobProblem(n_way=5, k_shot=2, q_query=3)
    task = problem.sample(rng=np.random.default_rng(0))
    model = _model(fce=fce)
    learner = MatchingNet(config=LearnerConfig(fce=fce, fce_steps=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    assert logits.shape == (15, 5)
    assert torch.allclose(logits.exp().sum(dim=1), torch.ones(15), atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    params = {k: p.detach() for k, p in model.named_parameters()}
    loss, q_logits = learner.episode(net=FunctionalModel(module=model, params=params, buffers={}), task=task)
    assert loss.ndim == 0 and q_logits.shape == (15, 5)
    assert math.isclose(float(loss), float(F.nll_loss(q_logits, task.query_y)), rel_tol=1e-6)


def test_fce_adds_trained_lstm_parameters_reached_by_torch_func_grad() -> None:
    model = _model(fce=True, steps=3)
    assert isinstance(model.fce, FullContextEmbedding)
    names = [n for n, _ in model.named_parameters() if n.startswith("fce.")]
    assert {n.split(".")[1] for n in names} == {"forward_lstm", "backward_lstm", "attention_lstm"}
    learner = MatchingNet(config=LearnerConfig(fce=True, fce_steps=3))
    task = BlobProblem(n_way=3, k_shot=1, q_query=2).sample(rng=np.random.default_rng(2))
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = grad(lambda p: learner.task_loss(model=model, params=p, buffers={}, task=task))(params)
    for n in names:
        assert torch.isfinite(g[n]).all() and g[n].abs().sum() > 0, n
    # without FCE the model has no LSTM and the FCE output differs from the plain embedding
    plain = _model(fce=False)
    assert not any(n.startswith("fce.") for n, _ in plain.named_parameters())


def test_fce_without_the_module_is_refused() -> None:
    learner = MatchingNet(config=LearnerConfig(fce=True))
    task = BlobProblem(n_way=3).sample(rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="fce"):
        learner.predict(
            model=_model(fce=False),
            support_x=task.support_x,
            support_y=task.support_y,
            n_way=3,
            query_x=task.query_x,
        )
    with pytest.raises(ConfigError, match="fce_steps"):
        MatchingNet(config=LearnerConfig(fce=True, fce_steps=0))


def test_missing_class_in_support_is_refused() -> None:
    learner = MatchingNet(config=LearnerConfig())
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(DataError, match="classes"):
        learner.predict(model=_model(), support_x=x, support_y=torch.tensor([0, 0]), n_way=2, query_x=x)


@pytest.mark.parametrize("fce", [False, True])
def test_few_steps_lower_the_loss_and_raise_accuracy(fce: bool) -> None:
    problem = BlobProblem(n_way=5, k_shot=1, q_query=5)
    model = _model(fce=fce)
    learner = MatchingNet(
        config=LearnerConfig(local_steps=60, meta_batch=2, local_lr=3e-3, fce=fce, fce_steps=2)
    )
    rng = np.random.default_rng(0)
    before = mean_accuracy(learner=learner, model=model, problem=problem)
    tasks = [problem.sample(rng=np.random.default_rng(100 + i)) for i in range(8)]

    def held_loss() -> float:
        params = {k: p.detach() for k, p in model.named_parameters()}
        return float(
            np.mean([learner.task_loss(model=model, params=params, buffers={}, task=t).item() for t in tasks])
        )

    loss0 = held_loss()
    update = learner.local_update(model=model, tasks=problem, rng=rng)
    assert update.num_tasks == 120 and set(update.delta) == {n for n, _ in model.named_parameters()}
    assert held_loss() < loss0 - 0.05
    assert mean_accuracy(learner=learner, model=model, problem=problem) > before + 0.1


def _digits_config(learner: str, **extra: Any) -> Any:
    return config_from_dict(
        {
            "experiment": {
                "rounds": 1,
                "eval_every": 0,
                "eval_episodes": 5,
                "final_eval_episodes": 10,
                "seed": 1,
            },
            "data": {"dataset": "digits", "rotations": True},
            "partition": {"scheme": "class_disjoint", "num_sites": 3},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 8, "norm": "group", "groups": 2, "layers": 1},
            "learner": {"name": learner, "local_steps": 2, "local_lr": 0.05, **extra},
            "privacy": {"mode": "record", "noise_multiplier": 1.0, "max_grad_norm": 1.0, "sample_rate": 0.2},
        },
        base_dir=REPO,
    )


@pytest.mark.parametrize("fce", [False, True])
def test_record_level_dp_run_end_to_end_on_digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fce: bool
) -> None:
    """A record-level DP Matching Network run: per-episode mechanism, ε ledger, finite accuracy."""
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "keys"))
    cfg = _digits_config("matching", fce=fce)
    assert components.model_num_classes(config=cfg) is None
    Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["learner"] == "matching" and summary["mode"] == "record"
    assert summary["mechanism"] == "episodic-gaussian"  # per-episode units, as ProtoNet
    assert summary["privacy_ledger_integrity"] == "verified"
    assert 0 < summary["epsilon"] < math.inf
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert isinstance(build_learner(name="matching", config=LearnerConfig()), MatchingNet)
