"""Record-level DP runs each learner's own training code, and accounts class-aware (issue 17, item 1).

* With zero noise, a clip no gradient reaches and the normaliser equal to the actual number of
  units, the site's DP path reproduces the non-private learner's update on the same units with the
  same seeds, for all five learners. The DP path calls the learner's ``local_update`` with a DP
  engine and a private unit source; a second copy of a loop would drift (it did: DP Reptile ignored
  ``head_init = "zero"``).
* DP Reptile with a zeroed head leaves the head unchanged, as the learner does (fails on the code
  before this change: the head moved by 0.0107).
* Class-aware accounting: the issue's figure (190 classes, 5-way, 4 slots, T = 1000, q = 0.05,
  z = 1: ε ≈ 4.45 against 11.98), and the site's reports, accountant and ledger compose the worst
  class's steps, a function of the public plan that the server can recompute.
* The attack replay's DP step is the engines' DP optimiser with the sites' normaliser.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privacy.accountants import RDPAccountant
from privacy.sampling import draw_slots
from secfed import components
from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp.engines import ClassStepCounts, release_step, step_normaliser
from secfed.dp.site import EpisodicSitePrivacy, PerSampleSitePrivacy, build_site_privacy, episode_task
from secfed.learners.common import head_names
from secfed.seeding import derive_seed
from secfed.tasks.base import Task
from tests.secfed.runtime.runtime_cfg import tiny_config_dict

REPO = Path(__file__).resolve().parents[3]
EPISODIC = ("protonet", "maml", "fomaml")


def _digits_config(
    *, task: dict[str, Any], model: dict[str, Any], learner: dict[str, Any], privacy: dict[str, Any]
) -> ExperimentConfig:
    """One round of the runtime tests' tiny digits federation (4 class-disjoint sites, seed 3) with these
    sections."""
    one_round = {"rounds": 1, "eval_every": 0, "eval_episodes": 5, "final_eval_episodes": 5}
    sections = tiny_config_dict(
        experiment=one_round, task=task, model=model, learner=learner, privacy=privacy
    )
    return config_from_dict(sections, base_dir=REPO)


def _config(learner: str, **privacy: Any) -> ExperimentConfig:
    lr: dict[str, Any] = {
        "name": learner,
        "local_steps": 2,
        "local_lr": 0.1,
        "local_optimizer": "sgd",
        "inner_steps": 2,
        "inner_lr": 0.1,
        "inner_optimizer": "sgd",
        "meta_batch": 2,
    }
    if learner == "reptile":
        lr.update(local_lr=1.0)
    n_way = 5 if learner == "reptile" else 3  # Reptile: every task holds the site's 5 classes
    test_n_way = n_way if learner == "reptile" else 3
    return _digits_config(
        task={"n_way": n_way, "k_shot": 1, "q_query": 2, "test_n_way": test_n_way, "test_q_query": 2},
        model={"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
        learner=lr,
        privacy={"mode": "record", **privacy},
    )


def _parts(cfg: ExperimentConfig, *, state_dir: Path | None = None) -> tuple[Any, Any, Any, Any]:
    site = components.build_site(config=cfg, site_id=0)
    torch.manual_seed(0)
    model = components.build_model(config=cfg, input_shape=site.input_shape)
    return (
        site,
        model,
        components.build_learner(config=cfg),
        build_site_privacy(config=cfg, site_id=0, site=site, state_dir=state_dir),
    )


def _site_tensors(site: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.array(site.dataset.images, dtype=np.float32))
    y = torch.from_numpy(np.array(site.dataset.labels, dtype=np.int64))
    return x, y


class _ReplayEpisodes:
    """The plain learner's unit source: the very episodes the DP sampler drew (a copy of it)."""

    def __init__(self, *, sampler: Any, x: torch.Tensor) -> None:
        self._sampler, self._x = sampler, x
        self.sizes: list[int] = []

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        tasks = [
            t
            for e in self._sampler.sample().episodes
            if (t := episode_task(x=self._x, episode=e)) is not None
        ]
        self.sizes.append(len(tasks))
        return tasks


class _AllRecordsOfClasses:
    """Plain Reptile's task source: the same public class draw, with every record of those classes."""

    def __init__(self, *, x: torch.Tensor, y: torch.Tensor, classes: list[int], n_way: int) -> None:
        self._x, self._y, self._classes, self._n_way = x, y, np.asarray(classes), n_way

    def sample(self, *, rng: np.random.Generator) -> Task:
        chosen = torch.as_tensor(rng.choice(self._classes, size=self._n_way, replace=False))
        match = self._y.reshape(-1, 1) == chosen.reshape(1, -1)
        keep = torch.nonzero(match.any(dim=1)).flatten()  # sorted, as a Poisson batch at q = 1
        labels = match[keep].to(torch.long).argmax(dim=1)
        half = keep.shape[0] // 2
        return Task(
            support_x=self._x[keep[:half]],
            support_y=labels[:half],
            query_x=self._x[keep[half:]],
            query_y=labels[half:],
            n_way=self._n_way,
        )


