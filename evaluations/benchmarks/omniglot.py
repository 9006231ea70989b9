"""Centralised vs federated few-shot learning on the Omniglot small split (a benchmark, not a test).

For each learner, the same episode budget is spent twice: centralised (one site holding every
training class, one long local run) and federated (``--sites`` class-disjoint sites, FedAvg over
rounds of local steps). Both are tested on the alphabets found only in
``images_background_small2`` with the configured test settings (default 5-way 1-shot, 15
queries, 600 episodes), and the wall time of each run is measured side by side in one process.

With ``--settings 5w1s,5w5s,20w1s`` every learner is evaluated 5-way 1-shot, 5-way 5-shot and
20-way 1-shot instead. MAML-family learners (MAML, FOMAML, Reptile: their head has ``n_way``
outputs) are trained once per distinct ``n_way`` with the matching ``task.n_way``; ProtoNet is
trained once with its configured training ways. A trained model is evaluated on every other
setting of its group from its checkpoint, on the same test tasks as the run's own final
evaluation. The table places the measured numbers beside the published full-Omniglot numbers,
which were measured on a much larger dataset and are not directly comparable.

Usage::

    python -m evaluations.benchmarks.omniglot --out bench_results/omniglot
    python -m evaluations.benchmarks.omniglot --learners protonet --budget 1000 --quick
    python -m evaluations.benchmarks.omniglot --settings 5w1s,5w5s,20w1s --modes federated
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from evaluations.benchmarks.omniglot_eval import evaluate_checkpoint, reevaluate, tune_adaptation
from evaluations.benchmarks.omniglot_settings import (
    WITHIN,
    WITHIN_OVERRIDES,
    Setting,
    parse_adaptation_grid,
    parse_settings,
    setting_name,
)
from evaluations.benchmarks.omniglot_tables import (
    PUBLISHED,
    PUBLISHED_SOURCES,
    PUBLISHED_WITHIN,
    SETTINGS,
    pair_markdown,
    settings_markdown,
)
from secfed.config import ExperimentConfig, load_config
from secfed.experiment import Experiment

__all__ = [
    "run_pair",
    "run_settings",
    "main",
    # re-exported from omniglot_eval, omniglot_settings and omniglot_tables
    "reevaluate",
    "evaluate_checkpoint",
    "tune_adaptation",
    "parse_settings",
    "parse_adaptation_grid",
    "Setting",
    "WITHIN",
    "WITHIN_OVERRIDES",
    "settings_markdown",
    "PUBLISHED",
    "PUBLISHED_WITHIN",
    "PUBLISHED_SOURCES",
    "SETTINGS",
]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "protonet": "omniglot_protonet.toml",
    "maml": "omniglot_maml.toml",
    "fomaml": "omniglot_fomaml.toml",
    "reptile": "omniglot_reptile.toml",
    "matching": "omniglot_matching.toml",
    "siamese": "omniglot_siamese.toml",
    "fedavg": "omniglot_fedavg.toml",
}
#: Learners whose model head has n_way outputs: trained with the evaluated n_way.
N_WAY_HEAD = ("maml", "fomaml", "reptile")


def _config(learner: str, *, overrides: list[str]) -> ExperimentConfig:
    return load_config(REPO / "examples" / CONFIGS[learner], overrides=overrides)


def _federated_rounds(*, budget: int, sites: int, local_steps: int, clients_per_round: int) -> int:
    """Rounds that spend ``budget`` local steps when ``clients_per_round`` sites (0 = all) train per round."""
    per_round = clients_per_round if 0 < clients_per_round < sites else sites
    return max(1, budget // (per_round * local_steps))


def _mode_overrides(
    *, common: list[str], budget: int, sites: int, local_steps: int, clients_per_round: int
) -> dict[str, list[str]]:
    """The overrides of each mode's run on the same budget: ``centralised`` (one site, one round of
    ``budget`` local steps) and ``federated`` (``sites`` sites, as many rounds as spend ``budget``)."""
    rounds = _federated_rounds(
        budget=budget, sites=sites, local_steps=local_steps, clients_per_round=clients_per_round
    )
    return {
        "centralised": [
            *common,
            "partition.num_sites=1",
            "experiment.rounds=1",
            f"learner.local_steps={budget}",
        ],
        "federated": [
            *common,
            f"partition.num_sites={sites}",
            f"experiment.rounds={rounds}",
            f"learner.local_steps={local_steps}",
            f"federation.clients_per_round={clients_per_round}",
        ],
    }


def run_pair(
    *,
    learner: str,
    budget: int,
    sites: int,
    local_steps: int,
    out: Path,
    extra: list[str],
    episodes: int,
    clients_per_round: int = 0,
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
        clients_per_round: Sites sampled per federated round (0 = all); the rounds are chosen so
            that the federated run spends the same budget.

    Returns:
        A row per setting with accuracy, CI and wall time.
    """
    per_mode = _mode_overrides(
        common=[f"experiment.final_eval_episodes={episodes}", "experiment.eval_every=0", *extra],
        budget=budget,
        sites=sites,
        local_steps=local_steps,
        clients_per_round=clients_per_round,
    )
    rows: dict[str, Any] = {}
    for name in ("centralised", "federated"):
        cfg = _config(learner, overrides=per_mode[name])
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


