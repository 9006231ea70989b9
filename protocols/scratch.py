"""Per-thread scratch buffers for the vector hot paths (masking and quantisation).

A client masks and quantises vectors of hundreds of kilobytes once per round. Allocating fresh
buffers of that size each time costs more than the arithmetic on them: the allocator hands large
blocks back to the operating system when they are freed, so every new buffer is page-faulted in
again (on the 2-core benchmark machine, ten masks of 100k words took 1.00 ms with a fresh chunk
buffer per call and 0.66 ms with a reused one, median of 300). Buffers here are owned by the
calling thread, reused across calls and never returned to callers: a function borrows one, uses
it and is done with it before returning. Two live borrows need two different names.
:func:`zero_bytes` is the shared read-only zero plaintext for AES-CTR keystreams.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["scratch", "zero_bytes"]

_local = threading.local()
_zeros_lock = threading.Lock()
_zeros: bytes = b""


def zero_bytes(n: int) -> memoryview:
    """A read-only view of ``n`` zero bytes: the plaintext AES-CTR turns into keystream.

    One process-wide buffer, grown on demand, so no caller zero-fills a fresh one per call.

    Args:
        n: Number of bytes.

    Returns:
        The view.
    """
    global _zeros
    with _zeros_lock:
        if len(_zeros) < n:
            _zeros = bytes(n)
        return memoryview(_zeros)[:n]


def scratch(*, name: str, nbytes: int) -> np.ndarray:
    """Borrow this thread's scratch buffer ``name`` with at least ``nbytes`` bytes.

    The contents are arbitrary. The buffer stays valid until the next borrow of the same name in
    the same thread; callers must not keep it (or views of it) beyond their own call.

    Args:
        name: Buffer name; distinct names give distinct buffers.
        nbytes: Bytes needed (> 0).

    Returns:
        A uint8 array of exactly ``nbytes`` (a view of a possibly larger buffer), 64-byte aligned.

    Raises:
        ValueError: If ``nbytes < 1``.
    """
    if nbytes < 1:
        raise ValueError(f"scratch size must be >= 1 byte, got {nbytes}")
    pool: dict[str, np.ndarray] | None = getattr(_local, "pool", None)
    if pool is None:
        pool = {}
        _local.pool = pool
    buf = pool.get(name)
    if buf is None or buf.size < nbytes + 64:
        buf = np.empty(max(nbytes + 64, 2 * buf.size if buf is not None else 0), dtype=np.uint8)
        pool[name] = buf
    start = (-buf.ctypes.data) % 64
    return buf[start : start + nbytes]