class _AllRecords:
    """Plain FedAvg's batch source: every record, in order (a Poisson batch at q = 1)."""

    def __init__(self, *, x: torch.Tensor, y: torch.Tensor) -> None:
        self._x, self._y = x, y

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._x, self._y


@pytest.mark.parametrize("learner", ["protonet", "maml", "fomaml", "reptile", "fedavg"])
def test_dp_without_noise_or_clipping_is_the_learners_own_update(learner: str) -> None:
    slots = 2
    probe = components.build_site(config=_config(learner), site_id=0)
    # The normaliser equals the actual number of units: the slots of a step (all usable at q = 1),
    # or every record of the site (Reptile's tasks hold all 5 classes; FedAvg reads every record).
    batch = slots if learner in EPISODIC else int(probe.num_records)
    cfg = _config(
        learner,
        noise_multiplier=0.0,
        max_grad_norm=1e6,
        sample_rate=1.0,
        expected_batch=batch,
        episodes_per_step=slots,
    )
    site, model, lrn, hook = _parts(cfg)
    reference = copy.deepcopy(model)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = _site_tensors(site)
    if isinstance(hook, EpisodicSitePrivacy):
        replay = _ReplayEpisodes(sampler=copy.deepcopy(hook.sampler), x=x)  # same key, same step
    hook.local_update(learner=lrn, model=model, site=site, rng=np.random.default_rng(7), round_idx=1)

    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    if learner in EPISODIC:
        lrn.local_update(model=reference, tasks=site.tasks, rng=rng, units=replay)
        assert replay.sizes == [slots] * cfg.learner.local_steps
    elif learner == "reptile":
        source = _AllRecordsOfClasses(x=x, y=y, classes=list(site.public_classes), n_way=cfg.task.n_way)
        lrn.local_update(model=reference, tasks=source, rng=rng)
    else:
        lrn.local_update(model=reference, tasks=_AllRecords(x=x, y=y), rng=rng)

    moved = 0.0
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{learner}: {name} differs")
        moved += float((b.detach() - initial[name]).norm())
    assert moved > 1e-3  # the update is not trivially zero
    assert hook.round_report(round_idx=1)["steps"] > 0


