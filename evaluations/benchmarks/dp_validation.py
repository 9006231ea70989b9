"""Run a configuration and score its initial and final (and EMA) models on the validation alphabets.

For choosing a DP recipe without looking at the test tasks (issue 17): the run's own final
evaluation is cut to a few tasks (``experiment.final_eval_episodes``), then the initial model
(public pretraining, no site data) and the checkpoint's final state and EMA state are scored on
the same validation tasks (``components.load_validation``: ``data.val_alphabets``, test protocol,
seed ``derive_seed(seed, "validation-eval")``).

Usage::

    OMP_NUM_THREADS=1 python -m evaluations.benchmarks.dp_validation examples/omniglot_protonet_dp.toml \
        --out /tmp/val/v1 --episodes 300 --set experiment.rounds=10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["validate_run", "main"]


def validate_run(*, config_path: Path, overrides: list[str], out_dir: Path, episodes: int) -> dict[str, Any]:
    """Run the configuration, then score initial / final / EMA models on validation tasks.

    Args:
        config_path: The experiment's TOML file (with ``data.val_alphabets``).
        overrides: ``section.key=value`` overrides.
        out_dir: The run directory.
        episodes: Validation tasks.

    Returns:
        Accuracies (percent, with 95 % half-widths), the run's ε and noise multiplier, wall time.

    Raises:
        secfed.errors.SecfedError: On an invalid configuration or missing data.
    """
    from secfed import components
    from secfed.experiment import Experiment, evaluate_model, initial_model, load_checkpoint_arrays
    from secfed.federation.state import load_flat_state, state_spec
    from secfed.seeding import derive_seed

    t0 = time.time()
    exp = Experiment.from_file(
        config_path,
        overrides=[*overrides, "experiment.final_eval_episodes=10", "experiment.untrained_baseline=false"],
    )
    result = exp.run(out_dir=out_dir, progress=False)
    cfg = exp.config
    val = components.load_validation(config=cfg)
    heads = components.model_num_classes(config=cfg)
    model = initial_model(config=cfg, input_shape=val.input_shape, num_classes=heads)
    learner = components.build_learner(config=cfg)
    source = components.build_test_source(config=cfg, test=val)
    seed = derive_seed(cfg.experiment.seed, "validation-eval")

    def score() -> str:
        acc, ci = evaluate_model(learner=learner, model=model, source=source, episodes=episodes, seed=seed)
        return f"{100 * acc:.2f} ± {100 * ci:.2f}"

    out: dict[str, Any] = {"overrides": overrides, "initial": score()}
    files = sorted((out_dir / "checkpoint").glob("model-*.safetensors"))
    arrays = load_checkpoint_arrays(files[-1])
    spec = state_spec(model)
    for key in ("state", "ema_state"):
        if key in arrays:
            load_flat_state(model, arrays[key], spec=spec)
            out[key] = score()
    s = result.summary
    out["privacy"] = {
        k: v
        for k, v in s.items()
        if any(w in k for w in ("epsilon", "noise", "sigma")) and not isinstance(v, dict)
    }
    out["wall_s"] = round(time.time() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (prints one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        json.dumps(
            validate_run(
                config_path=args.config, overrides=args.overrides, out_dir=args.out, episodes=args.episodes
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
