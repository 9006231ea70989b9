"""Running an experiment: the run directory, rounds, evaluation, checkpoints and resume.

The Python API mirrors the CLI::

    from secfed import Experiment, load_config
    cfg = load_config("examples/digits_protonet.toml", overrides=["experiment.rounds=5"])
    result = Experiment(config=cfg).run(out_dir="runs/demo")
    print(result.summary["test_accuracy"], result.summary["test_accuracy_ci95"])

A run directory holds ``config.toml`` (fully resolved), ``metrics.jsonl`` (one JSON object per
round), ``summary.json`` (with, when it applies, the supervised evaluation of
:mod:`secfed.supervised_eval`: ``test_auc``, ``test_sensitivity``, ... on the public test split),
under DP ``privacy_ledger.jsonl`` and ``site_state/site-<id>/`` (each simulated site's own ledger;
the ledgers' HMAC keys live outside the run directory, see :mod:`privacy.ledger`) and
``checkpoint/`` (flat model state and server optimiser state in safetensors, server state in
JSON). ``Experiment.resume(run_dir)`` continues from the last
complete round to the same result as an uninterrupted run: every random choice derives from the
seed and the round number, and rounds after the checkpoint are discarded from the metrics. They are
never discarded from the privacy ledgers: what they released stays counted, so a resumed DP run
reports an ε at least that of the uninterrupted one.

This module holds :class:`Experiment` and :class:`RunResult`; the run directory's files are read
and written by :mod:`secfed.rundir`, the few-shot scoring (final evaluation, untrained baseline,
starting model) is :mod:`secfed.scoring`. Their public names are importable from here as well.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from privacy.atomic import atomic_write_text
from secfed.config import ExperimentConfig, config_hash, config_to_toml, load_config
from secfed.errors import CheckpointError, RunDirectoryError
from secfed.federation.backends import default_threads, make_backend
from secfed.federation.egress import releases_timing
from secfed.federation.server import FederatedServer
from secfed.federation.state import flat_state, load_flat_state, param_mask, state_spec
from secfed.optional import require_ray
from secfed.rundir import (
    CHECKPOINT_VERSION,
    SITE_STATE_DIR,
    finished_summary,
    load_checkpoint,
    load_checkpoint_arrays,
    read_metrics,
    save_checkpoint,
    verify_ledger_read_only,
)
from secfed.scoring import (
    evaluate_model,
    final_evaluation,
    initial_model,
    score_untrained,
    untrained_evaluation,
)
from secfed.seeding import derive_seed
from secfed.supervised_eval import SupervisedEvaluation, build_supervised_evaluation

__all__ = [
    "Experiment",
    "RunResult",
    "evaluate_model",
    "final_evaluation",
    "score_untrained",
    "untrained_evaluation",
    "initial_model",
    "read_metrics",
    "load_checkpoint_arrays",
    "CHECKPOINT_VERSION",
    "SITE_STATE_DIR",
]

log = logging.getLogger("secfed")


@dataclass
class RunResult:
    """The outcome of a run.

    Attributes:
        run_dir: The run directory.
        metrics: One dict per round (as in ``metrics.jsonl``).
        summary: Final metrics (as in ``summary.json``).
        already_complete: True when :meth:`Experiment.resume` found the run finished (its
            ``summary.json`` written) and did nothing but read it back.
    """

    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    already_complete: bool = False


def _code_version() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it ("unknown" off git).

    Called once when a run starts (the code that runs is the code of that moment: a commit made
    while a long run trains must not be recorded as its code).
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        if not head:
            return "unknown"
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Experiment:
    """A configured federated experiment."""

    def __init__(self, *, config: ExperimentConfig) -> None:
        """Create the experiment (no work is done until :meth:`run`).

        Args:
            config: A validated configuration.
        """
        self.config = config

    @classmethod
    def from_file(cls, path: str | Path, *, overrides: list[str] | None = None) -> Experiment:
        """Load a TOML configuration (with ``section.key=value`` overrides) into an experiment."""
        return cls(config=load_config(path, overrides=overrides or []))

    # ------------------------------------------------------------------ resume
    @classmethod
    def resume(cls, run_dir: str | Path, *, progress: bool | None = None) -> RunResult:
        """Continue a run from its last checkpoint.

        Args:
            run_dir: A run directory written by :meth:`run`.
            progress: Progress bar on (True), off (False) or when stderr is a terminal (None).

        Returns:
            The completed run's result. A run that already finished (its ``summary.json`` is
            written) is not run again: its metrics and summary are read back, with
            ``already_complete`` set, after its privacy ledger (if any) is verified read-only.

        Raises:
            RunDirectoryError: If ``run_dir`` is not a run directory (no ``config.toml``).
            CheckpointError: If the checkpoint, ``metrics.jsonl`` or ``summary.json`` is corrupted
                (the message names the file).
            IntegrityError: If the privacy ledger fails its check or cannot be verified.
        """
        run_dir = Path(run_dir)
        cfg_path = run_dir / "config.toml"
        if not cfg_path.is_file():
            raise RunDirectoryError(f"{run_dir} is not a run directory: config.toml is missing")
        config = load_config(cfg_path)
        summary = finished_summary(run_dir=run_dir)
        if summary is not None:
            verify_ledger_read_only(run_dir=run_dir, config=config, summary=summary)
            return RunResult(
                run_dir=run_dir, metrics=read_metrics(run_dir), summary=summary, already_complete=True
            )
        return cls(config=config).run(out_dir=run_dir, resume=True, progress=progress)

    # ------------------------------------------------------------------ run
    def run(self, *, out_dir: str | Path, resume: bool = False, progress: bool | None = None) -> RunResult:
        """Run all rounds, writing the run directory as it goes.

        Args:
            out_dir: The run directory (created; must not hold another run unless resuming).
            resume: Continue from the checkpoint in ``out_dir``.
            progress: Progress bar on/off; None = only when stderr is a terminal.

        Returns:
            The run's metrics and summary.

        Raises:
            CheckpointError: If ``out_dir`` holds a different run, or the checkpoint is corrupt.
            MissingDependencyError: If the configuration selects the Ray backend and Ray is not
                installed (raised before anything is loaded or written).
            secfed.errors.SecfedError: For data, backend or protocol failures.
        """
        from secfed import components

        cfg = self.config
        code_version = _code_version()  # the code that runs: read before any work, not at the end
        if cfg.experiment.backend == "ray":
            require_ray()  # a missing optional package stops the run here, before any work
        run_dir = Path(out_dir)
        ckpt_dir = run_dir / "checkpoint"
        if not resume and (run_dir / "metrics.jsonl").exists():
            raise CheckpointError(f"{run_dir} already holds a run; use --resume or choose another --out")
        # This process's torch threads: experiment.threads, else a bounded default that honours
        # OMP_NUM_THREADS (default_threads: 1 on 2 cores), so a shared machine is not oversubscribed.
        torch.set_num_threads(cfg.experiment.threads or default_threads(processes=1))
        # Public, server-side pieces: held-out test data and the model architecture (neither
        # depends on the noise multiplier calibrated below).
        train, test = components.load_splits(config=cfg)
        input_shape = test.input_shape
        heads = components.model_num_classes(config=cfg, train=train)
        model = initial_model(config=cfg, input_shape=input_shape, num_classes=heads)
        # what DP planning needs of the data and the model, handed down instead of re-derived
        shape = components.RunShape.of(model=model, train=train)
        del train  # the server keeps no training records
        if cfg.privacy.mode != "none" and cfg.privacy.target_epsilon > 0:
            from secfed.dp import calibrated_config

            # Noise multiplier calibrated for the target epsilon of the planned run (deterministic,
            # so a resumed run calibrates to the same value).
            cfg = self.config = calibrated_config(config=cfg, shape=shape)
        toml_text = config_to_toml(cfg)
        spec = state_spec(model)
        learner = components.build_learner(config=cfg)
        test_source = components.build_test_source(config=cfg, test=test)
        # The global model as is on the public test/validation splits (AUC, sensitivity, ...).
        supervised = build_supervised_evaluation(config=cfg, test=test, test_source=test_source)
        privacy, dp = None, None
        if cfg.privacy.mode != "none":
            from secfed.dp import ServerPrivacy
            from secfed.dp.params import dp_params

            # the run's privacy parameters, read once from the calibrated configuration and
            # handed down to the server's privacy, its planning and the aggregator
            dp = dp_params(config=cfg)
            privacy = ServerPrivacy(config=cfg, run_dir=run_dir, shape=shape, params=dp)

        run_dir.mkdir(parents=True, exist_ok=True)
        start_round, state, opt_arrays, elapsed = 1, flat_state(model, spec=spec), None, 0.0
        if resume:
            loaded = load_checkpoint(ckpt_dir=ckpt_dir, expected=len(state))
            if loaded is not None:  # None: killed before the first checkpoint, start over
                start_round, state, opt_arrays, elapsed = loaded
            old = (
                (run_dir / "config.toml").read_text(encoding="utf-8")
                if (run_dir / "config.toml").exists()
                else ""
            )
            if old and old != toml_text:
                raise CheckpointError(f"{run_dir}/config.toml differs from the configuration being resumed")
        else:
            atomic_write_text(path=run_dir / "config.toml", text=toml_text)
        if privacy is not None:
            # First, before any file is rewritten or any site started: verify the ledger and keep
            # every release it accounts (rounds after the checkpoint, or all of them when
            # checkpoint/state.json is missing, stay counted; nothing is truncated).
            privacy.resume_to(completed_round=start_round - 1)
        metrics = [m for m in read_metrics(run_dir) if m.get("round", 0) < start_round]
        atomic_write_text(path=run_dir / "metrics.jsonl", text="".join(json.dumps(m) + "\n" for m in metrics))

        backend = make_backend(
            name=cfg.experiment.backend,
            # Each site keeps its own durable privacy ledger in RUN_DIR/site_state/site-<id>/ (the
            # simulation's stand-in for the site's own disk), so its ε budget survives restarts.
            factory=components.ClientFactory.from_config(
                cfg,
                site_state_dir=run_dir / SITE_STATE_DIR
                if cfg.privacy.mode != "none" or cfg.federation.aggregation != "plain"
                else None,
            ),
            num_clients=cfg.partition.num_sites,
            threads=cfg.experiment.threads,  # 0: one per site process where cores are scarce
        )
        aggregator = components.build_server_aggregator(config=cfg, params=dp)
        backend.start(site_ids=list(range(cfg.partition.num_sites)))
        try:
            server = FederatedServer(
                config=cfg,
                backend=backend,
                aggregator=aggregator,
                state=state,
                param_mask=param_mask(spec),
                central_noise=privacy.central_noise if privacy is not None else None,
            )
            if opt_arrays is not None:
                try:
                    opt_arrays = server.load_ema(opt_arrays)
                except ValueError as exc:
                    raise CheckpointError(f"{ckpt_dir}: {exc}") from exc
                server.optimizer.load_arrays(opt_arrays)
            sites = server.site_info()
            atomic_write_text(
                path=run_dir / "sites.json", text=json.dumps({str(k): v for k, v in sites.items()}, indent=1)
            )
            if privacy is not None:
                privacy.register_sites(sites)
            stop_reason = self._loop(
                server=server,
                model=model,
                spec=spec,
                learner=learner,
                test_source=test_source,
                run_dir=run_dir,
                start_round=start_round,
                elapsed=elapsed,
                metrics=metrics,
                privacy=privacy,
                progress=sys.stderr.isatty() if progress is None else progress,
                supervised=supervised,
            )
            state = server.eval_state  # the EMA of the released states when federation.ema > 0
        finally:
            backend.close()
        load_flat_state(model, state, spec=spec)
        acc, ci = final_evaluation(config=cfg, learner=learner, model=model, source=test_source)
        last = metrics[-1] if metrics else {}
        summary: dict[str, Any] = {
            "rounds": int(last.get("round", 0)),
            "test_accuracy": acc,
            "test_accuracy_ci95": ci,
            "test_episodes": cfg.experiment.final_eval_episodes,
            "train_loss": last.get("train_loss"),
            # under DP no timing is recorded (secfed.federation.egress): None
            "wall_s": last.get("wall_s") if releases_timing(config=cfg) else None,
            "clients": last.get("clients", []),
            "dropped": last.get("dropped", []),
            "learner": cfg.learner.name,
            "dataset": cfg.data.dataset,
            "aggregation": cfg.federation.aggregation,
            "backend": cfg.experiment.backend,
            "config_hash": config_hash(cfg),
            "code_version": code_version,
            "stopped_early": stop_reason,
        }
        if supervised is not None:
            summary.update(supervised.description())
            summary.update(supervised.evaluate(model=model, per_site=True))
        if privacy is not None:
            summary.update(privacy.summary())
        if cfg.experiment.untrained_baseline:
            # the starting model on the very same test tasks: the figure the accuracy means
            # something against (a random few-shot embedding is far above chance)
            base, base_ci = untrained_evaluation(
                config=cfg, learner=learner, source=test_source, input_shape=input_shape, num_classes=heads
            )
            summary["untrained_test_accuracy"] = base
            summary["untrained_test_accuracy_ci95"] = base_ci
            if supervised is not None:
                # the same starting model's ranking quality on the public test split (the
                # random-initialisation floor of AUC, sensitivity, specificity)
                with torch.random.fork_rng(devices=[]):
                    start = initial_model(config=cfg, input_shape=input_shape, num_classes=heads)
                scores = supervised.evaluate(model=start, per_site=False)
                summary.update({f"untrained_{k}": v for k, v in scores.items() if k.startswith("test_auc")})
        atomic_write_text(path=run_dir / "summary.json", text=json.dumps(summary, indent=1))
        return RunResult(run_dir=run_dir, metrics=metrics, summary=summary)

    # ------------------------------------------------------------------ internals
    def _loop(
        self,
        *,
        server: FederatedServer,
        model: torch.nn.Module,
        spec: Any,
        learner: Any,
        test_source: Any,
        run_dir: Path,
        start_round: int,
        elapsed: float,
        metrics: list[dict[str, Any]],
        privacy: Any,
        progress: bool,
        supervised: SupervisedEvaluation | None = None,
    ) -> str | None:
        cfg = self.config
        rounds = range(start_round, cfg.experiment.rounds + 1)
        # Training times grow with the Poisson batch sizes: under DP none is recorded or shown.
        timing = releases_timing(config=cfg)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.experiment.rounds,
                initial=start_round - 1,
                desc="rounds",
                unit="round",
                file=sys.stderr,
                bar_format=None if timing else "{l_bar}{bar}| {n_fmt}/{total_fmt} {postfix}",
            )
        t0 = time.perf_counter() - elapsed
        try:
            for rnd in rounds:
                excluded: frozenset[int] = frozenset()
                if privacy is not None:
                    excluded, stop = privacy.before_round(round_idx=rnd)
                    if stop:
                        log.warning("stopping before round %d: %s", rnd, stop)
                        print(f"secfed: stopping before round {rnd}: {stop}", file=sys.stderr)
                        return stop
                outcome = server.run_round(round_idx=rnd, excluded=excluded)
                row: dict[str, Any] = {
                    "round": rnd,
                    "train_loss": outcome.train_loss,
                    "clients": outcome.clients,
                    "dropped": outcome.dropped,
                    "stragglers": outcome.stragglers,
                    "skipped": outcome.skipped,
                }
                row.update(
                    {f"agg_{k}": v for k, v in outcome.aggregation.items() if timing or not k.endswith("_s")}
                )
                if privacy is not None:
                    # The ledger entry is written before this round's model is released.
                    row.update(privacy.after_round(outcome=outcome))
                every = cfg.experiment.eval_every
                if every and (rnd % every == 0 or rnd == cfg.experiment.rounds):
                    load_flat_state(model, server.eval_state, spec=spec)
                    acc, ci = evaluate_model(
                        learner=learner,
                        model=model,
                        source=test_source,
                        episodes=cfg.experiment.eval_episodes,
                        seed=derive_seed(cfg.experiment.seed, "eval"),
                    )
                    row["test_accuracy"], row["test_accuracy_ci95"] = acc, ci
                    if supervised is not None:
                        row.update(supervised.evaluate(model=model, per_site=False))
                elapsed_now = time.perf_counter() - t0
                if timing:
                    row["wall_s"] = elapsed_now
                save_checkpoint(
                    ckpt_dir=run_dir / "checkpoint",
                    round_idx=rnd,
                    server=server,
                    elapsed=elapsed_now if timing else None,
                )
                with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                metrics.append(row)
                loss = "n/a (DP)" if outcome.train_loss is None else f"{outcome.train_loss:.3f}"
                msg = f"loss={loss} clients={len(outcome.clients)} dropped={len(outcome.dropped)}"
                if "test_accuracy" in row:
                    msg += f" acc={row['test_accuracy']:.3f}±{row['test_accuracy_ci95']:.3f}"
                if row.get("test_auc") is not None:
                    msg += f" auc={row['test_auc']:.3f}"
                if "epsilon" in row:
                    msg += f" eps={row['epsilon']:.2f}"
                if bar is not None:
                    bar.set_postfix_str(msg)
                    bar.update(1)
                else:
                    print(
                        f"secfed: round {rnd}/{cfg.experiment.rounds} {msg}"
                        + (f" ({row['wall_s']:.1f}s)" if timing else ""),
                        file=sys.stderr,
                    )
        finally:
            if bar is not None:
                bar.close()
        return None
