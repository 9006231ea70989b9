"""Test accuracy of a configuration's model at its random initialisation (no training).

The baseline a privacy–utility sweep needs: a point that scores no better than the untrained
network has learned nothing usable. It is :func:`secfed.experiment.score_untrained`, the function a
run uses for the ``untrained_test_accuracy`` of its ``summary.json`` (its starting model on its
final test tasks), so the figure is directly comparable with a run's and a sweep's points.

Usage::

    python -m evaluations.benchmarks.init_accuracy examples/omniglot_reptile.toml --set model.norm=group
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

__all__ = ["init_accuracy", "main"]


def init_accuracy(*, config_path: Path, overrides: list[str]) -> dict[str, float | int]:
    """Score the untrained model of a configuration on its final test tasks.

    Args:
        config_path: The experiment's TOML file.
        overrides: ``section.key=value`` overrides, as ``secfed run --set`` takes them.

    Returns:
        ``{"test_accuracy", "test_accuracy_ci95", "test_episodes"}``.

    Raises:
        secfed.errors.SecfedError: On an invalid configuration or unreadable data (before any
            evaluation).
    """
    from secfed.experiment import Experiment, score_untrained

    cfg = Experiment.from_file(config_path, overrides=overrides).config
    if cfg.experiment.threads:
        torch.set_num_threads(cfg.experiment.threads)
    acc, ci = score_untrained(config=cfg)
    return {
        "test_accuracy": acc,
        "test_accuracy_ci95": ci,
        "test_episodes": cfg.experiment.final_eval_episodes,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: print (and optionally write) the untrained model's test accuracy.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status (0 on success, 2 on a configuration or data error).
    """
    from secfed.errors import SecfedError

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", type=Path, help="the experiment's TOML file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    try:
        result = init_accuracy(config_path=args.config, overrides=args.set)
    except SecfedError as exc:
        print(f"init_accuracy: {exc}", file=sys.stderr)
        return 2
    print(
        f"random initialisation: {100 * result['test_accuracy']:.2f} ± "
        f"{100 * result['test_accuracy_ci95']:.2f} % over {result['test_episodes']} test tasks"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"config": str(args.config), "overrides": args.set, **result}
        args.out.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
