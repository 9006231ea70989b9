"""Adapters from the secfed runtime to the attack library: a finished run as the server holds it.

* :func:`load_run` reads a run directory (``config.toml``, ``checkpoint/``, ``summary.json``) into
  the global model the server holds, the learner and the public configuration.
* The replays of a site's computation (losses, observation models, the learner's message kind)
  are :mod:`attacks.secfed_replay`.

Everything here is what an honest-but-curious server knows: the global model, the learner and the
configuration of the run (``config.toml`` is shared with every site). Nothing reads a site's data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.errors import AttackInputError
from secfed import components
from secfed.config import ExperimentConfig, load_config
from secfed.errors import SecfedError
from secfed.experiment import load_checkpoint_arrays
from secfed.federation.state import load_flat_state, state_spec
from secfed.learners.base import Learner

__all__ = ["RunDirError", "LoadedRun", "load_run"]


class RunDirError(AttackInputError):
    """A run directory is missing, incomplete or unreadable (the message names the file).

    An invalid input (a ``ValueError``) and, like every :class:`attacks.errors.AttackError`, a
    :class:`secfed.errors.SecfedError`: the ``secfed`` command exits with status 2 on it.
    """


@dataclass
class LoadedRun:
    """A run as the server sees it after training.

    Attributes:
        run_dir: The run directory.
        config: The run's resolved configuration (``config.toml``).
        model: The global model loaded with the checkpoint's state (training mode, as clients use it).
        learner: The run's learner.
        round: The checkpoint's round.
        summary: ``summary.json`` (empty when the run did not finish).
        input_shape: Shape of one record.
    """

    run_dir: Path
    config: ExperimentConfig
    model: nn.Module
    learner: Learner
    round: int
    input_shape: tuple[int, ...]
    summary: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} is not readable JSON: {exc}") from exc


def load_run(*, run_dir: str | Path) -> LoadedRun:
    """Load a run directory's configuration and final global model.

    Args:
        run_dir: A directory written by :class:`secfed.experiment.Experiment`.

    Returns:
        The loaded run.

    Raises:
        RunDirError: If the directory, ``config.toml`` or the checkpoint is missing, unreadable,
            or does not fit the configured model.
        CheckpointError: If the checkpoint's weights file is truncated or corrupted (names the file).
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise RunDirError(f"run directory {root} does not exist")
    cfg_path = root / "config.toml"
    if not cfg_path.is_file():
        raise RunDirError(f"{root} is not a run directory: config.toml is missing")
    try:
        config = load_config(cfg_path)
    except SecfedError as exc:
        raise RunDirError(f"{cfg_path}: {exc}") from exc
    info_path = root / "checkpoint" / "state.json"
    if not info_path.is_file():
        raise RunDirError(
            f"{root} has no checkpoint (checkpoint/state.json is missing): the run never finished a round"
        )
    info = _read_json(info_path)
    if not isinstance(info, Mapping) or "weights" not in info or "round" not in info:
        raise RunDirError(f"{info_path} must name the 'weights' file and the 'round'")
    weights = root / "checkpoint" / str(info["weights"])
    if not weights.is_file():
        raise RunDirError(f"{info_path} names the checkpoint weights {weights}, which do not exist")
    arrays = load_checkpoint_arrays(weights)  # CheckpointError naming the file when corrupted
    try:
        train, test = components.load_splits(config=config)
        heads = components.model_num_classes(config=config, train=train)
        torch.manual_seed(0)  # the initial values are overwritten by the checkpoint
        model = components.build_model(config=config, input_shape=test.input_shape, num_classes=heads)
        learner = components.build_learner(config=config)
    except SecfedError as exc:
        raise RunDirError(f"cannot rebuild the model of {root}: {exc}") from exc
    spec = state_spec(model)
    try:
        load_flat_state(model, np.asarray(arrays["state"], dtype=np.float32), spec=spec)
    except ValueError as exc:
        raise RunDirError(f"{weights} does not fit the configured model: {exc}") from exc
    model.train()
    summary_path = root / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    return LoadedRun(
        run_dir=root,
        config=config,
        model=model,
        learner=learner,
        round=int(info["round"]),
        input_shape=tuple(int(s) for s in test.input_shape),
        summary=dict(summary) if isinstance(summary, Mapping) else {},
    )
