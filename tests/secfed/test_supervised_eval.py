"""The supervised evaluation (secfed.supervised_eval): metrics, intervals, wiring into a run.

The statistics are checked against definitions written out the slow way (pairwise counts, hand-made
confusion matrices, SciPy's Wilson interval) and their 95 % intervals by simulation; the wiring by a
tiny FedAvg PneumoniaMNIST run read back the way a reader of the run directory would read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from secfed.config import config_from_dict
from secfed.errors import ConfigError, DataError
from secfed.supervised_eval import (
    SupervisedEvaluation,
    auc_interval,
    midranks,
    roc_auc,
    score_predictions,
    supervised_eval_enabled,
    wilson_interval,
)

PNEUMONIA_NPZ = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
)


# --------------------------------------------------------------------------------------------------
# Definitions written out the slow way
# --------------------------------------------------------------------------------------------------


def _psi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 where a > b, 1/2 where equal, 0 below (every pair)."""
    return (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    return float(_psi(scores[positive], scores[~positive]).mean())


def _pairwise_delong_se(scores: np.ndarray, positive: np.ndarray) -> float:
    """DeLong et al. 1988, eq. for var(AUC) = S10 / m + S01 / n from the pairwise kernel."""
    k = _psi(scores[positive], scores[~positive])
    v10, v01 = k.mean(axis=1), k.mean(axis=0)
    return math.sqrt(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size)


# --------------------------------------------------------------------------------------------------
# Ranks and AUC
# --------------------------------------------------------------------------------------------------


def test_midranks_average_tied_ranks() -> None:
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    # 1,1 -> ranks 1,2 -> 1.5; 2 -> 3; 3,3,3 -> ranks 4,5,6 -> 5
    np.testing.assert_array_equal(midranks(x), [5.0, 1.5, 5.0, 3.0, 5.0, 1.5])
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, size=200).astype(float)
    brute = np.array([(y < v).sum() + ((y == v).sum() + 1) / 2 for v in y])
    np.testing.assert_array_equal(midranks(y), brute)


@pytest.mark.parametrize("seed", range(6))
def test_binary_auc_and_delong_se_match_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 300))
    labels = rng.integers(0, 2, size=n)
    labels[:2] = [0, 1]
    # few distinct values: most pairs tie
    scores = rng.integers(0, 5, size=n) + 0.7 * labels * rng.integers(0, 2, size=n)
    pos = labels == 1
    res = roc_auc(scores=scores, labels=labels)
    assert res is not None
    assert res.auc == pytest.approx(_pairwise_auc(scores, pos), abs=1e-12)
    assert res.se == pytest.approx(_pairwise_delong_se(scores, pos), rel=1e-9)


def test_multiclass_auc_is_one_vs_rest_macro_of_pairwise_counts() -> None:
    rng = np.random.default_rng(7)
    n, k = 150, 4
    labels = rng.integers(0, k, size=n)
    scores = np.round(rng.normal(size=(n, k)) + 0.8 * np.eye(k)[labels], 1)  # rounded: ties
    res = roc_auc(scores=scores, labels=labels)
    assert res is not None
    expected = np.mean([_pairwise_auc(scores[:, c], labels == c) for c in range(k)])
    assert res.auc == pytest.approx(expected, abs=1e-12)
    assert res.classes == (0, 1, 2, 3)
    # two classes: the macro over classes of two columns equals DeLong's binary result
    two = rng.integers(0, 2, size=80)
    p1 = rng.random(80)
    s2 = np.log(np.stack([1 - p1, p1], axis=1))
    macro = roc_auc(scores=s2, labels=two)
    binary = roc_auc(scores=s2[:, 1], labels=two)
    assert macro is not None and binary is not None
    assert macro.auc == pytest.approx(binary.auc) and macro.se == pytest.approx(binary.se)


