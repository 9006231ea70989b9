"""Audit reports from synthetic run and sweep directories: the facts in HTML, Markdown and JSON."""

from __future__ import annotations

import base64
import io
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from eval_rundirs import ACCURACY, CI95, EPS_ROUNDS, make_run, make_sweep, write_attacks
from PIL import Image

from evaluations.errors import ReportInputError
from evaluations.report import ReportPaths, write_report


def _texts(paths: ReportPaths) -> tuple[str, str, dict]:
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    return html, md, json.loads(paths.json.read_text(encoding="utf-8"))


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if value is not None and name in (
                "src",
                "href",
                "srcset",
                "poster",
                "data",
                "action",
                "background",
            ):
                self.urls.append((tag, name, value))
            if name == "style" and value:
                self.styles.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def _assert_self_contained(html: str) -> int:
    """No external references; every image an embedded PNG that decodes. Returns the image count."""
    c = _Collector()
    c.feed(html)
    assert "script" not in c.tags and "link" not in c.tags and "iframe" not in c.tags
    imgs = 0
    for tag, _name, value in c.urls:
        assert not re.match(r"\s*(https?:)?//", value, re.I), f"external reference {value[:80]}"
        assert value.startswith("data:image/png;base64,"), f"{tag} references {value[:80]}"
        png = base64.b64decode(value.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.size[0] > 50 and im.size[1] > 20
        imgs += tag == "img"
    for css in c.styles:
        assert "@import" not in css and "url(" not in css.replace(" ", "")
    for tag in re.findall(r"<[^>]*>", html):  # every real tag (text '<' is escaped as &lt;)
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?\s*(https?:)?//""", tag, re.I), tag[:120]
    return imgs


def test_run_report_with_dp_secagg_and_attacks(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    paths = write_report(path=run)
    html, md, doc = _texts(paths)
    eps = f"{EPS_ROUNDS[-1]:.2f}"
    acc = f"{100 * ACCURACY:.2f} ± {100 * CI95:.2f} %"
    for text in (html, md):
        assert f"ε = {eps}" in text and "δ = 1e-05" in text
        assert "adding or removing one record" in text  # adjacency in plain words
        assert "SecAgg+ (Bell et al. 2020)" in text and "honest-but-curious" in text
        assert "10.00 %" in text  # assumed corrupt fraction
        assert acc in text
        assert "integrity check passed" in text
        assert "consistent: the measured lower bound does not exceed" in text
        assert "Not run" not in text
    p = doc["privacy"]
    assert doc["kind"] == "run" and doc["format"] == "secfed.report"
    assert p["applied"] and p["mode"] == "record" and p["unit"] == "record" and p["accountant"] == "rdp"
    assert p["epsilon"] == pytest.approx(EPS_ROUNDS[-1]) and p["delta"] == pytest.approx(1e-5)
    assert p["epsilon_sites"] == {str(s): pytest.approx(EPS_ROUNDS[-1]) for s in range(3)}
    assert (
        p["ledger"]["verified"] is True
        and p["ledger"]["rounds"] == 2
        and p["ledger"]["consistent_with_summary"]
    )
    s = doc["secure_aggregation"]
    assert s["protocol"] == "secagg+" and (s["n"], s["k"], s["t"]) == ("3", "2", "2")
    assert s["threat_model"]["adversary"] == "honest-but-curious" and s["total_dropouts"] == 1
    assert [r["dropped"] for r in s["rounds"]] == [[2], []]
    assert doc["utility"]["test_accuracy"] == pytest.approx(ACCURACY)
    assert doc["utility"]["ci95"] == pytest.approx(CI95)
    mia = doc["attacks"]["mia"]
    assert mia["status"] == "ok" and {r["attack"] for r in mia["rows"]} == {
        "record/loss",
        "record/lira",
        "client/loss",
    }
    assert all(0.5 < r["auc"] < 1.0 for r in mia["rows"] if r["attack"].startswith("record/"))
    assert "Strongest attack record/loss" in mia["statement"] and "client/loss" in mia["statement"]
    assert "rates below 1/2 cannot be resolved" in mia["statement"]
    inv = {r["attack"]: r for r in doc["attacks"]["inversion"]["rows"]}
    assert inv["gradient_b4"]["psnr_db"] == pytest.approx(17.0) and inv["gradient_b4"]["sent_in_run"] is False
    assert inv["secure_aggregate"]["flat_baseline_psnr_db"] == pytest.approx(11.5)
    # the headline is the best reconstruction among messages the run actually sent
    statement = doc["attacks"]["inversion"]["statement"]
    assert (
        statement.startswith("Best reconstruction (secure_aggregate): PSNR 9 dB")
        and "2.5 dB below" in statement
    )
    emp = doc["empirical_epsilon"]
    assert emp["violations"] == 0 and emp["rows"][0]["lower_bound"] == pytest.approx(0.8)
    assert emp["rows"][0]["accountant_epsilon"] == pytest.approx(2.5)
    assert set(doc["figures"]) == {
        "accuracy",
        "epsilon",
        "attack_mia",
        "attack_mia_client",
        "attack_inversion",
    }
    assert doc["figures"]["attack_mia"]["path"] == "attacks/mia_roc.png"  # the attack's own PNG
    assert _assert_self_contained(html) == 5
    for fig in doc["figures"].values():  # the Markdown report links files that exist
        assert f"]({fig['path']})" in md and (run / fig["path"]).is_file()


def test_run_report_without_privacy_or_attacks(tmp_path: Path) -> None:
    run = make_run(tmp_path, dp=False, aggregation="plain", attacks=())
    html, md, doc = _texts(write_report(path=run))
    for text in (html, md):
        assert "No differential privacy was applied" in text
        assert "Secure aggregation was not used" in text
        assert text.count("Not run: no result file was found for this attack.") == 3
        assert "Not run: no privacy audit result" in text
    assert doc["privacy"]["applied"] is False and doc["privacy"]["epsilon"] is None
    assert not doc["privacy"]["ledger"]["present"]
    assert {k: v["status"] for k, v in doc["attacks"].items()} == {
        "inversion": "not run",
        "mia": "not run",
        "audit": "not run",
    }
    assert doc["empirical_epsilon"]["status"] == "not run"
    assert set(doc["figures"]) == {"accuracy", "loss"}  # the loss curve: no DP, train_loss recorded
    assert _assert_self_contained(html) == 2


def test_unfinished_run_and_unreadable_attack_file(tmp_path: Path) -> None:
    run = make_run(tmp_path, finished=False, attacks=("inversion",))
    (run / "attacks" / "mia.json").write_text("{not json", encoding="utf-8")
    (run / "metrics.jsonl").open("a", encoding="utf-8").write('{"round": 3, "train_lo')  # torn last line
    html, md, doc = _texts(write_report(path=run))
    assert doc["what_was_run"]["status"].startswith("unfinished")
    finished = json.loads(write_report(path=make_run(tmp_path / "other", attacks=())).json.read_text())
    assert doc["what_was_run"]["config_hash"] == finished["what_was_run"]["config_hash"]  # from config.toml
    assert doc["utility"]["test_accuracy"] is None and len(doc["utility"]["per_round"]) == 2
    assert "The final evaluation has not been recorded" in md
    assert (
        doc["attacks"]["mia"]["status"] == "unreadable" and "mia.json" in doc["attacks"]["mia"]["statement"]
    )
    # No summary: ε comes from the per-round metrics / ledger.
    assert doc["privacy"]["epsilon"] == pytest.approx(EPS_ROUNDS[-1])
    _assert_self_contained(html)


def test_tampered_ledger_is_flagged_and_files_are_not_modified(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ledger = run / "privacy_ledger.jsonl"
    lines = ledger.read_text(encoding="utf-8").splitlines()
    i = next(i for i, line in enumerate(lines) if '"epsilon":2.5' in line)
    lines[i] = lines[i].replace('"epsilon":2.5', '"epsilon":0.5', 1)
    assert '"epsilon":0.5' in lines[i]
    ledger.write_text("\n".join(lines), encoding="utf-8")  # edited, and no final newline
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    html, md, doc = _texts(write_report(path=run))
    assert doc["privacy"]["ledger"]["verified"] is False
    assert "hash mismatch" in doc["privacy"]["ledger"]["problem"]
    assert any("integrity check" in w for w in doc["privacy"]["warnings"])
    assert "integrity check FAILED" in html and "integrity check FAILED" in md
    assert {p: p.read_bytes() for p in before} == before  # the report only adds its own files


def test_summary_and_ledger_disagreement_is_flagged(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["epsilon_sites"]["1"] = 1.0
    (run / "summary.json").write_text(json.dumps(summary))
    doc = json.loads(write_report(path=run).json.read_text())
    assert doc["privacy"]["ledger"]["consistent_with_summary"] is False
    assert any("site(s) 1" in w for w in doc["privacy"]["warnings"])


def test_audit_violation_is_reported(tmp_path: Path) -> None:
    run = make_run(tmp_path, audit_lower_bound=4.0, audit_accountant_eps=None)
    html, md, doc = _texts(write_report(path=run))
    row = doc["empirical_epsilon"]["rows"][0]
    assert (
        row["accountant_epsilon"] == pytest.approx(EPS_ROUNDS[-1])
        and row["accountant_source"] == "summary.json"
    )
    assert row["verdict"].startswith("VIOLATION") and doc["empirical_epsilon"]["violations"] == 1
    assert "the stated guarantee is refuted" in html and "VIOLATION" in md


def test_audit_without_dp_compares_with_infinity(tmp_path: Path) -> None:
    run = make_run(tmp_path, dp=False, audit_lower_bound=6.0, audit_accountant_eps=None)
    doc = json.loads(write_report(path=run).json.read_text())
    row = doc["empirical_epsilon"]["rows"][0]
    assert row["accountant_epsilon"] == "inf" and row["verdict"].startswith("consistent")


def test_mia_roc_is_redrawn_from_json_when_png_is_absent(tmp_path: Path) -> None:
    run = make_run(tmp_path, mia_png=False)
    paths = write_report(path=run)
    doc = json.loads(paths.json.read_text())
    assert doc["figures"]["attack_mia"]["path"] == "report_plots/mia_roc.png"
    redrawn = run / "report_plots" / "mia_roc.png"
    assert redrawn in paths.plots
    with Image.open(redrawn) as im:
        assert im.format == "PNG" and im.size[0] > 200


def test_not_a_run_directory_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match="neither a run directory"):
        write_report(path=tmp_path)
    with pytest.raises(ReportInputError, match="not a directory"):
        write_report(path=tmp_path / "missing")
    run = make_run(tmp_path, attacks=())
    (run / "summary.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ReportInputError, match="summary.json"):
        write_report(path=run)
    (run / "summary.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ReportInputError, match="summary.json"):
        write_report(path=run)


def test_sweep_report(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    paths = write_report(path=sweep)
    html, md, doc = _texts(paths)
    assert doc["kind"] == "sweep"
    points = {p["name"]: p for p in doc["points"]}
    assert points["eps1"]["epsilon"] == pytest.approx(1.0) and points["eps3"]["epsilon"] == pytest.approx(3.0)
    assert points["epsinf"]["epsilon"] == "inf" and points["epsinf"]["privacy_mode"] == "none"
    assert points["eps1"]["test_accuracy"] == pytest.approx(0.41)
    assert points["eps8"]["status"] == "failed" and points["eps8"]["test_accuracy"] is None
    assert 0.5 < points["eps3"]["attack_metrics"]["mia_auc"] < 1
    assert points["eps3"]["attack_metrics"]["audit_epsilon_lb"] == pytest.approx(0.3)
    assert set(doc["figures"]) == {"privacy_utility", "attack_vs_epsilon", "audit_vs_epsilon"}
    for text in (html, md):
        assert "41.00 ± 1.50 %" in text and "70.00 ± 1.50 %" in text
        assert "∞ (no DP)" in text and "synthetic failure" in text
        assert "synthetic sweep for tests" in text
    assert _assert_self_contained(html) == 3


def test_sweep_report_without_runs_or_attacks(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path)
    for name in ("eps1", "eps3", "epsinf"):
        for f in (sweep / "runs" / name / "attacks").iterdir():
            f.unlink()
    doc = json.loads(write_report(path=sweep).json.read_text())
    assert set(doc["figures"]) == {"privacy_utility"}
    assert all(p["attack_metrics"].get("mia_status", "not run") == "not run" for p in doc["points"])
    # sweep.json without a single run directory still gives a report
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"name": "a", "status": "pending"}]}))
    html, _md, doc = _texts(write_report(path=sweep))
    assert doc["points"][0]["status"] == "pending" and "No point has a run directory" in html
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"status": "pending"}]}))
    with pytest.raises(ReportInputError, match="name"):
        write_report(path=sweep)


