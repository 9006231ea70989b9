"""The secure-aggregation benchmark's Flower comparison (alternate mode) against a stand-in Flower.

The stand-in ``bench.py`` has the shape of Flower's reference benchmark that the worker and the
harness (``evaluations/benchmarks/flower/``) use (``run_protocol`` and the logger/identity
globals) and returns scripted round times, so the test checks the bookkeeping (best and median of
each side, wrong aggregates excluded, alternation) without Flower installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from evaluations.benchmarks.secagg import Case, FlowerWorker, Row, markdown, run_case_alternating

_FAKE_BENCH = r"""
import json, logging
from pathlib import Path
FLOWER_LOGGER = logging.getLogger("fake-flower")
class TaskIdentity:
    run_id = task_id = node_id = None
_calls = []
def run_protocol(n, dim, num_shares, threshold, n_drop):
    _calls.append((n, dim, num_shares, threshold, n_drop))
    with Path(__file__).with_suffix(".log").open("a") as f:
        f.write(json.dumps([n, dim, num_shares, threshold, n_drop]) + "\n")
    i = len(_calls)
    # third call: a finished round with a wrong aggregate; totals 0.05, 0.07, (bad), 0.06 s
    totals = {1: 0.05, 2: 0.07, 3: 0.01, 4: 0.06}
    err = 0.5 if i == 3 else 1e-5
    return {"total_s": totals.get(i, 0.05), "max_abs_err": err}
"""


@pytest.fixture()
def fake_bench(tmp_path: Path) -> Path:
    path = tmp_path / "bench.py"
    path.write_text(_FAKE_BENCH)
    return path


def _alternate(fake_bench: Path, *, repeats: int) -> tuple[Row, dict[str, Any]]:
    """A small SecAgg setting measured in alternation with the stand-in Flower."""
    case = Case("SecAgg n=5 drop=20%", "secagg", 5, 2000, 0.2, flower_key=("full", 5, True))
    worker = FlowerWorker(python=sys.executable, bench=fake_bench)
    try:
        return run_case_alternating(
            case, worker, clip=1.0, precision_bits=8, seed=0, max_attempts=3, repeats=repeats
        )
    finally:
        worker.close()


def test_alternating_measurement_bookkeeping(fake_bench: Path) -> None:
    row, rec = _alternate(fake_bench, repeats=4)
    # the wrong aggregate (third round) is excluded, the others give best and median
    assert rec["wrong_aggregates"] == 1
    assert [r["total_s"] for r in rec["rounds"]] == [0.05, 0.07, 0.06]
    assert row.flower_s == pytest.approx(0.05)
    assert row.flower_median_s == pytest.approx(0.06)
    assert row.flower_rounds_measured == 3
    # one block of our rounds after each Flower round, at least one round per block
    assert row.rounds_measured is not None and row.rounds_measured >= 4
    assert row.wall_median_s is not None and row.wall_s <= row.wall_median_s
    assert row.speedup_vs_flower == pytest.approx(0.05 / row.wall_s)
    assert row.median_speedup_vs_flower == pytest.approx(0.06 / row.wall_median_s)
    assert row.max_abs_err <= row.err_bound
    table = markdown([row])
    assert f"{row.median_speedup_vs_flower:.1f}x" in table and "(3)" in table


def test_worker_passes_the_setting_and_reports_a_dead_worker(fake_bench: Path, tmp_path: Path) -> None:
    worker = FlowerWorker(python=sys.executable, bench=fake_bench)
    try:
        out = worker.round(label="k9", n=50, dim=1000, dropped=10)
        assert out["total_s"] == pytest.approx(0.05)
        worker.round(label="full", n=10, dim=1000, dropped=0)
    finally:
        worker.close()
    # Flower's own settings: num_shares 9 / threshold 5 for k9, the full graph otherwise
    calls = [json.loads(x) for x in fake_bench.with_suffix(".log").read_text().splitlines()]
    assert calls == [[50, 1000, 9, 5, 10], [10, 1000, 1.0, 0.5, 0]]
    broken = tmp_path / "broken" / "bench.py"
    broken.parent.mkdir()
    broken.write_text("raise SystemExit('no flwr here')\n")
    with pytest.raises(RuntimeError, match="did not start"):
        FlowerWorker(python=sys.executable, bench=broken)


def test_plot_and_replot_from_a_saved_run(fake_bench: Path, tmp_path: Path) -> None:
    """The benchmark's plot draws from the rows of its JSON output; --replot redraws it alone."""
    import dataclasses

    from evaluations.benchmarks.secagg import main
    from evaluations.benchmarks.secagg_rounds import measure_round
    from evaluations.plots import secagg_plot

    compared, _ = _alternate(fake_bench, repeats=2)
    derived = [
        measure_round(
            Case(f"SecAgg+ n={n} derived drop=0%", "secagg+", n, 500, 0.0),
            clip=1.0,
            precision_bits=8,
            seed=0,
            max_attempts=3,
        )
        for n in (6, 12)
    ]
    rows = [dataclasses.asdict(r) for r in (compared, *derived)]
    png_magic = b"\x89PNG\r\n\x1a\n"
    for subset in (rows, rows[:1], rows[1:], []):
        assert secagg_plot(rows=subset).startswith(png_magic)
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps({"rows": rows}))
    assert main(["--replot", str(saved)]) == 0
    assert saved.with_suffix(".png").read_bytes().startswith(png_magic)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    assert main(["--replot", str(broken)]) == 2
    assert not broken.with_suffix(".png").exists()


