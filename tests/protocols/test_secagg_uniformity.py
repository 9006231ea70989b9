"""Property 4: a single masked vector is uniform whatever the input (chi-square / KS)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from secagg_harness import Harness

from protocols import SecAggConfig, Stage
from protocols import messages as msg
from protocols.wire import unpack_message

P_MIN = 1e-6  # per-test false-alarm rate of a correct implementation


def _masked_vectors(
    *, bits: int, m: int, inputs: dict[int, np.ndarray], mode: str = "secagg"
) -> dict[int, np.ndarray]:
    cfg = SecAggConfig(mode=mode, bits=bits, dropout_rate=0.0, corrupt_fraction=0.0)  # type: ignore[arg-type]
    h = Harness(config=cfg, ids=sorted(inputs), m=m, inputs=inputs)
    while h.server.stage != Stage.COLLECT_MASKED_INPUT:
        h.step()
    _, _, responses = h.step()
    return {
        u: msg.decode_masked(bytes(unpack_message(r)[1]), bits=bits, length=m).astype(np.uint64)
        for u, r in responses.items()
    }


@pytest.mark.parametrize("pattern", ["zeros", "max", "alternating", "ramp"])
def test_masked_vector_is_uniform_for_extreme_inputs(pattern: str) -> None:
    bits, m = 8, 64_000
    top = 2**bits - 1
    base = {
        "zeros": np.zeros(m, dtype=np.uint64),
        "max": np.full(m, top, dtype=np.uint64),
        "alternating": np.tile(np.array([0, top], dtype=np.uint64), m // 2),
        "ramp": (np.arange(m, dtype=np.uint64) % (top + 1)),
    }[pattern]
    ys = _masked_vectors(bits=bits, m=m, inputs={0: base, 1: base.copy(), 2: np.zeros(m, dtype=np.uint64)})
    y = ys[0]
    assert y.max() <= top
    counts = np.bincount(y.astype(np.int64), minlength=top + 1)
    assert stats.chisquare(counts).pvalue > P_MIN
    # no per-position leakage: y - x is uniform too, and pairs of consecutive words are independent
    pairs = (y[0::2] * (top + 1) + y[1::2]).astype(np.int64)
    pair_counts = np.bincount(pairs % 4096, minlength=4096)
    assert stats.chisquare(pair_counts).pvalue > P_MIN


def test_masked_vectors_for_opposite_inputs_are_indistinguishable() -> None:
    bits, m = 8, 64_000
    lo = np.zeros(m, dtype=np.uint64)
    hi = np.full(m, 2**bits - 1, dtype=np.uint64)
    ys = _masked_vectors(bits=bits, m=m, inputs={0: lo, 1: hi, 2: lo.copy()})
    table = np.stack([np.bincount(ys[u].astype(np.int64), minlength=256) for u in (0, 1)])
    assert stats.chi2_contingency(table).pvalue > P_MIN


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_masked_vector_is_uniform_in_32_bits_ks(mode: str) -> None:
    m = 50_000
    inputs = {u: np.full(m, (2**32 - 1) if u % 2 else 0, dtype=np.uint64) for u in range(6)}
    ys = _masked_vectors(bits=32, m=m, inputs=inputs, mode=mode)
    for u in (0, 1):
        assert stats.kstest(ys[u] / 2.0**32, "uniform").pvalue > P_MIN
        assert not np.any(ys[u] == inputs[u])  # P(any equal) ~ m / 2^32
