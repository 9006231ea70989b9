"""DP training recipes (issue 17, items 3-4): what each one may and may not change.

* EMA of parameters is post-processing of released states: the released (trained) states of a
  run with ``federation.ema`` are bit-identical to those without it, the EMA a reader can recompute
  from the released states equals the server's, and the run evaluates the EMA.
* Augmentation multiplicity keeps the per-unit sensitivity: removing a record from one episode
  moves the clipped sum by at most ``2C`` whatever ``K`` (a "copies are separate units" mutation
  moves it by nearly ``2KC``, and the test detects it), and a unit's gradient is the mean of its
  copies' gradients, clipped once.
* Weight standardisation keeps record independence: a record's output does not depend on the
  other records of the batch (a batch-statistics mutation fails the same check).
* Partial training (``model.trainable``): frozen parameters receive no update and no noise.
* Declared-public pretraining data: no site holds a public alphabet, and the public, validation
  and test alphabets are disjoint.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from secfed_config_dicts import omniglot_greek_public, small_digits_dict
from torch import nn

from privacy.dpsgd import check_record_independent_model
from secfed import components
from secfed.config import config_from_dict
from secfed.dp.engines import (
    AugmultEpisodeDPEngineFactory,
    EpisodeDPEngineFactory,
    StepCounter,
    augment_episode,
    augmult_loss,
    shift_records,
)
from secfed.errors import ConfigError
from secfed.experiment import Experiment
from secfed.federation.server import FederatedServer
from secfed.learners.base import FunctionalModel, LearnerConfig
from secfed.learners.protonet import ProtoNet
from secfed.models.build import build_model
from secfed.models.recipes import WSConv2d, freeze_except
from secfed.tasks.base import Task

REPO = Path(__file__).resolve().parents[2]
C = 0.01  # a clip every episode gradient exceeds


# --------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------
def _digits(ema: float) -> Any:
    raw = small_digits_dict(
        experiment={"rounds": 3, "final_eval_episodes": 20, "seed": 1},
        model={"arch": "mlp", "hidden": 16, "norm": "group", "groups": 4, "layers": 1},
        learner={"name": "protonet", "local_steps": 2, "local_lr": 0.05},
        federation={"ema": ema},
    )
    return config_from_dict(raw, base_dir=REPO)


def test_ema_is_post_processing_of_released_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[np.ndarray] = []
    original = FederatedServer.update_ema

    def spy(self: FederatedServer) -> None:
        released.append(self.state.copy())  # what the server released this round
        original(self)

    monkeypatch.setattr(FederatedServer, "update_ema", spy)
    plain = Experiment(config=_digits(0.0)).run(out_dir=tmp_path / "plain", progress=False)
    released.clear()
    smooth = Experiment(config=_digits(0.5)).run(out_dir=tmp_path / "ema", progress=False)
    ckpt = lambda run: load_file(str(next((run.run_dir / "checkpoint").glob("model-*.safetensors"))))  # noqa: E731
    a, b = ckpt(plain), ckpt(smooth)
    # training never reads the EMA: the released states are bit-identical
    np.testing.assert_array_equal(a["state"], b["state"])
    assert "ema_state" not in a
    # a reader of the released states recomputes the server's EMA exactly
    model = components.build_model(config=_digits(0.5), input_shape=(1, 8, 8), num_classes=None)
    torch.manual_seed(0)
    from secfed.experiment import initial_model
    from secfed.federation.state import flat_state, state_spec

    init = initial_model(config=_digits(0.5), input_shape=(1, 8, 8), num_classes=None)
    ema = flat_state(init, spec=state_spec(init)).astype(np.float32)
    assert len(released) == 3
    for s in released:
        ema = (0.5 * ema + 0.5 * s).astype(np.float32)
    np.testing.assert_allclose(b["ema_state"], ema, rtol=0, atol=1e-7)
    assert not np.allclose(b["ema_state"], b["state"])
    # and the run scores the EMA, not the last state
    assert plain.summary["test_accuracy"] != smooth.summary["test_accuracy"] or not np.allclose(
        a["state"], ema
    )
    del model


# --------------------------------------------------------------------------------------------------
# Augmentation multiplicity
# --------------------------------------------------------------------------------------------------
def _tasks(seed: int) -> list[Task]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        out.append(
            Task(
                support_x=torch.rand(3, 1, 8, 8, generator=g),
                support_y=torch.arange(3),
                query_x=torch.rand(6, 1, 8, 8, generator=g),
                query_y=torch.arange(3).repeat(2),
                n_way=3,
            )
        )
    return out


class _Fixed:
    def __init__(self, tasks: list[Task]) -> None:
        self._tasks = tasks

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        return list(self._tasks)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        arch="conv4", input_shape=(1, 8, 8), num_classes=None, hidden=8, norm="group", num_groups=2
    )


def _clipped_sum(tasks: list[Task], *, k: int, shift: int, as_units: bool = False) -> torch.Tensor:
    """Minus one zero-noise DP step at lr 1 and normaliser 1: the sum of clipped unit gradients."""
    work = _model()
    learner = ProtoNet(config=LearnerConfig(local_steps=1, local_optimizer="sgd", local_lr=1.0))
    base = EpisodeDPEngineFactory(
        noise_multiplier=0.0,
        max_grad_norm=C,
        sample_rate=0.5,
        normaliser=1,
        accountant=StepCounter(noise_multiplier=0.0, sample_rate=0.5),
    )
    engine: Any = AugmultEpisodeDPEngineFactory(base=base, multiplicity=k, max_shift=shift, seed=7)
    if as_units:  # mutation: every augmented copy clipped as a unit of its own
        gen = torch.Generator().manual_seed(7)
        tasks = [
            c
            for t in tasks
            for c in augment_episode(task=t, multiplicity=k, max_shift=shift, generator=gen).copies
        ]
        engine = base
    update = learner.local_update(
        model=work,
        tasks=None,  # type: ignore[arg-type]
        rng=np.random.default_rng(0),
        engine=engine,
        units=_Fixed(tasks),
    )
    return -torch.cat([d.reshape(-1) for d in update.delta.values()])


def _remove_last_query(tasks: list[Task]) -> list[Task]:
    t = tasks[-1]  # the last unit: the augmentation draws of the other units are unchanged
    return [*tasks[:-1], dataclasses.replace(t, query_x=t.query_x[:-1], query_y=t.query_y[:-1])]


@pytest.mark.parametrize("k", [1, 4])
def test_augmult_keeps_per_unit_sensitivity(k: int) -> None:
    tasks = _tasks(0)
    full = _clipped_sum(tasks, k=k, shift=2)
    less = _clipped_sum(_remove_last_query(tasks), k=k, shift=2)
    assert C < float(full.norm()) <= 3 * C * (1 + 1e-5)  # three units, each clipped to C
    assert float((full - less).norm()) <= 2 * C * (1 + 1e-5)


def test_augmult_sensitivity_test_detects_copies_as_units() -> None:
    tasks = _tasks(0)
    # the swap of one record between two neighbours' last units, with copies clipped separately
    full = _clipped_sum(tasks, k=4, shift=0, as_units=True)
    other = _tasks(1)[-1]
    swapped = _clipped_sum([*tasks[:-1], other], k=4, shift=0, as_units=True)
    assert float((full - swapped).norm()) > 2 * C  # up to 2KC: the mutation breaks the bound
    ok_full = _clipped_sum(tasks, k=4, shift=0)
    ok_swapped = _clipped_sum([*tasks[:-1], other], k=4, shift=0)
    assert float((ok_full - ok_swapped).norm()) <= 2 * C * (1 + 1e-5)


def test_augmult_unit_gradient_is_mean_of_copies_clipped_once() -> None:
    model = _model()
    learner = ProtoNet(config=LearnerConfig(local_steps=1))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    unit = augment_episode(
        task=_tasks(0)[0], multiplicity=3, max_shift=2, generator=torch.Generator().manual_seed(3)
    )

    def loss_fn(prm: dict[str, torch.Tensor], buf: dict[str, torch.Tensor], task: Task) -> Any:
        return learner.episode(net=FunctionalModel(module=model, params=prm, buffers=buf), task=task)

    grad = torch.func.grad(lambda p: augmult_loss(loss_fn)(p, {}, unit)[0])(params)
    each = [torch.func.grad(lambda p, t=t: loss_fn(p, {}, t)[0])(params) for t in unit.copies]
    for name in params:
        torch.testing.assert_close(grad[name], sum(g[name] for g in each) / 3)
    assert len({float(c.support_x.sum()) for c in unit.copies}) >= 2  # copies differ


def test_shift_records_is_per_record() -> None:
    x = torch.rand(5, 1, 8, 8)
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    together = shift_records(x=x, max_shift=2, generator=gen())
    offsets = torch.randint(-2, 3, (5, 2), generator=gen())
    # record i's output is record i moved by its own offset: no other record enters it
    for i in range(5):
        torch.testing.assert_close(
            together[i], torch.roll(x[i], shifts=tuple(offsets[i].tolist()), dims=(1, 2))
        )
    assert not torch.equal(together, x)
    with pytest.raises(ConfigError):
        shift_records(x=x[0], max_shift=2, generator=gen())


# --------------------------------------------------------------------------------------------------
# Weight standardisation
# --------------------------------------------------------------------------------------------------
def _independent(model: nn.Module, x: torch.Tensor) -> bool:
    model.train()
    together = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])
    return torch.allclose(together, alone, atol=1e-5)


def _ws_conv4(**norm: Any) -> nn.Module:
    """A weight-standardised two-block conv4 for 8 x 8 inputs and 4 classes, from seed 0."""
    torch.manual_seed(0)
    return build_model(
        arch="conv4",
        input_shape=(1, 8, 8),
        num_classes=4,
        hidden=8,
        depth=2,
        weight_standardization=True,
        **norm,
    )


def test_weight_standardisation_keeps_record_independence() -> None:
    ws = _ws_conv4(norm="group", num_groups=2)
    convs = [m for m in ws.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, WSConv2d) for m in convs)
    first = convs[0]
    assert isinstance(first, WSConv2d)
    w = first.standardized_weight()
    torch.testing.assert_close(w.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(dim=(1, 2, 3), unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    x = torch.rand(6, 1, 8, 8)
    assert _independent(ws, x)
    check_record_independent_model(model=ws)
    # per-episode gradients through torch.func see the standardisation
    grads = torch.func.grad(lambda p: torch.func.functional_call(ws, p, (x,)).sum())(
        dict(ws.named_parameters())
    )
    assert all(torch.isfinite(g).all() for g in grads.values())
    # the same check fails for a model that standardises over the batch (BatchNorm)
    bn = _ws_conv4(norm="batch")
    assert not _independent(bn, x)


# --------------------------------------------------------------------------------------------------
# Partial training
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trainable", ["last", "norm"])
def test_frozen_parameters_get_no_update_and_no_noise(trainable: str) -> None:
    work = freeze_except(_model(), trainable=trainable)
    before = copy.deepcopy(work.state_dict())
    frozen = {n for n, p in work.named_parameters() if not p.requires_grad}
    assert frozen and len(frozen) < len(before)
    learner = ProtoNet(config=LearnerConfig(local_steps=2, local_optimizer="sgd", local_lr=1.0))
    engine = EpisodeDPEngineFactory(
        noise_multiplier=5.0,  # large noise: it must not reach a frozen parameter
        max_grad_norm=1.0,
        sample_rate=0.5,
        normaliser=1,
        accountant=StepCounter(noise_multiplier=5.0, sample_rate=0.5),
    )
    learner.local_update(
        model=work,
        tasks=None,  # type: ignore[arg-type]
        rng=np.random.default_rng(0),
        engine=engine,
        units=_Fixed(_tasks(0)),
    )
    after = work.state_dict()
    for name in before:
        if name in frozen:
            assert torch.equal(before[name], after[name]), name
        else:
            assert not torch.equal(before[name], after[name]), name
    with pytest.raises(ConfigError):
        freeze_except(_model(), trainable="most")


# --------------------------------------------------------------------------------------------------
# Declared-public data
# --------------------------------------------------------------------------------------------------
def test_public_alphabets_are_held_by_no_site() -> None:
    cfg = config_from_dict(
        {
            "data": omniglot_greek_public(test_rotations=True),
            "partition": {"num_sites": 5},
            "model": {"norm": "group", "pretrain_steps": 1},
        },
        base_dir=REPO,
    )
    train, test = components.load_splits(config=cfg)
    public = components.load_public(config=cfg)
    val = components.load_validation(config=cfg)
    assert set(public.class_groups) == {"Greek"}
    assert "Greek" not in set(train.class_groups) and "Latin" not in set(train.class_groups)
    assert not set(test.class_groups) & ({"Greek", "Latin"} | set(train.class_groups))
    assert set(val.class_groups) == {"Latin"}
    for site_id in range(5):
        site = components.build_site(config=cfg, site_id=site_id)
        assert "Greek" not in set(site.dataset.class_groups)
    with pytest.raises(ConfigError):
        config_from_dict(
            {"data": {"dataset": "omniglot", "val_alphabets": ["Greek"], "public_alphabets": ["Greek"]}},
            base_dir=REPO,
        )
    with pytest.raises(ConfigError):
        config_from_dict({"data": {"dataset": "omniglot"}, "model": {"pretrain_steps": 5}}, base_dir=REPO)


def test_augmult_runs_through_a_record_level_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import secfed.dp.engines.episodes as engines  # where the augmult engine factory looks it up

    calls: list[int] = []
    original = engines.augment_episode

    def counting(**kwargs: Any) -> Any:
        calls.append(int(kwargs["multiplicity"]))
        return original(**kwargs)

    monkeypatch.setattr(engines, "augment_episode", counting)
    raw = small_digits_dict(
        experiment={"rounds": 1, "final_eval_episodes": 5, "seed": 2},
        model={"arch": "conv4", "hidden": 8, "norm": "group", "groups": 2},
        learner={"name": "protonet", "local_steps": 1},
        privacy={"mode": "record", "noise_multiplier": 1.0, "sample_rate": 0.5, "augmult": 2},
    )
    cfg = config_from_dict(raw, base_dir=REPO)
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    assert result.summary["epsilon"] > 0
    assert calls and set(calls) == {2}  # the sites' DP steps went through augmentation multiplicity
    with pytest.raises(ConfigError, match="augmult"):
        config_from_dict(
            {"learner": {"name": "fedavg"}, "privacy": {"mode": "record", "augmult": 2}}, base_dir=REPO
        )
