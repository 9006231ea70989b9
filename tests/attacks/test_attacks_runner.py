"""The attacks wired into the secfed runtime: run directories in, result files out.

Tiny digits runs (MLP with 16 hidden units, 2 rounds) are trained once per module through
:class:`secfed.experiment.Experiment`; every attack then runs with small iteration counts.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from attacks_toy import tiny_config

from attacks.errors import AttackConfigError, ThreatModelError
from attacks.inversion import GroundTruth, InversionConfig, InversionInputs, run_inversion
from attacks.mia import balanced_inclusion_masks
from attacks.observation import ClientBatch
from attacks.options import AttackOptions
from attacks.replicas import ReplicaError, load_run_data, record_replica, site_subset_replica, train_replica
from attacks.runner import ATTACKS, RunDirError, run_attack
from attacks.secfed_adapter import load_run
from attacks.secfed_inversion import prepare_cases
from attacks.secfed_mia import LevelStats, evaluate_level, independent_masks
from attacks.secfed_observe import client_privacy, private_observe
from attacks.secfed_replay import episode_observation, protonet_loss_fn
from secfed.cli import main
from secfed.config import ExperimentConfig
from secfed.experiment import Experiment
from secfed.tasks.base import Task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIA_KEYS = ("auc", "balanced_accuracy", "tpr_at_fpr", "num_members", "num_nonmembers", "fpr", "tpr")


def _train(root: Path, name: str, config: ExperimentConfig) -> Path:
    out = root / name
    Experiment(config=config).run(out_dir=out, progress=False)
    return out


def _dp_available() -> bool:
    try:
        dp = importlib.import_module("secfed.dp")
    except ModuleNotFoundError:
        return False
    return hasattr(dp, "ServerPrivacy") and hasattr(dp, "build_site_privacy")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("attack-runs")
    out = {name: _train(root, name, tiny_config(name)) for name in ("fedavg", "protonet", "maml")}
    if _dp_available():
        dp = {"mode": "record", "noise_multiplier": 1.0, "sample_rate": 0.05}
        out["fedavg_dp"] = _train(root, "fedavg_dp", tiny_config("fedavg", privacy=dp))
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("attacks"))
    return dst


# ----------------------------------------------------------------------------------------- inversion
def test_inversion_writes_json_and_grid(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy_run(runs["fedavg"], tmp_path / "run")
    doc = run_attack(run_dir=run_dir, attack="inversion", options=AttackOptions(iterations=60))
    data = json.loads((run_dir / "attacks" / "inversion.json").read_text())
    assert data == json.loads(json.dumps(doc))
    png = run_dir / "attacks" / "inversion_grid.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert set(data["scenarios"]) == {
        "gradient_b1",
        "gradient_b4",
        "update_b1",
        "update_b4",
        "secure_aggregate",
    }
    assert "episode" in data["skipped"]
    for name, sc in data["scenarios"].items():
        for key in ("psnr", "ssim", "mse", "label_accuracy", "flat_baseline_psnr"):
            assert isinstance(sc["score"][key], float), (name, key)
        assert sc["records"] == (1 if name.endswith("b1") else 4)
    assert (
        data["scenarios"]["update_b1"]["sent_in_run"]
        and not data["scenarios"]["secure_aggregate"]["sent_in_run"]
    )
    # One record behind a single gradient of an MLP is recovered far beyond the flat-image baseline.
    b1 = data["scenarios"]["gradient_b1"]["score"]
    assert b1["psnr"] > b1["flat_baseline_psnr"] + 10
    assert b1["label_accuracy"] == 1.0


@pytest.mark.parametrize(
    ("learner", "expected", "skipped"),
    [
        (
            "protonet",
            {"gradient_b4", "episode", "secure_aggregate"},
            {"gradient_b1", "update_b1", "update_b4"},
        ),
        ("maml", {"gradient_b1", "gradient_b4", "episode", "secure_aggregate"}, {"update_b1", "update_b4"}),
    ],
)
def test_inversion_scenarios_follow_the_learner(
    runs: dict[str, Path], learner: str, expected: set[str], skipped: set[str]
) -> None:
    run = load_run(run_dir=runs[learner])
    cases, why = prepare_cases(run=run, options=AttackOptions(aggregate_clients=2))
    assert {c.name for c in cases} == expected
    assert set(why) == skipped and all(why.values())
    by_name = {c.name: c for c in cases}
    cfg = run.config
    episode = by_name["episode"]
    assert episode.threat.num_records == cfg.task.n_way * (cfg.task.k_shot + cfg.task.q_query)
    # ProtoNet's relabelled layout is public; MAML's labels are private and must be recovered.
    assert (episode.threat.known_labels is not None) == (learner == "protonet")
    assert by_name["secure_aggregate"].clients == [0, 1]


def test_zeroed_head_scenarios(runs: dict[str, Path]) -> None:
    """Zeroed-head MAML: the episode's label layout is public; zeroed-head Reptile: the update
    scenarios run with a replay that zeroes the head and leaves it out of the update."""
    run = load_run(run_dir=runs["maml"])
    zero = dataclasses.replace(run.config.learner, head_init="zero")
    maml = dataclasses.replace(run, config=run.config.replace(learner=zero))
    cases, _ = prepare_cases(run=maml, options=AttackOptions(aggregate_clients=2))
    episode = {c.name: c for c in cases}["episode"]
    assert episode.threat.known_labels is not None
    reptile_cfg = dataclasses.replace(zero, name="reptile", inner_steps=2)
    reptile = dataclasses.replace(run, config=run.config.replace(learner=reptile_cfg))
    cases, why = prepare_cases(run=reptile, options=AttackOptions(aggregate_clients=2))
    updates = {"update_b1", "update_b4", "secure_aggregate"}
    assert {c.name for c in cases} == {"gradient_b1", "gradient_b4", *updates}
    assert set(why) == {"episode"}
    head = tuple(n for n, _ in run.model.named_parameters() if n.startswith("head."))
    for case in cases:
        if case.name in updates:
            doc = case.threat.observation.describe()
            for part in doc["parts"] if doc["kind"] == "aggregate" else [doc]:
                assert part["zeroed"] == list(head)
            assert all(bool((case.threat.observed[n] == 0).all()) for n in head)


class _OneTask:
    """A task source that always returns the same task (the replay test's client data)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def sample(self, *, rng: np.random.Generator) -> Task:
        return self.task


def test_inversion_inputs_hold_no_ground_truth(runs: dict[str, Path]) -> None:
    run = load_run(run_dir=runs["fedavg"])
    cases, _ = prepare_cases(run=run, options=AttackOptions())
    for case in cases:
        truth = case.truth
        held: list[torch.Tensor] = [*case.threat.observed.values()]
        held += [*(case.threat.params or {}).values(), *(case.threat.buffers or {}).values()]
        for t in held:
            assert t.data_ptr() != truth.inputs.data_ptr()
            assert t.shape != truth.inputs.shape or not torch.equal(t, truth.inputs)
        assert not any(
            isinstance(getattr(case.threat, f.name), GroundTruth) for f in dataclasses.fields(case.threat)
        )
        with pytest.raises(ThreatModelError):
            run_inversion(threat=truth, config=InversionConfig(iterations=1))  # type: ignore[arg-type]
        with pytest.raises(ThreatModelError):
            dataclasses.replace(case.threat, known_labels=truth)  # type: ignore[arg-type]
        with pytest.raises(ThreatModelError):
            InversionInputs(
                model=run.model,
                observed=case.threat.observed,
                observation=truth,  # type: ignore[arg-type]
                num_records=case.threat.num_records,
                input_shape=case.threat.input_shape,
                num_classes=case.threat.num_classes,
            )


@pytest.mark.skipif(not _dp_available(), reason="record-level DP (secfed.dp) is not available")
def test_record_dp_message_is_clipped_and_noised(runs: dict[str, Path]) -> None:
    run = load_run(run_dir=runs["fedavg_dp"])
    priv = client_privacy(config=run.config)
    assert priv.record_level and priv.step_noise_std == pytest.approx(1.0)
    cases, _ = prepare_cases(run=run, options=AttackOptions(scenarios=("gradient_b1",)))
    case = cases[0]
    params = case.threat.params or {}
    buffers = case.threat.buffers or {}
    clean = case.threat.observation.observe(
        params=params, buffers=buffers, inputs=case.truth.inputs, labels=case.truth.labels
    )
    d = sum(v.numel() for v in clean.values())
    eb = run.config.privacy.expected_batch
    batch = ClientBatch(params=params, buffers=buffers, inputs=case.truth.inputs, labels=case.truth.labels)
    noisy = private_observe(observation=case.threat.observation, batch=batch, privacy=priv)
    # The message is (clip(g) + N(0, (zC)^2 I)) / expected_batch: its deviation from the clipped
    # gradient has the norm of the noise, ~ zC sqrt(d) / expected_batch.
    norm = math.sqrt(sum(float((v**2).sum()) for v in clean.values()))
    scale = min(1.0, 1.0 / (norm + 1e-6))
    dev = math.sqrt(sum(float(((noisy[k] - clean[k] * scale / eb) ** 2).sum()) for k in clean))
    assert dev == pytest.approx(math.sqrt(d) / eb, rel=0.15)


# ----------------------------------------------------------------------------------------- adapters
def _random_episode(
    model: torch.nn.Module, *, n_way: int, k_shot: int, n_query: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], Task]:
    """A random 8x8 episode (support, then queries), the parameters as leaves, the buffers and the Task."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n_way * (k_shot + n_query), 1, 8, 8), generator=gen)
    y = torch.cat(
        [torch.arange(n_way).repeat_interleave(k_shot), torch.arange(n_way).repeat_interleave(n_query)]
    )
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    ns = n_way * k_shot
    task = Task(support_x=x[:ns], support_y=y[:ns], query_x=x[ns:], query_y=y[ns:], n_way=n_way)
    return x, y, params, buffers, task


def test_protonet_adapter_is_the_learners_episode_loss(runs: dict[str, Path]) -> None:
    run = load_run(run_dir=runs["protonet"])
    n_way, k_shot, n_query = 3, 2, 2
    x, y, params, buffers, task = _random_episode(
        run.model, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=0
    )
    ref = run.learner.task_loss(model=run.model, params=params, buffers=buffers, task=task)
    loss = protonet_loss_fn(learner=run.learner, model=run.model, n_way=n_way, k_shot=k_shot, n_query=n_query)
    soft = torch.nn.functional.one_hot(y, n_way).float()
    assert float(loss(params, buffers, x, y).detach()) == pytest.approx(float(ref.detach()), rel=1e-6)
    assert float(loss(params, buffers, x, soft).detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


@pytest.mark.parametrize("head_init", ["learned", "zero"])
@pytest.mark.parametrize("learner", ["maml", "fomaml"])
def test_maml_observation_is_the_clients_meta_gradient(
    runs: dict[str, Path], learner: str, head_init: str
) -> None:
    run = load_run(run_dir=runs["maml"])
    cfg = run.config.replace(
        learner=dataclasses.replace(run.config.learner, name=learner, head_init=head_init)
    )
    from secfed import components

    meta = components.build_learner(config=cfg)
    n_way, k_shot, n_query = cfg.task.n_way, 2, 2
    x, y, params, buffers, task = _random_episode(
        run.model, n_way=n_way, k_shot=k_shot, n_query=n_query, seed=1
    )
    loss = meta.task_loss(model=run.model, params=params, buffers=buffers, task=task)
    ref = torch.autograd.grad(loss, list(params.values()))
    obs = episode_observation(
        config=cfg, learner=meta, model=run.model, n_way=n_way, k_shot=k_shot, n_query=n_query
    )
    got = obs.observe(params=params, buffers=buffers, inputs=x, labels=y)
    for (name, g), r in zip(got.items(), ref, strict=True):
        assert torch.allclose(g, r, atol=1e-6), name
    head = [n for n in got if n.startswith("head.")]
    assert head and all(bool((got[n] == 0).all()) == (head_init == "zero") for n in head)


@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_reptile_update_replay_is_the_clients_update(runs: dict[str, Path], head_init: str) -> None:
    """The SGD replay of a Reptile update (one task, one outer SGD step, whole-task inner steps)
    equals what secfed's Reptile client sends, for a meta-learned and for a zeroed head."""
    import copy

    from attacks.secfed_replay import update_observation
    from secfed import components

    run = load_run(run_dir=runs["maml"])
    lr = dataclasses.replace(
        run.config.learner,
        name="reptile",
        head_init=head_init,
        inner_steps=3,
        inner_lr=0.2,
        inner_optimizer="sgd",
        local_optimizer="sgd",
        local_lr=0.7,
        local_steps=1,
        meta_batch=1,
        reptile_inner_batch=0,
    )
    cfg = run.config.replace(learner=lr)
    n_way, k_shot, n_query = cfg.task.n_way, 2, 2
    gen = torch.Generator().manual_seed(2)
    x = torch.rand((n_way * (k_shot + n_query), 1, 8, 8), generator=gen)
    y = torch.cat(
        [torch.arange(n_way).repeat_interleave(k_shot), torch.arange(n_way).repeat_interleave(n_query)]
    )
    ns = n_way * k_shot
    task = Task(support_x=x[:ns], support_y=y[:ns], query_x=x[ns:], query_y=y[ns:], n_way=n_way)
    client = copy.deepcopy(run.model)
    sent = components.build_learner(config=cfg).local_update(
        model=client, tasks=_OneTask(task), rng=np.random.default_rng(0)
    )
    params = {n: p.detach().clone().requires_grad_(True) for n, p in run.model.named_parameters()}
    obs = update_observation(config=cfg, model=run.model, num_records=x.shape[0])
    got = obs.observe(params=params, buffers=dict(run.model.named_buffers()), inputs=x, labels=y)
    assert set(got) == set(sent.delta)
    for name, d in sent.delta.items():
        torch.testing.assert_close(got[name], d, rtol=1e-4, atol=1e-6, msg=name)
    head = [n for n in got if n.startswith("head.")]
    assert head and all(bool((got[n] == 0).all()) == (head_init == "zero") for n in head)
    assert any(bool(got[n].abs().sum() > 0) for n in got if n not in head)


