"""head_init = "proto" (Proto-MAML's head, Triantafillou et al. 2020) for MAML, FOMAML and Reptile.

What a reader of the predictions sees: before any inner step the model *is* the ProtoNet
classifier of its body (same softmax, logits shifted by ``||q||^2`` per query), the stored head
never matters, and the meta-gradient with no inner step is ProtoNet's. What the server sees under
record-level DP: the head is a function of the episode's own support records, so removing one
record moves the sum of clipped per-episode meta-gradients by at most 2C (measured through the
production DP engine, as for the other episodic learners); a per-record unit (Reptile's DP-SGD)
would not keep its bound C with that head, so that combination is refused.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from learner_blobs import BlobProblem, mlp_model, scramble_head
from torch.func import grad

from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp.engines import PrivateEpisodes, episode_task
from secfed.errors import ConfigError
from secfed.learners import FOMAML, MAML, LearnerConfig, ProtoNet, Reptile
from secfed.learners.base import FunctionalModel, SupportSet
from secfed.learners.common import EmbeddingView, head_names, proto_head
from secfed.tasks.base import Task
from tests.secfed.learners.test_siamese import _data, _NoTasks, _sampler, _zero_noise_engine

REPO = Path(__file__).resolve().parents[3]
PROTO = LearnerConfig(head_init="proto", local_steps=2, inner_steps=1, test_inner_steps=0, inner_lr=0.1)


def _model(*, num_classes: int = 7, norm: str = "group", seed: int = 0) -> torch.nn.Module:
    return mlp_model(num_classes=num_classes, norm=norm, seed=seed)


def _predict(learner: MAML | Reptile | ProtoNet, model: torch.nn.Module, task: Task) -> torch.Tensor:
    return learner.predict(
        model=model,
        support_x=task.support_x,
        support_y=task.support_y,
        n_way=task.n_way,
        query_x=task.query_x,
    )


@pytest.mark.parametrize("cls", [MAML, FOMAML, Reptile])
def test_without_adaptation_the_proto_head_is_the_protonet_classifier(cls: type) -> None:
    """Logits = ProtoNet's + ||q||^2 per query: same softmax, same predictions (5 tasks)."""
    learner = cls(config=PROTO)
    protonet = ProtoNet(config=LearnerConfig())
    model = _model()
    problem = BlobProblem(n_way=5, k_shot=2)
    rng = np.random.default_rng(3)
    for _ in range(5):
        task = problem.sample(rng=rng)
        got = _predict(learner, model, task)
        ref = _predict(protonet, EmbeddingView(model), task)
        with torch.no_grad():
            q = EmbeddingView(model).eval()(task.query_x)
        torch.testing.assert_close(
            got - ref, (q * q).sum(-1, keepdim=True).expand_as(ref), rtol=1e-4, atol=1e-3
        )
        torch.testing.assert_close(got.softmax(-1), ref.softmax(-1), rtol=1e-4, atol=1e-5)
        assert torch.equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("cls", [MAML, FOMAML, Reptile])
@pytest.mark.parametrize("steps", [0, 3])
def test_predictions_do_not_depend_on_the_stored_head(cls: type, steps: int) -> None:
    task = BlobProblem().sample(rng=np.random.default_rng(0))
    learner = cls(config=dataclasses.replace(PROTO, test_inner_steps=steps, test_inner_lr=0.05))
    outs = []
    for seed in (1, 2):
        model = _model()
        scramble_head(model, seed)
        outs.append(_predict(learner, model, task))
    torch.testing.assert_close(outs[0], outs[1])


def test_zero_inner_steps_give_protonets_meta_loss_and_meta_gradient() -> None:
    """MAML's episode loss at the proto head equals ProtoNet's; so does the body's meta-gradient
    (under ``torch.func.grad``, as the DP engine takes it); the stored head gets none."""
    model = _model()
    task = BlobProblem(n_way=5, k_shot=1, q_query=3).sample(rng=np.random.default_rng(1))
    maml = MAML(config=dataclasses.replace(PROTO, inner_steps=0))
    protonet = ProtoNet(config=LearnerConfig())
    view = EmbeddingView(model)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def maml_loss(prm: dict[str, torch.Tensor]) -> torch.Tensor:
        return maml.task_loss(model=model, params=prm, buffers={}, task=task)

    def proto_loss(prm: dict[str, torch.Tensor]) -> torch.Tensor:
        view_params = {f"model.{n}": p for n, p in prm.items()}
        return protonet.task_loss(model=view, params=view_params, buffers={}, task=task)

    torch.testing.assert_close(maml_loss(params), proto_loss(params))
    g_maml, g_proto = grad(maml_loss)(params), grad(proto_loss)(params)
    for name in params:
        if name.startswith("head."):
            assert torch.count_nonzero(g_maml[name]) == 0, name
        else:
            torch.testing.assert_close(g_maml[name], g_proto[name], rtol=1e-4, atol=1e-6)


