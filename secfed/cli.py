"""The ``secfed`` command line.

Commands::

    secfed run CONFIG.toml [--set section.key=value ...] [--out RUN_DIR]
    secfed run --resume RUN_DIR                    # exit status 1 if the privacy ledger fails its check
    secfed config CONFIG.toml [--set ...] [--plain] # every key that applies, its value and meaning

Other commands register themselves from their own modules, imported here: ``privacy``
(:mod:`secfed.cli_privacy`), ``attack`` (:mod:`secfed.cli_attack`), ``sweep`` and ``report``
(:mod:`evaluations.cli`). The command line is the top layer of the project (see
``tests/test_layering.py``): it imports the runtime, the attacks and the evaluations it dispatches
to, and nothing imports it but ``secfed/__main__.py``.

Exit status: 0 on success; 2 on invalid input (a bad configuration, option or path, a folder that
is not a run directory: :class:`ValueError` subclasses of :class:`secfed.errors.SecfedError`); 1
on other failures: a corrupted checkpoint or run file (:class:`secfed.errors.CheckpointError`,
naming the file), an integrity failure of a privacy ledger (:class:`secfed.errors.IntegrityError`),
a file that cannot be read; 130 when interrupted. No command prints a traceback for bad input.

``run --resume`` on a finished run (``summary.json`` written) runs nothing: it says the run is
complete, prints its summary again and exits 0 (after verifying its privacy ledger, if any).

A final evaluation below :data:`MIN_FINAL_EVAL_EPISODES` test episodes (the few-shot field's
convention, Vinyals et al. 2016; Snell et al. 2017) is accepted, as smoke and test configurations
need it, with a warning on stderr before the run and beside the printed accuracy.

Start-up is kept fast (``secfed --help`` imports no torch): this module and the command modules
import the runtime only inside the commands.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secfed.installation import shadowing_message

try:
    from evaluations import cli as evaluations_cli
    from secfed import cli_attack, cli_privacy
    from secfed.errors import IntegrityError, SecfedError
except ImportError as _exc:  # another distribution's package under one of secfed's import names
    _message = shadowing_message(exc=_exc)
    if _message is None:
        raise
    print(f"secfed: error: {_message}", file=sys.stderr)
    raise SystemExit(1) from None

__all__ = ["main", "build_parser", "MIN_FINAL_EVAL_EPISODES", "few_episodes_warning"]

#: Test episodes below which a final evaluation is reported with a warning (README: >= 600).
MIN_FINAL_EVAL_EPISODES = 600


def few_episodes_warning(episodes: object) -> str | None:
    """The warning for a final evaluation over fewer than :data:`MIN_FINAL_EVAL_EPISODES` episodes.

    Args:
        episodes: ``experiment.final_eval_episodes`` (or ``summary.json``'s ``test_episodes``).

    Returns:
        One line, or ``None`` when there are enough episodes (or the count is unknown).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes >= MIN_FINAL_EVAL_EPISODES:
        return None
    return (
        f"warning: the final evaluation uses {episodes} test episodes, fewer than the "
        f"{MIN_FINAL_EVAL_EPISODES} few-shot results are reported on (experiment.final_eval_episodes); "
        "its accuracy is a smoke-test figure, not a result to quote"
    )


def untrained_lines(summary: dict[str, Any]) -> list[str]:
    """The end-of-run lines that put the accuracy beside the untrained model's.

    Args:
        summary: A run's ``summary.json`` (``untrained_test_accuracy`` absent: no lines).

    Returns:
        One line with the untrained model's accuracy and the gain, plus a plain sentence when
        training did not beat it (the 95 % intervals overlap, or it is worse).
    """
    base = summary.get("untrained_test_accuracy")
    if base is None or summary.get("test_accuracy") is None:
        return []
    acc, ci = float(summary["test_accuracy"]), float(summary.get("test_accuracy_ci95") or 0.0)
    base_ci = float(summary.get("untrained_test_accuracy_ci95") or 0.0)
    lines = [
        f"untrained model {100 * base:.2f} ± {100 * base_ci:.2f} % on the same test tasks "
        f"({100 * (acc - base):+.2f} points from training)"
    ]
    if acc - ci <= base + base_ci:
        lines.append("training did not beat the untrained model (the 95 % intervals overlap, or it is worse)")
    return lines


def _cmd_run(args: argparse.Namespace) -> int:
    from secfed.config import load_config
    from secfed.experiment import Experiment

    progress = None if not args.no_progress else False
    if args.resume:
        if args.config or args.set:
            raise SecfedError(
                "--resume RUN_DIR takes no CONFIG or --set: the run directory's config.toml is used"
            )
        result = Experiment.resume(args.resume, progress=progress)
        if result.already_complete:
            print(
                f"secfed: {result.run_dir} is complete; nothing to resume (its summary follows)",
                file=sys.stderr,
            )
    else:
        if not args.config:
            raise SecfedError("give a CONFIG.toml to run, or --resume RUN_DIR")
        cfg = load_config(args.config, overrides=args.set or [])
        if (warning := few_episodes_warning(cfg.experiment.final_eval_episodes)) is not None:
            print(f"secfed: {warning}", file=sys.stderr)
        out = args.out or str(Path("runs") / f"{cfg.experiment.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
        result = Experiment(config=cfg).run(out_dir=out, progress=progress)
    s = result.summary
    print(
        f"test accuracy {100 * s['test_accuracy']:.2f} ± {100 * s['test_accuracy_ci95']:.2f} % "
        f"over {s['test_episodes']} episodes; {s['rounds']} rounds"
        + (f" in {s['wall_s']:.1f} s" if s.get("wall_s") is not None else " (timing withheld under DP)")
    )
    for line in untrained_lines(s):
        print(line)
    if (warning := few_episodes_warning(s.get("test_episodes"))) is not None:
        print(f"  ({warning})")
    for line in _supervised_lines(s):
        print(line)
    if "epsilon" in s:
        print(f"privacy: epsilon = {s['epsilon']:.3f} at delta = {s.get('delta')}")
    print(f"run directory: {result.run_dir}")
    return 0


def _interval(value: object, ci: object, *, pct: bool) -> str:
    """``0.931 [0.905, 0.953]`` (or in %) for a metric and its 95 % interval; ``n/a`` if undefined."""
    if not isinstance(value, (int, float)):
        return "n/a"
    scale, unit, digits = (100.0, " %", 1) if pct else (1.0, "", 3)
    text = f"{scale * value:.{digits}f}"
    if isinstance(ci, list) and len(ci) == 2:
        text += f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"
    return text + unit


def _supervised_lines(s: dict) -> list[str]:
    """The supervised evaluation of the summary (secfed.supervised_eval), one line per split/site."""
    if "test_supervised_accuracy" not in s:
        return []

    def line(label: str, m: dict, prefix: str, acc: str) -> str:
        parts = [
            f"AUC {_interval(m.get(prefix + 'auc'), m.get(prefix + 'auc_ci95'), pct=False)}",
            f"accuracy {_interval(m.get(prefix + acc), m.get(prefix + acc + '_ci95'), pct=True)}",
        ]
        for key in ("sensitivity", "specificity"):
            if prefix + key in m:
                parts.append(f"{key} {_interval(m[prefix + key], m.get(prefix + key + '_ci95'), pct=True)}")
        records = m.get(prefix + ("supervised_records" if prefix else "records"))
        return f"  {label} ({records} records): " + ", ".join(parts)

    positive = s.get("supervised_positive_class")
    out = [
        "supervised evaluation of the global model, no adaptation (95 % intervals"
        + (f"; positive class: {positive}" if positive else "")
        + "):"
    ]
    out.append(line("test, pooled", s, "test_", "supervised_accuracy"))
    for site in s.get("test_supervised_sites") or []:
        out.append(line(f"test, {site.get('site')}", site, "", "accuracy"))
    if "val_supervised_accuracy" in s:
        out.append(line("validation", s, "val_", "supervised_accuracy"))
    return out


def _cmd_config(args: argparse.Namespace) -> int:
    from secfed.config import config_to_toml, load_config

    cfg = load_config(args.config, overrides=args.set or [])
    if args.plain:
        print(config_to_toml(cfg), end="")
    else:
        from secfed.config_doc import explain_config

        print(explain_config(config=cfg), end="")
    if (warning := few_episodes_warning(cfg.experiment.final_eval_episodes)) is not None:
        print(f"secfed: {warning}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered command."""
    parser = argparse.ArgumentParser(
        prog="secfed",
        description="Secure, differentially private federated meta-learning.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment from a TOML config", description="Run an experiment.")
    run.add_argument("config", nargs="?", help="the experiment's TOML file")
    run.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)"
    )
    run.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<name>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    run.set_defaults(func=_cmd_run)

    cfg = sub.add_parser(
        "config",
        help="validate a config and print every key that applies, with its value and meaning",
        description="Validate a configuration and print it as TOML: every key of the sections that "
        "apply, with its value, a one-line description and the allowed values (keys of other datasets, "
        "learners or modes are left out).",
    )
    cfg.add_argument("config", help="the experiment's TOML file")
    cfg.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    cfg.add_argument(
        "--plain",
        action="store_true",
        help="every key with its value only, as written into a run's config.toml",
    )
    cfg.set_defaults(func=_cmd_config)

    for register in (cli_privacy.register, cli_attack.register, evaluations_cli.register):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secfed`` command.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on invalid input, 1 on other failures, among them an
        integrity failure (:class:`secfed.errors.IntegrityError`: a privacy ledger that is forged,
        edited, truncated or cannot be verified, on ``run --resume`` and after ``report``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from secfed import __version__

        print(f"secfed {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except IntegrityError as exc:
        print(f"secfed: error: integrity check failed: {exc}", file=sys.stderr)
        return 1
    except SecfedError as exc:
        print(f"secfed: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    except ImportError as exc:
        # a command imports its packages when it runs: one of them may be another distribution's
        message = shadowing_message(exc=exc)
        if message is None:
            raise
        print(f"secfed: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("secfed: interrupted; resume with `secfed run --resume RUN_DIR`", file=sys.stderr)
        return 130
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # a file that cannot be read (permissions, a folder where a file belongs, not text)
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        print(f"secfed: error: {where}{exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