def _score(
    run_dir: Path, setting: Setting, *, episodes: int, splits: dict[str, Any], split: str = "test"
) -> tuple[float, float]:
    """A finished run's final model on ``setting``'s tasks of ``split``: accuracy and 95 % half-width."""
    return evaluate_checkpoint(
        run_dir=run_dir,
        test_n_way=setting.n_way,
        test_k_shot=setting.k_shot,
        episodes=episodes,
        overrides=setting.overrides(),
        splits_cache=splits,
        split=split,
    )


def run_settings(
    *,
    learner: str,
    settings: Sequence[Setting],
    budget: int,
    sites: int,
    local_steps: int,
    out: Path,
    extra: list[str],
    episodes: int,
    modes: list[str],
    clients_per_round: int = 0,
    val_episodes: int = 0,
) -> dict[str, dict[str, Any]]:
    """Train one learner (per n_way group) and evaluate it on every few-shot setting.

    Args:
        learner: Learner name.
        settings: Test settings (:func:`parse_settings`).
        budget: Total local steps across all sites and rounds (per training run).
        sites: Federated sites.
        local_steps: Local steps per site per round (federated runs).
        out: Folder for the run directories.
        extra: Further overrides for every run.
        episodes: Test episodes per setting.
        modes: ``centralised`` and/or ``federated``.
        clients_per_round: Sites sampled per federated round (0 = all), at the same budget.
        val_episodes: If > 0, every row is also scored on this many tasks of the run's
            meta-validation alphabets (``data.val_alphabets`` in ``extra``; the test tasks are
            still scored, and are not what a choice of hyperparameters should look at).

    Returns:
        Setting name -> mode -> ``accuracy``, ``ci95`` (in %), ``train_s`` (the rounds),
        ``run_s`` (the whole run with its final evaluation), ``run_dir``, ``trained_n_way`` and,
        with ``val_episodes``, ``val_accuracy`` and ``val_ci95``.
    """
    # An n_way-output head ties training to the evaluated way, unless the head is zeroed before
    # every task (head_init = "zero"): then the example's training way is kept for every setting.
    tied = learner in N_WAY_HEAD and _config(learner, overrides=extra).learner.head_init != "zero"
    groups: dict[int | None, list[Setting]] = {}
    for st in settings:
        groups.setdefault(st[0] if tied else None, []).append(st)
    results: dict[str, dict[str, Any]] = {setting_name(st): {} for st in settings}
    for key, members in groups.items():
        first = members[0]
        train_ovr = [f"task.test_n_way={first.n_way}", f"task.test_k_shot={first.k_shot}", *first.overrides()]
        if key is not None:
            train_ovr.append(f"task.n_way={key}")
        per_mode = _mode_overrides(
            common=[
                f"experiment.final_eval_episodes={episodes}",
                "experiment.eval_every=0",
                *extra,
                *train_ovr,
            ],
            budget=budget,
            sites=sites,
            local_steps=local_steps,
            clients_per_round=clients_per_round,
        )
        splits: dict[str, Any] = {}
        for mode in modes:
            cfg = _config(learner, overrides=per_mode[mode])
            run_dir = out / f"{learner}-{mode}-train{cfg.task.n_way}w"
            run_start = time.perf_counter()
            res = Experiment(config=cfg).run(out_dir=run_dir, progress=False)
            run_s = time.perf_counter() - run_start
            for st in members:
                start = time.perf_counter()
                if st == first:
                    acc, ci = res.summary["test_accuracy"], res.summary["test_accuracy_ci95"]
                else:
                    acc, ci = _score(run_dir, st, episodes=episodes, splits=splits)
                row: dict[str, Any] = {
                    "accuracy": 100 * acc,
                    "ci95": 100 * ci,
                    "train_s": res.summary["wall_s"],
                    "run_s": run_s,
                    "eval_s": time.perf_counter() - start,
                    "run_dir": str(run_dir),
                    "trained_n_way": cfg.task.n_way,
                    "steps": budget,
                    "rounds": cfg.experiment.rounds,
                    "sites": cfg.partition.num_sites,
                }
                if val_episodes > 0:
                    vacc, vci = _score(run_dir, st, episodes=val_episodes, splits=splits, split="validation")
                    row.update(val_accuracy=100 * vacc, val_ci95=100 * vci)
                name = setting_name(st)
                results[name][mode] = row
                val = f"validation {row['val_accuracy']:.2f} %, " if val_episodes > 0 else ""
                print(
                    f"{learner:9s} {name:13s} {mode:11s} {row['accuracy']:.2f} ± {row['ci95']:.2f} %  "
                    f"({val}trained {cfg.task.n_way}-way, train {row['train_s']:.1f} s)",
                    flush=True,
                )
    return results