def test_attack_files_added_later_change_the_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, attacks=())
    doc = json.loads(write_report(path=run).json.read_text())
    assert doc["attacks"]["mia"]["status"] == "not run"
    write_attacks(run, attacks=("mia",), mia_auc_shift=0.0)  # an attack at chance level
    doc = json.loads(write_report(path=run).json.read_text())
    assert doc["attacks"]["mia"]["status"] == "ok"
    record = [r for r in doc["attacks"]["mia"]["rows"] if r["attack"].startswith("record/")]
    assert len(record) == 2 and all(abs(r["auc"] - 0.5) < 0.1 for r in record)


def test_client_level_run_reports_the_global_epsilon(tmp_path: Path) -> None:
    run = make_run(tmp_path, client_level=(0.5, 0.9), attacks=("audit",), audit_accountant_eps=None)
    html, md, doc = _texts(write_report(path=run))
    p = doc["privacy"]
    assert p["mode"] == "client" and p["unit"] == "client" and p["global_epsilon"] == pytest.approx(0.9)
    assert p["epsilon"] == pytest.approx(0.9) and p["ledger"]["verified"] is True
    for text in (html, md):
        assert "client-level differential privacy" in text
        assert "adding or removing one client's entire dataset" in unescape(text)
        assert "ε = 0.90" in text and "Record-level ε bound per site" in text
    # the audit bound (0.8) is compared with the client-level ε of the summary
    row = doc["empirical_epsilon"]["rows"][0]
    assert row["accountant_epsilon"] == pytest.approx(0.9) and row["verdict"].startswith("consistent")