def test_replicas_keep_every_other_site(runs: dict[str, Path], tmp_path: Path) -> None:
    run = load_run(run_dir=runs["fedavg"])
    data = load_run_data(config=run.config)
    keep = np.arange(0, data.shards[1].size, 3)
    spec = record_replica(data=data, site=1, keep=keep)
    for j in (0, 2, 3):
        assert np.array_equal(spec.labels[spec.site_records[j]], data.site_labels(j))
    assert spec.site_records[1].size == keep.size
    sub = site_subset_replica(data=data, sites=[3, 0], seed=run.config.experiment.seed)
    for i, origin in enumerate(sub.site_origin):
        assert np.allclose(sub.images[sub.site_records[i]], data.site_images(origin), atol=0.5 / 255 + 1e-6)
    out = train_replica(config=run.config, data=data, spec=sub, out_dir=tmp_path / "sub", rounds=1)
    assert (out / "checkpoint" / "state.json").is_file()
    # A spec whose shards would not be the intended ones is refused before training.
    bad = dataclasses.replace(spec, site_records=[spec.site_records[1], *spec.site_records[1:]])
    # (its own message, not rewrapped as "replica ... failed" now that a ReplicaError is a SecfedError)
    with pytest.raises(ReplicaError, match=r"^replica site \d+ does not hold the intended records$"):
        train_replica(config=run.config, data=data, spec=bad, out_dir=tmp_path / "bad", rounds=1)
    assert not (tmp_path / "bad" / "run").exists()


