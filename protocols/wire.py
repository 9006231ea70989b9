"""Versioned, length-checked binary framing of protocol messages.

Every message is ``header || body`` with a fixed 52-byte big-endian header::

    magic   4s  b"SFSA"
    version B   WIRE_VERSION
    stage   B   Stage code
    kind    B   1 = request (server -> client), 2 = response (client -> server)
    flags   B   must be 0
    sender  I   client id, or SERVER_ID
    receiver I  client id, or SERVER_ID
    session 32s pre-session id (setup stage) or session id
    length  I   body length; the message must be exactly header + length bytes

Bodies are read with :class:`Reader`, which raises :class:`TruncatedMessageError` when a field
runs past the end and :class:`MalformedMessageError` on trailing bytes. No pickle, no
self-describing formats: every field has a fixed type and position.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from protocols.errors import (
    DuplicateEntryError,
    MalformedMessageError,
    StageError,
    TruncatedMessageError,
    VersionError,
)
from protocols.stages import Stage

__all__ = [
    "MAGIC",
    "WIRE_VERSION",
    "SERVER_ID",
    "HEADER_BYTES",
    "Kind",
    "Header",
    "pack_message",
    "unpack_message",
    "Reader",
    "Writer",
    "check_increasing",
    "check_increasing_array",
]

MAGIC = b"SFSA"
WIRE_VERSION = 2  # 2: the masked-input body is padded so that its vector is aligned
SERVER_ID = 0xFFFFFFFF
_HEADER = struct.Struct(">4sBBBBII32sI")
HEADER_BYTES = _HEADER.size
MAX_BODY_BYTES = 2**32 - 1


class Kind(IntEnum):
    """Direction of a message."""

    REQUEST = 1
    RESPONSE = 2


class Header(NamedTuple):
    """Parsed message header (an immutable named tuple: cheap to build once per message).

    Attributes:
        stage: Protocol stage.
        kind: Request or response.
        sender: Sender id (``SERVER_ID`` for the server).
        receiver: Receiver id (``SERVER_ID`` for the server).
        session: 32-byte (pre-)session id.
    """

    stage: Stage
    kind: Kind
    sender: int
    receiver: int
    session: bytes


_STAGES = {int(s_): s_ for s_ in Stage}
_KINDS = {int(k_): k_ for k_ in Kind}


def pack_message(*, header: Header, body: bytes | list[bytes | memoryview]) -> bytes:
    """Frame a body.

    Args:
        header: The header fields.
        body: Encoded body, or a list of parts joined with a single copy.

    Returns:
        The message bytes.

    Raises:
        MalformedMessageError: If the session id is not 32 bytes or the body is too long.
    """
    if len(header.session) != 32:
        raise MalformedMessageError("session id must be 32 bytes")
    parts = body if isinstance(body, list) else [body]
    length = sum(memoryview(p_).nbytes for p_ in parts)
    if length > MAX_BODY_BYTES:
        raise MalformedMessageError("message body too long")
    head = _HEADER.pack(
        MAGIC,
        WIRE_VERSION,
        int(header.stage),
        int(header.kind),
        0,
        header.sender,
        header.receiver,
        header.session,
        length,
    )
    return b"".join([head, *parts])


def unpack_message(data: bytes | bytearray | memoryview) -> tuple[Header, memoryview]:
    """Parse and length-check a framed message.

    Args:
        data: Message bytes.

    Returns:
        The header and a view of the body.

    Raises:
        TruncatedMessageError: If ``data`` is shorter than the header or the declared length.
        MalformedMessageError: On bad magic, flags, kind, trailing bytes or a non-bytes input.
        VersionError: On an unknown wire version.
        StageError: On an unknown stage code.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"message must be bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < HEADER_BYTES:
        raise TruncatedMessageError(
            f"message of {len(view)} bytes is shorter than the {HEADER_BYTES}-byte header"
        )
    magic, version, stage, kind, flags, sender, receiver, session, length = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise MalformedMessageError(f"bad magic {magic!r}")
    if version != WIRE_VERSION:
        raise VersionError(f"unsupported wire version {version} (this is version {WIRE_VERSION})")
    if flags != 0:
        raise MalformedMessageError(f"reserved flags must be 0, got {flags}")
    stage_v = _STAGES.get(stage)
    if stage_v is None:
        raise StageError(f"unknown stage code {stage}")
    kind_v = _KINDS.get(kind)
    if kind_v is None:
        raise MalformedMessageError(f"unknown message kind {kind}")
    total = HEADER_BYTES + length
    if len(view) < total:
        raise TruncatedMessageError(
            f"message declares {length} body bytes but has {len(view) - HEADER_BYTES}"
        )
    if len(view) > total:
        raise MalformedMessageError(f"{len(view) - total} trailing bytes after the declared body")
    return Header(stage_v, kind_v, sender, receiver, bytes(session)), view[HEADER_BYTES:]