def test_inner_steps_move_away_from_protonet_and_training_leaves_the_head() -> None:
    model = _model()
    task = BlobProblem().sample(rng=np.random.default_rng(2))
    before = _predict(MAML(config=PROTO), model, task)
    adapted = _predict(
        MAML(config=dataclasses.replace(PROTO, test_inner_steps=2, test_inner_lr=0.1)), model, task
    )
    assert not torch.allclose(before, adapted)
    for cls in (MAML, FOMAML, Reptile):
        m = _model(norm="batch")
        cfg = dataclasses.replace(PROTO, inner_steps=2, inner_lr=0.05) if cls is Reptile else PROTO
        update = cls(config=cfg).local_update(model=m, tasks=BlobProblem(), rng=np.random.default_rng(1))
        for name in head_names(m):
            assert torch.count_nonzero(update.delta[name]) == 0, (cls.__name__, name)
        assert any(torch.count_nonzero(d) > 0 for n, d in update.delta.items() if not n.startswith("head."))


def test_proto_head_rows_beyond_the_task_way_are_zero_and_bad_models_are_refused() -> None:
    model = _model(num_classes=7)
    task = BlobProblem(n_way=5).sample(rng=np.random.default_rng(0))
    params = {n: p.detach() for n, p in model.named_parameters()}
    support = SupportSet(x=task.support_x, y=task.support_y, n_way=5)
    new = proto_head(net=FunctionalModel(module=model, params=params, buffers={}), support=support)
    assert torch.count_nonzero(new["head.weight"][5:]) == 0 and torch.count_nonzero(new["head.bias"][5:]) == 0
    with pytest.raises(ConfigError, match="outputs"):
        proto_head(
            net=FunctionalModel(
                module=_model(num_classes=3),
                params={n: p.detach() for n, p in _model(num_classes=3).named_parameters()},
                buffers={},
            ),
            support=support,
        )
    with pytest.raises(ConfigError, match="linear head"):
        proto_head(
            net=FunctionalModel(module=_model(num_classes=None), params={}, buffers={}),  # type: ignore[arg-type]
            support=support,
        )


# ------------------------------------------------------------------------------------------------
# Record-level DP: per-episode units keep sensitivity 2C; per-record units are refused
# ------------------------------------------------------------------------------------------------
C = 0.005  # below typical episode-gradient norms: clipping is active
SEED = b"proto-head-sensitivity-secret-seed-0123456"


def _released_clipped_sum(
    cls: type, model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray, ids: np.ndarray, step: int
) -> torch.Tensor:
    """Minus the update of one zero-noise DP step at lr 1 and normaliser 1: the clipped sum."""
    work = copy.deepcopy(model)
    cfg = dataclasses.replace(PROTO, local_steps=1, local_optimizer="sgd", local_lr=1.0, inner_lr=0.3)
    learner = cls(config=cfg)
    engine = _zero_noise_engine(C)
    sampler = _sampler(labels, ids, step, secret_seed=SEED)
    update = learner.local_update(
        model=work,
        tasks=_NoTasks(),  # type: ignore[arg-type]
        rng=np.random.default_rng(0),
        engine=engine,
        units=PrivateEpisodes(sampler=sampler, x=x),
    )
    return -torch.cat([d.reshape(-1) for d in update.delta.values()])


def _removal_changes(cls: type, seed: int) -> list[float]:
    x, labels = _data(seed)
    ids = np.arange(labels.size)
    model = _model(num_classes=3, seed=seed % 3)
    full = _released_clipped_sum(cls, model, x, labels, ids, seed)
    out = []
    for j in range(labels.size):
        keep = ids != j
        less = _released_clipped_sum(cls, model, x[keep], labels[keep], ids[keep], seed)
        out.append(float((full - less).norm()))
    return out


