"""Backends: how request bytes reach the clients and answers come back.

A backend knows how to start the clients and move bytes; it knows nothing about learning.
The server only ever calls :meth:`Backend.request` with bytes and gets bytes back, so a new
backend plugs in without touching learners or the server: implement ``start``, ``request`` and
``close``.

* :class:`SequentialBackend` runs every client in this process, one after the other.
* :class:`MultiprocessBackend` runs each client in its own OS process (``spawn``), which loads
  and holds its own data; messages cross process boundaries as raw bytes over pipes.
* :class:`RayBackend` runs each client in its own Ray actor (on this machine, or on the cluster
  at ``RAY_ADDRESS``); the actor builds its :class:`~secfed.federation.client.ClientRuntime` from
  the plain-configuration factory, so the site's data is loaded and held only there, and requests
  and answers cross as ``bytes``. Ray is optional (``pip install "secfed[ray]"``) and imported
  only when this backend is chosen.

What each backend isolates (what the guarantees of secure aggregation and DP assume):

* **Sequential: nothing.** Every site's data, local update and secure-aggregation session
  secrets (key pairs, self-mask seeds, received shares) live in the server's process. The
  protocol messages are the only thing the server's *code* reads, but anyone who can inspect
  that process sees everything: "the server sees masked vectors only" holds for the server's
  code path, not for the process. Use it for simulation, tests and debugging.
* **Ray: trusted clusters only.** Ray moves actor arguments and return values with
  (cloud)pickle, and the driver unpickles each actor's result before the ``bytes`` check; a
  compromised or malicious site (or anyone who can write to the cluster's object store) can
  run code in the server's process. secfed's own message format never pickles; Ray's transport
  does. Use it for simulation on a cluster you control.
* **Multi-process: isolates.** Each site runs in its own OS process and exchanges only raw
  bytes with the server (``Connection.send_bytes`` / ``recv_bytes``; nothing is unpickled after
  start-up, which passes only the plain-configuration factory). Choose it when isolation
  matters; real deployments put each site on its own machine behind the same bytes interface.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from secfed.errors import BackendError
from secfed.optional import require_ray

__all__ = [
    "Backend",
    "SequentialBackend",
    "MultiprocessBackend",
    "RayBackend",
    "make_backend",
    "usable_cores",
    "default_threads",
    "MAX_DEFAULT_THREADS",
]

#: Upper bound of the automatic per-process torch thread count (small few-shot models gain little
#: from more intra-op threads, and every idle-spinning thread is lost to other jobs on the machine).
MAX_DEFAULT_THREADS = 4


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def default_threads(
    *, processes: int, cores: int | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Torch threads for each of ``processes`` processes that compute at the same time.

    Torch starts one intra-op thread per core in *every* process. With several processes (one per
    site), or other jobs on a shared machine, the threads outnumber the cores and torch's OpenMP
    threads wait on each other: the 2-core demo took 2.7 s idle and 138 s beside other jobs. The
    default leaves room instead:

    * ``OMP_NUM_THREADS`` set to a positive integer: that value (the user's choice, per process);
    * otherwise ``cores // (2 * processes)`` clamped to ``[1, MAX_DEFAULT_THREADS]``: one thread
      per site process whenever there are at least as many sites as cores, and in a single
      process half the cores (1 on a 2-core machine, 4 on 8 cores or more), so one competing
      CPU-bound job never leaves a torch thread without a core.

    ``experiment.threads > 0`` overrides this for every process of a run.

    Args:
        processes: Processes that compute concurrently (``>= 1``; the sites of a multi-process
            backend, 1 for in-process work).
        cores: Usable cores (default :func:`usable_cores`).
        environ: Environment to read ``OMP_NUM_THREADS`` from (default ``os.environ``).

    Returns:
        The thread count, ``>= 1``.

    Raises:
        ValueError: If ``processes`` or ``cores`` is below 1.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    n = usable_cores() if cores is None else cores
    if n < 1:
        raise ValueError(f"cores must be >= 1, got {n}")
    return max(1, min(MAX_DEFAULT_THREADS, n // (2 * processes)))


#: Builds the client-side handler of one site: ``factory(site_id) -> handler(request) -> response``.
ClientFactory = Callable[[int], Callable[[bytes], bytes]]


class Backend(ABC):
    """Moves request bytes to clients and their answers back."""

    name: str = "base"

    @abstractmethod
    def start(self, *, site_ids: Sequence[int]) -> None:
        """Start the clients.

        Args:
            site_ids: Ids of the sites to start.

        Raises:
            BackendError: If a client cannot be started.
        """

    @abstractmethod
    def request(self, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        """Deliver each site its request and return every answer.

        Clients on a parallel backend work concurrently.

        Args:
            messages: Request bytes by site id.

        Returns:
            Answer bytes by site id (all of them; simulated dropouts are applied by the caller).

        Raises:
            BackendError: If a client failed or vanished.
        """

    @abstractmethod
    def close(self) -> None:
        """Stop all clients (idempotent)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SequentialBackend(Backend):
    """All clients in this process, served one after another (deterministic).

    Isolates nothing: every site's data, update and session secrets share the server's
    process (simulation, tests and debugging only).
    """

    name = "sequential"

    def __init__(self, *, factory: ClientFactory) -> None:
        """Create the backend.

        Args:
            factory: Builds the handler of a site from its id.
        """
        self._factory = factory
        self.__handlers: dict[int, Callable[[bytes], bytes]] = {}

    def start(self, *, site_ids: Sequence[int]) -> None:
        for sid in site_ids:
            try:
                self.__handlers[sid] = self._factory(sid)
            except Exception as exc:
                raise BackendError(f"could not start site {sid}: {exc}") from exc

    def request(self, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for sid, payload in messages.items():
            if sid not in self.__handlers:
                raise BackendError(f"site {sid} is not running")
            out[sid] = bytes(self.__handlers[sid](bytes(payload)))
        return out

    def close(self) -> None:
        self.__handlers.clear()


def _client_process_main(conn: Connection, factory: ClientFactory, site_id: int, threads: int) -> None:
    """Entry point of one client process: build the site, then answer requests until EOF."""
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        handler = factory(site_id)
        conn.send_bytes(b"READY")
    except Exception as exc:  # report the failure to the parent as bytes
        conn.send_bytes(b"FAIL" + f"{type(exc).__name__}: {exc}".encode())
        return
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            response = handler(request)
        except Exception as exc:
            conn.send_bytes(b"FAIL" + f"{type(exc).__name__}: {exc}".encode())
            continue
        conn.send_bytes(b"OKAY" + response)


class MultiprocessBackend(Backend):
    """One OS process per client; bytes over pipes; clients compute in parallel.

    The backend that isolates: a site's data, update and secrets stay in its own process, and
    only raw bytes cross (``send_bytes`` / ``recv_bytes``; no unpickling of anything a site
    sends). Use it when isolation matters.
    """

    name = "multiprocess"

    def __init__(
        self, *, factory: ClientFactory, threads_per_client: int = 1, start_timeout_s: float = 300.0
    ) -> None:
        """Create the backend.

        Args:
            factory: Builds the handler of a site from its id; it runs *inside* the child process
                and must be importable (a module-level function or a picklable callable object
                holding only plain configuration, never data).
            threads_per_client: Torch threads of each client process.
            start_timeout_s: Seconds to wait for a client to load its data.
        """
        self._factory = factory
        self._threads = threads_per_client
        self._timeout = start_timeout_s
        self._procs: dict[int, Any] = {}
        self._conns: dict[int, Connection] = {}

    def start(self, *, site_ids: Sequence[int]) -> None:
        ctx = mp.get_context("spawn")
        for sid in site_ids:
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_client_process_main,
                args=(child, self._factory, sid, self._threads),
                name=f"secfed-site-{sid}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs[sid], self._conns[sid] = proc, parent
        for sid, conn in self._conns.items():
            if not conn.poll(self._timeout):
                self.close()
                raise BackendError(f"site {sid} did not start within {self._timeout:.0f} s")
            status = self._recv(sid)
            if status != b"READY":
                self.close()
                raise BackendError(f"site {sid} failed to start: {status[4:].decode(errors='replace')}")

    def _recv(self, sid: int) -> bytes:
        try:
            return self._conns[sid].recv_bytes()
        except (EOFError, OSError) as exc:
            raise BackendError(f"site {sid}'s process died (exit code {self._procs[sid].exitcode})") from exc

    def request(self, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        for sid, payload in messages.items():
            if sid not in self._conns:
                raise BackendError(f"site {sid} is not running")
            try:
                self._conns[sid].send_bytes(payload)
            except (OSError, BrokenPipeError) as exc:
                raise BackendError(f"site {sid}'s process is gone: {exc}") from exc
        out: dict[int, bytes] = {}
        for sid in messages:
            data = self._recv(sid)
            if data[:4] != b"OKAY":
                raise BackendError(f"site {sid} failed: {data[4:].decode(errors='replace')}")
            out[sid] = data[4:]
        return out

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except OSError:
                pass
        for proc in self._procs.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._conns.clear()
        self._procs.clear()


class _RaySite:
    """The body of one site's Ray actor: builds the site inside the actor, then answers bytes.

    Only the factory (plain configuration), the site id and the thread count cross into the
    actor; the site's data is loaded here and never leaves it.
    """

    def __init__(self, factory: ClientFactory, site_id: int, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self._handler: Callable[[bytes], bytes] | None = None
        self._error = ""
        try:
            self._handler = factory(site_id)
        except Exception as exc:  # reported by ready(), so the driver can name the site and cause
            self._error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> str:
        """Return ``""`` once the site is built, or why building it failed."""
        return self._error

    def handle(self, request: bytes) -> bytes:
        """Answer one request."""
        if self._handler is None:
            raise BackendError(f"the site was not built: {self._error}")
        return bytes(self._handler(bytes(request)))


def _ray_failure(exc: BaseException) -> str:
    """A one-line description of a Ray failure: the client's own exception where there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


class RayBackend(Backend):
    """One Ray actor per client; bytes in, bytes out; clients compute concurrently.

    For trusted clusters (simulation) only: Ray unpickles each actor's return value (cloudpickle)
    in the driver before secfed checks that it is ``bytes``, so a malicious site could run code
    in the server's process. secfed's own messages never pickle; Ray's transport does.

    Ray is imported when the backend is created; a missing Ray raises
    :class:`~secfed.errors.MissingDependencyError` before anything is started.
    """

    name = "ray"

    def __init__(
        self,
        *,
        factory: ClientFactory,
        threads_per_client: int = 1,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_site: float = 0.0,
        object_store_memory: int | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        """Create the backend (Ray is not started until :meth:`start`).

        Args:
            factory: Builds the handler of a site from its id; it runs *inside* the site's actor
                and must be importable there (a picklable callable object holding only plain
                configuration, never data). On a cluster every node needs secfed installed and
                the data at the path the configuration names.
            threads_per_client: Torch threads of each actor.
            address: Ray cluster to join; ``None`` reads ``RAY_ADDRESS``. When the address is
                empty (or ``RAY_ADDRESS`` unset) Ray is started on this machine. Ignored when Ray
                is already initialised in this process (the backend then uses that Ray and
                leaves it running).
            num_cpus: CPUs of a Ray started here (``None``: all of this machine's).
            cpus_per_site: CPUs each actor reserves with Ray's scheduler. The default 0 lets
                more sites than CPUs run; Ray is asked to spread the actors over the nodes either way.
            object_store_memory: Object store bytes of a Ray started here (``None``: Ray's
                default).
            start_timeout_s: Seconds to wait for all sites to load their data.

        Raises:
            MissingDependencyError: If Ray is not installed.
        """
        self._ray = require_ray()
        self._factory = factory
        self._threads = threads_per_client
        self._address = address
        self._num_cpus = num_cpus
        self._cpus_per_site = cpus_per_site
        self._object_store_memory = object_store_memory
        self._timeout = start_timeout_s
        self._actors: dict[int, Any] = {}
        self._started_ray = False

    def _init_ray(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        address = self._address if self._address is not None else os.environ.get("RAY_ADDRESS", "")
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(
                    address="local",
                    num_cpus=self._num_cpus if self._num_cpus is not None else os.cpu_count() or 1,
                    object_store_memory=self._object_store_memory,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        except Exception as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise BackendError(f"could not start {where}: {type(exc).__name__}: {exc}") from exc
        self._started_ray = True

    def start(self, *, site_ids: Sequence[int]) -> None:
        ray = self._ray
        self._init_ray()
        try:
            actor_cls = ray.remote(_RaySite).options(
                num_cpus=self._cpus_per_site, max_restarts=0, scheduling_strategy="SPREAD"
            )
            for sid in site_ids:
                self._actors[sid] = actor_cls.remote(self._factory, sid, self._threads)
            pending = {self._actors[sid].ready.remote(): sid for sid in site_ids}
        except Exception as exc:
            self.close()
            raise BackendError(f"could not create the Ray actors: {type(exc).__name__}: {exc}") from exc
        deadline = time.monotonic() + self._timeout
        while pending:  # in order of completion, so that a site that fails early is reported early
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                late = sorted(pending.values())
                self.close()
                raise BackendError(f"site {late[0]} did not start within {self._timeout:.0f} s")
            for ref in done:
                sid = pending.pop(ref)
                try:
                    error = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    self.close()
                    raise BackendError(f"site {sid}'s actor failed to start: {_ray_failure(exc)}") from exc
                if error:
                    self.close()
                    raise BackendError(f"site {sid} failed to start: {error}")

    def request(self, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        ray = self._ray
        missing = [sid for sid in messages if sid not in self._actors]
        if missing:
            raise BackendError(f"site {missing[0]} is not running")
        refs = {sid: self._actors[sid].handle.remote(bytes(payload)) for sid, payload in messages.items()}
        out: dict[int, bytes] = {}
        for sid, ref in refs.items():
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise BackendError(f"site {sid} failed: {_ray_failure(exc)}") from exc
            if not isinstance(answer, bytes):
                raise BackendError(f"site {sid} answered {type(answer).__name__}, not bytes")
            out[sid] = answer
        return out

    def close(self) -> None:
        ray = self._ray
        actors, self._actors = list(self._actors.values()), {}
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead, or Ray is gone: nothing left to stop
                pass
        if self._started_ray:
            self._started_ray = False
            if ray.is_initialized():
                ray.shutdown()


def make_backend(*, name: str, factory: ClientFactory, num_clients: int, threads: int = 0) -> Backend:
    """Build a backend by name.

    Args:
        name: ``sequential``, ``multiprocess`` or ``ray``.
        factory: Site handler factory.
        num_clients: Number of sites (to size the per-client thread count).
        threads: Torch threads of each client process or actor; 0 (the default) picks
            :func:`default_threads` for ``num_clients`` concurrent processes (1 per site on a
            machine with no more cores than sites). The sequential backend runs in the caller's
            process and leaves its setting alone.

    Returns:
        The backend (not yet started).

    Raises:
        BackendError: For an unknown name.
        MissingDependencyError: For ``ray`` when Ray is not installed.
    """
    if threads < 0:
        raise BackendError(f"threads must be >= 0, got {threads}")
    threads = threads or default_threads(processes=max(1, num_clients))
    if name == "sequential":
        return SequentialBackend(factory=factory)
    if name == "multiprocess":
        return MultiprocessBackend(factory=factory, threads_per_client=threads)
    if name == "ray":
        return RayBackend(factory=factory, threads_per_client=threads)
    raise BackendError(f"unknown backend {name!r}; choose 'sequential', 'multiprocess' or 'ray'")
