"""Put a finished run's test accuracy beside its untrained model's, on the same test tasks.

A few-shot model that has not been trained at all already beats chance by far (a random Conv-4
embedding scores about 40-50 % 5-way 1-shot on Omniglot, chance being 20 %), so "better than
chance" says nothing about learning. This scores the run's own starting model
(:func:`secfed.experiment.initial_model`, same seed) on the run's own final test tasks
(:func:`secfed.experiment.final_evaluation`, same seed and episodes) and prints both with their
95 % confidence intervals::

    python examples/untrained_baseline.py runs/demo-20250101-120000

Exit status 0, also when training did not beat the untrained model (it says so); 2 when the
directory is not a finished run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def untrained_accuracy(*, run_dir: Path) -> tuple[float, float, int]:
    """Score the untrained model of a finished run on the run's final test tasks.

    The run's own figure when its ``summary.json`` carries it (``untrained_test_accuracy``, which
    every run writes unless ``experiment.untrained_baseline = false``), else computed by
    :func:`secfed.experiment.score_untrained`, the function the run itself uses.

    Args:
        run_dir: A run directory written by ``secfed run`` (``config.toml`` inside).

    Returns:
        ``(accuracy, 95 % half-width, episodes)``, accuracy in ``[0, 1]``.

    Raises:
        secfed.errors.SecfedError: If the configuration or the data cannot be loaded.
    """
    import torch

    from secfed.config import load_config
    from secfed.experiment import score_untrained
    from secfed.federation.backends import default_threads

    cfg = load_config(run_dir / "config.toml")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if isinstance(summary, dict) and summary.get("untrained_test_accuracy") is not None:
            return (
                float(summary["untrained_test_accuracy"]),
                float(summary.get("untrained_test_accuracy_ci95") or float("nan")),
                int(summary.get("test_episodes", cfg.experiment.final_eval_episodes)),
            )
    torch.set_num_threads(cfg.experiment.threads or default_threads(processes=1))
    acc, ci = score_untrained(config=cfg)
    return acc, ci, cfg.experiment.final_eval_episodes


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    from secfed.config import load_config
    from secfed.errors import SecfedError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        trained, trained_ci = float(summary["test_accuracy"]), float(summary["test_accuracy_ci95"])
        cfg = load_config(run_dir / "config.toml")
        base, base_ci, episodes = untrained_accuracy(run_dir=run_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{run_dir}: not a finished run ({exc})", file=sys.stderr)
        return 2
    except SecfedError as exc:
        print(f"{run_dir}: {exc}", file=sys.stderr)
        return 2
    t = cfg.task
    setting = (
        f"{t.test_n_way}-way {t.test_k_shot}-shot, {episodes} test tasks, chance {100 / t.test_n_way:.0f} %"
    )
    gain = 100 * (trained - base)
    trained_label = f"trained, {summary.get('rounds', '?')} rounds:"
    print(f"{'untrained model:':<22}{100 * base:5.1f} ± {100 * base_ci:.1f} %   ({setting})")
    print(f"{trained_label:<22}{100 * trained:5.1f} ± {100 * trained_ci:.1f} %   ({gain:+.1f} points)")
    if trained - trained_ci <= base + base_ci:
        print(
            "Training did NOT clearly beat the untrained model (the 95 % intervals overlap or it is worse)."
        )
    else:
        print("Training beat the untrained model (the 95 % intervals do not overlap).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