@pytest.mark.parametrize("cls", [MAML, FOMAML])
def test_removing_any_record_moves_the_clipped_sum_by_at_most_2c(cls: type) -> None:
    """Every record of four datasets removed in turn (incl. a class's only record): <= 2C, and
    the bound is exercised (> C somewhere), so a per-record bound C would be wrong."""
    diffs = [d for seed in range(4) for d in _removal_changes(cls, seed)]
    assert max(diffs) <= 2 * C * (1 + 1e-5)
    assert max(diffs) > C * (1 + 1e-3)


def test_reptile_refuses_the_proto_head_under_record_level_dp() -> None:
    """Reptile's DP unit is one record: a head set from several records would break its bound."""

    def inner(**_: object) -> None:
        raise AssertionError("must be refused before any inner step")

    learner = Reptile(config=dataclasses.replace(PROTO, inner_steps=2))
    with pytest.raises(ConfigError, match="proto"):
        learner.local_update(
            model=_model(),
            tasks=BlobProblem(),
            rng=np.random.default_rng(0),
            inner=inner,  # type: ignore[arg-type]
        )
    base = {
        "data": {"dataset": "digits"},
        "model": {"arch": "mlp", "norm": "group", "hidden": 8},
        "learner": {"name": "reptile", "head_init": "proto", "inner_steps": 2},
        "privacy": {"mode": "record", "noise_multiplier": 1.0},
    }
    with pytest.raises(ConfigError, match="learner.head_init"):
        config_from_dict(base)
    config_from_dict({**base, "privacy": {"mode": "none"}})  # accepted without record-level DP
    config_from_dict({**base, "learner": {"name": "fomaml", "head_init": "proto"}})  # per-episode unit


def test_head_init_proto_is_refused_for_learners_without_an_adapted_head() -> None:
    with pytest.raises(ConfigError, match="learner.head_init"):
        config_from_dict(
            {"data": {"dataset": "digits"}, "learner": {"name": "protonet", "head_init": "proto"}}
        )


@pytest.mark.parametrize("learner", ["maml", "fomaml"])
def test_neighbouring_transcripts_with_the_proto_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learner: str
) -> None:
    """The whole run seen from outside (every reply of every site, every file of the run
    directory) on D and D' = D minus one record, with the proto head: only the release differs,
    by at most the per-episode sensitivity (the transcript harness of the DP tests)."""
    from tests.secfed.dp import test_neighbouring_transcripts as nt

    cfg = nt._config("record", learner)
    cfg["learner"].update(head_init="proto", test_inner_steps=0)
    d = nt._run(tmp_path / "d", cfg, lambda s, y: s, monkeypatch)
    d_prime = nt._run(tmp_path / "d1", cfg, nt._drop_random_record, monkeypatch)
    nt._compare(d, d_prime, mode="record", learner=learner)


def _pretrain_config(learner: dict[str, object], pretrain_learner: str) -> ExperimentConfig:
    return config_from_dict(
        {
            "data": {
                "dataset": "omniglot",
                "root": "",
                "val_alphabets": ["Latin"],
                "public_alphabets": ["Greek"],
            },
            "model": {
                "norm": "group",
                "hidden": 16,
                "pretrain_steps": 2,
                "pretrain_n_way": 5,
                "pretrain_learner": pretrain_learner,
            },
            "learner": learner,
        },
        base_dir=REPO,
    )


