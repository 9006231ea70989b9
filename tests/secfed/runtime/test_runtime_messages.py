"""The runtime wire format rejects malformed input with typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secfed.errors import MessageError
from secfed.federation.messages import decode_message, encode_message


def test_round_trip() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = encode_message(kind="train", meta={"round": 3, "a": [1, 2]}, tensors={"state": x}, blob=b"xyz")
    msg = decode_message(data, expect="train")
    assert msg.meta == {"round": 3, "a": [1, 2]} and msg.blob == b"xyz"
    np.testing.assert_array_equal(msg.tensors["state"], x)


def test_rejects_wrong_kind_magic_version_and_peer_error() -> None:
    data = encode_message(kind="info")
    with pytest.raises(MessageError, match="expected a 'train'"):
        decode_message(data, expect="train")
    with pytest.raises(MessageError, match="bad magic"):
        decode_message(b"XXXX" + data[4:])
    with pytest.raises(MessageError, match="unsupported wire version"):
        decode_message(data[:4] + b"\x09\x00" + data[6:])
    with pytest.raises(MessageError, match="peer reported an error"):
        decode_message(encode_message(kind="error", meta={"error": "boom"}))
    with pytest.raises(MessageError, match="unknown message kind"):
        encode_message(kind="pickle")


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200), extra=st.binary(min_size=1, max_size=8))
def test_truncation_and_trailing_bytes(cut: int, extra: bytes) -> None:
    data = encode_message(kind="train", meta={"round": 1}, tensors={"s": np.ones(8, np.float32)}, blob=b"abc")
    cut = min(cut, len(data) - 1)
    with pytest.raises(MessageError):
        decode_message(data[:cut])
    with pytest.raises(MessageError):
        decode_message(data + extra)


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=64))
def test_random_bytes_never_crash_untyped(junk: bytes) -> None:
    try:
        decode_message(junk)
    except MessageError:
        pass
