"""Report plots drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Every function returns PNG bytes, ready to be written to a file or embedded as a data URI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "eps_label",
    "accuracy_plot",
    "epsilon_plot",
    "privacy_utility_plot",
    "roc_plot",
    "metric_vs_epsilon_plot",
    "secagg_plot",
]

_SIZE = (6.4, 3.6)
_DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def accuracy_plot(
    *,
    rounds: Sequence[int],
    accuracy: Sequence[float],
    ci95: Sequence[float | None],
    final: tuple[int, float, float | None] | None = None,
    chance: float | None = None,
    baseline: tuple[float, float | None] | None = None,
) -> bytes:
    """Test accuracy (%) against the round, with 95 % confidence bars.

    Args:
        rounds: Evaluated rounds.
        accuracy: Accuracy in [0, 1] per evaluated round.
        ci95: Half-width of the 95 % interval per round (``None`` = unknown).
        final: ``(round, accuracy, ci95)`` of the final evaluation, drawn as a separate marker.
        chance: Chance level in [0, 1] (e.g. ``1 / n_way``), drawn as a dashed line.
        baseline: ``(accuracy, ci95)`` of the untrained model on the same test tasks, drawn as a
            dashed line with its 95 % band.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    if baseline is not None:
        base, base_ci = 100 * baseline[0], 100 * (baseline[1] or 0.0)
        ax.axhline(base, color="C2", linestyle="--", linewidth=1, label="untrained model")
        if base_ci > 0:
            ax.axhspan(base - base_ci, base + base_ci, color="C2", alpha=0.12, linewidth=0)
    if rounds:
        yerr = [100 * (c or 0.0) for c in ci95]
        ax.errorbar(
            list(rounds),
            [100 * a for a in accuracy],
            yerr=yerr,
            marker="o",
            capsize=3,
            label="during training",
        )
    if final is not None:
        ax.errorbar(
            [final[0]],
            [100 * final[1]],
            yerr=[100 * (final[2] or 0.0)],
            marker="s",
            color="C3",
            capsize=4,
            linestyle="none",
            label="final evaluation",
        )
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy on held-out test tasks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def loss_plot(*, rounds: Sequence[int], loss: Sequence[float]) -> bytes:
    """Mean training loss of the sites against the round (only drawn without DP: under DP the loss
    is a function of the private records and is not released).

    Args:
        rounds: Rounds.
        loss: Mean training loss per round.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    ax.plot(list(rounds), list(loss), marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("mean training loss")
    ax.set_title("Training loss (sites' mean)")
    ax.grid(alpha=0.3)
    return _png(fig)


def epsilon_plot(*, series: Mapping[str, Sequence[tuple[int, float]]], delta: float | None) -> bytes:
    """Cumulative ε against the round, one line per site (and the global ε).

    Args:
        series: Label -> ``(round, ε)`` points; infinite ε values are left out.
        delta: The δ of every ε (shown in the title).

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    for i, (label, pts) in enumerate(series.items()):
        finite = [(r, e) for r, e in pts if math.isfinite(e)]
        if finite:
            ax.plot(
                [r for r, _ in finite], [e for _, e in finite], marker=".", label=label, color=f"C{i % 10}"
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative ε")
    ax.set_title("Privacy spent (ε) over rounds" + (f", δ = {delta:g}" if delta is not None else ""))
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _inf_position(eps_values: Sequence[float]) -> float:
    """Where ε = ∞ is drawn: beyond the largest finite ε on the log axis (or at 1 when all are ∞)."""
    finite = [e for e in eps_values if math.isfinite(e) and e > 0]
    return max(finite) * 3.0 if finite else 1.0


def eps_label(eps: float) -> str:
    """ε as a reader writes it: 3 significant digits at most, no trailing zeros (0.999992 -> "1",
    7.99337 -> "7.99", 0.5 -> "0.5", 12.34 -> "12.3"); ``"∞"`` for infinity."""
    if math.isinf(eps):
        return "∞"
    return f"{float(f'{eps:.3g}'):g}"


def _eps_axis(ax: Any, eps_values: Sequence[float]) -> None:
    finite = sorted({e for e in eps_values if math.isfinite(e) and e > 0})
    ticks: list[float] = list(finite)
    labels = [eps_label(e) for e in finite]
    if any(math.isinf(e) for e in eps_values):
        ticks.append(_inf_position(eps_values))
        labels.append("∞ (no DP)")
    if finite:
        ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()


def privacy_utility_plot(
    *,
    series: Mapping[str, Sequence[tuple[float, float, float | None]]],
    chance: float | None = None,
    baseline: tuple[float, float | None] | None = None,
) -> bytes:
    """Accuracy (%) against ε, one line per learner / aggregation; ε = ∞ (no DP) at the right edge.

    The y axis is not zoomed to the points (which would make noise look like a trend): it runs to
    100 % and down to chance (or 0 %), or lower when a point's interval reaches below.

    Args:
        series: Label -> ``(ε, accuracy in [0, 1], ci95 or None)`` points; ε is best the target
            the point was calibrated for (the ε reached belongs in the table).
        chance: Accuracy of guessing in [0, 1] (``1 / n_way``), drawn as a dotted line.
        baseline: ``(accuracy, ci95)`` of the untrained model on the same test tasks, drawn as a
            dashed line with its 95 % band (training must beat it to have learned anything).

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    all_eps = [e for pts in series.values() for e, _, _ in pts]
    inf_pos = _inf_position(all_eps)
    for i, (label, pts) in enumerate(series.items()):
        pts_sorted = sorted(pts, key=lambda p: p[0])
        ax.errorbar(
            [e if math.isfinite(e) else inf_pos for e, _, _ in pts_sorted],
            [100 * a for _, a, _ in pts_sorted],
            yerr=[100 * (c or 0.0) for _, _, c in pts_sorted],
            marker="o",
            capsize=3,
            label=label,
            color=f"C{i % 10}",
        )
    if baseline is not None:
        base, base_ci = 100 * baseline[0], 100 * (baseline[1] or 0.0)
        ax.axhline(base, color="C3", linestyle="--", linewidth=1, label="untrained model")
        if base_ci > 0:
            ax.axhspan(base - base_ci, base + base_ci, color="C3", alpha=0.1, linewidth=0)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle=":", linewidth=1, label="guessing")
    lows = [100 * (a - (c or 0.0)) for pts in series.values() for _, a, c in pts]
    if baseline is not None:
        lows.append(100 * (baseline[0] - (baseline[1] or 0.0)))
    floor = 100 * chance if chance is not None else 0.0
    low = min([floor, *lows]) if lows else floor
    ax.set_ylim(max(0.0, math.floor(low / 10) * 10 - 2), 101)
    _eps_axis(ax, all_eps)
    ax.set_xlabel("privacy budget ε (smaller = stronger privacy)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Privacy–utility trade-off")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def metric_vs_epsilon_plot(
    *,
    series: Mapping[str, Sequence[tuple[float, float]]],
    ylabel: str,
    title: str,
    reference: float | None,
    accountant_line: bool = False,
    ceilings: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    ymin: float | None = None,
) -> bytes:
    """An attack metric against ε (e.g. membership-inference AUC), ε = ∞ at the right edge.

    Args:
        series: Label -> ``(ε, value)`` points.
        ylabel: Y axis label.
        title: Plot title.
        reference: A horizontal reference line (e.g. 0.5 = chance AUC), or ``None``.
        accountant_line: Draw y = x over the finite ε (the accountant's ε: an empirical lower bound
            above it would refute the guarantee).
        ceilings: Label -> ``(ε, ceiling)``: the most the audit could have shown (its power),
            drawn as open triangles.
        ymin: Lower end of the y axis (0 for a lower bound on ε, which is never negative).

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    all_eps = [e for pts in series.values() for e, _ in pts]
    inf_pos = _inf_position(all_eps)
    if accountant_line:
        finite = sorted({e for e in all_eps if math.isfinite(e) and e > 0})
        if finite:
            ax.plot(
                finite, finite, color="black", linestyle="--", linewidth=1, label="accountant's ε (y = x)"
            )
    for i, (label, pts) in enumerate((ceilings or {}).items()):
        ax.plot(
            [e if math.isfinite(e) else inf_pos for e, _ in sorted(pts)],
            [v for _, v in sorted(pts)],
            marker="^",
            markerfacecolor="none",
            linestyle="none",
            color=f"C{i % 10}",
            label=f"{label}: audit ceiling",
        )
    for i, (label, pts) in enumerate(series.items()):
        pts_sorted = sorted(pts)
        ax.plot(
            [e if math.isfinite(e) else inf_pos for e, _ in pts_sorted],
            [v for _, v in pts_sorted],
            marker="o",
            label=label,
            color=f"C{i % 10}",
        )
    _eps_axis(ax, all_eps)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label="chance")
    if ymin is not None:
        ax.set_ylim(bottom=ymin)
    ax.set_xlabel("privacy budget ε")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def roc_plot(*, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> bytes:
    """Membership-inference ROC curves on log-log axes (Carlini et al. 2022), with the chance line.

    Args:
        curves: Label -> ``(false-positive rates, true-positive rates)``.

    Returns:
        PNG bytes.
    """
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot()
    positive = [v for fpr, tpr in curves.values() for v in (*fpr, *tpr) if v > 0]
    floor = max(min(positive, default=1e-4), 1e-6)
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        pts = [(max(f, floor), max(t, floor)) for f, t in zip(fpr, tpr, strict=True)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, color=f"C{i % 10}")
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(floor, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("Membership inference ROC (log-log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def secagg_plot(*, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Secure-aggregation benchmark: round time of ours against Flower's, and ours against n.

    Left: every setting with a Flower figure, best round of each side on a log axis, annotated
    with the speed-up (and the median speed-up when the alternate mode measured medians). Right:
    our best round against the number of clients for the derived SecAgg+ settings (one line per
    dropout rate; m = 1M points as squares). A panel without data is left out.

    Args:
        rows: Benchmark rows (``evaluations.benchmarks.secagg.Row`` as dicts: ``case``, ``mode``,
            ``n``, ``m``, ``dropped``, ``wall_s`` and, where measured, ``flower_s``,
            ``speedup_vs_flower``, ``median_speedup_vs_flower``).

    Returns:
        PNG bytes.
    """
    compared = [r for r in rows if r.get("flower_s")]
    derived = [r for r in rows if "derived" in str(r.get("case", ""))]
    panels = int(bool(compared)) + int(bool(derived))
    fig = Figure(figsize=(6.4 * max(panels, 1), 3.6 + 0.25 * max(len(compared) - 4, 0)))
    col = 1
    if compared:
        ax = fig.add_subplot(1, max(panels, 1), col)
        col += 1
        names = [str(r["case"]) for r in compared]
        ys = list(range(len(compared)))
        ax.barh([y + 0.2 for y in ys], [float(r["flower_s"]) for r in compared], height=0.4, label="Flower")
        ax.barh([y - 0.2 for y in ys], [float(r["wall_s"]) for r in compared], height=0.4, label="secfed")
        for y, r in zip(ys, compared, strict=True):
            text = f"{float(r['speedup_vs_flower']):.1f}x"
            if r.get("median_speedup_vs_flower"):
                text += f" (median {float(r['median_speedup_vs_flower']):.1f}x)"
            ax.text(float(r["wall_s"]) * 1.15, y - 0.2, text, va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_yticks(ys)
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("best round (s, log scale)")
        ax.set_title("Round time against Flower, same run", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(loc="lower right", fontsize=7)
    if derived:
        ax = fig.add_subplot(1, max(panels, 1), col)
        m_main = min(int(r["m"]) for r in derived)
        for i, dropped in enumerate(sorted({bool(r["dropped"]) for r in derived})):
            label = "20 % dropout" if dropped else "no dropout"
            for m in sorted({int(r["m"]) for r in derived}):
                pts = sorted(
                    (int(r["n"]), float(r["wall_s"]))
                    for r in derived
                    if bool(r["dropped"]) == dropped and int(r["m"]) == m
                )
                if pts:  # lines at the main vector length, single squares at the larger one
                    ax.plot(
                        [n for n, _ in pts],
                        [w for _, w in pts],
                        marker="o" if m == m_main else "s",
                        linestyle="-" if m == m_main else "none",
                        color=f"C{i}",
                        label=f"{label}, m = {m:,}",
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients n (log scale)")
        ax.set_ylabel("best round (s, log scale)")
        ax.set_title("SecAgg+ with derived k and t, one core", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no rows to plot", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    return _png(fig)
