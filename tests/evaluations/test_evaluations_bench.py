"""The benchmark driver's planning and flag handling, and the Omniglot paper table (no benchmark is run)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from evaluations import bench
from evaluations.benchmarks.omniglot import PUBLISHED, parse_settings, settings_markdown
from evaluations.errors import BenchError


def test_plan_orders_and_filters() -> None:
    names = [b.name for b in bench.plan(only=None, quick=False)]
    assert names == [
        "omniglot",
        "secagg",
        "dp_overhead",
        "ledger",
        "attacks",
        "audit_canary_clients",
        "audit_fdp",
        "sweep-digits",
        "sweep-omniglot",
    ]
    assert "sweep-omniglot" not in [b.name for b in bench.plan(only=None, quick=True)]
    assert [b.name for b in bench.plan(only=["sweep-omniglot", "secagg"], quick=True)] == [
        "secagg",
        "sweep-omniglot",
    ]
    with pytest.raises(BenchError, match="unknown benchmark"):
        bench.plan(only=["secagg", "nope"], quick=False)


def test_main_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--only", "nope"]) == 2
    assert "choose from omniglot" in capsys.readouterr().err


def test_filter_flags_drops_unsupported_flags_and_their_values() -> None:
    args = ["--out", "x.json", "--quick", "--repeats", "1", "--json", "y.json", "--set", "a.b=1"]
    assert bench._filter_flags(args, {"--out", "--repeats", "--set"}) == [
        "--out",
        "x.json",
        "--repeats",
        "1",
        "--set",
        "a.b=1",
    ]
    assert bench._filter_flags(args, set()) == []
    multi = ["--out", "d", "--noise", "0", "0.1", "--parts", "a", "b"]
    assert bench._filter_flags(multi, {"--out", "--parts"}) == ["--out", "d", "--parts", "a", "b"]


def test_every_script_has_an_entry_or_is_a_helper() -> None:
    missing = bench.unlisted_scripts()
    assert not missing, (
        f"add {missing} to evaluations.bench.BENCHMARKS (or HELPERS) so that `make bench` runs them"
    )


def test_every_script_item_exists_or_is_skipped(tmp_path: Path) -> None:
    item = bench.BenchItem("ghost", "evaluations.benchmarks.does_not_exist", lambda q, o: [[]])
    outcome = bench._run_item(item, quick=True, out=tmp_path)
    assert outcome.status.startswith("skipped") and not outcome.commands
    needs = bench.BenchItem("data", None, lambda q, o: [[]], needs=(tmp_path / "missing",))
    assert bench._run_item(needs, quick=True, out=tmp_path).status.startswith("skipped")


def test_omniglot_settings() -> None:
    assert parse_settings(text="5w1s, 5w5s,20w1s") == [(5, 1, False), (5, 5, False), (20, 1, False)]
    within = parse_settings(text="20w1s,20w1s-within")
    assert within == [(20, 1, False), (20, 1, True)] and within[1].within
    assert within[0].overrides() == []
    assert within[1].overrides() == ["task.test_protocol=within_alphabet", "task.test_q_query=1"]
    for bad in ("5w1", "1w1s", "5w0s", "5w1s,5w1s", "", "20w1s-within,20w1s-within", "20w1s-lake"):
        with pytest.raises(ValueError, match="--settings"):
            parse_settings(text=bad)


def test_table_has_within_alphabet_reference_and_time_per_learner() -> None:
    row = {"accuracy": 80.0, "ci95": 1.0, "train_s": 12.4, "run_s": 20.6, "trained_n_way": 20}
    fed = {**row, "train_s": 30.0, "run_s": 41.0}
    results = {
        "siamese": {"5w1s": {"centralised": row, "federated": fed}, "20w1s-within": {"centralised": row}}
    }
    table = settings_markdown(results=results)
    assert "| siamese | 20w1s-within | 80.00 ± 1.00 | not run | 92.0 | Koch et al. 2015 |" in table
    assert "| siamese | 5w1s | 80.00 ± 1.00 | 80.00 ± 1.00 | — | — |" in table
    assert "| siamese | 20 | 12 (21) | 30 (41) |" in table  # one row per training run


def test_paper_table_places_measured_numbers_beside_published_ones() -> None:
    row = {"accuracy": 91.234, "ci95": 0.8, "train_s": 1.0}
    results = {
        "protonet": {"5w1s": {"centralised": row, "federated": row}, "20w1s": {"federated": row}},
        "fomaml": {"5w5s": {"federated": row}},
    }
    table = settings_markdown(results=results)
    assert "small** subset" in table and "not directly comparable" in table
    assert (
        f"| protonet | 5w1s | 91.23 ± 0.80 | 91.23 ± 0.80 | {PUBLISHED['protonet'][0]:.1f} "
        "| Snell et al. 2017 |" in table
    )
    assert f"| protonet | 20w1s | not run | 91.23 ± 0.80 | {PUBLISHED['protonet'][2]:.1f} |" in table
    assert "| fomaml | 5w5s | not run | 91.23 ± 0.80 | — | — |" in table


def _settings_document(path: Path, learner: str, run_dir: Path, episodes: int, train_s: float) -> Path:
    """An ``omniglot-settings-*.json`` with one federated 3-way 1-shot row of ``run_dir`` (scores unset)."""
    row = {"accuracy": -1.0, "ci95": -1.0, "train_s": train_s, "run_dir": str(run_dir)}
    doc = {"budget": 1, "episodes": episodes, "results": {learner: {"3w1s": {"federated": row}}}}
    path.write_text(json.dumps(doc))
    return path


def test_evaluate_checkpoint_reproduces_the_final_evaluation(tmp_path: Path) -> None:
    from evaluations.benchmarks.omniglot import evaluate_checkpoint
    from secfed.config import config_from_dict
    from secfed.experiment import Experiment

    cfg = config_from_dict(
        {
            "experiment": {"rounds": 1, "eval_every": 0, "final_eval_episodes": 12, "seed": 5},
            "data": {"dataset": "digits"},
            "partition": {"num_sites": 2},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
            "learner": {"name": "protonet", "local_steps": 1},
        }
    )
    run = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    same = evaluate_checkpoint(run_dir=tmp_path / "run", test_n_way=3, test_k_shot=1, episodes=12)
    assert same == (run.summary["test_accuracy"], run.summary["test_accuracy_ci95"])  # same model, same tasks
    acc, ci = evaluate_checkpoint(run_dir=tmp_path / "run", test_n_way=4, test_k_shot=3, episodes=12)
    assert 0.0 <= acc <= 1.0 and ci >= 0.0
    # re-evaluating a benchmark document with the current code reproduces its numbers
    from evaluations.benchmarks.omniglot import reevaluate

    src = _settings_document(tmp_path / "omniglot-settings-x.json", "protonet", tmp_path / "run", 12, 1.5)
    new = reevaluate(results_json=src)
    row = new["results"]["protonet"]["3w1s"]["federated"]
    assert row["accuracy"] == pytest.approx(100 * same[0]) and row["train_s"] == 1.5
    assert (tmp_path / "omniglot-settings-x-reevaluated.md").is_file()


def test_dp_overhead_table_judges_the_target_only_outside_smoke_runs() -> None:
    from evaluations.benchmarks.dp_overhead import markdown_table

    row = {
        "learner": "fedavg",
        "plain_ms_per_step": 10.0,
        "dp_ms_per_step": 16.0,
        "median_ratio": 1.6,
        "ratio_of_medians": 1.6,
        "sample_rate": 0.025,
    }
    assert markdown_table([row]).splitlines()[-1].endswith("| no |")
    assert markdown_table([{**row, "median_ratio": 1.4}]).splitlines()[-1].endswith("| yes |")
    assert markdown_table([row], judge=False).splitlines()[-1].endswith("| n/a (smoke run) |")


def test_adaptation_grid_parsing() -> None:
    from evaluations.benchmarks.omniglot import parse_adaptation_grid

    assert parse_adaptation_grid(text="steps=1,3;lr=0.1,0.4") == [(1, 0.1), (1, 0.4), (3, 0.1), (3, 0.4)]
    for bad in ("steps=1", "steps=0;lr=0.1", "steps=1;lr=-1", "steps=a;lr=0.1", "depth=1;lr=0.1"):
        with pytest.raises(ValueError, match="--tune-adaptation"):
            parse_adaptation_grid(text=bad)


def test_test_time_adaptation_is_chosen_on_validation_alphabets_only(tmp_path: Path) -> None:
    from evaluations.benchmarks.omniglot import evaluate_checkpoint, reevaluate, tune_adaptation
    from secfed.config import config_from_dict
    from secfed.errors import ConfigError
    from secfed.experiment import Experiment

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "omniglot"
    if not (root / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found in {root}")
    data = {"dataset": "omniglot", "root": str(root), "rotations": False, "image_size": 14}
    cfg = config_from_dict(
        {
            "experiment": {"rounds": 1, "eval_every": 0, "final_eval_episodes": 6, "seed": 3},
            "data": {**data, "val_alphabets": ["Latin"]},
            "partition": {"num_sites": 2},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
            "learner": {"name": "maml", "local_steps": 1, "meta_batch": 1, "inner_lr": 0.1},
        }
    )
    Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    grid = [(1, 0.05), (2, 0.4)]
    choice = tune_adaptation(run_dir=tmp_path / "run", n_way=3, k_shot=1, grid=grid, episodes=8)
    scores = [row[2] for row in choice["grid"]]
    assert [tuple(row[:2]) for row in choice["grid"]] == grid
    assert choice["val_accuracy"] == max(scores)
    assert (choice["steps"], choice["lr"]) == grid[scores.index(max(scores))]
    # validation tasks come from the held-out alphabet, test tasks from the test alphabets
    kw = {"run_dir": tmp_path / "run", "test_n_way": 3, "test_k_shot": 1, "episodes": 8}
    val = evaluate_checkpoint(**kw, split="validation")
    test = evaluate_checkpoint(**kw)
    assert val != test
    with pytest.raises(ValueError, match="split"):
        evaluate_checkpoint(run_dir=tmp_path / "run", test_n_way=3, test_k_shot=1, episodes=2, split="train")
    # a run without validation alphabets cannot be tuned
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "checkpoint").symlink_to(tmp_path / "run" / "checkpoint")
    text = (tmp_path / "run" / "config.toml").read_text(encoding="utf-8")
    (tmp_path / "plain" / "config.toml").write_text(
        re.sub(r"val_alphabets = \[[^\]]*\]", "val_alphabets = []", text), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="val_alphabets is empty"):
        tune_adaptation(run_dir=tmp_path / "plain", n_way=3, k_shot=1, grid=grid, episodes=2)
    # reevaluate records the choice and scores the test tasks with it
    src = _settings_document(tmp_path / "omniglot-settings-v.json", "maml", tmp_path / "run", 6, 1.0)
    row = reevaluate(results_json=src, tune_grid=grid, val_episodes=8)["results"]["maml"]["3w1s"]["federated"]
    tuned = row["tuned_adaptation"]
    assert (tuned["steps"], tuned["lr"]) == (choice["steps"], choice["lr"])
    expected = evaluate_checkpoint(
        run_dir=tmp_path / "run",
        test_n_way=3,
        test_k_shot=1,
        episodes=6,
        overrides=[f"learner.test_inner_steps={choice['steps']}", f"learner.test_inner_lr={choice['lr']}"],
    )
    assert row["accuracy"] == pytest.approx(100 * expected[0])
    assert (tmp_path / "omniglot-settings-v-reevaluated-tuned.md").is_file()


def test_federated_rounds_spend_the_budget_with_client_sampling() -> None:
    """All sites per round, or one / two sampled sites per round: the same number of local steps."""
    from evaluations.benchmarks.omniglot import _federated_rounds

    assert _federated_rounds(budget=1000, sites=5, local_steps=40, clients_per_round=0) == 5
    assert _federated_rounds(budget=1000, sites=5, local_steps=40, clients_per_round=1) == 25
    assert _federated_rounds(budget=1000, sites=5, local_steps=40, clients_per_round=2) == 12
    # more than the sites, or all of them, is the all-sites case; the budget never rounds to zero
    assert _federated_rounds(budget=1000, sites=5, local_steps=40, clients_per_round=9) == 5
    assert _federated_rounds(budget=10, sites=5, local_steps=40, clients_per_round=0) == 1


def test_init_accuracy_scores_the_untrained_model(tmp_path: Path) -> None:
    """The untrained model's accuracy: deterministic for a seed, moved by the init seed, written
    as JSON; a bad override exits 2 with the key named, before any evaluation."""
    from evaluations.benchmarks.init_accuracy import init_accuracy, main

    cfg = Path(__file__).resolve().parents[2] / "examples" / "digits_protonet.toml"
    few = ["experiment.final_eval_episodes=40"]
    a = init_accuracy(config_path=cfg, overrides=few)
    assert a == init_accuracy(config_path=cfg, overrides=few)
    assert 0.2 < a["test_accuracy"] <= 1.0 and a["test_episodes"] == 40
    other = init_accuracy(config_path=cfg, overrides=[*few, "experiment.seed=3"])
    assert other["test_accuracy"] != a["test_accuracy"]
    out = tmp_path / "init.json"
    assert main([str(cfg), "--set", few[0], "--out", str(out)]) == 0
    assert json.loads(out.read_text())["test_accuracy"] == a["test_accuracy"]
    assert main([str(cfg), "--set", "model.nope=1", "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def test_within_alphabet_setting_evaluates_lake_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``-within`` setting re-evaluates a checkpoint on within-alphabet tasks (one query per
    character, 20 characters of one test alphabet), not on N-way tasks over all test classes."""
    from evaluations.benchmarks.omniglot import evaluate_checkpoint
    from secfed import components
    from secfed.config import config_from_dict
    from secfed.experiment import Experiment

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "omniglot"
    if not (root / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found in {root}")
    cfg = config_from_dict(
        {
            "experiment": {"rounds": 1, "eval_every": 0, "final_eval_episodes": 4, "seed": 3},
            "data": {"dataset": "omniglot", "root": str(root), "rotations": False, "image_size": 14},
            "partition": {"num_sites": 2},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 5, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
            "learner": {"name": "protonet", "local_steps": 1},
        }
    )
    Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    seen: list[Any] = []
    real = components.build_test_source

    def spy(*, config: Any, test: Any) -> Any:
        source = real(config=config, test=test)
        seen.append((config.task.test_protocol, config.task.test_n_way, type(source).__name__))
        return source

    monkeypatch.setattr(components, "build_test_source", spy)
    (setting,) = parse_settings(text="20w1s-within")
    acc, _ = evaluate_checkpoint(
        run_dir=tmp_path / "run", test_n_way=20, test_k_shot=1, episodes=3, overrides=setting.overrides()
    )
    assert seen == [("within_alphabet", 20, "WithinAlphabetTaskSource")] and 0.0 <= acc <= 1.0


def test_settings_runs_spend_one_budget_and_score_the_other_settings_from_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_settings and run_pair without training: the centralised run spends the budget at one
    site in one round, the federated run in rounds of the sampled sites; an n_way head is trained
    once per way, and every other setting of its group (and the validation score) is read from the
    checkpoint of that run."""
    from evaluations.benchmarks import omniglot

    runs: list[Any] = []
    scored: list[dict[str, Any]] = []

    class FakeRun:
        summary = {"test_accuracy": 0.5, "test_accuracy_ci95": 0.01, "wall_s": 2.0}

    class FakeExperiment:
        def __init__(self, *, config: Any) -> None:
            self.config = config

        def run(self, *, out_dir: Path, progress: bool) -> FakeRun:
            runs.append((out_dir.name, self.config))
            return FakeRun()

    def fake_checkpoint(**kw: Any) -> tuple[float, float]:
        scored.append({k: v for k, v in kw.items() if k != "splits_cache"})
        return (0.3, 0.02) if kw.get("split") == "validation" else (0.25, 0.03)

    monkeypatch.setattr(omniglot, "Experiment", FakeExperiment)
    monkeypatch.setattr(omniglot, "evaluate_checkpoint", fake_checkpoint)
    results = omniglot.run_settings(
        learner="maml",
        settings=parse_settings(text="5w1s,5w5s,20w1s"),
        budget=40,
        sites=4,
        local_steps=5,
        out=tmp_path,
        extra=['learner.head_init="learned"'],  # an n_way head: trained once per way
        episodes=6,
        modes=["centralised", "federated"],
        clients_per_round=2,
        val_episodes=3,
    )
    assert [name for name, _ in runs] == [
        "maml-centralised-train5w",
        "maml-federated-train5w",
        "maml-centralised-train20w",
        "maml-federated-train20w",
    ]
    central, federated = runs[0][1], runs[1][1]
    assert (central.partition.num_sites, central.experiment.rounds, central.learner.local_steps) == (1, 1, 40)
    assert (federated.partition.num_sites, federated.experiment.rounds, federated.learner.local_steps) == (
        4,
        4,
        5,
    )
    assert federated.federation.clients_per_round == 2 and federated.experiment.final_eval_episodes == 6
    assert (central.task.n_way, central.task.test_n_way, central.task.test_k_shot) == (5, 5, 1)
    # 5w5s from the 5-way runs' checkpoints; validation scores of every setting
    tests = [(s["run_dir"].name, s["test_k_shot"]) for s in scored if s.get("split", "test") == "test"]
    assert tests == [("maml-centralised-train5w", 5), ("maml-federated-train5w", 5)]
    assert sum(s.get("split") == "validation" and s["episodes"] == 3 for s in scored) == 6
    row = results["5w5s"]["federated"]
    assert (row["accuracy"], row["ci95"], row["val_accuracy"], row["trained_n_way"]) == (25.0, 3.0, 30.0, 5)
    assert results["20w1s"]["centralised"]["accuracy"] == 50.0  # the run's own final evaluation

    runs.clear()
    pair = omniglot.run_pair(
        learner="protonet", budget=40, sites=4, local_steps=5, out=tmp_path, extra=[], episodes=6
    )
    assert [(c.partition.num_sites, c.experiment.rounds, c.learner.local_steps) for _, c in runs] == [
        (1, 1, 40),
        (4, 2, 5),
    ]
    assert pair["time_ratio"] == 1.0 and pair["federated"]["accuracy"] == 50.0