def test_dp_reptile_with_a_zeroed_head_leaves_the_head_unchanged() -> None:
    """Fails on the old DP copy of Reptile's loop: it trained the head (moved by 0.0107)."""
    cfg = _digits_config(
        task={"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        model={"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        learner={
            "name": "reptile",
            "local_steps": 2,
            "inner_steps": 3,
            "head_init": "zero",
            "inner_lr": 0.1,
        },
        privacy={"mode": "record", "noise_multiplier": 0.5, "sample_rate": 0.3, "expected_batch": 8},
    )
    site, model, learner, hook = _parts(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook.local_update(learner=learner, model=model, site=site, rng=np.random.default_rng(1), round_idx=1)
    after = dict(model.named_parameters())
    heads = head_names(model)
    assert heads
    for name in heads:
        assert torch.equal(after[name].detach(), before[name]), (
            f"{name} moved by {(after[name] - before[name]).norm()}"
        )
    assert any(not torch.equal(after[n].detach(), before[n]) for n in before if n not in heads)


# ------------------------------------------------------------------------------------------------
# Class-aware accounting
# ------------------------------------------------------------------------------------------------
def test_class_aware_epsilon_of_the_review_example() -> None:
    classes = list(range(190))
    counts = ClassStepCounts(classes=tuple(classes))
    plans = [
        np.unique(draw_slots(classes=classes, num_slots=4, n_way=5, public_seed=11, step=t))
        for t in range(1000)
    ]
    assert counts.increment(plans) == counts.record(plans) == counts.worst
    aware, every = RDPAccountant(), RDPAccountant()
    aware.step(noise_multiplier=1.0, sample_rate=0.05, num_steps=counts.worst)
    every.step(noise_multiplier=1.0, sample_rate=0.05, num_steps=1000)
    eps_aware, eps_every = aware.get_epsilon(delta=1e-5), every.get_epsilon(delta=1e-5)
    # A class is in a step with probability 1 - (1 - 5/190)^4 = 0.101: ~101 steps on average,
    # ~125 for the worst of 190 classes (122-131 over public seeds 0-3: eps 4.36-4.49).
    assert 110 <= counts.worst <= 140
    assert eps_every == pytest.approx(11.98, abs=0.01)
    assert eps_aware == pytest.approx(4.45, abs=0.2)


def test_class_counts_restart_conservatively_and_refuse_unknown_classes() -> None:
    counts = ClassStepCounts(classes=(1, 2, 3), base=7)
    assert counts.worst == 7
    assert counts.record([{1}, {1, 2}]) == 2 and counts.worst == 9
    assert counts.increment([{3}, {3}]) == 0  # class 3 stays below the worst class
    assert counts.increment([{1}]) == 1
    from secfed.dp.engines import DPEngineError

    with pytest.raises(DPEngineError, match="class 4"):
        counts.record([{4}])


@pytest.mark.parametrize("learner", ["protonet", "reptile"])
def test_site_reports_and_composes_the_worst_class_steps_from_the_public_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learner: str
) -> None:
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "keys"))
    cfg = _digits_config(
        task={"n_way": 2, "k_shot": 1, "q_query": 2, "test_n_way": 2, "test_q_query": 2},
        model={"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
        learner={"name": learner, "local_steps": 6, "inner_steps": 2, "meta_batch": 1},
        privacy={"mode": "record", "noise_multiplier": 1.0, "sample_rate": 0.1, "episodes_per_step": 1},
    )
    state = tmp_path / "site"
    site, model, learner_obj, hook = _parts(cfg, state_dir=state)
    assert isinstance(hook, EpisodicSitePrivacy | PerSampleSitePrivacy)
    classes = [int(c) for c in site.public_classes]
    # What the server (or anyone with the configuration) recomputes from the public plan.
    expected = ClassStepCounts(classes=tuple(classes))
    reported = []
    for rnd in (1, 2):
        rng = np.random.default_rng(derive_seed(3, "tasks", rnd, 0))
        if learner == "protonet":
            seed = derive_seed(3, "dp-episode-slots", 0)
            plans: list[set[int]] = [
                set(
                    draw_slots(classes=classes, num_slots=1, n_way=2, public_seed=seed, step=t)
                    .ravel()
                    .tolist()
                )
                for t in range((rnd - 1) * 6, rnd * 6)
            ]
        else:
            probe = np.random.default_rng(derive_seed(3, "tasks", rnd, 0))
            tasks = [set(probe.choice(np.asarray(classes), size=2, replace=False).tolist()) for _ in range(6)]
            plans = [t for t in tasks for _ in range(2)]  # inner_steps DP steps per task
        want = expected.record(plans)
        hook.local_update(learner=learner_obj, model=model, site=site, rng=rng, round_idx=rnd)
        reported.append(hook.round_report(round_idx=rnd)["steps"])
        assert reported[-1] == want
    every = 2 * hook.steps_per_round
    assert sum(reported) == expected.worst < every  # 2 of 5 classes per step: strictly fewer
    assert hook.accountant.total_steps == expected.worst
    # The ledger holds the same steps; a restarted site replays them and, not knowing the
    # per-class counts any more, takes every class to be at the worst count (conservative).
    restarted = build_site_privacy(config=cfg, site_id=0, site=site, state_dir=state)
    assert isinstance(restarted, EpisodicSitePrivacy | PerSampleSitePrivacy)
    assert restarted.accountant.total_steps == expected.worst
    assert restarted.class_counts.worst == expected.worst
    assert restarted.epsilon == pytest.approx(hook.epsilon)


# ------------------------------------------------------------------------------------------------
# Normaliser and the attack replay
# ------------------------------------------------------------------------------------------------
def test_episodic_normaliser_is_the_slot_count_and_the_attack_replay_uses_it() -> None:
    from attacks.secfed_observe import client_privacy

    cfg = _config("protonet", expected_batch=32, episodes_per_step=4, noise_multiplier=1.0)
    assert step_normaliser(config=cfg) == 4
    priv = client_privacy(config=cfg)
    assert priv.normaliser == 4 and priv.step_noise_std == pytest.approx(2.0)
    assert step_normaliser(config=_config("fedavg", expected_batch=32)) == 32
    g = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0])}
    h = {"w": torch.tensor([0.3, 0.4]), "b": torch.tensor([1.0])}
    out = release_step(unit_grads=[g, h], max_grad_norm=1.0, noise_multiplier=0.0, normaliser=4)
    # g clipped to norm 1 (Opacus' factor C / (norm + 1e-6)), h (norm 1.118) too, summed, / 4.
    fg, fh = 1.0 / (5.0 + 1e-6), 1.0 / (math.sqrt(1.25) + 1e-6)
    torch.testing.assert_close(out["w"], (g["w"] * fg + h["w"] * fh) / 4)
    torch.testing.assert_close(out["b"], (h["b"] * fh) / 4)