# ----------------------------------------------------------------------------------------- MIA
def test_mia_writes_json_and_roc(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy_run(runs["fedavg"], tmp_path / "run")
    doc = run_attack(run_dir=run_dir, attack="mia", options=AttackOptions(references=2, save_scores=True))
    data = json.loads((run_dir / "attacks" / "mia.json").read_text())
    assert data["replicas_trained"] == 6 and doc["replicas_trained"] == 6
    for png in ("mia_roc.png", "mia_client_roc.png"):
        assert (run_dir / "attacks" / png).read_bytes()[:8] == PNG_MAGIC
    assert not (run_dir / "attacks" / "work").exists()
    record = data["record_level"]
    expected = {
        "loss",
        "confidence",
        "lira_online_global",
        "lira_offline_global",
        "lira_offline_global_logpdf",
    }
    assert expected | {"rmia_offline"} <= set(record["attacks"])
    # Two references cannot give a record 2 IN and 2 OUT models: online per-example LiRA is skipped.
    assert "lira_online_per_example" in record["design"]["skipped"]
    evaluated = record["design"]["evaluated"]
    # Records without two OUT references are left out of offline per-example LiRA, target by target.
    assert sum(evaluated["lira_offline_per_example"]) < sum(evaluated["loss"])
    for name, m in record["attacks"].items():
        assert all(k in m for k in MIA_KEYS), name
        assert 0.0 <= m["auc"] <= 1.0 and 0.5 <= m["balanced_accuracy"] <= 1.0
        assert set(m["tpr_at_fpr"]) == {"0.001", "0.01"}
    scores = np.load(run_dir / "attacks" / "mia_scores.npz", allow_pickle=False)
    masks = scores["record_masks"]
    assert masks.shape == (3, scores["record_candidates"].size)
    assert np.intersect1d(scores["record_candidates"], scores["record_population"]).size == 0
    # Loss and confidence see every candidate of every target: members and non-members are the masks.
    assert record["attacks"]["loss"]["num_members"] == int(masks.sum())
    assert record["attacks"]["loss"]["num_nonmembers"] == int((~masks).sum())
    client = data["client_level"]
    assert expected <= set(client["attacks"]) and "rmia_offline" in client["design"]["skipped"]
    assert client["attacks"]["loss"]["num_members"] + client["attacks"]["loss"]["num_nonmembers"] == 3 * 4


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_evaluation_is_unbiased_without_signal(seed: int) -> None:
    # Null world: statistics carry no membership signal. With independent masks every attack must sit
    # at chance; per-record balanced masks bias leave-one-out LiRA (a member of the target has one IN
    # reference fewer), which is why the runner does not use them.
    k, n = 5, 3000
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(k, n, 1))
    prob = 1 / (1 + np.exp(-phi))
    pop = rng.uniform(0.2, 0.8, size=(k, 200))
    fair = independent_masks(num_models=k, labels=np.zeros(n, dtype=np.int64), seed=seed)
    metrics, info = evaluate_level(LevelStats(masks=fair, phi=phi, prob=prob, pop_prob=pop), rmia_ok=True)
    assert set(metrics) == {
        "loss",
        "confidence",
        "lira_online_global",
        "lira_online_per_example",
        "lira_offline_global",
        "lira_offline_per_example",
        "lira_offline_global_logpdf",
        "rmia_offline",
    }
    for name, m in metrics.items():
        assert abs(m.auc - 0.5) < 0.03, (name, m.auc)
    assert all(c < n for c in info["evaluated"]["lira_online_per_example"])
    balanced = balanced_inclusion_masks(num_models=k, pool_size=n, seed=seed)
    biased, _ = evaluate_level(LevelStats(masks=balanced, phi=phi, prob=prob, pop_prob=pop), rmia_ok=True)
    assert biased["lira_online_global"].auc < 0.47


