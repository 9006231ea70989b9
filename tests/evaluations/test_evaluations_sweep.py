"""Privacy–utility sweeps: grid validation (no training) and tiny real sweeps on the embedded digits."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from eval_rundirs import write_attacks

from evaluations import sweep as sweep_mod
from evaluations.errors import SweepError
from evaluations.report import write_report
from evaluations.sweep import parse_epsilons, plan_sweep, run_sweep

TINY = """
[experiment]
name = "tiny-sweep"
rounds = 2
eval_every = 1
eval_episodes = 10
final_eval_episodes = 20
seed = 3
[data]
dataset = "digits"
[partition]
scheme = "class_disjoint"
num_sites = 3
[task]
n_way = 3
k_shot = 1
q_query = 3
test_n_way = 3
test_q_query = 3
[model]
arch = "mlp"
hidden = 16
norm = "{norm}"
layers = 1
[learner]
name = "protonet"
local_steps = 2
"""


def _config(tmp_path: Path, norm: str = "none") -> Path:
    path = tmp_path / f"tiny-{norm}.toml"
    path.write_text(TINY.format(norm=norm), encoding="utf-8")
    return path


def test_parse_epsilons() -> None:
    assert parse_epsilons(text=" 1, 3,8 ,inf") == [1.0, 3.0, 8.0, math.inf]
    assert parse_epsilons(text="0.5,none") == [0.5, math.inf]
    for bad in ("", " , ", "1,abc"):
        with pytest.raises(SweepError, match="epsilons"):
            parse_epsilons(text=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilons": []}, "at least one"),
        ({"epsilons": [0.0]}, "must be > 0"),
        ({"epsilons": [-1.0]}, "must be > 0"),
        ({"epsilons": [float("nan")]}, "must be > 0"),
        ({"epsilons": [math.inf, math.inf]}, "duplicate"),
        ({"epsilons": [math.inf], "learners": ["bogus"]}, "choose from protonet"),
        ({"epsilons": [math.inf], "learners": []}, "at least one"),
        ({"epsilons": [math.inf], "aggregations": ["secagg", "secagg"]}, "duplicate"),
        ({"epsilons": [math.inf], "aggregations": ["ring"]}, "choose from plain"),
        ({"epsilons": [math.inf], "overrides": ["experiment.rounds=0"]}, "experiment.rounds"),
        ({"epsilons": [math.inf], "overrides": ["nonsense"]}, "section.key=value"),
    ],
)
def test_plan_sweep_rejects_bad_grids(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"learners": None, "aggregations": None, **kwargs}
    with pytest.raises(SweepError, match=match):
        plan_sweep(config_path=_config(tmp_path), **args)


def test_plan_sweep_missing_config(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="not found"):
        plan_sweep(config_path=tmp_path / "nope.toml", epsilons=[math.inf], learners=None, aggregations=None)


def test_plan_sweep_grid_names_and_overrides(tmp_path: Path) -> None:
    points, notes = plan_sweep(
        config_path=_config(tmp_path),
        epsilons=[math.inf],
        learners=["protonet", "reptile"],
        aggregations=["plain", "secagg+"],
        overrides=["experiment.rounds=1"],
    )
    assert [p.name for p in points] == [
        "epsinf-protonet-plain",
        "epsinf-protonet-secaggplus",
        "epsinf-reptile-plain",
        "epsinf-reptile-secaggplus",
    ]
    assert not notes
    for p in points:
        assert p.config.privacy.mode == "none" and p.config.experiment.rounds == 1
        assert p.config.learner.name == p.learner and p.config.federation.aggregation == p.aggregation


def test_plan_sweep_calibrates_finite_points_and_replaces_batchnorm(tmp_path: Path) -> None:
    points, notes = plan_sweep(
        config_path=_config(tmp_path, norm="batch"),
        epsilons=[1.0, 8.0, math.inf],
        learners=None,
        aggregations=None,
    )
    assert any("BatchNorm" in n for n in notes)
    assert all(p.config.model.norm == "group" for p in points)  # the same model at every point
    by = {p.name: p.config for p in points}
    assert by["eps1"].privacy.mode == "record" and by["eps1"].privacy.target_epsilon == 1.0
    assert by["epsinf"].privacy.mode == "none"
    # calibration: a smaller ε needs more noise
    assert by["eps1"].privacy.noise_multiplier > by["eps8"].privacy.noise_multiplier > 0


def _unavailable() -> tuple[None, str, None]:
    return None, "attacks were not run: attacks.runner is not available in this installation", None


def test_sweep_without_dp_reports_missing_attack_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_mod, "resolve_attack_runner", _unavailable)
    cfg = _config(tmp_path)
    out = tmp_path / "sweep"
    res = run_sweep(config_path=cfg, epsilons=[math.inf], learners=None, aggregations=None, out_dir=out)
    assert any("attacks.runner is not available" in n for n in res.notes)
    (point,) = res.points
    assert point["status"] == "ran" and point["epsilon"] == math.inf and point["privacy_mode"] == "none"
    assert 0 < point["test_accuracy"] <= 1 and point["ci95"] > 0
    assert all(v.startswith("not run") for v in point["attacks"].values())
    doc = json.loads(res.sweep_json.read_text())
    assert doc["points"][0]["epsilon"] == "inf" and doc["attacks_available"] is False
    assert (out / "runs" / "epsinf" / "summary.json").is_file()
    assert "attacks.runner is not available" in res.summary_md.read_text()
    # The same folder with another configuration at the same point is refused before training.
    with pytest.raises(SweepError, match="different configuration"):
        run_sweep(
            config_path=cfg,
            epsilons=[math.inf],
            learners=None,
            aggregations=None,
            out_dir=out,
            attacks=[],
            overrides=["experiment.seed=4"],
        )


def test_sweep_smoke_digits_with_dp(tmp_path: Path) -> None:
    calls: list[tuple[Path, str]] = []

    def runner(*, run_dir: Path, attack: str) -> None:
        calls.append((Path(run_dir), attack))
        write_attacks(Path(run_dir), attacks=[attack], mia_png=False)

    cfg = _config(tmp_path)
    out = tmp_path / "sweep"
    kwargs: dict[str, Any] = {
        "config_path": cfg,
        "epsilons": [8.0, math.inf],
        "learners": None,
        "aggregations": None,
        "out_dir": out,
        "attacks": ["mia"],
        "attack_runner": runner,
    }
    res = run_sweep(**kwargs)
    by = {p["name"]: p for p in res.points}
    assert set(by) == {"eps8", "epsinf"} and all(p["status"] == "ran" for p in by.values())
    eps8 = by["eps8"]
    assert 0 < eps8["epsilon"] <= 8.0 * (1 + 1e-6) and eps8["noise_multiplier"] > 0
    assert eps8["privacy_unit"] == "record" and eps8["delta"] == pytest.approx(1e-5)
    assert (out / "runs" / "eps8" / "privacy_ledger.jsonl").is_file()
    assert not (out / "runs" / "epsinf" / "privacy_ledger.jsonl").exists()
    assert by["epsinf"]["epsilon"] == math.inf
    assert [a for _, a in calls] == ["mia", "mia"] and {d.name for d, _ in calls} == {"eps8", "epsinf"}
    assert all(0.5 < p["attack_metrics"]["mia_auc"] < 1 for p in by.values())
    table = res.summary_md.read_text()
    assert "| eps8 | 8.00 |" in table and "∞ (no DP)" in table
    # Re-running the same sweep reuses every finished point and attack result.
    again = run_sweep(**kwargs)
    assert [p["status"] for p in again.points] == ["reused", "reused"]
    assert all(p["attacks"] == {"mia": "reused"} for p in again.points) and len(calls) == 2
    assert again.points[0]["epsilon"] == pytest.approx(eps8["epsilon"])
    html = write_report(path=out).html.read_text(encoding="utf-8")
    assert f"{eps8['epsilon']:.2f}" in html and "Privacy–utility curve" in html


def test_parse_attack_options_converts_and_validates() -> None:
    from evaluations.sweep import parse_attack_options

    got = parse_attack_options(
        pairs=["iterations=50", "levels=record", "rounds=none", "population_fraction=0.3", "quiet=false"]
    )
    assert got == {
        "iterations": 50,
        "levels": ("record",),
        "rounds": None,
        "population_fraction": 0.3,
        "quiet": False,
    }
    assert parse_attack_options(pairs=[]) == {}
    for bad, match in (
        (["iterations"], "NAME=VALUE"),
        (["nonsense=1"], "unknown attack option 'nonsense'"),
        (["iterations=many"], "iterations"),
        (["iterations=0"], "iterations"),
        (["quiet=maybe"], "quiet"),
    ):
        with pytest.raises(SweepError, match=match):
            parse_attack_options(pairs=bad)


def test_sweep_passes_attack_options_and_refuses_bad_ones_before_training(tmp_path: Path) -> None:
    from attacks.options import AttackOptions

    seen: list[AttackOptions] = []

    def runner(*, run_dir: Path, attack: str, options: AttackOptions) -> None:
        seen.append(options)
        write_attacks(Path(run_dir), attacks=[attack], mia_png=False)

    cfg = _config(tmp_path)
    common: dict[str, Any] = {
        "config_path": cfg,
        "epsilons": [math.inf],
        "learners": None,
        "aggregations": None,
        "attacks": ["mia"],
        "attack_runner": runner,
    }
    with pytest.raises(SweepError, match="references"):
        run_sweep(**common, out_dir=tmp_path / "bad", attack_options=["references=0"])
    assert not (tmp_path / "bad").exists()
    res = run_sweep(**common, out_dir=tmp_path / "ok", attack_options=["references=2", "iterations=7"])
    assert res.points[0]["attacks"] == {"mia": "ran"}
    assert len(seen) == 1 and seen[0].references == 2 and seen[0].iterations == 7
    doc = json.loads(res.sweep_json.read_text())
    assert doc["attack_options"] == {"references": 2, "iterations": 7}