def test_the_harness_script_runs_flowers_settings_and_drops_wrong_aggregates(fake_bench: Path) -> None:
    """``--flower-mode harness``: the real script in another interpreter, Flower's own settings."""
    from evaluations.benchmarks.secagg_flower import run_flower_harness

    out = run_flower_harness(
        python=sys.executable, bench=fake_bench, dim=1000, clients=[12], timeout=120, repeats=2
    )
    assert out["returncode"] == 0, out["stderr_tail"]
    calls = [json.loads(x) for x in fake_bench.with_suffix(".log").read_text().splitlines()]
    # n = 12: the full graph and SecAgg+ with Flower's 9 neighbours, 0 and 20 % (2) dropped, twice each
    assert calls == [[12, 1000, *ns, d] for ns in ([1.0, 0.5], [9, 5]) for d in (0, 2) for _ in range(2)]
    assert out["rounds"] == {
        ("full", 12, False): pytest.approx(0.05),  # the best of 0.05 and 0.07
        ("full", 12, True): pytest.approx(0.06),  # the other round's aggregate was wrong
        ("k9", 12, False): pytest.approx(0.05),
        ("k9", 12, True): pytest.approx(0.05),
    }
    assert out["wrong_aggregates"] == {"full/n=12/drop=True": 1}
    assert set(out["cpu"]) == set(out["rounds"])
    one = run_flower_harness(
        python=sys.executable,
        bench=fake_bench,
        dim=1000,
        clients=[12],
        timeout=120,
        repeats=1,
        only=("k9", True),
    )
    assert list(one["rounds"]) == [("k9", 12, True)]


def test_a_missing_flower_benchmark_stops_the_run_before_anything_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference benchmark lives outside the repository: absent, the command says where it looked
    and how to name it, with status 2, before any measurement."""
    from evaluations.benchmarks import secagg, secagg_flower

    def measured(**_: object) -> None:
        raise AssertionError("a measurement ran before the Flower benchmark was found")

    monkeypatch.setattr(secagg, "keystream_rate", measured)
    monkeypatch.setattr(secagg, "measure_round", measured)
    missing = tmp_path / "nowhere" / "bench.py"
    out = ["--out", str(tmp_path / "out.json"), "--flower-python", sys.executable]
    with pytest.raises(SystemExit) as stop:
        secagg.main([*out, "--flower-bench", str(missing)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--flower-bench" in err
    monkeypatch.setenv("SECFED_SHARED", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as stop:
        secagg.main(out)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        str(tmp_path / "empty" / "anchors" / "flower_secagg" / "bench.py") in err and "SECFED_SHARED" in err
    )
    # the scripts that run in Flower's interpreter are files of the repository, not of the wheel
    monkeypatch.setattr(secagg_flower, "FLOWER_SCRIPTS", tmp_path / "no-scripts")
    with pytest.raises(secagg_flower.FlowerSetupError, match="checkout of the repository"):
        FlowerWorker(python=sys.executable, bench=missing)
    assert not (tmp_path / "out.json").exists()
