"""Siamese networks (Koch et al. 2015): pair head, one-shot rule, training, and the DP sensitivity.

The sensitivity tests run the production path: the learner's own ``local_update`` with the
record-level per-episode DP engine (:class:`secfed.dp.engines.EpisodeDPEngineFactory`, zero noise,
SGD at learning rate 1, normaliser 1, so the update is minus the clipped sum) and the private
episode source over a :class:`privacy.sampling.RecordEpisodeSampler`. Removing one record must
never move the clipped sum by more than the stated 2C. A per-pair clipping scheme (a unit = one
pair, no cap on the pairs a record is in) is measured with the same removals and exceeds 2C: the
test can tell a wrong unit from the right one.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from privacy.sampling import RecordEpisodeSampler
from secfed.dp.engines import EpisodeDPEngineFactory, PrivateEpisodes, StepCounter, episode_task
from secfed.errors import ConfigError
from secfed.experiment import Experiment
from secfed.learners import LearnerConfig, SiameseNet
from secfed.learners.base import FunctionalModel
from secfed.learners.siamese import npair_loss, pair_scores, siamese_class_logits, siamese_pair_loss
from secfed.models.build import build_model
from tests.secfed.learners.learner_blobs import BlobProblem, mean_accuracy
from tests.secfed.learners.test_matching import _digits_config

SEED = b"siamese-sensitivity-secret-seed-0123456789"


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch="mlp", input_shape=(1, 8, 8), num_classes=None, hidden=16, norm="none", depth=1)
    return SiameseNet.extend_model(model=model, config=LearnerConfig())


def test_pair_head_is_a_weighted_l1_distance_and_one_shot_picks_the_most_similar() -> None:
    torch.manual_seed(0)
    q, s = torch.randn(4, 6), torch.randn(5, 6)
    w, b = torch.randn(1, 6), torch.randn(1)
    scores = pair_scores(query_emb=q, support_emb=s, weight=w, bias=b)
    for i in range(4):
        for j in range(5):
            assert math.isclose(
                float(scores[i, j]), float((w[0] * (q[i] - s[j]).abs()).sum() + b[0]), rel_tol=1e-5
            )
    sy = torch.tensor([0, 1, 2, 1, 0])
    logits = siamese_class_logits(scores=scores, support_y=sy, n_way=3)
    assert logits.shape == (4, 3)
    # the predicted class is the class of the highest-scoring (most similar) support record
    assert torch.equal(logits.argmax(dim=1), sy[scores.argmax(dim=1)])
    # balanced BCE: same and different pairs weigh equally
    qy = torch.tensor([0, 1, 2, 0])
    same = (qy[:, None] == sy[None]).float()
    bce = F.binary_cross_entropy_with_logits(scores, same, reduction="none")
    expected = 0.5 * bce[same == 1].mean() + 0.5 * bce[same == 0].mean()
    assert torch.allclose(siamese_pair_loss(scores=scores, query_y=qy, support_y=sy), expected)


def test_npair_loss_is_sohns_multi_class_loss_and_the_one_shot_cross_entropy() -> None:
    """``pair_loss = "softmax"``: with one shot, the cross-entropy of a softmax over a query's pair
    scores; with k shots, Sohn's (2016) ``log(1 + sum_- exp(s_- - s_+))`` per same pair, averaged."""
    torch.manual_seed(3)
    scores = torch.randn(6, 4, requires_grad=True)
    sy, qy = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3, 0, 2])
    got = npair_loss(scores=scores, query_y=qy, support_y=sy)
    assert torch.allclose(got, F.cross_entropy(scores, qy), atol=1e-6)
    sy2 = torch.tensor([0, 1, 0, 1, 2])  # two shots of classes 0 and 1
    qy2 = torch.tensor([0, 1, 2])
    s2 = torch.randn(3, 5)
    terms = []
    for i in range(3):
        neg = s2[i][sy2 != qy2[i]]
        for j in torch.nonzero(sy2 == qy2[i]).flatten().tolist():
            terms.append(torch.log1p(torch.exp(neg - s2[i, j]).sum()))
    expected = torch.stack(terms).mean()
    assert torch.allclose(npair_loss(scores=s2, query_y=qy2, support_y=sy2), expected, atol=1e-6)
    # the BCE loss is a different function of the same scores
    assert not torch.allclose(siamese_pair_loss(scores=s2, query_y=qy2, support_y=sy2), expected, atol=1e-3)
    # the learner's task loss follows learner.pair_loss (one-shot task: the class-logit cross-entropy)
    task = BlobProblem(n_way=5, k_shot=1, q_query=3).sample(rng=np.random.default_rng(1))
    model = _model()
    params = {k: p.detach() for k, p in model.named_parameters()}
    losses = {}
    for name in ("bce", "softmax"):
        learner = SiameseNet(config=LearnerConfig(pair_loss=name))
        loss, logits = learner.episode(
            net=FunctionalModel(module=model, params=params, buffers={}), task=task
        )
        losses[name] = float(loss)
    assert math.isclose(losses["softmax"], float(F.cross_entropy(logits, task.query_y)), rel_tol=1e-5)
    assert not math.isclose(losses["softmax"], losses["bce"], rel_tol=1e-3)


