"""Attacks on the privacy ledgers, from the view of whoever can write the run directory or crash a
process: forged, truncated and key-less ledgers, crashes between a release and its accounting,
restarted sites, and resumes without a checkpoint. In every case the ε reported afterwards must not be
below the true one, and the integrity failures must make ``secfed report`` / ``secfed run --resume``
exit non-zero.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privacy.accountants import RDPAccountant
from privacy.calibration import epsilon_for
from privacy.ledger import _digest
from secfed.cli import main
from secfed.components import build_learner, build_model, build_site
from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp import ServerPrivacy, build_site_privacy
from secfed.dp.server import LEDGER_FILE
from secfed.experiment import Experiment
from secfed.federation.server import FederatedServer, RoundOutcome

REPO = Path(__file__).resolve().parents[3]
DELTA = 1e-5
Z, Q, STEPS = 1.0, 0.1, 2  # record mode: every site takes STEPS steps of (Z, Q) per round


def record_cfg(rounds: int = 2, **privacy: Any) -> ExperimentConfig:
    """A tiny record-level DP run (digits, ProtoNet, 4 sites, every site in every round)."""
    data: dict[str, Any] = {
        "experiment": {
            "rounds": rounds,
            "eval_every": 0,
            "eval_episodes": 5,
            "final_eval_episodes": 5,
            "seed": 3,
        },
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": STEPS},
        "privacy": {
            "mode": "record",
            "noise_multiplier": Z,
            "sample_rate": Q,
            "expected_batch": 4,
            "episodes_per_step": 2,
            **privacy,
        },
    }
    return config_from_dict(data, base_dir=REPO)


def true_epsilon(rounds: int) -> float:
    """ε of a site that released ``rounds`` rounds (each of STEPS steps at (Z, Q))."""
    return epsilon_for(noise_multiplier=Z, sample_rate=Q, steps=STEPS * rounds, delta=DELTA)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ledger-attacks") / "run"
    Experiment(config=record_cfg()).run(out_dir=run, progress=False)
    return run


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def forge_fewer_steps(ledger: Path, *, steps: int) -> float:
    """The issue's forgery: every round rewritten with ``steps`` steps instead of the true count, the ε
    recomputed from the forged steps and every SHA-256 hash recomputed (no key needed). Returns the
    forged final ε of site 0. Works on the old (one line per round) and the new format."""
    lines = ledger.read_text().splitlines()
    out, prev = [lines[0]], json.loads(lines[0])["hash"]
    accs: dict[str, RDPAccountant] = {}
    last: dict[str, float] = {}
    for line in lines[1:]:
        obj = json.loads(line)
        for name, rec in obj["sites"].items():
            if obj["kind"] in ("round", "begin") and rec["steps"] > 0:
                acc = accs.setdefault(name, RDPAccountant())
                acc.step(
                    noise_multiplier=rec["noise_multiplier"], sample_rate=rec["sample_rate"], num_steps=steps
                )
                last[name] = acc.get_epsilon(delta=DELTA)
            if rec["steps"] > 0:
                rec["steps"] = steps
            rec["epsilon"] = last.get(name, 0.0)
        obj["prev"] = prev
        body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
        obj["hash"] = prev = _digest(body)
        out.append(json.dumps(obj, sort_keys=True, separators=(",", ":")))
    ledger.write_text("\n".join(out) + "\n")
    return last["0"]


def report_top(run: Path) -> str:
    """The first lines of report.md (where an integrity failure must appear)."""
    return "\n".join((run / "report.md").read_text(encoding="utf-8").splitlines()[:6])


# --------------------------------------------------------------------------------------------------
# Forged, truncated and key-less ledgers
# --------------------------------------------------------------------------------------------------
def test_forged_ledger_fails_report_and_resume(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    honest = json.loads((run / "summary.json").read_text())["epsilon_sites"]["0"]
    forged = forge_fewer_steps(run / LEDGER_FILE, steps=STEPS // 2)
    assert forged < honest  # the forgery lowers ε and replays consistently
    assert main(["report", str(run)]) == 1
    assert (run / "report.html").is_file()  # the report is still written ...
    top = report_top(run)
    assert "INTEGRITY CHECK FAILED" in top and "MAC" in top  # ... with the failure at the top
    doc = json.loads((run / "report.json").read_text())
    assert doc["privacy"]["ledger"]["verified"] is False and doc["privacy"]["ledger"]["integrity"] == "failed"
    assert main(["run", "--resume", str(run), "--no-progress"]) == 1


def test_truncated_ledger_fails_report_and_resume(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    lines = (run / LEDGER_FILE).read_text().splitlines()
    (run / LEDGER_FILE).write_text("\n".join(lines[:-2]) + "\n")  # the last round deleted
    assert main(["report", str(run)]) == 1
    assert "INTEGRITY CHECK FAILED" in report_top(run) and "deleted" in report_top(run)
    assert main(["run", "--resume", str(run), "--no-progress"]) == 1


def test_missing_key_is_reported_as_cannot_verify(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "no-keys-here"))
    assert main(["report", str(run)]) == 1
    top = report_top(run)
    assert "cannot be verified" in top and "passed" not in top
    ledger = json.loads((run / "report.json").read_text())["privacy"]["ledger"]
    assert ledger["verified"] is False and ledger["integrity"] == "unverifiable"
    assert "integrity check passed" not in (run / "report.md").read_text()
    assert main(["run", "--resume", str(run), "--no-progress"]) == 1


def test_untouched_ledger_verifies(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    assert main(["report", str(run)]) == 0
    assert "integrity check passed" in (run / "report.md").read_text()


# --------------------------------------------------------------------------------------------------
# Crashes between a release and its accounting
# --------------------------------------------------------------------------------------------------
def test_crash_after_the_sites_released_never_under_reports(tmp_path: Path) -> None:
    # The server asks the sites to train (they release their updates), then dies before after_round.
    cfg = record_cfg()
    sp = ServerPrivacy(config=cfg, run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {"privacy": {"mode": "record", "steps_per_round": STEPS}} for s in range(4)})
    excluded, stop = sp.before_round(round_idx=1)
    assert not excluded and stop is None
    # ... the round runs and every site releases STEPS steps; the process is killed here.
    restarted = ServerPrivacy(config=cfg, run_dir=tmp_path)
    restarted.resume_to(completed_round=0)  # no checkpoint of round 1
    eps = restarted.summary()["epsilon_sites"]
    assert set(eps) == {"0", "1", "2", "3"}
    assert all(e >= true_epsilon(1) * (1 - 1e-9) for e in eps.values())


def test_run_killed_after_a_release_is_counted_twice_when_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = record_cfg(rounds=2)
    real = FederatedServer.run_round

    def release_then_die(
        self: FederatedServer, *, round_idx: int, excluded: frozenset[int] = frozenset()
    ) -> RoundOutcome:
        out = real(self, round_idx=round_idx, excluded=excluded)  # the sites released their updates
        if round_idx == 2:
            raise KeyboardInterrupt("killed between the release and the ledger's after_round")
        return out

    monkeypatch.setattr(FederatedServer, "run_round", release_then_die)
    with pytest.raises(KeyboardInterrupt):
        Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(FederatedServer, "run_round", real)
    result = Experiment.resume(tmp_path / "run", progress=False)
    # round 2 released twice (once before the crash, once when re-run): 3 releases per site
    for eps in result.summary["epsilon_sites"].values():
        assert eps >= true_epsilon(3) * (1 - 1e-9)
    # the sites' own ledgers (their guard against the server) count the first release too
    for sid in range(4):
        from privacy.ledger import PrivacyLedger

        site_ledger = PrivacyLedger.read(
            path=tmp_path / "run" / "site_state" / f"site-{sid}" / "ledger.jsonl"
        )
        sites, _ = site_ledger.rebuild_accountants()
        assert sites[str(sid)].get_epsilon(delta=DELTA) == pytest.approx(true_epsilon(3))


def test_resume_without_checkpoint_state_keeps_every_release(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path / "run")
    (run / "checkpoint" / "state.json").unlink()
    before = json.loads((run / "summary.json").read_text())["epsilon"]
    assert before == pytest.approx(true_epsilon(2))
    result = Experiment.resume(run, progress=False)  # restarts from round 1: nothing is truncated
    assert result.summary["epsilon"] == pytest.approx(true_epsilon(4))
    assert result.summary["epsilon"] > before


# --------------------------------------------------------------------------------------------------
# Site-side budgets survive restarts
# --------------------------------------------------------------------------------------------------
def _site_round(cfg: ExperimentConfig, state_dir: Path | None, round_idx: int) -> dict[str, Any]:
    site = build_site(config=cfg, site_id=0)
    hook = build_site_privacy(config=cfg, site_id=0, site=site, state_dir=state_dir)
    model = build_model(config=cfg, input_shape=site.input_shape)
    hook.local_update(
        learner=build_learner(config=cfg),
        model=model,
        site=site,
        rng=np.random.default_rng(0),
        round_idx=round_idx,
    )
    return hook.round_report(round_idx=round_idx)


def test_restarted_site_with_an_exhausted_budget_refuses_to_train(tmp_path: Path) -> None:
    cfg = record_cfg(epsilon_budget=true_epsilon(1) * 1.1)  # one round fits, a second does not
    state = tmp_path / "site-0"
    assert _site_round(cfg, state, 1)["steps"] == STEPS
    # the site process restarts (whatever the server says, e.g. a replayed round-2 request)
    report = _site_round(cfg, state, 2)
    assert report["steps"] == 0 and report.get("budget_exhausted") is True
    # without its durable ledger a restarted site would start at ε = 0 and train again
    assert _site_round(cfg, None, 2)["steps"] == STEPS


def test_site_killed_between_begin_and_commit_counts_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = record_cfg()
    site = build_site(config=cfg, site_id=0)
    hook = build_site_privacy(config=cfg, site_id=0, site=site, state_dir=tmp_path / "site-0")

    def die(**_: Any) -> Any:
        raise KeyboardInterrupt("killed during local training")

    monkeypatch.setattr(hook, "_train", die)
    with pytest.raises(KeyboardInterrupt):
        hook.local_update(
            learner=build_learner(config=cfg),
            model=build_model(config=cfg, input_shape=site.input_shape),
            site=site,
            rng=np.random.default_rng(0),
            round_idx=1,
        )
    assert hook.epsilon == pytest.approx(true_epsilon(1))  # this process's view
    restarted = build_site_privacy(config=cfg, site_id=0, site=site, state_dir=tmp_path / "site-0")
    assert restarted.epsilon == pytest.approx(true_epsilon(1))  # and after a restart
