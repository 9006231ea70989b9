"""The files of a run directory: metrics, checkpoints and the finished-run check.

:class:`secfed.experiment.Experiment` writes and reads a run directory through these; see
:mod:`secfed.experiment` for what the directory holds. Every name here is also importable from
:mod:`secfed.experiment`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from privacy.atomic import atomic_write_text
from secfed.config import ExperimentConfig
from secfed.errors import CheckpointError, IntegrityError

if TYPE_CHECKING:
    from secfed.federation.server import FederatedServer

__all__ = [
    "CHECKPOINT_VERSION",
    "SITE_STATE_DIR",
    "read_metrics",
    "load_checkpoint_arrays",
    "save_checkpoint",
    "load_checkpoint",
    "finished_summary",
    "verify_ledger_read_only",
]

CHECKPOINT_VERSION = 1
#: Folder of the sites' own state directories inside a (simulated) run directory.
SITE_STATE_DIR = "site_state"


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


def save_checkpoint(
    *, ckpt_dir: Path, round_idx: int, server: FederatedServer, elapsed: float | None
) -> None:
    """Write the checkpoint of round ``round_idx`` (weights first, then ``state.json``, each atomically).

    Args:
        ckpt_dir: The run's ``checkpoint/`` folder (created if missing).
        round_idx: The round just completed.
        server: The server whose flat state, optimiser state and EMA arrays are saved.
        elapsed: Seconds the run has taken so far, recorded when timing is on (``None``: not recorded).
    """
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


def load_checkpoint(
    *, ckpt_dir: Path, expected: int
) -> tuple[int, np.ndarray, dict[str, np.ndarray], float] | None:
    """Read the checkpoint in ``ckpt_dir``, if there is one.

    Args:
        ckpt_dir: The run's ``checkpoint/`` folder.
        expected: Length of the model's flat state.

    Returns:
        ``(next round, flat state, optimiser and EMA arrays, elapsed seconds)``, or None without
        a checkpoint (no ``state.json``).

    Raises:
        CheckpointError: If the checkpoint is corrupt, of another version, or of another model size
            (the message names the file).
    """
    info_path = ckpt_dir / "state.json"
    if not info_path.exists():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("expected a JSON object")
        if info.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{info_path}: checkpoint version {info.get('version')} is not supported")
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


def finished_summary(*, run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run, or None when there is something to resume.

    A run is finished when ``summary.json`` exists and the checkpoint is at the round the summary
    reports (the last checkpoint a run writes). Without that checkpoint (``checkpoint/state.json``
    deleted or unreadable) the run is resumed as usual, which restarts or reports the corruption.

    Args:
        run_dir: The run directory.

    Returns:
        The summary of a finished run, or None.

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


def verify_ledger_read_only(*, run_dir: Path, config: ExperimentConfig, summary: dict[str, Any]) -> None:
    """Verify a finished DP run's privacy ledger without writing anything.

    Args:
        run_dir: The run directory.
        config: The run's configuration (nothing to verify without DP).
        summary: The run's ``summary.json`` (names the ledger file).

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