def test_pair_loss_is_validated_before_any_work() -> None:
    for bad in ("BCE", "npair", "", 1):
        with pytest.raises(ConfigError, match="pair_loss"):
            SiameseNet(config=LearnerConfig(pair_loss=bad))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="pair_loss"):
            _digits_config("siamese", pair_loss=bad)
    assert _digits_config("siamese", pair_loss="softmax").learner.pair_loss == "softmax"


def test_model_gets_the_distance_head_and_predict_shapes() -> None:
    model = _model()
    assert model.pair_head.weight.shape == (1, model.embedding_dim)
    assert torch.all(model.pair_head.weight < 0)  # closer pairs score higher from the start
    learner = SiameseNet(config=LearnerConfig())
    task = BlobProblem(n_way=5, k_shot=2, q_query=3).sample(rng=np.random.default_rng(0))
    logits = learner.predict(
        model=model, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
    )
    assert logits.shape == (15, 5) and torch.isfinite(logits).all()
    with pytest.raises(ConfigError, match="pair_head"):
        SiameseNet.extend_model(model=model, config=LearnerConfig())
    bare = build_model(arch="mlp", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="none", depth=1)
    with pytest.raises(ConfigError, match="pair_head"):
        learner.predict(
            model=bare, support_x=task.support_x, support_y=task.support_y, n_way=5, query_x=task.query_x
        )


@pytest.mark.parametrize("pair_loss", ["bce", "softmax"])
def test_few_steps_lower_the_loss_and_raise_accuracy(pair_loss: str) -> None:
    problem = BlobProblem(n_way=5, k_shot=1, q_query=5)
    model = _model()
    learner = SiameseNet(
        config=LearnerConfig(local_steps=60, meta_batch=2, local_lr=3e-3, pair_loss=pair_loss)
    )
    tasks = [problem.sample(rng=np.random.default_rng(100 + i)) for i in range(8)]

    def held_loss() -> float:
        params = {k: p.detach() for k, p in model.named_parameters()}
        return float(
            np.mean([learner.task_loss(model=model, params=params, buffers={}, task=t).item() for t in tasks])
        )

    before_acc, loss0 = mean_accuracy(learner=learner, model=model, problem=problem), held_loss()
    update = learner.local_update(model=model, tasks=problem, rng=np.random.default_rng(0))
    assert "pair_head.weight" in update.delta and update.delta["pair_head.weight"].abs().sum() > 0
    assert held_loss() < loss0 - 0.05
    assert mean_accuracy(learner=learner, model=model, problem=problem) > before_acc + 0.1


# ------------------------------------------------------------------------------------------------
# Sensitivity of the per-episode scheme (2C), measured through the production DP engine
# ------------------------------------------------------------------------------------------------
C = 0.005  # below typical episode-gradient norms: clipping is active
CLASSES = tuple(range(6))


def _data(seed: int, n: int = 12) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=n)
    labels[rng.integers(n)] = 5  # class 5 has exactly one record: removing it empties its class
    x = rng.normal(size=(n, 1, 8, 8)) + labels[:, None, None, None] * 0.5
    return torch.as_tensor(x, dtype=torch.float32), labels


def _sampler(
    labels: np.ndarray, ids: np.ndarray, step: int, *, secret_seed: bytes = SEED
) -> RecordEpisodeSampler:
    """Three 3-way slots over :data:`CLASSES`, each record taken with probability 0.9 (also used by
    the Proto-MAML sensitivity tests, with their own secret seed)."""
    return RecordEpisodeSampler(
        labels=labels,
        classes=list(CLASSES),
        num_slots=3,
        n_way=3,
        sample_rate=0.9,
        support_prob=0.5,
        secret_seed=secret_seed,
        public_seed=7,
        record_ids=ids,
        start_step=step,
    )


class _NoTasks:
    def sample(self, *, rng: np.random.Generator) -> None:
        raise AssertionError("the DP unit source supplies the episodes")


def _zero_noise_engine(max_grad_norm: float) -> EpisodeDPEngineFactory:
    """The production per-episode DP engine with no noise, clipping at ``max_grad_norm``,
    normaliser 1 (also used by the Proto-MAML sensitivity tests)."""
    return EpisodeDPEngineFactory(
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        sample_rate=0.9,
        normaliser=1,
        accountant=StepCounter(noise_multiplier=0.0, sample_rate=0.9),
    )


