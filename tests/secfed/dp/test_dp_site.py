"""Tests of the site-side privacy hook (secfed.dp.site): record-level DP-SGD and client-level clipping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from privacy.dpsgd import RecordCouplingModelError
from privacy.sampling import EpisodeIndices
from secfed import components
from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp.site import (
    ADJACENCY_CLIENT,
    ADJACENCY_RECORD,
    ClientLevelSitePrivacy,
    EpisodicSitePrivacy,
    PerSampleSitePrivacy,
    RecordSitePrivacy,
    SitePrivacy,
    SitePrivacyStateError,
    build_site_privacy,
    episode_task,
)
from secfed.errors import ConfigError
from secfed.federation.state import flat_state, state_spec
from secfed.models.params import num_params

REPO = Path(__file__).resolve().parents[3]
REPORT_KEYS = {"mode", "unit", "adjacency", "mechanism", "noise_multiplier", "sample_rate", "steps"}
MECHANISMS = {
    "protonet": "episodic-gaussian",
    "maml": "episodic-gaussian",
    "fomaml": "episodic-gaussian",
    "reptile": "per-sample-gaussian",
    "fedavg": "per-sample-gaussian",
}


def tiny_dict(**sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny digits configuration (MLP hidden 16, no norm) in record-level DP mode."""
    base: dict[str, dict[str, Any]] = {
        "experiment": {"rounds": 2, "eval_every": 0, "eval_episodes": 5, "final_eval_episodes": 5, "seed": 3},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 2, "inner_steps": 2},
        "privacy": {"mode": "record", "noise_multiplier": 1.0, "sample_rate": 0.05, "expected_batch": 8},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def tiny_config(**sections: dict[str, Any]) -> ExperimentConfig:
    return config_from_dict(tiny_dict(**sections), base_dir=REPO)


def parts(cfg: ExperimentConfig, site_id: int = 0) -> tuple[Any, Any, Any, SitePrivacy]:
    """Site, model (seeded), learner and privacy hook of one site."""
    site = components.build_site(config=cfg, site_id=site_id)
    torch.manual_seed(0)
    model = components.build_model(config=cfg, input_shape=site.input_shape)
    learner = components.build_learner(config=cfg)
    return site, model, learner, build_site_privacy(config=cfg, site_id=site_id, site=site)


def run_round(hook: SitePrivacy, *, learner: Any, model: Any, site: Any, rnd: int) -> np.ndarray:
    """One round as the client runtime does it; returns the released flat update."""
    spec = state_spec(model)
    before = flat_state(model, spec=spec)
    hook.local_update(learner=learner, model=model, site=site, rng=np.random.default_rng(rnd), round_idx=rnd)
    update = (flat_state(model, spec=spec) - before).astype(np.float32)
    return hook.finalize_update(update=update, round_idx=rnd)