def test_undefined_and_bad_inputs() -> None:
    assert roc_auc(scores=[0.1, 0.2, 0.3], labels=[1, 1, 1]) is None
    assert roc_auc(scores=np.zeros((3, 3)), labels=[2, 2, 2]) is None
    assert wilson_interval(successes=0, trials=0) is None
    with pytest.raises(DataError, match="shape"):
        roc_auc(scores=[0.1, 0.2], labels=[0, 1, 1])
    with pytest.raises(DataError, match="finite"):
        roc_auc(scores=[0.1, float("nan")], labels=[0, 1])
    with pytest.raises(DataError, match="exceed"):
        wilson_interval(successes=5, trials=4)
    with pytest.raises(DataError, match="outside"):
        score_predictions(log_probs=np.zeros((2, 2)), labels=[0, 2])
    with pytest.raises(DataError, match="auc"):
        auc_interval(auc=1.2, se=0.1)


# --------------------------------------------------------------------------------------------------
# Sensitivity, specificity, accuracy on a hand-made confusion matrix
# --------------------------------------------------------------------------------------------------


def test_sensitivity_specificity_from_a_hand_made_confusion_matrix() -> None:
    # 40 pneumonia (label 1): 30 detected, 10 missed; 60 normal: 45 cleared, 15 flagged
    labels = np.array([1] * 40 + [0] * 60)
    pred = np.array([1] * 30 + [0] * 10 + [0] * 45 + [1] * 15)
    logits = np.where(pred[:, None] == np.arange(2)[None, :], 1.0, -1.0)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    m = score_predictions(log_probs=logp, labels=labels)
    assert (m["records"], m["positives"]) == (100, 40)
    assert m["sensitivity"] == pytest.approx(30 / 40)
    assert m["specificity"] == pytest.approx(45 / 60)
    assert m["accuracy"] == pytest.approx(75 / 100)
    for key, (k, n) in {"sensitivity": (30, 40), "specificity": (45, 60), "accuracy": (75, 100)}.items():
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert m[f"{key}_ci95"] == pytest.approx([ref.low, ref.high], abs=1e-6), key
    # hard predictions: AUC = (sensitivity + specificity) / 2 (one threshold)
    assert m["auc"] == pytest.approx((0.75 + 0.75) / 2)
    # multi-class data: no sensitivity / specificity, macro AUC instead
    m3 = score_predictions(log_probs=np.log(np.full((6, 3), 1 / 3)), labels=[0, 1, 2, 0, 1, 2])
    assert "sensitivity" not in m3 and m3["auc"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# The intervals cover the truth
# --------------------------------------------------------------------------------------------------


def test_auc_interval_covers_the_true_auc_in_simulation() -> None:
    """Binormal scores, true AUC = Phi(mu / sqrt 2); nominal 95 %."""
    rng = np.random.default_rng(2024)
    mu, m, n, reps = 1.5, 40, 60, 400
    truth = float(stats.norm.cdf(mu / math.sqrt(2)))  # 0.856
    hits, hits_wald_half = 0, 0
    for _ in range(reps):
        scores = np.concatenate([rng.normal(mu, 1, m), rng.normal(0, 1, n)])
        labels = np.array([1] * m + [0] * n)
        res = roc_auc(scores=scores, labels=labels)
        assert res is not None and res.se is not None
        lo, hi = auc_interval(auc=res.auc, se=res.se) or (0.0, 0.0)
        hits += lo <= truth <= hi
        # a mutation: half the standard error must under-cover (the test can fail)
        lo2, hi2 = auc_interval(auc=res.auc, se=res.se / 2) or (0.0, 0.0)
        hits_wald_half += lo2 <= truth <= hi2
    assert 0.92 <= hits / reps <= 0.985
    assert hits_wald_half / reps < 0.8


def test_macro_auc_interval_covers_the_truth_in_simulation() -> None:
    """Three classes; column k scores N(mu, 1) for class k, N(0, 1) otherwise: every OvR AUC and the
    macro average equal Phi(mu / sqrt 2)."""
    rng = np.random.default_rng(11)
    mu, reps, sizes = 1.0, 300, (25, 35, 50)
    truth = float(stats.norm.cdf(mu / math.sqrt(2)))
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    hits = 0
    for _ in range(reps):
        scores = rng.normal(size=(labels.size, 3)) + mu * np.eye(3)[labels]
        res = roc_auc(scores=scores, labels=labels)
        assert res is not None and res.se is not None
        lo, hi = auc_interval(auc=res.auc, se=res.se) or (0.0, 0.0)
        hits += lo <= truth <= hi
    assert 0.92 <= hits / reps <= 0.99


def test_wilson_interval_covers_the_true_proportion_in_simulation() -> None:
    rng = np.random.default_rng(5)
    p, n, reps = 0.85, 80, 2000
    hits = 0
    for k in rng.binomial(n, p, size=reps):
        lo, hi = wilson_interval(successes=int(k), trials=n) or (0.0, 0.0)
        hits += lo <= p <= hi
    assert 0.93 <= hits / reps <= 0.975


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _cfg(**sections: dict) -> dict:
    base: dict = {
        "data": {"dataset": "medmnist", "root": str(PNEUMONIA_NPZ)},
        "partition": {"scheme": "dirichlet", "num_sites": 6, "test_sites": 3},
        "task": {"source": "client_as_task"},
        "learner": {"name": "fedavg"},
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return base


def test_switch_is_validated_and_auto_applies_to_fedavg_on_medmnist_only() -> None:
    assert supervised_eval_enabled(config=config_from_dict(_cfg()))
    assert not supervised_eval_enabled(config=config_from_dict(_cfg(experiment={"supervised_eval": "off"})))
    assert supervised_eval_enabled(config=config_from_dict(_cfg(experiment={"supervised_eval": "on"})))
    # auto: silently off where it does not apply
    assert not supervised_eval_enabled(config=config_from_dict({"learner": {"name": "protonet"}}))
    assert not supervised_eval_enabled(config=config_from_dict({"learner": {"name": "fedavg"}}))  # digits
    with pytest.raises(ConfigError, match="experiment.supervised_eval.*protonet"):
        config_from_dict({"experiment": {"supervised_eval": "on"}, "learner": {"name": "protonet"}})
    with pytest.raises(ConfigError, match="experiment.supervised_eval.*digits"):
        config_from_dict({"experiment": {"supervised_eval": "on"}, "learner": {"name": "fedavg"}})
    with pytest.raises(ConfigError, match="experiment.supervised_eval"):
        config_from_dict(_cfg(experiment={"supervised_eval": "yes"}))


# --------------------------------------------------------------------------------------------------
# A tiny FedAvg PneumoniaMNIST run, read back from its run directory
# --------------------------------------------------------------------------------------------------

POOLED_KEYS = (
    "test_supervised_accuracy",
    "test_supervised_accuracy_ci95",
    "test_auc",
    "test_auc_ci95",
    "test_sensitivity",
    "test_sensitivity_ci95",
    "test_specificity",
    "test_specificity_ci95",
    "val_auc",
    "val_supervised_accuracy",
)


@pytest.fixture(scope="module")
def pneumonia_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PNEUMONIA_NPZ.is_file():
        pytest.skip(f"PneumoniaMNIST not found at {PNEUMONIA_NPZ} (shared data missing)")
    from secfed.cli import main

    out = tmp_path_factory.mktemp("pneu") / "run"
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    cfg.write_text(
        f"""
[experiment]
rounds = 2
eval_every = 1
eval_episodes = 4
final_eval_episodes = 8
threads = 1
[data]
dataset = "medmnist"
root = "{PNEUMONIA_NPZ.resolve()}"
[partition]
scheme = "dirichlet"
num_sites = 6
alpha = 0.5
test_sites = 3
[task]
source = "client_as_task"
[model]
arch = "mlp"
hidden = 16
norm = "none"
layers = 1
[learner]
name = "fedavg"
local_steps = 3
batch_size = 32
test_inner_steps = 1
""",
        encoding="utf-8",
    )
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return out


def test_run_writes_the_supervised_metrics(pneumonia_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((pneumonia_run / "summary.json").read_text())
    rows = [json.loads(line) for line in (pneumonia_run / "metrics.jsonl").read_text().splitlines()]
    for key in POOLED_KEYS:
        assert key in summary, key
        assert all(key in r for r in rows), key  # eval_every = 1: every round
    assert summary["supervised_positive_class"] == "pneumonia"
    # the official PneumoniaMNIST test split: 624 records, 390 pneumonia
    assert (summary["test_supervised_records"], summary["test_supervised_positives"]) == (624, 390)
    sites = summary["test_supervised_sites"]
    assert len(sites) == 3 and sum(s["records"] for s in sites) == 624
    assert sum(s["positives"] for s in sites) == 390
    for key in ("test_auc", "test_sensitivity", "test_specificity", "test_supervised_accuracy"):
        lo, hi = summary[key + "_ci95"]
        assert 0 <= lo <= summary[key] <= hi <= 1
    assert summary["val_supervised_records"] == 524
    # the client-as-task accuracy is still there, under its own key
    assert "test_accuracy" in summary and "test_accuracy_ci95" in summary


def test_summary_is_the_global_model_as_released(pneumonia_run: Path) -> None:
    """A reader re-scores the checkpointed global model on the public test split: same numbers (the
    supervised evaluation adapts nothing and scores the released model)."""
    from safetensors.numpy import load_file

    from secfed import components
    from secfed.config import load_config
    from secfed.data.medmnist import load_medmnist
    from secfed.experiment import initial_model
    from secfed.federation.state import load_flat_state, state_spec
    from secfed.tasks.client_task import HeldOutSitesSource

    cfg = load_config(pneumonia_run / "config.toml")
    test = load_medmnist(path=PNEUMONIA_NPZ, split="test")
    model = initial_model(config=cfg, input_shape=test.input_shape, num_classes=2)
    state = json.loads((pneumonia_run / "checkpoint" / "state.json").read_text())
    flat = load_file(str(pneumonia_run / "checkpoint" / state["weights"]))["state"]
    load_flat_state(model, flat, spec=state_spec(model))
    source = components.build_test_source(config=cfg, test=test)
    assert isinstance(source, HeldOutSitesSource)
    mine = SupervisedEvaluation(test=test, sites=[s.dataset for s in source.sites]).evaluate(model=model)
    summary = json.loads((pneumonia_run / "summary.json").read_text())
    assert mine["test_auc"] == pytest.approx(summary["test_auc"], abs=1e-12)
    assert mine["test_sensitivity"] == pytest.approx(summary["test_sensitivity"], abs=1e-12)
    assert [s["auc"] for s in mine["test_supervised_sites"]] == pytest.approx(
        [s["auc"] for s in summary["test_supervised_sites"]], abs=1e-12
    )
    # and it is what the model's probabilities say, not a constant
    with torch.no_grad():
        p1 = torch.softmax(model(torch.from_numpy(np.array(test.images))), dim=1)[:, 1].numpy()
    assert summary["test_auc"] == pytest.approx(
        _pairwise_auc(p1.astype(np.float64), test.labels == 1), abs=1e-6
    )


def test_report_and_sweep_table_show_the_supervised_metrics(pneumonia_run: Path) -> None:
    from evaluations.facts import SUPERVISED_POINT_KEYS
    from evaluations.render_md import sweep_table
    from evaluations.report import write_report

    summary = json.loads((pneumonia_run / "summary.json").read_text())
    paths = write_report(path=pneumonia_run)
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    doc = json.loads(paths.json.read_text(encoding="utf-8"))
    auc = f"{summary['test_auc']:.3f}"
    for text in (html, md):
        assert "Supervised evaluation of the global model on the test split" in text
        assert auc in text and "held-out site test-site2" in text and "public evaluation data" in text
        assert f"{100 * summary['test_sensitivity']:.2f} %" in text
    sup = doc["utility"]["supervised"]
    assert sup["applied"] and len(sup["rows"]) == 5  # pooled, 3 sites, validation
    point = {"name": "eps=inf", "learner": "fedavg", **{k: summary[k] for k in SUPERVISED_POINT_KEYS}}
    table = sweep_table(points=[point])
    assert "test AUC (95 % CI)" in table and auc in table
    # points without the evaluation keep the old columns
    assert "test AUC" not in sweep_table(points=[{"name": "p", "learner": "protonet"}])


def test_cli_prints_the_supervised_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secfed.cli import _supervised_lines

    summary = {
        "supervised_positive_class": "pneumonia",
        "test_supervised_records": 10,
        "test_supervised_accuracy": 0.8,
        "test_supervised_accuracy_ci95": [0.49, 0.94],
        "test_auc": 0.9,
        "test_auc_ci95": [0.6, 0.98],
        "test_sensitivity": 0.75,
        "test_sensitivity_ci95": [0.4, 0.93],
        "test_specificity": 1.0,
        "test_specificity_ci95": [0.5, 1.0],
    }
    lines = _supervised_lines(summary)
    assert "pneumonia" in lines[0]
    assert "AUC 0.900 [0.600, 0.980]" in lines[1] and "sensitivity 75.0 [40.0, 93.0] %" in lines[1]
    assert _supervised_lines({"test_accuracy": 0.5}) == []


def test_sweep_point_and_sweep_report_carry_the_supervised_metrics(pneumonia_run: Path) -> None:
    from evaluations.attack_results import read_attacks
    from evaluations.facts import sweep_facts
    from evaluations.render_html import render_sweep_html
    from evaluations.rundata import load_run
    from evaluations.sweep import _fill_results

    summary = json.loads((pneumonia_run / "summary.json").read_text())
    row: dict = {"name": "eps=inf"}
    _fill_results(row, pneumonia_run)  # what sweep.json / summary.md are written from
    assert row["test_auc"] == summary["test_auc"] and row["test_auc_ci95"] == summary["test_auc_ci95"]
    assert row["test_specificity"] == summary["test_specificity"]
    facts = sweep_facts(
        sweep_dir=pneumonia_run.parent,
        sweep={"points": [{"name": "eps=inf", "learner": "fedavg", "status": "done"}]},
        runs={"eps=inf": (load_run(path=pneumonia_run), read_attacks(run_dir=pneumonia_run))},
    )
    assert facts["points"][0]["test_auc"] == summary["test_auc"]
    html = render_sweep_html(facts=facts, figures={}, generated="now")
    assert "test AUC (95 % CI)" in html and f"{summary['test_auc']:.3f}" in html


def test_summary_gives_the_untrained_models_auc(pneumonia_run: Path) -> None:
    """The random-initialisation floor a reader compares the AUC with: the run's own starting model
    (same seed) re-scored on the public test split gives the summary's ``untrained_test_auc``."""
    from secfed import components
    from secfed.config import load_config
    from secfed.data.medmnist import load_medmnist
    from secfed.experiment import initial_model

    cfg = load_config(pneumonia_run / "config.toml")
    test = load_medmnist(path=PNEUMONIA_NPZ, split="test")
    start = initial_model(config=cfg, input_shape=test.input_shape, num_classes=2)
    source = components.build_test_source(config=cfg, test=test)
    mine = SupervisedEvaluation(test=test, sites=[s.dataset for s in source.sites]).evaluate(model=start)
    summary = json.loads((pneumonia_run / "summary.json").read_text())
    assert summary["untrained_test_auc"] == pytest.approx(mine["test_auc"], abs=1e-12)
    assert summary["untrained_test_auc_ci95"] == pytest.approx(mine["test_auc_ci95"], abs=1e-12)
    assert summary["untrained_test_auc"] != pytest.approx(summary["test_auc"], abs=1e-6)
