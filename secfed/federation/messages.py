"""The runtime's wire format between the server and the clients (bytes only, never pickle).

Layout of one message::

    magic b"SFM1" | u16 version | u32 header length | header (UTF-8 JSON)
    | tensor section (safetensors, length in header) | blob (length in header)

The header holds ``kind`` (what the message asks or answers), ``meta`` (JSON scalars) and the
section lengths. Tensors travel as safetensors (numpy arrays); an opaque ``blob`` carries the
secure-aggregation protocol's own binary messages. Every length is checked on decode.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from secfed.errors import MessageError

__all__ = ["Message", "encode_message", "decode_message", "WIRE_VERSION", "KINDS"]

MAGIC = b"SFM1"
WIRE_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
MAX_HEADER = 1 << 20

#: Message kinds of the runtime protocol.
KINDS = frozenset(
    {
        "info",
        "info_reply",
        "train",
        "train_reply",
        "agg",
        "agg_reply",
        "shutdown",
        "shutdown_reply",
        "error",
    }
)


@dataclass
class Message:
    """A decoded runtime message.

    Attributes:
        kind: One of :data:`KINDS`.
        meta: JSON-serialisable metadata.
        tensors: Named numpy arrays.
        blob: Opaque bytes (for example a secure-aggregation message).
    """

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    blob: bytes = b""


def encode_message(
    *,
    kind: str,
    meta: dict[str, Any] | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    blob: bytes = b"",
) -> bytes:
    """Serialise a message.

    Args:
        kind: Message kind (one of :data:`KINDS`).
        meta: JSON-serialisable metadata.
        tensors: Named numpy arrays (contiguous copies are made as needed).
        blob: Opaque payload.

    Returns:
        The message bytes.

    Raises:
        MessageError: For an unknown kind or metadata that is not JSON-serialisable.
    """
    if kind not in KINDS:
        raise MessageError(f"unknown message kind {kind!r}; allowed: {sorted(KINDS)}")
    tensor_bytes = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}) if tensors else b""
    try:
        header = json.dumps(
            {"kind": kind, "meta": meta or {}, "tensor_len": len(tensor_bytes), "blob_len": len(blob)},
            allow_nan=True,
        ).encode()
    except (TypeError, ValueError) as exc:
        raise MessageError(f"message meta is not JSON-serialisable: {exc}") from exc
    return b"".join((_PREFIX.pack(MAGIC, WIRE_VERSION, len(header)), header, tensor_bytes, bytes(blob)))


def decode_message(data: bytes, *, expect: str | None = None) -> Message:
    """Parse and check a message.

    Args:
        data: The bytes received.
        expect: If given, the kind the message must have (an ``error`` message is raised as such).

    Returns:
        The decoded message.

    Raises:
        MessageError: If the message is truncated, has trailing bytes, a bad magic or version,
            a malformed header, an unexpected kind, or reports an error from the peer.
    """
    if len(data) < _PREFIX.size:
        raise MessageError(f"message truncated: {len(data)} bytes, need at least {_PREFIX.size}")
    magic, version, hlen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise MessageError(f"bad magic {magic!r}: not a secfed message")
    if version != WIRE_VERSION:
        raise MessageError(f"unsupported wire version {version} (this build speaks {WIRE_VERSION})")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(data):
        raise MessageError(f"message truncated or header too long ({hlen} bytes)")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + hlen]))
        kind, meta, tlen, blen = (
            header["kind"],
            header["meta"],
            int(header["tensor_len"]),
            int(header["blob_len"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"malformed message header: {exc}") from exc
    if kind not in KINDS or not isinstance(meta, dict) or tlen < 0 or blen < 0:
        raise MessageError(f"malformed message header: kind={kind!r}")
    start = _PREFIX.size + hlen
    if start + tlen + blen != len(data):
        raise MessageError(
            f"message length mismatch: header says {start + tlen + blen} bytes, got {len(data)}"
        )
    tensors: dict[str, np.ndarray] = {}
    if tlen:
        try:
            tensors = dict(st_load(bytes(data[start : start + tlen])))
        except Exception as exc:  # safetensors raises its own error types
            raise MessageError(f"malformed tensor section: {exc}") from exc
    msg = Message(kind=kind, meta=meta, tensors=tensors, blob=bytes(data[start + tlen :]))
    if kind == "error" and expect != "error":
        raise MessageError(f"peer reported an error: {meta.get('error', '?')}")
    if expect is not None and kind != expect:
        raise MessageError(f"expected a {expect!r} message, got {kind!r}")
    return msg
