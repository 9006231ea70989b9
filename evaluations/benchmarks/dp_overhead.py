"""Time cost of record-level DP-SGD per local step, for every learner (a benchmark, not a test).

For each learner, one round of local training is timed twice, side by side in one process and on
the same Conv-4 GroupNorm model (28x28 Omniglot-shaped random tensors, CPU): the learner's own
``local_update`` (non-private) and :meth:`secfed.dp.site.SitePrivacy.local_update` (record-level
DP). The two are interleaved ``--repeats`` times and the medians are compared (the machine is
shared and noisy). Workloads are matched:

* ProtoNet / MAML / FOMAML: ``--episodes`` episodes per step in both; the non-private tasks are
  ``n_way``-way ``k_shot``-shot with ``q_query`` queries, and the DP sample rate is chosen so that a
  DP episode (``n_way`` classes, Poisson-sampled records split into support/query) has the same
  expected number of records.
* Reptile: one task per outer step and ``--inner-steps`` inner steps; a non-private inner step
  uses the task's ``n_way * (k_shot + q_query)`` records, a DP inner step the Poisson-sampled
  records of the task's classes, with the same expected count.
* FedAvg: batches of ``--batch`` records (non-private: fixed size; DP: Poisson with the same
  expected size).

The ratio includes everything DP adds per round (model copy, Opacus wrapping, keyed record
sampling, per-episode/per-sample gradients, clipping and secure-mode noise, accounting).

Threads: the default is 2 intra-op threads. On an oversubscribed 2-core host every small tensor op
then waits for a descheduled OpenMP thread (a 113k-parameter DPOptimizer step took 1 s with 2
threads and 31 ms with 1), which inflates whichever side runs more small ops; compare with
``--threads 1`` there.

Usage::

    python -m evaluations.benchmarks.dp_overhead
    python -m evaluations.benchmarks.dp_overhead --learners protonet fedavg --repeats 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secfed import components
from secfed.components import SupervisedSource
from secfed.config import ExperimentConfig, config_from_dict
from secfed.data.dataset import ImageDataset
from secfed.dp.site import SitePrivacy, build_site_privacy
from secfed.site import Site
from secfed.tasks.episodic import EpisodicTaskSource

__all__ = ["LEARNERS", "bench_learner", "main"]

LEARNERS = ("protonet", "maml", "fomaml", "reptile", "fedavg")


def synthetic_site(*, classes: int, per_class: int, seed: int) -> ImageDataset:
    """Omniglot-shaped random records: ``classes`` x ``per_class`` images of 1x28x28 in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.random((classes * per_class, 1, 28, 28), dtype=np.float32)
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=tuple(f"c{i}" for i in range(classes)),
        class_groups=tuple("synthetic" for _ in range(classes)),
        name="synthetic-omniglot",
    )


def bench_config(*, learner: str, args: argparse.Namespace, sample_rate: float) -> ExperimentConfig:
    """The experiment configuration of one learner's benchmark."""
    return config_from_dict(
        {
            "task": {
                "n_way": args.n_way,
                "k_shot": args.k_shot,
                "q_query": args.q_query,
                "test_n_way": args.n_way,
            },
            "model": {"arch": "conv4", "hidden": args.hidden, "norm": "group", "groups": 8},
            "learner": {
                "name": learner,
                "local_steps": args.local_steps,
                "meta_batch": args.episodes if learner in ("protonet", "maml", "fomaml") else 1,
                "local_optimizer": "adam",
                "local_lr": 1e-3,
                "inner_steps": args.inner_steps if learner == "reptile" else 1,
                "inner_lr": 0.4 if learner in ("maml", "fomaml") else 1e-3,
                "inner_optimizer": "adam" if learner == "reptile" else "sgd",
                "reptile_inner_batch": 0,
                "batch_size": args.batch,
            },
            "privacy": {
                "mode": "record",
                "noise_multiplier": 1.0,
                "max_grad_norm": 1.0,
                "sample_rate": sample_rate,
                "expected_batch": args.episodes if learner in ("protonet", "maml", "fomaml") else args.batch,
                "episodes_per_step": args.episodes,
            },
        }
    )