# ---------------------------------------------------------------------------------------------
# Federated runs in record mode, one per learner
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("learner", ["protonet", "maml", "fomaml", "reptile", "fedavg"])
def test_federated_record_level_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learner: str) -> None:
    import secfed.dp
    from secfed.experiment import Experiment

    hooks: dict[int, SitePrivacy] = {}

    def recording_build(*, config: ExperimentConfig, site_id: int, site: Any, **kwargs: Any) -> SitePrivacy:
        hooks[site_id] = build_site_privacy(config=config, site_id=site_id, site=site, **kwargs)
        return hooks[site_id]

    monkeypatch.setattr(secfed.dp, "build_site_privacy", recording_build)
    cfg = tiny_config(learner={"name": learner})
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)

    rounds, local, inner = cfg.experiment.rounds, cfg.learner.local_steps, cfg.learner.inner_steps
    per_round = local * inner if learner == "reptile" else local
    assert result.summary["rounds"] == rounds
    assert math.isfinite(result.summary["test_accuracy"])
    assert sorted(hooks) == list(range(cfg.partition.num_sites))
    for hook in hooks.values():
        assert isinstance(hook, RecordSitePrivacy)
        # The accountant composes, across rounds, the DP steps of the site's worst class
        # (class-aware: a record takes part only in steps whose public plan holds its class).
        # Every step's 4 slots of 3 classes cover the 5 classes of a site, except Reptile's
        # 3-class tasks: its worst class has at most every step.
        worst = hook.class_counts.worst
        assert hook.accountant.total_steps == worst
        assert hook.accountant.history == [(1.0, 0.05, worst)]
        if learner == "reptile":
            assert inner <= worst <= per_round * rounds
        else:
            assert worst == per_round * rounds
        assert 0 < hook.epsilon < math.inf
        report = hook.round_report(round_idx=rounds)
        # Reptile: the worst class's increase in the last round, a function of the public plan.
        reported = report["steps"] if learner == "reptile" else per_round
        assert 0 <= reported <= per_round
        assert report == {
            "mode": "record",
            "unit": "record",
            "adjacency": ADJACENCY_RECORD,
            "mechanism": MECHANISMS[learner],
            "noise_multiplier": 1.0,
            "sample_rate": 0.05,
            "steps": reported,
        }
        desc = hook.describe()
        assert desc["unit"] == "record" and desc["max_grad_norm"] == 1.0 and desc["expected_batch"] == 8
        if isinstance(hook, EpisodicSitePrivacy):
            # The sampler's step counter persisted across rounds: no (secret seed, step) reuse.
            assert hook.sampler.step == per_round * rounds


# ---------------------------------------------------------------------------------------------
# Noise is really added, at the documented scale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("learner", ["protonet", "maml", "reptile", "fedavg"])
def test_noise_dominates_and_has_the_documented_scale(learner: str) -> None:
    lr, inner_lr, steps, inner, batch, slots = 0.01, 0.05, 2, 2, 8, 3
    norms: dict[float, float] = {}
    for z in (1e-4, 100.0):
        cfg = tiny_config(
            learner={
                "name": learner,
                "local_steps": steps,
                "local_lr": lr,
                "local_optimizer": "sgd",
                "inner_steps": inner,
                "inner_lr": inner_lr,
                "inner_optimizer": "sgd",
            },
            privacy={"noise_multiplier": z, "expected_batch": batch, "episodes_per_step": slots},
        )
        site, model, lrn, hook = parts(cfg)
        update = run_round(hook, learner=lrn, model=model, site=site, rnd=1)
        norms[z] = float(np.linalg.norm(update.astype(np.float64)))
        d = num_params(model)
    # Noise std per coordinate and step (clip norm C = 1): 2zC/E for per-episode clipping
    # (sensitivity 2C, divided by the E = episodes_per_step slots), zC/B for per-record clipping
    # (B = expected_batch); SGD makes the update linear in it.
    if learner in ("protonet", "maml"):
        per_coord = lr * 2 * 100.0 / slots * math.sqrt(steps)
        # Without noise, clipping bounds every step by lr * (episodes * C) / E <= lr * C.
        assert norms[1e-4] <= steps * lr * 1.001 + 1e-6
    elif learner == "fedavg":
        per_coord = lr * 100.0 / batch * math.sqrt(steps)
    else:  # reptile: outer SGD (lr) on the inner SGD (inner_lr) differences
        per_coord = lr * inner_lr * 100.0 / batch * math.sqrt(steps * inner)
    assert norms[100.0] > 100 * norms[1e-4]
    assert norms[100.0] == pytest.approx(per_coord * math.sqrt(d), rel=0.1)


