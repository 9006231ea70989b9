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
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from secfed.config import ExperimentConfig, load_config
from secfed.experiment import Experiment

__all__ = [
    "run_pair",
    "run_settings",
    "reevaluate",
    "evaluate_checkpoint",
    "parse_settings",
    "Setting",
    "settings_markdown",
    "main",
    "PUBLISHED",
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
#: Episodes per local step of each learner's example config (meta_batch), used to split the budget.
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
#: Learners whose model head has n_way outputs: trained with the evaluated n_way.
N_WAY_HEAD = ("maml", "fomaml", "reptile")
#: Suffix of a setting name that selects Lake et al.'s within-alphabet tasks (``20w1s-within``).
WITHIN = "-within"
#: Overrides of a within-alphabet evaluation: one drawer's image per character as the support,
#: another drawer's as the query (:mod:`secfed.tasks.within_alphabet`).
WITHIN_OVERRIDES = ("task.test_protocol=within_alphabet", "task.test_q_query=1")


def _config(learner: str, *, overrides: list[str]) -> ExperimentConfig:
    return load_config(REPO / "examples" / CONFIGS[learner], overrides=overrides)


def _federated_rounds(*, budget: int, sites: int, local_steps: int, clients_per_round: int) -> int:
    """Rounds that spend ``budget`` local steps when ``clients_per_round`` sites (0 = all) train per round."""
    per_round = clients_per_round if 0 < clients_per_round < sites else sites
    return max(1, budget // (per_round * local_steps))


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
    rounds = _federated_rounds(
        budget=budget, sites=sites, local_steps=local_steps, clients_per_round=clients_per_round
    )
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
            f"federation.clients_per_round={clients_per_round}",
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


class Setting(NamedTuple):
    """A few-shot test setting: ``n_way``-way ``k_shot``-shot tasks over all test classes, or
    Lake et al.'s within-alphabet tasks (``within``; one query per character, another drawer)."""

    n_way: int
    k_shot: int
    within: bool = False

    def overrides(self) -> list[str]:
        """The configuration overrides that select this setting's test protocol."""
        return list(WITHIN_OVERRIDES) if self.within else []


def parse_settings(*, text: str) -> list[Setting]:
    """Parse ``"5w1s,5w5s,20w1s,20w1s-within"`` into :class:`Setting` values.

    Args:
        text: Comma-separated ``<N>w<K>s`` items; ``-within`` selects the within-alphabet
            protocol of Lake et al. 2015 (:mod:`secfed.tasks.within_alphabet`).

    Returns:
        The settings in the given order (``Setting(5, 1) == Setting(5, 1, False)``).

    Raises:
        ValueError: On a malformed item, a way below 2 or a shot below 1, or duplicates.
    """
    out: list[Setting] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        m = re.fullmatch(r"(\d+)w(\d+)s(" + re.escape(WITHIN) + r")?", item)
        if m is None or int(m.group(1)) < 2 or int(m.group(2)) < 1:
            raise ValueError(
                f"--settings: {item!r} is not of the form <N>w<K>s[{WITHIN}] with N >= 2, K >= 1 "
                "(e.g. 5w1s, 20w1s-within)"
            )
        out.append(Setting(int(m.group(1)), int(m.group(2)), m.group(3) is not None))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--settings: give distinct settings such as 5w1s,5w5s,20w1s (got {text!r})")
    return out


def _name(setting: Setting) -> str:
    return f"{setting.n_way}w{setting.k_shot}s" + (WITHIN if setting.within else "")


def evaluate_checkpoint(
    *,
    run_dir: Path,
    test_n_way: int,
    test_k_shot: int,
    episodes: int,
    overrides: Sequence[str] = (),
    splits_cache: dict[str, Any] | None = None,
    split: str = "test",
) -> tuple[float, float]:
    """Evaluate a finished run's final model on another few-shot setting.

    The model is rebuilt from ``run_dir/config.toml`` and loaded from the checkpoint
    (``checkpoint/state.json`` names the safetensors file holding the flat ``state``); the test
    tasks are drawn with the seed of the run's own final evaluation.

    Args:
        run_dir: A finished run directory.
        test_n_way: Ways of the test tasks (for n_way-head learners: must equal the run's n_way).
        test_k_shot: Shots of the test tasks.
        episodes: Test tasks.
        overrides: Further ``section.key=value`` overrides of the run's configuration for the
            evaluation (e.g. ``data.test_rotations=true``).
        splits_cache: Optional dict reused across calls: the data splits are loaded once per
            distinct ``[data]`` section instead of once per call.
        split: ``"test"`` (the meta-test classes) or ``"validation"`` (the classes of
            ``data.val_alphabets``, which the run never trained on; tasks drawn with their own seed).

    Returns:
        ``(accuracy, 95 % half-width)`` in [0, 1].

    Raises:
        ValueError: For an unknown ``split``.
        secfed.errors.SecfedError: If the configuration or the checkpoint cannot be used (e.g. a
            validation split without ``data.val_alphabets``).
    """
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    from safetensors.numpy import load_file

    from secfed import components
    from secfed.errors import CheckpointError
    from secfed.experiment import evaluate_model
    from secfed.federation.state import load_flat_state, state_spec
    from secfed.seeding import derive_seed

    cfg = load_config(
        run_dir / "config.toml",
        overrides=[f"task.test_n_way={test_n_way}", f"task.test_k_shot={test_k_shot}", *overrides],
    )
    try:
        info = json.loads((run_dir / "checkpoint" / "state.json").read_text(encoding="utf-8"))
        state = load_file(str(run_dir / "checkpoint" / info["weights"]))["state"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{run_dir}: no usable checkpoint: {exc}") from exc
    key = repr(cfg.data)
    if splits_cache is not None and key in splits_cache:
        train, test = splits_cache[key]
    else:
        train, test = components.load_splits(config=cfg)
        if splits_cache is not None:
            splits_cache[key] = (train, test)
    model = components.build_model(
        config=cfg,
        input_shape=test.input_shape,
        num_classes=components.model_num_classes(config=cfg, train=train),
    )
    load_flat_state(model, state, spec=state_spec(model))
    seed = derive_seed(cfg.experiment.seed, "final-eval")
    if split == "validation":
        vkey = "validation:" + key
        if splits_cache is not None and vkey in splits_cache:
            test = splits_cache[vkey]
        else:
            test = components.load_validation(config=cfg)
            if splits_cache is not None:
                splits_cache[vkey] = test
        seed = derive_seed(cfg.experiment.seed, "validation-eval")
    return evaluate_model(
        learner=components.build_learner(config=cfg),
        model=model,
        source=components.build_test_source(config=cfg, test=test),
        episodes=episodes,
        seed=seed,
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
    results: dict[str, dict[str, Any]] = {_name(st): {} for st in settings}
    for key, members in groups.items():
        first = members[0]
        train_ovr = [f"task.test_n_way={first.n_way}", f"task.test_k_shot={first.k_shot}", *first.overrides()]
        if key is not None:
            train_ovr.append(f"task.n_way={key}")
        rounds = _federated_rounds(
            budget=budget, sites=sites, local_steps=local_steps, clients_per_round=clients_per_round
        )
        common = [f"experiment.final_eval_episodes={episodes}", "experiment.eval_every=0", *extra, *train_ovr]
        per_mode = {
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
                    acc, ci = evaluate_checkpoint(
                        run_dir=run_dir,
                        test_n_way=st.n_way,
                        test_k_shot=st.k_shot,
                        episodes=episodes,
                        overrides=st.overrides(),
                        splits_cache=splits,
                    )
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
                    vacc, vci = evaluate_checkpoint(
                        run_dir=run_dir,
                        test_n_way=st.n_way,
                        test_k_shot=st.k_shot,
                        episodes=val_episodes,
                        overrides=st.overrides(),
                        splits_cache=splits,
                        split="validation",
                    )
                    row.update(val_accuracy=100 * vacc, val_ci95=100 * vci)
                results[_name(st)][mode] = row
                val = f"validation {row['val_accuracy']:.2f} %, " if val_episodes > 0 else ""
                print(
                    f"{learner:9s} {_name(st):13s} {mode:11s} {row['accuracy']:.2f} ± {row['ci95']:.2f} %  "
                    f"({val}trained {cfg.task.n_way}-way, train {row['train_s']:.1f} s)",
                    flush=True,
                )
    return results


def parse_adaptation_grid(*, text: str) -> list[tuple[int, float]]:
    """Parse ``"steps=3,5,10;lr=0.1,0.2,0.4"`` into every ``(steps, lr)`` pair.

    Args:
        text: ``steps=...;lr=...`` with comma-separated positive values.

    Returns:
        The grid, steps-major.

    Raises:
        ValueError: If the text is malformed or a value is not positive.
    """
    parts: dict[str, list[str]] = {}
    for chunk in text.split(";"):
        name, sep, values = chunk.partition("=")
        if not sep or name.strip() not in ("steps", "lr"):
            raise ValueError(f"--tune-adaptation: expected 'steps=...;lr=...', got {text!r}")
        parts[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    if set(parts) != {"steps", "lr"}:
        raise ValueError(f"--tune-adaptation: give both steps= and lr=, got {text!r}")
    try:
        steps = [int(v) for v in parts["steps"]]
        lrs = [float(v) for v in parts["lr"]]
    except ValueError as exc:
        raise ValueError(f"--tune-adaptation: {exc}") from exc
    if not steps or not lrs or min(steps) < 1 or min(lrs) <= 0:
        raise ValueError(f"--tune-adaptation: steps must be >= 1 and lr > 0, got {text!r}")
    return [(st, lr) for st in steps for lr in lrs]


def tune_adaptation(
    *,
    run_dir: Path,
    n_way: int,
    k_shot: int,
    grid: Sequence[tuple[int, float]],
    episodes: int,
    overrides: Sequence[str] = (),
    splits_cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Choose test-time adaptation (inner steps and learning rate) on the meta-validation split.

    Every grid point is scored on the same validation tasks of the run's ``data.val_alphabets``
    (classes it never trained on); the best accuracy wins, the first grid point on ties. The test
    classes are not looked at.

    Args:
        run_dir: A finished run trained with ``data.val_alphabets``.
        n_way: Ways of the tasks.
        k_shot: Shots of the tasks.
        grid: ``(test_inner_steps, test_inner_lr)`` candidates.
        episodes: Validation tasks per candidate.
        overrides: Further configuration overrides.
        splits_cache: See :func:`evaluate_checkpoint`.

    Returns:
        ``{"steps", "lr", "val_accuracy", "val_ci95", "grid": [[steps, lr, accuracy], ...]}``
        (accuracies in %).
    """
    scores = []
    for steps, lr in grid:
        acc, ci = evaluate_checkpoint(
            run_dir=run_dir,
            test_n_way=n_way,
            test_k_shot=k_shot,
            episodes=episodes,
            overrides=[*overrides, f"learner.test_inner_steps={steps}", f"learner.test_inner_lr={lr}"],
            splits_cache=splits_cache,
            split="validation",
        )
        scores.append((steps, lr, 100 * acc, 100 * ci))
    best = max(range(len(scores)), key=lambda i: (scores[i][2], -i))
    steps, lr, acc, ci = scores[best]
    return {
        "steps": steps,
        "lr": lr,
        "val_accuracy": acc,
        "val_ci95": ci,
        "grid": [[s_, l_, a_] for s_, l_, a_, _ in scores],
    }


def reevaluate(
    *,
    results_json: Path,
    episodes: int | None = None,
    overrides: Sequence[str] = (),
    tune_grid: Sequence[tuple[int, float]] = (),
    val_episodes: int = 200,
) -> dict[str, Any]:
    """Re-evaluate every run of a finished ``--settings`` benchmark with the current code.

    Training is not repeated: each row's model is reloaded from its run directory's checkpoint
    and evaluated on the same test tasks (the run's final-evaluation seed). Useful after a fix to
    test-time adaptation. Rows keep their training time and gain ``reevaluated_code``.

    Args:
        results_json: An ``omniglot-settings-*.json`` file written by this benchmark.
        episodes: Test tasks per setting (default: the file's).
        overrides: Configuration overrides for the evaluation (``--set``), recorded in the document.
        tune_grid: If given, each row's test-time adaptation is first chosen from these
            ``(steps, lr)`` pairs on its meta-validation split (:func:`tune_adaptation`; the runs
            must have been trained with ``data.val_alphabets``), then used on the test tasks.
        val_episodes: Validation tasks per grid point.

    Returns:
        The updated document (also written next to the input as ``*-reevaluated[-OVERRIDES].json``
        and ``.md``; ``-tuned`` is added with ``tune_grid``).

    Raises:
        OSError, ValueError, KeyError: If the file is not such a document.
        secfed.errors.SecfedError: If a run directory cannot be evaluated.
    """
    from secfed.experiment import _code_version

    doc = json.loads(results_json.read_text(encoding="utf-8"))
    n_eps = int(episodes or doc["episodes"])
    splits: dict[str, Any] = {}  # every run of the file reads the same data: load it once
    for learner, by_setting in doc["results"].items():
        for setting, by_mode in by_setting.items():
            parsed = parse_settings(text=setting)[0]
            n_way, k_shot = parsed.n_way, parsed.k_shot
            for mode, row in by_mode.items():
                start = time.perf_counter()
                chosen: list[str] = []
                if tune_grid:
                    row["tuned_adaptation"] = tune_adaptation(
                        run_dir=Path(row["run_dir"]),
                        n_way=n_way,
                        k_shot=k_shot,
                        grid=tune_grid,
                        episodes=val_episodes,
                        overrides=[*overrides, *parsed.overrides()],
                        splits_cache=splits,
                    )
                    t = row["tuned_adaptation"]
                    chosen = [f"learner.test_inner_steps={t['steps']}", f"learner.test_inner_lr={t['lr']}"]
                    print(
                        f"{learner:9s} {setting:6s} {mode:11s} validation picks {t['steps']} steps at "
                        f"{t['lr']} ({t['val_accuracy']:.2f} %)",
                        flush=True,
                    )
                acc, ci = evaluate_checkpoint(
                    run_dir=Path(row["run_dir"]),
                    test_n_way=n_way,
                    test_k_shot=k_shot,
                    episodes=n_eps,
                    overrides=[*overrides, *parsed.overrides(), *chosen],
                    splits_cache=splits,
                )
                row.update(
                    accuracy=100 * acc,
                    ci95=100 * ci,
                    eval_s=time.perf_counter() - start,
                    reevaluated_code=_code_version(),
                    reevaluated_overrides=list(overrides),
                )
                print(
                    f"{learner:9s} {setting:6s} {mode:11s} {row['accuracy']:.2f} ± {row['ci95']:.2f} %",
                    flush=True,
                )
    doc["episodes"] = n_eps
    stem = results_json.with_suffix("")
    note = (
        f"Budget: {doc.get('budget')} training tasks per run; {n_eps} test tasks per setting (re-evaluated"
        + (f" with {', '.join(overrides)}" if overrides else "")
        + (
            "; test-time adaptation chosen per row on the meta-validation alphabets from "
            + ", ".join(f"{st} steps at {lr}" for st, lr in tune_grid)
            if tune_grid
            else ""
        )
        + ")."
    )
    table = settings_markdown(results=doc["results"], note=note)
    tag = "-reevaluated" + ("-" + re.sub(r"[^A-Za-z0-9]+", "_", "-".join(overrides)) if overrides else "")
    tag += "-tuned" if tune_grid else ""
    Path(f"{stem}{tag}.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    Path(f"{stem}{tag}.md").write_text(table, encoding="utf-8")
    print(table)
    return doc


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


def _federation_shape(cfg: ExperimentConfig, args: argparse.Namespace) -> tuple[int, int]:
    """Local steps per round and sites per round: the command line's, else the example config's."""
    local_steps = args.local_steps if args.local_steps is not None else cfg.learner.local_steps
    if args.quick:  # a smoke run keeps its tiny budget
        local_steps = min(local_steps, 10)
    per_round = (
        args.clients_per_round if args.clients_per_round is not None else cfg.federation.clients_per_round
    )
    return local_steps, per_round


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints and writes a Markdown table and a JSON file."""
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
    args = ap.parse_args(argv)
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
            base = _config(learner, overrides=args.set)
            local_steps, per_round = _federation_shape(base, args)
            by_learner[learner] = run_settings(
                learner=learner,
                settings=settings,
                budget=max(args.sites * local_steps, budget // base.learner.meta_batch),
                sites=args.sites,
                local_steps=local_steps,
                out=runs,
                extra=args.set,
                episodes=episodes,
                modes=modes,
                clients_per_round=per_round,
                val_episodes=args.val_episodes if args.validate else 0,
            )
        note = f"Budget: {budget} training tasks per run; {episodes} test tasks per setting."
        table = settings_markdown(results=by_learner, note=note)
        print(table)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "settings": [_name(st) for st in settings],
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
        # MAML-family and Reptile steps each consume meta_batch tasks: spend the same number of
        # tasks per learner by dividing the budget by the configured meta-batch.
        base = _config(learner, overrides=args.set)
        local_steps, per_round = _federation_shape(base, args)
        results[learner] = run_pair(
            learner=learner,
            budget=max(args.sites * local_steps, budget // base.learner.meta_batch),
            sites=args.sites,
            local_steps=local_steps,
            out=runs,
            extra=args.set,
            episodes=episodes,
            clients_per_round=per_round,
        )
    table = _markdown(results)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"omniglot-{stamp}.md").write_text(table)
    (out / f"omniglot-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
