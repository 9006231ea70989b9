"""The verdict box at the top of a run report (issue 18).

From a reader of the report: before anything else it states the guarantee (ε with δ, the privacy
unit, the accountant) or that none is claimed, whom one must trust, the accuracy against the
untrained model on the same tasks (and in words when training did not beat it), the attacks'
figures, and the audit with its power (the ceiling its canaries allow).
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

from eval_rundirs import ACCURACY, EPS_ROUNDS, make_run

from evaluations.report import write_report


def _set_summary(run: Path, **values: float) -> None:
    path = run / "summary.json"
    doc = json.loads(path.read_text())
    doc.update(values)
    path.write_text(json.dumps(doc))


def _write_whitebox(
    run: Path, *, lower: float, ceiling: float, canaries: int, accountant: float | None
) -> None:
    # the layout of attacks.secfed_whitebox.run_whitebox_audit_attack (WhiteBoxAuditResult.to_dict)
    doc = {
        "config": {"num_canaries": canaries, "dim": canaries + 64, "delta": 1e-5},
        "accountant_epsilon": accountant,
        "one_run": {"epsilon": lower, "ceiling": ceiling, "fraction_of_ceiling": lower / ceiling},
        "gdp": {"epsilon": lower, "ceiling_epsilon": ceiling},
        "one_run_gdp": None,
        "idealised_gaussian": {},
        "violation": False,
        "statement": "",
        "timings_s": {},
        "run_epsilon": accountant,
        "privacy_mode": "record" if accountant is not None else "none",
    }
    (run / "attacks").mkdir(exist_ok=True)
    (run / "attacks" / "whitebox_audit.json").write_text(json.dumps(doc))


def _verdict_html(html: str) -> str:
    box = re.search(r'<div class="verdict[^"]*" id="verdict">(.*?)</div>', html, re.S)
    assert box is not None, "no verdict box"
    return unescape(re.sub(r"<[^>]+>", " ", box.group(1)))


def test_verdict_of_a_dp_run_with_attacks_and_audit(tmp_path: Path) -> None:
    run = make_run(tmp_path)  # record-level DP, SecAgg+, MIA, inversion and audit results
    _set_summary(run, untrained_test_accuracy=0.50, untrained_test_accuracy_ci95=0.01)
    _write_whitebox(run, lower=0.42, ceiling=3.1, canaries=2000, accountant=EPS_ROUNDS[-1])
    paths = write_report(path=run)
    html = paths.html.read_text(encoding="utf-8")
    # the box comes first: before the overview and every section
    assert html.index('id="verdict"') < html.index("At a glance") < html.index("1. What was run")
    box = _verdict_html(html)
    assert f"ε = {EPS_ROUNDS[-1]:.2f} at δ = 1e-05 per record" in box
    assert "rdp accountant" in box
    assert "SecAgg+" in box and "no trust in the server" in box
    assert f"{100 * ACCURACY:.2f}" in box and "50.00 ± 1.00 % for the untrained model" in box
    assert "did not beat" not in box
    assert "membership inference" in box and "AUC" in box and "true-positive rate" in box
    assert "proved ε ≥ 0.42" in box and "2000 canaries" in box
    assert "cannot detect leakage beyond ε = 3.1" in box
    md = paths.markdown.read_text(encoding="utf-8")
    assert md.index("## Verdict") < md.index("## At a glance")
    assert "cannot detect leakage beyond ε = 3.1" in md and "for the untrained model" in md
    doc = json.loads(paths.json.read_text(encoding="utf-8"))
    assert [row[0] for row in doc["verdict"]["rows"]] == [
        "Guarantee",
        "Trust assumptions",
        "Utility",
        "Attacks",
        "Audit",
    ]
    assert not any(p.endswith("loss.png") for p in map(str, paths.plots))  # no loss curve under DP


def test_verdict_of_a_run_without_dp_or_attacks(tmp_path: Path) -> None:
    run = make_run(tmp_path, dp=False, aggregation="plain", attacks=())
    _set_summary(run, untrained_test_accuracy=ACCURACY, untrained_test_accuracy_ci95=0.01)
    paths = write_report(path=run)
    box = _verdict_html(paths.html.read_text(encoding="utf-8"))
    assert "none claimed" in box and "ε = ∞" in box
    assert "the server sees every site's update" not in box  # no DP: no trust statement on updates
    assert "training did not beat the untrained model" in box
    assert "none run" in box and "not run" in box
    assert 'class="verdict fail"' in paths.html.read_text(encoding="utf-8")
    assert any(str(p).endswith("loss.png") for p in paths.plots)  # loss curve without DP


def test_verdict_says_when_the_baseline_is_missing(tmp_path: Path) -> None:
    run = make_run(tmp_path, dp=False, aggregation="plain", attacks=())
    box = _verdict_html(write_report(path=run).html.read_text(encoding="utf-8"))
    assert "the untrained model was not scored" in box


def test_at_a_glance_agrees_with_the_verdict_on_a_whitebox_only_audit(tmp_path: Path) -> None:
    """A run audited only by the white-box audit: the overview must not say 'no audit was run'."""
    run = make_run(tmp_path, attacks=("mia",))  # DP run, no canary audit.json
    _write_whitebox(run, lower=1.82, ceiling=4.7, canaries=2000, accountant=EPS_ROUNDS[-1])
    paths = write_report(path=run)
    html = unescape(re.sub(r"<[^>]+>", " ", paths.html.read_text(encoding="utf-8")))
    assert "no privacy audit result" not in html
    assert "whitebox-audit: ok" in html
    assert "The white-box canary audit proves ε ≥ 1.82" in html
    assert "cannot detect leakage beyond ε = 4.7" in html
    doc = json.loads(paths.json.read_text(encoding="utf-8"))
    assert doc["empirical_epsilon"]["status"] == "whitebox"


def test_verdict_reports_the_fdp_bound_and_a_canary_client_violation(tmp_path: Path) -> None:
    """A reader of the report sees the f-DP bound, and a violation found only by the canary clients
    (client-level run) refutes the guarantee in the verdict, though the other bounds are below ε."""
    run = make_run(tmp_path, attacks=("mia",))
    _write_whitebox(run, lower=1.5, ceiling=4.7, canaries=2000, accountant=EPS_ROUNDS[-1])
    path = run / "attacks" / "whitebox_audit.json"
    doc = json.loads(path.read_text())
    doc["fdp_one_run"] = {"epsilon": 3.25, "mu": 1.1, "ceiling_epsilon": 9.1}
    doc["canary_clients"] = {"epsilon_estimate": 15.5, "violation": True, "statement": ""}
    path.write_text(json.dumps(doc))
    html = _verdict_html(write_report(path=run).html.read_text(encoding="utf-8"))
    assert "f-DP analysis (Mahloujifar et al. 2025) proves ε ≥ 3.25" in html
    assert "canary clients (Andrew et al. 2024) estimate ε ≈ 15.5" in html
    assert "VIOLATION" in html
