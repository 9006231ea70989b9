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
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from privacy.atomic import atomic_write_text
from secfed.config import ExperimentConfig, config_hash, config_to_toml, load_config
from secfed.errors import CheckpointError, IntegrityError, RunDirectoryError
from secfed.federation.backends import default_threads, make_backend
from secfed.federation.egress import releases_timing
from secfed.federation.server import FederatedServer
from secfed.federation.state import flat_state, load_flat_state, param_mask, state_spec
from secfed.optional import require_ray
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
CHECKPOINT_VERSION = 1
#: Folder of the sites' own state directories inside a (simulated) run directory.
SITE_STATE_DIR = "site_state"


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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` of a run (complete lines only).

    Args:
        run_dir: The run directory.

    Returns:
        One dict per recorded round.

    Raises:
        CheckpointError: If the file cannot be read, or a line other than the last is not a JSON
            object (only the last line can be torn by a crash; anything else is corruption).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
    out = []
    for i, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):
                break  # a torn last line from a crash
            raise CheckpointError(f"{path}: line {i} is not valid JSON (corrupted): {exc}") from exc
        if not isinstance(row, dict):
            raise CheckpointError(f"{path}: line {i} is not a JSON object (corrupted)")
        out.append(row)
    return out


def load_checkpoint_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a checkpoint's safetensors file (the flat model state and server optimiser state).

    Args:
        path: The ``checkpoint/model-<round>.safetensors`` file.

    Returns:
        The arrays by name; ``"state"`` is always among them.

    Raises:
        CheckpointError: If the file is missing, truncated or corrupted (the message names it), or
            holds no ``state`` array.
    """
    path = Path(path)
    try:
        arrays = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"corrupt or unreadable checkpoint file {path}: {exc}") from exc
    if "state" not in arrays:
        raise CheckpointError(f"corrupt checkpoint file {path}: it holds no 'state' array")
    return arrays


def evaluate_model(
    *, learner: Any, model: torch.nn.Module, source: Any, episodes: int, seed: int
) -> tuple[float, float]:
    """Few-shot accuracy over ``episodes`` test tasks with a 95% confidence interval.

    Args:
        learner: The learner (its ``evaluate`` adapts on the support set).
        model: The global model.
        source: Test task source.
        episodes: Number of test tasks.
        seed: Seed of the test tasks (the same tasks at every evaluation).

    Returns:
        ``(mean accuracy, 1.96 * standard error)``.
    """
    rng = np.random.default_rng(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    accs = np.array([learner.evaluate(model=model, task=source.sample(rng=rng)) for _ in range(episodes)])
    model.train(was_training)
    torch.set_rng_state(torch_state)
    ci = 1.96 * float(accs.std(ddof=1)) / math.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    return float(accs.mean()), ci


def initial_model(
    *, config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int | None
) -> torch.nn.Module:
    """The global model a run starts from (seeded from ``experiment.seed``, as every run is).

    Args:
        config: The run's configuration.
        input_shape: Shape of one input record.
        num_classes: Model outputs, as :func:`secfed.components.model_num_classes` gives them.

    Returns:
        The model: untrained, or pretrained on the declared-public data when
        ``model.pretrain_steps > 0`` (:func:`secfed.pretrain.pretrain_public`).
    """
    from secfed import components

    torch.manual_seed(derive_seed(config.experiment.seed, "init"))
    model = components.build_model(config=config, input_shape=input_shape, num_classes=num_classes)
    if config.model.pretrain_steps > 0:
        from secfed.pretrain import pretrain_public

        # public data only (data.public_alphabets), deterministic from the seed: no privacy cost
        pretrain_public(config=config, model=model)
    return model


def final_evaluation(
    *, config: ExperimentConfig, learner: Any, model: torch.nn.Module, source: Any
) -> tuple[float, float]:
    """A run's final evaluation: ``experiment.final_eval_episodes`` test tasks from its fixed seed.

    Args:
        config: The run's configuration.
        learner: The learner (adapts on each task's support set).
        model: The model to score.
        source: Test task source.

    Returns:
        ``(mean accuracy, 1.96 * standard error)``.
    """
    return evaluate_model(
        learner=learner,
        model=model,
        source=source,
        episodes=config.experiment.final_eval_episodes,
        seed=derive_seed(config.experiment.seed, "final-eval"),
    )


def untrained_evaluation(
    *,
    config: ExperimentConfig,
    learner: Any,
    source: Any,
    input_shape: tuple[int, ...],
    num_classes: int | None,
) -> tuple[float, float]:
    """The untrained baseline: the run's starting model scored on the run's final test tasks.

    A few-shot model that was never trained already beats chance by far (a random Conv-4
    embedding scores about 50 % 5-way 1-shot on Omniglot, chance 20 %), so a run's accuracy means
    something only beside this figure. The model is :func:`initial_model` (same seed, so the very
    weights the run started from) and the tasks are :func:`final_evaluation`'s (same seed and
    episodes), so the two accuracies are paired on identical tasks. The caller's torch random
    state is left as it was.

    Args:
        config: The run's configuration.
        learner: The learner (adapts on each task's support set).
        source: Test task source (the one the final evaluation uses).
        input_shape: Shape of one input record.
        num_classes: Model outputs, as :func:`secfed.components.model_num_classes` gives them.

    Returns:
        ``(mean accuracy, 1.96 * standard error)`` of the untrained model.
    """
    with torch.random.fork_rng(devices=[]):
        model = initial_model(config=config, input_shape=input_shape, num_classes=num_classes)
        return final_evaluation(config=config, learner=learner, model=model, source=source)


def score_untrained(*, config: ExperimentConfig) -> tuple[float, float]:
    """Load a configuration's test data and score its untrained model (:func:`untrained_evaluation`).

    For a configuration or a finished run's ``config.toml`` outside a run
    (``examples/untrained_baseline.py``, ``evaluations/benchmarks/init_accuracy.py``); a run
    computes the same figure itself and writes it to ``summary.json`` as
    ``untrained_test_accuracy``.

    Args:
        config: The configuration (a DP run's calibrated one is fine: the figure does not depend
            on the noise).

    Returns:
        ``(mean accuracy, 1.96 * standard error)`` over ``experiment.final_eval_episodes`` tasks.

    Raises:
        secfed.errors.SecfedError: If the data cannot be loaded.
    """
    from secfed import components

    train, test = components.load_splits(config=config)
    heads = components.model_num_classes(config=config, train=train)
    del train
    return untrained_evaluation(
        config=config,
        learner=components.build_learner(config=config),
        source=components.build_test_source(config=config, test=test),
        input_shape=test.input_shape,
        num_classes=heads,
    )


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
        summary = _finished_summary(run_dir)
        if summary is not None:
            _verify_ledger_read_only(run_dir=run_dir, config=config, summary=summary)
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
            loaded = self._load_checkpoint(ckpt_dir, expected=len(state))
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
                self._save_checkpoint(
                    run_dir / "checkpoint",
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

    @staticmethod
    def _save_checkpoint(
        ckpt_dir: Path, *, round_idx: int, server: FederatedServer, elapsed: float | None
    ) -> None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        weights = f"model-{round_idx:06d}.safetensors"
        arrays = {"state": server.state, **server.optimizer.state_arrays(), **server.ema_arrays()}
        tmp = ckpt_dir / (weights + ".tmp")
        save_file(arrays, str(tmp), metadata={"round": str(round_idx), "format": "secfed-flat-state"})
        os.replace(tmp, ckpt_dir / weights)
        info: dict[str, Any] = {"version": CHECKPOINT_VERSION, "round": round_idx, "weights": weights}
        if elapsed is not None:
            info["elapsed_s"] = elapsed
        atomic_write_text(path=ckpt_dir / "state.json", text=json.dumps(info, indent=1))
        for old in ckpt_dir.glob("model-*.safetensors"):
            if old.name != weights:
                old.unlink()

    @staticmethod
    def _load_checkpoint(
        ckpt_dir: Path, *, expected: int
    ) -> tuple[int, np.ndarray, dict[str, np.ndarray], float] | None:
        info_path = ckpt_dir / "state.json"
        if not info_path.exists():
            return None
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("expected a JSON object")
            if info.get("version") != CHECKPOINT_VERSION:
                raise CheckpointError(
                    f"{info_path}: checkpoint version {info.get('version')} is not supported"
                )
            weights, round_idx = info["weights"], int(info["round"])
            if not isinstance(weights, str) or Path(weights).name != weights:
                raise ValueError(f"'weights' must be a file name in {ckpt_dir}, got {weights!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"corrupt checkpoint in {ckpt_dir}: {info_path}: {exc}") from exc
        arrays = load_checkpoint_arrays(ckpt_dir / weights)
        state = arrays.pop("state")
        if state.shape != (expected,):
            raise CheckpointError(
                f"{ckpt_dir}: checkpoint state has {state.shape[0]} values, the model needs {expected}"
            )
        return round_idx + 1, state, arrays, float(info.get("elapsed_s", 0.0))


def _finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run, or None when there is something to resume.

    A run is finished when ``summary.json`` exists and the checkpoint is at the round the summary
    reports (the last checkpoint a run writes). Without that checkpoint (``checkpoint/state.json``
    deleted or unreadable) the run is resumed as usual, which restarts or reports the corruption.

    Raises:
        CheckpointError: If ``summary.json`` exists but is not a JSON object.
    """
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        info = json.loads((run_dir / "checkpoint" / "state.json").read_text(encoding="utf-8"))
        checkpoint_round = int(info["round"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} is corrupted ({exc}); delete it to redo the final evaluation with --resume"
        ) from exc
    if not isinstance(summary, dict):
        raise CheckpointError(
            f"{path} is not a JSON object; delete it to redo the final evaluation with --resume"
        )
    return summary if summary.get("rounds") == checkpoint_round else None


def _verify_ledger_read_only(*, run_dir: Path, config: ExperimentConfig, summary: dict[str, Any]) -> None:
    """Verify a finished DP run's privacy ledger without writing anything.

    Raises:
        IntegrityError: If the ledger is missing, fails its check or cannot be verified.
    """
    if config.privacy.mode == "none":
        return
    from privacy.errors import PrivacyError
    from privacy.ledger import INTEGRITY_VERIFIED, PrivacyLedger

    name = Path(str(summary.get("privacy_ledger") or "privacy_ledger.jsonl")).name
    path = run_dir / name
    try:
        ledger = PrivacyLedger.read(path=path)
    except PrivacyError as exc:
        raise IntegrityError(f"{path}: privacy ledger integrity check failed: {exc}") from exc
    if ledger.integrity != INTEGRITY_VERIFIED:
        raise IntegrityError(f"{path}: privacy ledger cannot be verified: {ledger.integrity}")