class Reader:
    """Sequential reader over a body with bounds checks.

    Args:
        body: Body bytes.
    """

    def __init__(self, body: bytes | memoryview) -> None:
        self._view = memoryview(body).cast("B")
        self._pos = 0

    def _take(self, n: int, what: str) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._view):
            raise TruncatedMessageError(f"message truncated while reading {what}")
        out = self._view[self._pos : end]
        self._pos = end
        return out

    def u8(self, what: str = "u8") -> int:
        """Read an unsigned byte."""
        return self._take(1, what)[0]

    def u32(self, what: str = "u32") -> int:
        """Read a big-endian uint32."""
        return int.from_bytes(self._take(4, what), "big")

    def u64(self, what: str = "u64") -> int:
        """Read a big-endian uint64."""
        return int.from_bytes(self._take(8, what), "big")

    def f64(self, what: str = "f64") -> float:
        """Read a big-endian IEEE-754 double."""
        return float(struct.unpack(">d", self._take(8, what))[0])

    def raw(self, n: int, what: str = "bytes") -> bytes:
        """Read ``n`` bytes."""
        return bytes(self._take(n, what))

    def view(self, n: int, what: str = "bytes") -> memoryview:
        """Read ``n`` bytes as a zero-copy view."""
        return self._take(n, what)

    def count(self, *, limit: int, what: str) -> int:
        """Read a uint32 element count and check it against ``limit``."""
        c = self.u32(what)
        if c > limit:
            raise MalformedMessageError(f"{what} count {c} exceeds the limit {limit}")
        return c

    def id_list(self, *, limit: int, what: str) -> tuple[int, ...]:
        """Read ``count || ids`` with strictly increasing uint32 ids.

        Raises:
            DuplicateEntryError: If an id repeats.
            MalformedMessageError: If ids are not sorted.
        """
        c = self.count(limit=limit, what=what)
        raw = self._take(4 * c, what)
        arr = np.frombuffer(raw, dtype=">u4").astype(np.int64)
        check_increasing_array(arr, what=what)
        return tuple(arr.tolist())

    def end(self) -> None:
        """Require that the whole body was consumed.

        Raises:
            MalformedMessageError: On trailing bytes.
        """
        if self._pos != len(self._view):
            raise MalformedMessageError(f"{len(self._view) - self._pos} unexpected trailing body bytes")


def check_increasing(ids: tuple[int, ...] | list[int], *, what: str) -> None:
    """Require strictly increasing ids.

    Args:
        ids: Ids in message order.
        what: Field name for the error message.

    Raises:
        DuplicateEntryError: If an id repeats.
        MalformedMessageError: If ids are out of order.
    """
    seq = list(ids)
    if len(set(seq)) == len(seq) and seq == sorted(seq):  # the common, valid case at C speed
        return
    for a, b in zip(seq, seq[1:], strict=False):
        if b == a:
            raise DuplicateEntryError(f"duplicate id {a} in {what}")
        if b < a:
            raise MalformedMessageError(f"ids in {what} are not sorted")


def check_increasing_array(ids: np.ndarray, *, what: str) -> None:
    """Vectorised :func:`check_increasing`.

    Args:
        ids: Integer ids in message order.
        what: Field name for the error message.

    Raises:
        DuplicateEntryError: If an id repeats.
        MalformedMessageError: If ids are out of order.
    """
    if ids.shape[0] < 512:  # numpy's per-call overhead dominates for short lists
        check_increasing(ids.tolist(), what=what)
        return
    d = np.diff(ids)
    if np.any(d == 0):
        raise DuplicateEntryError(f"duplicate id in {what}")
    if np.any(d < 0):
        raise MalformedMessageError(f"ids in {what} are not sorted")


class Writer:
    """Accumulates body fields (big-endian)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        """Append an unsigned byte."""
        self._parts.append(struct.pack(">B", v))
        return self

    def u32(self, v: int) -> Writer:
        """Append a uint32."""
        self._parts.append(struct.pack(">I", v))
        return self

    def u64(self, v: int) -> Writer:
        """Append a uint64."""
        self._parts.append(struct.pack(">Q", v))
        return self

    def f64(self, v: float) -> Writer:
        """Append a double."""
        self._parts.append(struct.pack(">d", v))
        return self

    def raw(self, b: bytes) -> Writer:
        """Append raw bytes."""
        self._parts.append(bytes(b))
        return self

    def id_list(self, ids: tuple[int, ...] | list[int]) -> Writer:
        """Append ``count || ids`` (ids must already be sorted)."""
        self._parts.append(struct.pack(f">I{len(ids)}I", len(ids), *ids))
        return self

    def getvalue(self) -> bytes:
        """Return the body."""
        return b"".join(self._parts)