def _federation_shape(cfg: ExperimentConfig, args: argparse.Namespace) -> tuple[int, int]:
    """Local steps per round and sites per round: the command line's, else the example config's."""
    local_steps = args.local_steps if args.local_steps is not None else cfg.learner.local_steps
    if args.quick:  # a smoke run keeps its tiny budget
        local_steps = min(local_steps, 10)
    per_round = (
        args.clients_per_round if args.clients_per_round is not None else cfg.federation.clients_per_round
    )
    return local_steps, per_round


def _run_arguments(
    learner: str, args: argparse.Namespace, *, budget: int, episodes: int, out: Path
) -> dict[str, Any]:
    """The arguments :func:`run_pair` and :func:`run_settings` share, for one learner of the command line."""
    # MAML-family and Reptile steps each consume meta_batch tasks: spend the same number of
    # tasks per learner by dividing the budget by the configured meta-batch.
    base = _config(learner, overrides=args.set)
    local_steps, per_round = _federation_shape(base, args)
    return {
        "learner": learner,
        "budget": max(args.sites * local_steps, budget // base.learner.meta_batch),
        "sites": args.sites,
        "local_steps": local_steps,
        "out": out,
        "extra": args.set,
        "episodes": episodes,
        "clients_per_round": per_round,
    }


def _parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", default="protonet,maml,fomaml,reptile")
    ap.add_argument("--budget", type=int, default=1000, help="total local steps (episodes x meta-batch)")
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument(
        "--local-steps",
        type=int,
        default=None,
        help="local steps per site per federated round (default: each learner's example config)",
    )
    ap.add_argument(
        "--clients-per-round",
        type=int,
        default=None,
        help="sites sampled per federated round, 0 = all (default: each learner's example config); "
        "rounds are set to spend the same budget",
    )
    ap.add_argument("--episodes", type=int, default=600, help="final test episodes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra override for every run")
    ap.add_argument("--quick", action="store_true", help="tiny budget, for a smoke run")
    ap.add_argument("--out", default="bench_results/omniglot")
    ap.add_argument(
        "--settings",
        default=None,
        help="evaluate these settings (e.g. 5w1s,5w5s,20w1s) beside the published full-Omniglot numbers",
    )
    ap.add_argument(
        "--modes", default="centralised,federated", help="with --settings: centralised and/or federated"
    )
    ap.add_argument(
        "--reevaluate",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="re-evaluate the runs of a finished --settings benchmark with the current code (no training)",
    )
    ap.add_argument(
        "--tune-adaptation",
        default=None,
        metavar="GRID",
        help="with --reevaluate: choose each row's test-time adaptation on its meta-validation alphabets "
        "(runs trained with --set 'data.val_alphabets=[...]') from a grid such as "
        "'steps=3,5,10;lr=0.1,0.2,0.4', then score the test tasks with it",
    )
    ap.add_argument("--val-episodes", type=int, default=200, help="validation tasks per grid point")
    ap.add_argument(
        "--validate",
        action="store_true",
        help="with --settings: also score every row on --val-episodes tasks of the meta-validation "
        "alphabets (train with --set 'data.val_alphabets=[\"Latin\"]'); for choosing hyperparameters",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes a Markdown table and a JSON file."""
    args = _parser().parse_args(argv)
    if args.reevaluate is not None:
        torch.set_num_threads(args.threads)
        try:
            grid = parse_adaptation_grid(text=args.tune_adaptation) if args.tune_adaptation else []
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        reevaluate(
            results_json=args.reevaluate,
            episodes=None if args.quick else args.episodes,
            overrides=args.set,
            tune_grid=grid,
            val_episodes=args.val_episodes,
        )
        return 0
    learners = [x.strip() for x in args.learners.split(",") if x.strip()]
    for learner in learners:
        if learner not in CONFIGS:
            print(f"unknown learner {learner!r}; choose from {sorted(CONFIGS)}", file=sys.stderr)
            return 2
    settings, modes = None, []
    if args.settings is not None:
        try:
            settings = parse_settings(text=args.settings)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if not modes or any(m not in ("centralised", "federated") for m in modes):
            print(f"--modes: choose from centralised,federated (got {args.modes!r})", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = out / f"runs-{stamp}"
    budget, episodes = (50, 50) if args.quick else (args.budget, args.episodes)
    if settings is not None:
        by_learner: dict[str, Any] = {}
        for learner in learners:
            by_learner[learner] = run_settings(
                **_run_arguments(learner, args, budget=budget, episodes=episodes, out=runs),
                settings=settings,
                modes=modes,
                val_episodes=args.val_episodes if args.validate else 0,
            )
        note = f"Budget: {budget} training tasks per run; {episodes} test tasks per setting."
        table = settings_markdown(results=by_learner, note=note)
        print(table)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "settings": [setting_name(st) for st in settings],
            "modes": modes,
            "budget": budget,
            "episodes": episodes,
            "results": by_learner,
            "published": {k: dict(zip(SETTINGS, v, strict=True)) for k, v in PUBLISHED.items()},
            "published_sources": PUBLISHED_SOURCES,
        }
        (out / f"omniglot-settings-{stamp}.md").write_text(table)
        (out / f"omniglot-settings-{stamp}.json").write_text(json.dumps(doc, indent=1))
        return 0
    results: dict[str, Any] = {}
    for learner in learners:
        results[learner] = run_pair(
            **_run_arguments(learner, args, budget=budget, episodes=episodes, out=runs)
        )
    table = pair_markdown(results)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"omniglot-{stamp}.md").write_text(table)
    (out / f"omniglot-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
