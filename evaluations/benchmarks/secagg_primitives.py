"""Microbenchmarks of secure aggregation's primitives: the masks' keystream and a client's masking.

The keystream rate of the masks' PRG (AES-128-CTR, drawn from OpenSSL's AES-GCM path,
:mod:`protocols.prg`; OpenSSL's CTR mode is measured beside it) and the client masking rate, to see
how close masking is to the keystream limit. Part of ``python -m evaluations.benchmarks.secagg``
(:mod:`evaluations.benchmarks.secagg`), which prints and records them.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.crypto import agree, generate_key_pair, pack_ids
from protocols.prg import MaskExpander, derive_mask_key, keystream_encryptor
from protocols.scratch import zero_bytes

__all__ = ["keystream_rate", "masking_rate"]

_KS_CHUNK = MaskExpander.CHUNK_BYTES
_KS_ZEROS = zero_bytes(_KS_CHUNK)
_KS_BUF = bytearray(_KS_CHUNK + 16)


def _keystream_chunked(keys: list[bytes], nbytes: int) -> None:
    """Produce ``nbytes`` of the PRG's keystream for every key, chunk by chunk (the masking chunk
    size) into one reused, preallocated buffer: the keystream limit of masking, with no
    allocation in the timing."""
    encs = [keystream_encryptor(key=k) for k in keys]
    for start in range(0, nbytes, _KS_CHUNK):
        z = _KS_ZEROS[: min(_KS_CHUNK, nbytes - start)]
        for e in encs:
            e.update_into(z, _KS_BUF)


def keystream_rate(*, nbytes: int, reps: int) -> dict[str, float]:
    """Keystream rates in GB/s (best call) of the PRG (AES-128-CTR drawn from OpenSSL's GCM path,
    see :mod:`protocols.prg`): one big buffer per call, and chunked; and of the same kind of
    keystream from OpenSSL's CTR mode, for comparison."""
    key = os.urandom(16)
    zeros = bytes(nbytes)
    buf = bytearray(nbytes + 16)

    def whole() -> None:
        keystream_encryptor(key=key).update_into(zeros, buf)

    def ctr_mode() -> None:
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buf)

    out = {"whole_buffer": math.inf, "chunked": math.inf, "ctr_mode_whole_buffer": math.inf}
    fns = (
        ("whole_buffer", whole),
        ("chunked", lambda: _keystream_chunked([key], nbytes)),
        ("ctr_mode_whole_buffer", ctr_mode),
    )
    for _, fn in fns:
        fn()
    for _ in range(reps):  # interleaved, best single call
        for name, fn in fns:
            t0 = time.perf_counter()
            fn()
            out[name] = min(out[name], time.perf_counter() - t0)
    out = {name: nbytes / best / 1e9 for name, best in out.items()}
    return out


def masking_rate(*, m: int, neighbours: int, reps: int) -> dict[str, float]:
    """A client's masking step (``neighbours`` pairwise masks incl. X25519 + HKDF, plus the self
    mask), and its expansion-and-accumulation part alone (keys already derived), against the
    keystream alone for the same number of masks (the AES-CTR limit)."""
    own = generate_key_pair()
    peers = [generate_key_pair().public_bytes for _ in range(neighbours)]
    sid = os.urandom(32)
    seed = os.urandom(32)
    x = np.random.default_rng(0).integers(0, 2**32, size=m, dtype=np.uint32)  # an encoder's output
    ks_keys = [os.urandom(16) for _ in range(neighbours + 1)]

    def mask() -> np.ndarray:
        """Exactly the client's masking step (SecAggClientSession._mask)."""
        masks = [(derive_mask_key(seed=seed, session_id=sid, purpose="self-mask", ids=pack_ids([0])), 1)]
        for i, pk in enumerate(peers, start=1):
            s = agree(private=own.private, public=pk, checked=True)
            masks.append(
                (derive_mask_key(seed=s, session_id=sid, purpose="pair-mask", ids=pack_ids([0, i])), -1)
            )
        return MaskExpander(length=m, bits=32).mask_vector(value=x, masks=masks, bits=32)

    fixed_masks = [(k, 1 if i % 2 else -1) for i, k in enumerate(ks_keys)]

    def expand() -> np.ndarray:
        """The mask expansion and accumulation alone, for keys already derived."""
        return MaskExpander(length=m, bits=32).mask_vector(value=x, masks=fixed_masks, bits=32)

    def keystream_only() -> None:
        _keystream_chunked(ks_keys, 4 * m)

    # interleaved, best of ``reps`` single calls: robust to load spikes on a shared machine
    mask()
    expand()
    keystream_only()
    timings = {"mask": math.inf, "expand": math.inf, "keystream": math.inf}
    for _ in range(reps):
        for name, fn in (("mask", mask), ("expand", expand), ("keystream", keystream_only)):
            t0 = time.perf_counter()
            fn()
            timings[name] = min(timings[name], time.perf_counter() - t0)
    gb = 4 * m * (neighbours + 1) / 1e9
    return {
        "m": m,
        "masks": neighbours + 1,
        "mask_ms": 1e3 * timings["mask"],
        "keystream_ms": 1e3 * timings["keystream"],
        "mask_over_keystream": timings["mask"] / timings["keystream"],
        "expand_ms": 1e3 * timings["expand"],
        "expand_over_keystream": timings["expand"] / timings["keystream"],
        "mask_GBps": gb / timings["mask"],
        "keystream_GBps": gb / timings["keystream"],
    }
