"""The Ray backend: same results as the sequential backend, failures name the site, and a
missing Ray is a typed configuration error before any work.

Tests that need Ray share one local Ray instance (module fixture) and are skipped, with the
reason, only where Ray is not importable; the missing-Ray and ownership tests run without Ray.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from runtime_cfg import REPO, run_example, tiny_config_dict

from secfed.components import ClientFactory
from secfed.config import config_from_dict
from secfed.errors import BackendError, ConfigError, MissingDependencyError
from secfed.experiment import Experiment
from secfed.federation.backends import RayBackend, make_backend
from secfed.federation.messages import encode_message


@pytest.fixture(scope="module")
def ray_local() -> Iterator[ModuleType]:
    """One small local Ray for the whole module; backends find it running and leave it so."""
    try:
        import ray
    except ImportError as exc:
        pytest.skip(f'Ray is not installed (pip install "secfed[ray]"): {exc}')
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=128 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _factory(**sections: dict) -> ClientFactory:
    return ClientFactory.from_config(config_from_dict(tiny_config_dict(**sections), base_dir=REPO))


def test_ray_backend_matches_sequential(tmp_path: Path, ray_local: ModuleType) -> None:
    seq = config_from_dict(tiny_config_dict(experiment={"rounds": 2, "threads": 1}), base_dir=REPO)
    on_ray = config_from_dict(
        tiny_config_dict(experiment={"rounds": 2, "threads": 1, "backend": "ray"}), base_dir=REPO
    )
    a = Experiment(config=seq).run(out_dir=tmp_path / "seq", progress=False)
    b = Experiment(config=on_ray).run(out_dir=tmp_path / "ray", progress=False)
    assert len(a.metrics) == len(b.metrics) == 2
    for ra, rb in zip(a.metrics, b.metrics, strict=True):
        assert ra["clients"] == rb["clients"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
    assert a.summary["test_accuracy"] == pytest.approx(b.summary["test_accuracy"], abs=0.02)
    assert ray_local.is_initialized()  # the run's backend did not stop a Ray it had not started


def test_a_site_that_fails_to_start_is_named(ray_local: ModuleType) -> None:
    # The factory fails for site 7 (outside the partition); site 0 is still loading when it does.
    backend = RayBackend(factory=_factory(), start_timeout_s=120)
    with pytest.raises(BackendError, match=r"site 7 failed to start: ConfigError: site id 7"):
        backend.start(site_ids=[0, 7])
    backend.close()
    assert ray_local.is_initialized()


def test_requests_failures_and_idempotent_close(ray_local: ModuleType) -> None:
    backend = make_backend(name="ray", factory=_factory(), num_clients=4)
    assert isinstance(backend, RayBackend)
    backend.start(site_ids=[1, 2])
    info = encode_message(kind="info")
    replies = backend.request(messages={1: info, 2: info})
    assert set(replies) == {1, 2} and all(isinstance(r, bytes) and r for r in replies.values())
    # A request the client cannot handle: the error names the site and the client's exception.
    with pytest.raises(BackendError, match=r"site 2 failed: MessageError"):
        backend.request(messages={1: info, 2: b"not a message"})
    with pytest.raises(BackendError, match="site 3 is not running"):
        backend.request(messages={3: info})
    backend.close()
    backend.close()
    assert ray_local.is_initialized()  # not started by the backend, so left running
    with pytest.raises(BackendError, match="site 1 is not running"):
        backend.request(messages={1: info})


def test_selecting_ray_without_ray_is_a_typed_error_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    # The configuration itself loads (a finished Ray run can be reported on without Ray) ...
    cfg = config_from_dict(tiny_config_dict(experiment={"backend": "ray"}), base_dir=REPO)
    assert cfg.experiment.backend == "ray"
    # ... but running it stops before anything is loaded or written.
    run_dir = tmp_path / "run"
    with pytest.raises(MissingDependencyError, match=r'pip install "secfed\[ray\]"') as exc:
        Experiment(config=cfg).run(out_dir=run_dir, progress=False)
    assert isinstance(exc.value, ConfigError) and "experiment.backend = 'ray'" in str(exc.value)
    assert not run_dir.exists()
    with pytest.raises(MissingDependencyError, match=r'pip install "secfed\[ray\]"'):
        make_backend(name="ray", factory=_factory(), num_clients=4)
    # The CLI stops with exit status 2 and creates nothing.
    out = tmp_path / "never"
    assert run_example(setting="experiment.backend=ray", out=out) == 2
    assert 'pip install "secfed[ray]"' in capsys.readouterr().err
    assert not out.exists()


class _FakeRay(ModuleType):
    """Just enough of Ray to check when the backend starts, joins and stops it."""

    def __init__(self, *, initialized: bool) -> None:
        super().__init__("ray")
        self.initialized = initialized
        self.init_calls: list[dict[str, Any]] = []
        self.shutdowns = 0
        self.exceptions = SimpleNamespace(RayError=RuntimeError, GetTimeoutError=TimeoutError)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs: Any) -> None:
        self.init_calls.append(kwargs)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialized = False

    def remote(self, cls: type) -> Any:
        return SimpleNamespace(options=lambda **_: SimpleNamespace(remote=lambda *a: None))


@pytest.mark.parametrize("address", ["", "ray://head:10001"])
def test_ray_is_shut_down_only_by_the_backend_that_started_it(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", address)
    fake = _FakeRay(initialized=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    backend = RayBackend(factory=_factory(), num_cpus=3)
    backend.start(site_ids=[])
    (call,) = fake.init_calls
    if address:  # join the cluster; local-only settings are not passed
        assert call["address"] == address and "num_cpus" not in call
    else:
        assert call["address"] == "local" and call["num_cpus"] == 3
        assert call["include_dashboard"] is False and call["log_to_driver"] is False
    backend.close()
    backend.close()
    assert fake.shutdowns == 1 and not fake.initialized
    # A Ray that was already running is used and left running.
    running = _FakeRay(initialized=True)
    monkeypatch.setitem(sys.modules, "ray", running)
    other = RayBackend(factory=_factory())
    other.start(site_ids=[])
    other.close()
    assert running.init_calls == [] and running.shutdowns == 0 and running.initialized