def test_mia_scores_few_shot_records_as_episode_queries(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy_run(runs["protonet"], tmp_path / "run")
    doc = run_attack(
        run_dir=run_dir,
        attack="mia",
        options=AttackOptions(references=2, levels=("record",), passes=2, shots=4),
    )
    design = doc["record_level"]["design"]
    assert design["passes"] == 2 and design["shots"] == 4 and "episodes" in design["statistic"]
    assert "client_level" not in doc
    assert (run_dir / "attacks" / "mia_roc.png").is_file()


def test_mia_refuses_partitions_it_cannot_replicate(tmp_path: Path) -> None:
    run_dir = _train(
        tmp_path, "iid", tiny_config("fedavg", partition={"scheme": "iid"}, experiment={"rounds": 1})
    )
    with pytest.raises(AttackConfigError, match="class_disjoint"):
        run_attack(run_dir=run_dir, attack="mia", options=AttackOptions(references=2))


# ----------------------------------------------------------------------------------------- audit
@pytest.mark.skipif(not _dp_available(), reason="record-level DP (secfed.dp) is not available")
def test_audit_lower_bound_stays_below_the_accountant(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy_run(runs["fedavg_dp"], tmp_path / "run")
    doc = run_attack(run_dir=run_dir, attack="audit", options=AttackOptions(canaries=80, rounds=2))
    data = json.loads((run_dir / "attacks" / "audit.json").read_text())
    assert data == json.loads(json.dumps(doc))
    eps = data["accountant_epsilon"]
    assert isinstance(eps, float) and eps > 0
    run_summary = json.loads((run_dir / "summary.json").read_text())
    assert eps == pytest.approx(run_summary["epsilon_sites"]["0"])  # same config, rounds and steps
    for key in ("one_run", "clopper_pearson"):
        bound = data[key]
        assert bound["method"] in ("one_run", "clopper_pearson") and 0.0 <= bound["epsilon"] <= eps
        assert bound["selection"] == "bonferroni" and bound["confidence"] == pytest.approx(0.95)
    assert data["exceeds_accountant"] is False
    assert data["canaries"]["count"] == 80 and 0 < data["canaries"]["included"] < 80


def test_audit_of_a_non_private_run_has_no_accountant(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy_run(runs["protonet"], tmp_path / "run")
    doc = run_attack(run_dir=run_dir, attack="audit", options=AttackOptions(canaries=30, rounds=1, shots=3))
    assert doc["accountant_epsilon"] is None and doc["exceeds_accountant"] is None
    assert doc["one_run"]["epsilon"] >= 0.0 and "episodes" in doc["statistic"]


# ----------------------------------------------------------------------------------------- runner and CLI
def test_run_attack_rejects_bad_input(tmp_path: Path, runs: dict[str, Path]) -> None:
    assert set(ATTACKS) == {"inversion", "mia", "audit", "whitebox-audit", "blackbox-init-audit"}
    with pytest.raises(AttackConfigError, match="attack must be one of"):
        run_attack(run_dir=runs["fedavg"], attack="poison")
    with pytest.raises(RunDirError, match="does not exist"):
        run_attack(run_dir=tmp_path / "nowhere", attack="mia")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="config.toml"):
        run_attack(run_dir=tmp_path / "empty", attack="mia")
    half = _copy_run(runs["fedavg"], tmp_path / "half")
    for f in (half / "checkpoint").iterdir():
        f.unlink()
    with pytest.raises(RunDirError, match="checkpoint"):
        run_attack(run_dir=half, attack="inversion")
    with pytest.raises(AttackConfigError, match="references"):
        AttackOptions(references=1)


def test_cli_attack(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", str(tmp_path / "missing"), "--attack", "mia"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notrun").mkdir()
    assert main(["attack", str(tmp_path / "notrun"), "--attack", "audit"]) == 2
    assert "config.toml" in capsys.readouterr().err
    run_dir = _copy_run(runs["fedavg"], tmp_path / "run")
    assert main(["attack", str(run_dir), "--attack", "inversion", "--iterations", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "gradient_b1" in out and "PSNR" in out and str(run_dir / "attacks" / "inversion.json") in out
    assert main(["attack", str(run_dir), "--attack", "mia", "--site", "9"]) == 2
    assert "site must be in [0, 4)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(run_dir), "--attack", "poison"])
    assert exc.value.code == 2
