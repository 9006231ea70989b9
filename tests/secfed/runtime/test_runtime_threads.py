"""Thread counts: no process of a run starts torch's one-thread-per-core default on a shared machine.

Observed from the processes themselves: each site process reports the torch thread count it runs
with, and the server process's count is read after a run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from runtime_cfg import REPO, tiny_config_dict

from secfed.config import config_from_dict
from secfed.errors import BackendError
from secfed.experiment import Experiment
from secfed.federation.backends import MAX_DEFAULT_THREADS, default_threads, make_backend, usable_cores


def thread_probe(site_id: int) -> Callable[[bytes], bytes]:
    """A site handler that answers every request with its process's torch thread count."""
    del site_id
    return lambda request: str(torch.get_num_threads()).encode()


@pytest.mark.parametrize(
    ("cores", "processes", "expected"),
    [
        (2, 1, 1),  # the 2-core shared machine: one thread in-process...
        (2, 5, 1),  # ...and one per site process
        (8, 1, 4),
        (8, 2, 2),
        (16, 1, MAX_DEFAULT_THREADS),
        (16, 5, 1),
        (64, 2, MAX_DEFAULT_THREADS),
        (1, 1, 1),
    ],
)
def test_default_is_bounded_by_cores_and_processes(cores: int, processes: int, expected: int) -> None:
    assert default_threads(processes=processes, cores=cores, environ={}) == expected


def test_omp_num_threads_is_honoured() -> None:
    assert default_threads(processes=5, cores=2, environ={"OMP_NUM_THREADS": "3"}) == 3
    # not a positive integer: ignored
    for bad in ("", "0", "two", "-1"):
        assert default_threads(processes=1, cores=16, environ={"OMP_NUM_THREADS": bad}) == 4
    with pytest.raises(ValueError, match="processes"):
        default_threads(processes=0, environ={})


def _site_threads(monkeypatch: pytest.MonkeyPatch, *, threads: int, omp: str | None) -> list[int]:
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    backend = make_backend(name="multiprocess", factory=thread_probe, num_clients=3, threads=threads)
    try:
        backend.start(site_ids=[0, 1, 2])
        answers = backend.request(messages={sid: b"?" for sid in range(3)})
    finally:
        backend.close()
    return [int(answers[sid]) for sid in range(3)]


@pytest.mark.slow
def test_site_processes_run_with_the_default_or_the_configured_count(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = max(1, min(MAX_DEFAULT_THREADS, usable_cores() // 6))
    assert _site_threads(monkeypatch, threads=0, omp=None) == [expected] * 3
    assert _site_threads(monkeypatch, threads=0, omp="2") == [2] * 3
    assert _site_threads(monkeypatch, threads=3, omp="1") == [3] * 3
    with pytest.raises(BackendError, match="threads"):
        make_backend(name="multiprocess", factory=thread_probe, num_clients=3, threads=-1)


def test_a_run_sets_the_server_process_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(7)  # what torch's default would be on a 7-core machine
        cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "threads": 0}), base_dir=REPO)
        Experiment(config=cfg).run(out_dir=tmp_path / "auto", progress=False)
        assert torch.get_num_threads() == default_threads(processes=1)
        cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "threads": 2}), base_dir=REPO)
        Experiment(config=cfg).run(out_dir=tmp_path / "two", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