# ---------------------------------------------------------------------------------------------
# Client-level modes
# ---------------------------------------------------------------------------------------------
def test_client_mode_clips_by_scaling_to_c_exactly() -> None:
    cfg = tiny_config(privacy={"mode": "client", "max_grad_norm": 1.5, "noise_multiplier": 0.8})
    hook = build_site_privacy(config=cfg, site_id=0, site=components.build_site(config=cfg, site_id=0))
    assert isinstance(hook, ClientLevelSitePrivacy)
    rng = np.random.default_rng(0)
    big = rng.normal(size=1000).astype(np.float32) * 0.5  # norm ~ 15.8
    out = hook.finalize_update(update=big, round_idx=1)
    assert out.dtype == np.float32 and out.shape == big.shape
    assert np.linalg.norm(out.astype(np.float64)) <= 1.5 + 1e-6
    assert np.linalg.norm(out.astype(np.float64)) == pytest.approx(1.5, abs=1e-5)
    # Scaled, not truncated: the same direction, every coordinate shrunk by one factor.
    factor = 1.5 / np.linalg.norm(big.astype(np.float64))
    np.testing.assert_allclose(out, big * factor, rtol=1e-5, atol=1e-8)
    small = (big / np.linalg.norm(big) * 0.7).astype(np.float32)
    np.testing.assert_array_equal(hook.finalize_update(update=small, round_idx=1), small)


def test_client_mode_trains_like_the_learner_and_reports_client_unit() -> None:
    cfg = tiny_config(
        privacy={"mode": "client", "noise_multiplier": 0.8},
        federation={"sampling": "poisson", "sample_rate": 0.5},
    )
    site, model, learner, hook = parts(cfg)
    reference = components.build_model(config=cfg, input_shape=site.input_shape)
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    hook.local_update(learner=learner, model=model, site=site, rng=np.random.default_rng(9), round_idx=1)
    torch.manual_seed(5)
    learner.local_update(model=reference, tasks=site.tasks, rng=np.random.default_rng(9))
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert hook.round_report(round_idx=1) == {
        "mode": "client",
        "unit": "client",
        "adjacency": ADJACENCY_CLIENT,
        "mechanism": "client-clip",
        "noise_multiplier": 0.8,
        "sample_rate": 0.5,
        "steps": 1,
    }


def test_distributed_mode_uses_client_clipping() -> None:
    cfg = tiny_config(
        privacy={"mode": "distributed", "mechanism": "skellam", "max_grad_norm": 0.5},
        federation={"aggregation": "secagg", "clients_per_round": 3},
    )
    hook = build_site_privacy(config=cfg, site_id=1, site=components.build_site(config=cfg, site_id=1))
    assert isinstance(hook, ClientLevelSitePrivacy)
    out = hook.finalize_update(update=np.full(100, 1.0, dtype=np.float32), round_idx=1)
    assert np.linalg.norm(out) == pytest.approx(0.5, abs=1e-6)
    desc = hook.describe()
    assert desc["unit"] == "client" and desc["mechanism"] == "client-clip" and desc["sample_rate"] == 0.75


# ---------------------------------------------------------------------------------------------
# Refusals, budget, state
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("learner", ["protonet", "fedavg"])
def test_batchnorm_model_is_refused_before_any_step(learner: str) -> None:
    cfg = tiny_config(learner={"name": learner})
    site, _, lrn, hook = parts(cfg)
    bn_cfg = config_from_dict(
        tiny_dict(learner={"name": learner}, model={"norm": "batch"}, privacy={"mode": "none"})
    )
    bn_model = components.build_model(config=bn_cfg, input_shape=site.input_shape)
    before = flat_state(bn_model, spec=state_spec(bn_model))
    with pytest.raises(RecordCouplingModelError, match="BatchNorm"):
        hook.local_update(learner=lrn, model=bn_model, site=site, rng=np.random.default_rng(0), round_idx=1)
    np.testing.assert_array_equal(flat_state(bn_model, spec=state_spec(bn_model)), before)
    assert isinstance(hook, RecordSitePrivacy) and hook.accountant.total_steps == 0


