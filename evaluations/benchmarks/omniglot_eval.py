"""Re-score the Omniglot benchmark's runs from their checkpoints: other settings, tuned adaptation."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluations.benchmarks.omniglot_settings import parse_settings
from evaluations.benchmarks.omniglot_tables import settings_markdown
from secfed.config import load_config

__all__ = ["evaluate_checkpoint", "tune_adaptation", "reevaluate"]


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
