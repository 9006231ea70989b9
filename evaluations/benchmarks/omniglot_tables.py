"""The Omniglot benchmark's Markdown tables and the published full-Omniglot numbers they are set beside."""

from __future__ import annotations

from typing import Any

from evaluations.benchmarks.omniglot_settings import WITHIN

__all__ = [
    "settings_markdown",
    "pair_markdown",
    "PUBLISHED",
    "PUBLISHED_WITHIN",
    "PUBLISHED_SOURCES",
    "SETTINGS",
]

#: Published accuracy (%) per learner in the :data:`SETTINGS` columns.
PUBLISHED = {  # full Omniglot, 5w1s / 5w5s / 20w1s (papers cited in the README table)
    "protonet": (98.8, 99.7, 96.0),
    "maml": (98.7, 99.9, 95.8),
    "reptile": (95.4, 98.9, 88.1),
    "matching": (98.1, 98.9, 93.8),
}
#: Published 20-way within-alphabet one-shot accuracy (Lake et al. 2015's protocol, full Omniglot).
PUBLISHED_WITHIN = {"siamese": 92.0}
#: Where each published row comes from.
PUBLISHED_SOURCES = {
    "protonet": "Snell et al. 2017",
    "maml": "Finn et al. 2017",
    "reptile": "Nichol et al. 2018",
    "matching": "Vinyals et al. 2016",
    "siamese": "Koch et al. 2015",
}
#: The settings of the published columns, in order.
SETTINGS = ("5w1s", "5w5s", "20w1s")


def settings_markdown(*, results: dict[str, dict[str, dict[str, Any]]], note: str = "") -> str:
    """The measured accuracies beside the published full-Omniglot numbers (Markdown).

    Args:
        results: Learner -> setting -> mode -> row (from :func:`run_settings`).
        note: Extra text under the table heading.

    Returns:
        The table with its caveat.
    """
    lines = [
        "Measured on the Omniglot **small** subset (meta-train on images_background_small1, meta-test on "
        "the three alphabets found only in images_background_small2), with this benchmark's training "
        "budget — a different, much smaller dataset and budget than the papers' full Omniglot "
        "(1,623 characters, 1,200 for training). The published numbers are for orientation only and "
        "are not directly comparable.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        "| learner | setting | centralised (%) | federated (%) | published, full Omniglot (%) | source |",
        "|---|---|---|---|---|---|",
    ]
    for learner, by_setting in results.items():
        pub = PUBLISHED.get(learner)
        for setting, by_mode in by_setting.items():
            cells = []
            for mode in ("centralised", "federated"):
                r = by_mode.get(mode)
                cells.append(f"{r['accuracy']:.2f} ± {r['ci95']:.2f}" if r else "not run")
            published = f"{pub[SETTINGS.index(setting)]:.1f}" if pub and setting in SETTINGS else "—"
            if setting == "20w1s" + WITHIN and learner in PUBLISHED_WITHIN:
                published = f"{PUBLISHED_WITHIN[learner]:.1f}"
            source = PUBLISHED_SOURCES.get(learner, "—") if published != "—" else "—"
            lines.append(f"| {learner} | {setting} | {cells[0]} | {cells[1]} | {published} | {source} |")
    times = _time_rows(results)
    if times:
        lines += [
            "",
            "Time per learner (seconds of training rounds; in brackets the whole run with its final "
            "evaluation), per training run:",
            "",
            "| learner | trained n_way | centralised s | federated s |",
            "|---|---|---|---|",
            *times,
        ]
    return "\n".join(lines) + "\n"


def _time_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One row per learner and training run (rows of one run share ``run_dir``)."""
    out: list[str] = []
    for learner, by_setting in results.items():
        runs: dict[Any, dict[str, str]] = {}
        for by_mode in by_setting.values():
            for mode, r in by_mode.items():
                if "train_s" not in r:
                    return []
                cell = f"{r['train_s']:.0f}" + (f" ({r['run_s']:.0f})" if "run_s" in r else "")
                runs.setdefault(r.get("trained_n_way"), {})[mode] = cell
        for n_way, cells in runs.items():
            way = "—" if n_way is None else str(n_way)
            c, f = cells.get("centralised", "not run"), cells.get("federated", "not run")
            out.append(f"| {learner} | {way} | {c} | {f} |")
    return out


def pair_markdown(results: dict[str, Any]) -> str:
    """The 5-way 1-shot table of centralised against federated runs, with their training times.

    Args:
        results: Learner -> :func:`evaluations.benchmarks.omniglot.run_pair` row.

    Returns:
        The Markdown table.
    """
    lines = [
        "| learner | centralised 5w1s (%) | federated 5w1s (%) | central train s | federated train s "
        "| fed/central time |",
        "|---|---|---|---|---|---|",
    ]
    for learner, r in results.items():
        c, f = r["centralised"], r["federated"]
        lines.append(
            f"| {learner} | {c['accuracy']:.2f} ± {c['ci95']:.2f} | {f['accuracy']:.2f} ± {f['ci95']:.2f} | "
            f"{c['train_s']:.1f} | {f['train_s']:.1f} | {r['time_ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"