def _sample_rate(*, learner: str, args: argparse.Namespace) -> float:
    """DP sample rate matching the non-private workload (see the module docstring)."""
    task_records = args.n_way * (args.k_shot + args.q_query)
    if learner == "fedavg":
        return args.batch / (args.classes * args.per_class)
    # Episodic slots / Reptile tasks hold n_way classes of per_class records each.
    return min(1.0, task_records / (args.n_way * args.per_class))


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_learner(*, learner: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median seconds per local step without and with record-level DP for one learner."""
    q = _sample_rate(learner=learner, args=args)
    cfg = bench_config(learner=learner, args=args, sample_rate=q)
    data = synthetic_site(classes=args.classes, per_class=args.per_class, seed=0)
    tasks: Any = (
        SupervisedSource(dataset=data)
        if learner == "fedavg"
        else EpisodicTaskSource(dataset=data, n_way=args.n_way, k_shot=args.k_shot, q_query=args.q_query)
    )
    site = Site(site_id=0, dataset=data, tasks=tasks)
    heads = {"protonet": None, "fedavg": args.classes}.get(learner, args.n_way)
    torch.manual_seed(0)
    model = components.build_model(config=cfg, input_shape=data.input_shape, num_classes=heads)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    learner_obj = components.build_learner(config=cfg)
    hook: SitePrivacy = build_site_privacy(config=cfg, site_id=0, site=site)
    rng = np.random.default_rng(0)

    def plain() -> None:
        model.load_state_dict(initial)
        learner_obj.local_update(model=model, tasks=site.tasks, rng=rng)

    round_idx = [0]

    def private() -> None:
        model.load_state_dict(initial)
        round_idx[0] += 1
        hook.local_update(learner=learner_obj, model=model, site=site, rng=rng, round_idx=round_idx[0])

    plain()  # warm-up (allocator, Opacus imports, first-call overheads)
    private()
    plain_s, dp_s, ratios = [], [], []
    for _ in range(args.repeats):
        a, b = _timed(plain), _timed(private)
        plain_s.append(a)
        dp_s.append(b)
        ratios.append(b / a)
    # Both runs take the same number of gradient steps per round (Reptile: inner steps).
    steps = hook.steps_per_round
    return {
        "learner": learner,
        "plain_ms_per_step": 1e3 * statistics.median(plain_s) / steps,
        "dp_ms_per_step": 1e3 * statistics.median(dp_s) / steps,
        "ratio_of_medians": statistics.median(dp_s) / statistics.median(plain_s),
        "median_ratio": statistics.median(ratios),
        "sample_rate": q,
        "dp_steps_per_round": steps,
        "repeats": args.repeats,
    }


def markdown_table(rows: list[dict[str, Any]], *, judge: bool = True) -> str:
    """The results as a Markdown table.

    Args:
        rows: Rows from :func:`bench_learner`.
        judge: Fill the "target <= 1.5x" column (off for smoke runs, whose tiny model and single
            repeat measure fixed per-round costs rather than the DP-SGD step).

    Returns:
        The table.
    """
    lines = [
        "| learner | non-private ms/step | DP ms/step | DP / non-private (median of ratios) | "
        "ratio of medians | q | target <= 1.5x |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        ok = ("yes" if r["median_ratio"] <= 1.5 else "no") if judge else "n/a (smoke run)"
        lines.append(
            f"| {r['learner']} | {r['plain_ms_per_step']:.1f} | {r['dp_ms_per_step']:.1f} | "
            f"{r['median_ratio']:.2f}x | {r['ratio_of_medians']:.2f}x | {r['sample_rate']:.3f} | {ok} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table (and optionally JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=4, help="episodes per step (episodic learners)")
    parser.add_argument("--inner-steps", type=int, default=5, help="Reptile inner steps per task")
    parser.add_argument("--batch", type=int, default=32, help="FedAvg (expected) batch size")
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=5)
    parser.add_argument("--q-query", type=int, default=5)
    parser.add_argument("--classes", type=int, default=64, help="classes held by the site")
    parser.add_argument("--per-class", type=int, default=20, help="records per class (Omniglot: 20)")
    parser.add_argument("--hidden", type=int, default=64, help="Conv-4 filters")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="smoke run: the target column is left unjudged")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for learner in args.learners:
        row = bench_learner(learner=learner, args=args)
        rows.append(row)
        print(
            f"{learner}: {row['plain_ms_per_step']:.1f} ms -> {row['dp_ms_per_step']:.1f} ms per step "
            f"({row['median_ratio']:.2f}x)",
            file=sys.stderr,
        )
    print(markdown_table(rows, judge=not args.quick))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