def test_pretraining_a_learner_with_a_head_as_a_protonet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.pretrain_learner = "protonet"``: the body moves, the head does not, and MAML, FOMAML
    and Reptile (whatever their own optimiser) share one pretrained body, bit for bit."""
    from secfed import components
    from secfed.experiment import initial_model
    from secfed.pretrain import pretrain_cache_path

    monkeypatch.setenv("SECFED_CACHE_DIR", str(tmp_path))
    learners: list[dict[str, object]] = [
        {"name": "fomaml", "head_init": "proto"},
        {"name": "maml", "head_init": "proto", "local_optimizer": "sgd", "local_lr": 0.5},
        {"name": "reptile", "head_init": "zero", "inner_steps": 2, "local_optimizer": "sgd", "local_lr": 1.0},
    ]
    cfgs = [_pretrain_config(lr, "protonet") for lr in learners]
    assert len({pretrain_cache_path(config=c) for c in cfgs}) == 1  # one pretraining for the three
    assert pretrain_cache_path(config=_pretrain_config(learners[0], "same")) != pretrain_cache_path(
        config=cfgs[0]
    )
    val = components.load_validation(config=cfgs[0])
    states = []
    for cfg in reversed(cfgs):  # Reptile first: its SGD at 1.0 must not be what pretrains the body
        for cached in (tmp_path / "pretrained").glob("*.safetensors"):
            cached.unlink()
        model = initial_model(config=cfg, input_shape=val.input_shape, num_classes=5)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for state in states[1:]:
        for k, v in state.items():
            assert torch.equal(v, states[0][k]), k
    reference = initial_model(
        config=dataclasses.replace(cfgs[0], model=dataclasses.replace(cfgs[0].model, pretrain_steps=0)),
        input_shape=val.input_shape,
        num_classes=5,
    )
    moved = [k for k, v in states[0].items() if not torch.equal(v, reference.state_dict()[k])]
    assert moved and all(not k.startswith("head.") for k in moved)
    with pytest.raises(ConfigError, match="model.pretrain_learner"):
        config_from_dict({"data": {"dataset": "digits"}, "model": {"pretrain_learner": "protonet"}})


@pytest.mark.parametrize("learner", ["maml", "fomaml"])
def test_dp_without_noise_or_clipping_reproduces_the_proto_head_update(
    monkeypatch: pytest.MonkeyPatch, learner: str
) -> None:
    """The site's DP path (per-episode ``torch.func`` gradients) and the plain learner (autograd,
    the proto head's graph shared by the inner and the query loss) give the same update with the
    proto head: the DP harness of the other learners, with ``head_init = "proto"``."""
    from tests.secfed.dp import test_dp_wraps_learners as wl

    original = wl._config

    def with_proto_head(name: str, **privacy: object) -> ExperimentConfig:
        cfg = original(name, **privacy)
        return dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, head_init="proto"))

    monkeypatch.setattr(wl, "_config", with_proto_head)
    assert wl._config(learner).learner.head_init == "proto"
    wl.test_dp_without_noise_or_clipping_is_the_learners_own_update(learner)


def _slot_grads(
    learner: MAML, model: torch.nn.Module, x: torch.Tensor, labels: np.ndarray, keep: np.ndarray, step: int
) -> list[tuple[Task | None, torch.Tensor | None]]:
    """Each slot's task and per-episode meta-gradient of one DP step drawn on the kept records."""
    ids = np.arange(labels.size)[keep]
    sampler = _sampler(labels[keep], ids, step, secret_seed=SEED)
    params = {n: p.detach() for n, p in model.named_parameters()}
    out: list[tuple[Task | None, torch.Tensor | None]] = []
    for episode in sampler.sample().episodes:
        task = episode_task(x=x[torch.from_numpy(keep)], episode=episode)
        if task is None:
            out.append((None, None))
            continue

        def loss(prm: dict[str, torch.Tensor], t: Task = task) -> torch.Tensor:
            return learner.task_loss(model=model, params=prm, buffers={}, task=t)

        g = grad(loss)(params)
        out.append((task, torch.cat([v.reshape(-1) for v in g.values()])))
    return out


def _same_task(a: Task | None, b: Task | None) -> bool:
    if a is None or b is None or a.n_way != b.n_way:
        return False
    return all(
        torch.equal(getattr(a, f), getattr(b, f)) for f in ("support_x", "support_y", "query_x", "query_y")
    )


@pytest.mark.parametrize("cls", [MAML, FOMAML])
def test_removing_a_record_changes_only_its_own_episodes_meta_gradient(cls: type) -> None:
    """Per slot of a DP step drawn on D and on D minus record j (same keys): the slots that did not
    hold j have the same task and the same per-episode meta-gradient (no state crosses episodes:
    a head cached from one episode and reused in the next fails here); the slot that held j may
    change. Every record of three 48-record datasets removed in turn."""
    learner = cls(config=dataclasses.replace(PROTO, inner_lr=0.3))
    exercised = 0  # removals that changed one slot while another usable slot was compared
    for seed in range(3):
        x, labels = _data(seed, n=48)
        model = _model(num_classes=3, seed=seed)
        full = _slot_grads(learner, model, x, labels, np.ones(labels.size, dtype=bool), seed)
        for j in range(labels.size):
            less = _slot_grads(learner, model, x, labels, np.arange(labels.size) != j, seed)
            changed, compared = False, False
            for (ta, ga), (tb, gb) in zip(full, less, strict=True):
                if _same_task(ta, tb):
                    assert ga is not None and gb is not None
                    torch.testing.assert_close(ga, gb, rtol=0, atol=0)
                    compared = True
                else:
                    changed = True
            exercised += changed and compared
    assert exercised >= 10