def _released_clipped_sum(
    model: torch.nn.Module,
    x: torch.Tensor,
    labels: np.ndarray,
    ids: np.ndarray,
    step: int,
    pair_loss: str = "bce",
) -> torch.Tensor:
    """Minus the update of one zero-noise DP step at lr 1 and normaliser 1: the clipped sum."""
    work = copy.deepcopy(model)
    learner = SiameseNet(
        config=LearnerConfig(local_steps=1, local_optimizer="sgd", local_lr=1.0, pair_loss=pair_loss)
    )
    engine = _zero_noise_engine(C)
    units = PrivateEpisodes(sampler=_sampler(labels, ids, step), x=x)
    update = learner.local_update(
        model=work,
        tasks=_NoTasks(),
        rng=np.random.default_rng(0),
        engine=engine,
        units=units,  # type: ignore[arg-type]
    )
    return -torch.cat([d.reshape(-1) for d in update.delta.values()])


def _removal_change(seed: int, removed: int | None, step: int, pair_loss: str = "bce") -> float:
    x, labels = _data(seed)
    ids = np.arange(labels.size)
    j = int(np.flatnonzero(labels == 5)[0]) if removed is None else removed % labels.size
    keep = ids != j
    model = _model(seed % 5)
    full = _released_clipped_sum(model, x, labels, ids, step, pair_loss)
    less = _released_clipped_sum(model, x[keep], labels[keep], ids[keep], step, pair_loss)
    return float((full - less).norm())


@pytest.mark.parametrize("pair_loss", ["bce", "softmax"])
@pytest.mark.parametrize("seed", range(40))
def test_removing_one_record_moves_the_clipped_sum_by_at_most_2c(seed: int, pair_loss: str) -> None:
    removed = None if seed % 4 == 0 else seed * 13  # every 4th case removes the only record of class 5
    assert _removal_change(seed, removed, step=seed % 7, pair_loss=pair_loss) <= 2 * C * (1 + 1e-5)


@pytest.mark.parametrize("pair_loss", ["bce", "softmax"])
def test_the_2c_bound_is_exercised_and_sensitivity_c_would_be_wrong(pair_loss: str) -> None:
    """Every record of twelve datasets removed in turn: never above 2C, and above C in some case."""
    diffs = [_removal_change(seed, j, seed % 3, pair_loss) for seed in range(12) for j in range(12)]
    assert max(diffs) <= 2 * C * (1 + 1e-5)
    assert max(diffs) > C * (1 + 1e-3)


def _per_pair_clipped_sum(
    model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray, ids: np.ndarray, step: int
) -> torch.Tensor:
    """The alternative unit, one pair, with no cap on a record's pairs: every pair clipped to C."""
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def pair_loss(
        p: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor, same: torch.Tensor
    ) -> torch.Tensor:
        emb = functional_call(model, p, (torch.stack([a, b]),))
        score = pair_scores(
            query_emb=emb[:1], support_emb=emb[1:], weight=p["pair_head.weight"], bias=p["pair_head.bias"]
        )
        return F.binary_cross_entropy_with_logits(score.reshape(()), same)

    total = torch.zeros(sum(params[n].numel() for n in names))
    for episode in _sampler(labels, ids, step).sample().episodes:
        task = episode_task(x=x, episode=episode)
        if task is None:
            continue
        for qi in range(task.query_x.shape[0]):
            for si in range(task.support_x.shape[0]):
                same = (task.query_y[qi] == task.support_y[si]).float()
                g = grad(pair_loss)(params, task.query_x[qi], task.support_x[si], same)
                flat = torch.cat([g[n].reshape(-1) for n in names])
                total += flat * min(1.0, C / max(float(flat.norm()), 1e-12))
    return total


def test_per_pair_units_without_a_cap_exceed_2c() -> None:
    """Negative control: the same removal measurement catches a unit whose sensitivity is not 2C."""
    worst = 0.0
    for seed in range(6):
        x, labels = _data(seed, n=24)  # larger episodes: a record is in more pairs
        ids = np.arange(labels.size)
        model = _model(seed)
        full = _per_pair_clipped_sum(model, x, labels, ids, seed)
        for j in range(labels.size):
            keep = ids != j
            less = _per_pair_clipped_sum(model, x[keep], labels[keep], ids[keep], seed)
            worst = max(worst, float((full - less).norm()))
        if worst > 2 * C * 1.01:
            break
    assert worst > 2 * C * 1.01


def test_record_level_dp_run_end_to_end_on_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "keys"))
    Experiment(config=_digits_config("siamese")).run(out_dir=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["learner"] == "siamese" and summary["mode"] == "record"
    assert summary["mechanism"] == "episodic-gaussian"
    assert summary["privacy_ledger_integrity"] == "verified"
    assert 0 < summary["epsilon"] < math.inf
    assert 0.0 <= summary["test_accuracy"] <= 1.0
