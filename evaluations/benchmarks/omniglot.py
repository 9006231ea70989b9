"""Centralised vs federated few-shot learning on the Omniglot small split (a benchmark, not a test).

For each learner, the same episode budget is spent twice: centralised (one site holding every
training class, one long local run) and federated (``--sites`` class-disjoint sites, FedAvg over
rounds of local steps). Both are tested on the alphabets found only in
``images_background_small2`` with the configured test settings (default 5-way 1-shot, 15
queries, 600 episodes), and the wall time of each run is measured side by side in one process.

Usage::

    python -m evaluations.benchmarks.omniglot --out bench_results/omniglot
    python -m evaluations.benchmarks.omniglot --learners protonet --budget 1000 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from secfed.config import ExperimentConfig, load_config
from secfed.experiment import Experiment

__all__ = ["run_pair", "main"]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "protonet": "omniglot_protonet.toml",
    "maml": "omniglot_maml.toml",
    "fomaml": "omniglot_fomaml.toml",
    "reptile": "omniglot_reptile.toml",
}
#: Episodes per local step of each learner's example config (meta_batch), used to split the budget.
PUBLISHED = {  # full Omniglot, 5w1s / 5w5s / 20w1s (papers cited in the README table)
    "protonet": (98.8, 99.7, 96.0),
    "maml": (98.7, 99.9, 95.8),
    "reptile": (95.4, 98.9, 88.1),
}


def _config(learner: str, *, overrides: list[str]) -> ExperimentConfig:
    return load_config(REPO / "examples" / CONFIGS[learner], overrides=overrides)


def run_pair(
    *, learner: str, budget: int, sites: int, local_steps: int, out: Path, extra: list[str], episodes: int
) -> dict[str, Any]:
    """Run the centralised and the federated version of one learner on the same budget.

    Args:
        learner: Learner name.
        budget: Total local (outer) steps across all sites and rounds.
        sites: Federated sites (class-disjoint).
        local_steps: Local steps per site per round in the federated run.
        out: Folder for the two run directories.
        extra: Further ``section.key=value`` overrides for both runs.
        episodes: Final test episodes.

    Returns:
        A row per setting with accuracy, CI and wall time.
    """
    rounds = max(1, budget // (sites * local_steps))
    common = [f"experiment.final_eval_episodes={episodes}", "experiment.eval_every=0", *extra]
    central = _config(
        learner,
        overrides=[*common, "partition.num_sites=1", "experiment.rounds=1", f"learner.local_steps={budget}"],
    )
    federated = _config(
        learner,
        overrides=[
            *common,
            f"partition.num_sites={sites}",
            f"experiment.rounds={rounds}",
            f"learner.local_steps={local_steps}",
        ],
    )
    rows: dict[str, Any] = {}
    for name, cfg in (("centralised", central), ("federated", federated)):
        start = time.perf_counter()
        res = Experiment(config=cfg).run(out_dir=out / f"{learner}-{name}", progress=False)
        wall = time.perf_counter() - start
        rows[name] = {
            "accuracy": 100 * res.summary["test_accuracy"],
            "ci95": 100 * res.summary["test_accuracy_ci95"],
            "train_s": res.summary["wall_s"],
            "total_s": wall,
            "steps": budget,
            "rounds": cfg.experiment.rounds,
            "sites": cfg.partition.num_sites,
        }
        print(
            f"{learner:9s} {name:11s} {rows[name]['accuracy']:.2f} ± {rows[name]['ci95']:.2f} %  "
            f"train {rows[name]['train_s']:.1f} s",
            flush=True,
        )
    rows["time_ratio"] = rows["federated"]["train_s"] / rows["centralised"]["train_s"]
    return rows


def _markdown(results: dict[str, Any]) -> str:
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes a Markdown table and a JSON file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", default="protonet,maml,fomaml,reptile")
    ap.add_argument("--budget", type=int, default=1000, help="total local steps (episodes x meta-batch)")
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=600, help="final test episodes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra override for every run")
    ap.add_argument("--quick", action="store_true", help="tiny budget, for a smoke run")
    ap.add_argument("--out", default="bench_results/omniglot")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = out / f"runs-{stamp}"
    budget, episodes = (50, 50) if args.quick else (args.budget, args.episodes)
    results: dict[str, Any] = {}
    for learner in args.learners.split(","):
        if learner not in CONFIGS:
            print(f"unknown learner {learner!r}; choose from {sorted(CONFIGS)}", file=sys.stderr)
            return 2
        # MAML-family and Reptile steps each consume meta_batch tasks: spend the same number of
        # tasks per learner by dividing the budget by the configured meta-batch.
        meta_batch = _config(learner, overrides=[]).learner.meta_batch
        results[learner] = run_pair(
            learner=learner,
            budget=max(args.sites * args.local_steps, budget // meta_batch),
            sites=args.sites,
            local_steps=args.local_steps,
            out=runs,
            extra=args.set,
            episodes=episodes,
        )
    table = _markdown(results)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"omniglot-{stamp}.md").write_text(table)
    (out / f"omniglot-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
