"""Helpers shared by tests in several folders (importable as ``helpers_shared``).

Test folders have no ``__init__.py``; pytest puts ``tests/`` on ``sys.path`` when it loads
``tests/conftest.py`` (which also does so explicitly), so any test can ``import helpers_shared``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from secfed.config import ExperimentConfig, config_to_toml
from secfed.data import ImageDataset
from secfed.experiment import read_metrics

#: The repository root.
REPO = Path(__file__).resolve().parents[1]


def make_image_dataset(
    counts: list[int], *, name: str = "synthetic", shape: tuple[int, int, int] = (1, 4, 4)
) -> ImageDataset:
    """A small in-memory dataset: ``counts[c]`` records of class ``c``.

    Every pixel of record ``i`` equals ``i / N``, so records can be told apart; class ``c`` is named
    ``c{c}`` and belongs to group ``g{c % 2}``.

    Args:
        counts: Records per class.
        name: Dataset name.
        shape: Image shape (channels, height, width).

    Returns:
        The dataset.
    """
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    n = labels.size
    images = np.broadcast_to(
        (np.arange(n, dtype=np.float32) / max(n, 1))[:, None, None, None], (n, *shape)
    ).copy()
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=tuple(f"c{c}" for c in range(len(counts))),
        class_groups=tuple(f"g{c % 2}" for c in range(len(counts))),
        name=name,
        source="memory",
    )


def run_and_kill(cfg: ExperimentConfig, *, tmp_path: Path, after_rounds: int, poll_s: float = 0.05) -> Path:
    """Run ``secfed run`` on ``cfg`` in a subprocess and SIGKILL it once ``after_rounds`` rounds are logged.

    The subprocess is also killed (or found finished) after 240 s at the latest; callers check how many
    rounds it completed with :func:`secfed.experiment.read_metrics`.

    Args:
        cfg: The configuration (written to ``tmp_path / "cfg.toml"``).
        tmp_path: Scratch folder; the run goes to ``tmp_path / "killed"``.
        after_rounds: Kill as soon as ``metrics.jsonl`` holds this many rounds.
        poll_s: Seconds between looks at ``metrics.jsonl``.

    Returns:
        The run directory of the killed run.
    """
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(config_to_toml(cfg))
    run_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "secfed", "run", str(cfg_file), "--out", str(run_dir), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(run_dir)) < after_rounds and proc.poll() is None:
        time.sleep(poll_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return run_dir