def test_values_from_the_run_directory_are_escaped(tmp_path: Path) -> None:
    run = make_run(tmp_path, attacks=())
    cfg = run / "config.toml"
    text = cfg.read_text(encoding="utf-8")
    assert 'name = "synthetic-run"' in text
    cfg.write_text(
        text.replace('name = "synthetic-run"', 'name = "<script>alert(1)</script><img src=//x.org/a>"')
    )
    html, md, _doc = _texts(write_report(path=run))
    _assert_self_contained(html)  # no script element, no external image
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)</script>" in md


@pytest.mark.parametrize(
    "page",
    [
        '<html><body><img src="https://cdn.example.org/a.png"></body></html>',
        '<html><body><img src="//cdn.example.org/a.png"></body></html>',
        '<html><head><link rel="stylesheet" href="x.css"></head></html>',
        "<html><head><style>@import 'https://fonts.example.org/f.css';</style></head></html>",
        "<html><head><style>body{background:url(http://x.org/b.png)}</style></head></html>",
        '<html><body><div style="background: url(//x.org/b.png)"></div></body></html>',
        "<html><body><script>fetch('x')</script></body></html>",
    ],
)
def test_self_containment_check_catches_external_resources(page: str) -> None:
    with pytest.raises(AssertionError):
        _assert_self_contained(page)
