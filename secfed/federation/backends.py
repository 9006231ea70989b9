"""Backends: how request bytes reach the clients and answers come back.

A backend knows how to start the clients and move bytes; it knows nothing about learning.
The server only ever calls :meth:`Backend.request` with bytes and gets bytes back, so a new
backend (for example Ray actors, each owning a :class:`~secfed.federation.client.ClientRuntime`)
plugs in without touching learners or the server: implement ``start``, ``request`` and ``close``.

* :class:`SequentialBackend` runs every client in this process, one after the other.
* :class:`MultiprocessBackend` runs each client in its own OS process (``spawn``), which loads
  and holds its own data; messages cross process boundaries as raw bytes over pipes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from secfed.errors import BackendError

__all__ = ["Backend", "SequentialBackend", "MultiprocessBackend", "make_backend"]

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
    """All clients in this process, served one after another (deterministic)."""

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
    """One OS process per client; bytes over pipes; clients compute in parallel."""

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


def make_backend(*, name: str, factory: ClientFactory, num_clients: int) -> Backend:
    """Build a backend by name.

    Args:
        name: ``sequential`` or ``multiprocess``.
        factory: Site handler factory.
        num_clients: Number of sites (to size the per-process thread count).

    Returns:
        The backend (not yet started).

    Raises:
        BackendError: For an unknown name.
    """
    if name == "sequential":
        return SequentialBackend(factory=factory)
    if name == "multiprocess":
        threads = max(1, (os.cpu_count() or 1) // max(1, num_clients))
        return MultiprocessBackend(factory=factory, threads_per_client=threads)
    raise BackendError(f"unknown backend {name!r}; choose 'sequential' or 'multiprocess'")