def test_budget_exhaustion_stops_training_and_is_reported() -> None:
    from privacy.accountants import RDPAccountant

    probe = RDPAccountant()
    eps = [
        probe.projected_epsilon(delta=1e-5, noise_multiplier=1.0, sample_rate=0.05, num_steps=n)
        for n in (2, 4)
    ]
    cfg = tiny_config(learner={"name": "fedavg"}, privacy={"epsilon_budget": (eps[0] + eps[1]) / 2})
    site, model, learner, hook = parts(cfg)
    assert isinstance(hook, PerSampleSitePrivacy)
    first = run_round(hook, learner=learner, model=model, site=site, rnd=1)
    assert np.linalg.norm(first) > 0
    assert hook.round_report(round_idx=1)["steps"] == 2
    assert "budget_exhausted" not in hook.round_report(round_idx=1)
    second = run_round(hook, learner=learner, model=model, site=site, rnd=2)
    np.testing.assert_array_equal(second, np.zeros_like(second))
    report = hook.round_report(round_idx=2)
    assert report["steps"] == 0 and report["budget_exhausted"] is True
    assert set(report) == REPORT_KEYS | {"budget_exhausted"}
    assert hook.accountant.total_steps == 2
    assert hook.epsilon == pytest.approx(eps[0])


def test_round_report_needs_the_matching_local_update() -> None:
    cfg = tiny_config()
    site, model, learner, hook = parts(cfg)
    with pytest.raises(SitePrivacyStateError):
        hook.round_report(round_idx=1)
    run_round(hook, learner=learner, model=model, site=site, rnd=1)
    assert set(hook.round_report(round_idx=1)) == REPORT_KEYS
    with pytest.raises(SitePrivacyStateError):
        hook.round_report(round_idx=2)


def test_bad_configurations_are_refused_before_training() -> None:
    cfg = tiny_config(task={"source": "client_as_task"})
    site = components.build_site(config=tiny_config(), site_id=0)
    with pytest.raises(ConfigError, match="task.source"):
        build_site_privacy(config=cfg, site_id=0, site=site)
    with pytest.raises(ConfigError, match="n_way"):
        build_site_privacy(
            config=tiny_config(task={"n_way": 6, "test_n_way": 6}), site_id=0, site=site
        )  # a class-disjoint digits site holds 5 classes
    with pytest.raises(SitePrivacyStateError):
        build_site_privacy(config=tiny_config(), site_id=1, site=site)
    with pytest.raises(ConfigError, match="privacy.mode"):
        build_site_privacy(config=tiny_config(privacy={"mode": "none"}), site_id=0, site=site)
    hook = build_site_privacy(config=tiny_config(), site_id=0, site=site)
    other = components.build_learner(config=tiny_config(learner={"name": "fomaml"}))
    model = components.build_model(config=tiny_config(), input_shape=site.input_shape)
    with pytest.raises(ConfigError, match="learner"):
        hook.local_update(learner=other, model=model, site=site, rng=np.random.default_rng(0), round_idx=1)


# ---------------------------------------------------------------------------------------------
# Episode materialisation
# ---------------------------------------------------------------------------------------------
def test_episode_task_drops_unsupported_queries_and_compacts_labels() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1)
    episode = EpisodeIndices(
        slot=0,
        classes=(7, 3, 9),
        support_index=np.array([0, 4]),
        support_label=np.array([2, 0]),
        query_index=np.array([1, 2, 5]),
        query_label=np.array([0, 1, 2]),  # class 1 (label 3) has no support record
    )
    task = episode_task(x=x, episode=episode)
    assert task is not None and task.n_way == 2
    assert task.support_y.tolist() == [1, 0] and task.support_x.flatten().tolist() == [0.0, 4.0]
    assert task.query_y.tolist() == [0, 1] and task.query_x.flatten().tolist() == [1.0, 5.0]
    no_query = EpisodeIndices(
        slot=1,
        classes=(7, 3, 9),
        support_index=np.array([0]),
        support_label=np.array([0]),
        query_index=np.array([1]),
        query_label=np.array([1]),
    )
    assert episode_task(x=x, episode=no_query) is None
