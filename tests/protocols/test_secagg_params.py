"""Parameter selection and validation, and the SecAgg+ graph (property 12)."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ProtocolConfigError, SecAggConfig
from protocols.graph import build_graph, graph_seed


@pytest.mark.parametrize(("n", "k", "t"), [(100, 16, 6), (1000, 36, 19), (10_000, 42, 22)])
def test_derived_k_t_match_googles_reference_examples(n: int, k: int, t: int) -> None:
    """Semi-honest, 5 % corrupt, 10 % dropout (values from the notes / Google's finder)."""
    p = SecAggConfig(mode="secagg+", n=n, corrupt_fraction=0.05, dropout_rate=0.1).resolve()
    assert (p.k, p.t) == (k, t)
    assert p.log2_disconnect < -41
    assert p.log2_corrupt_tail <= -41
    assert p.log2_failure <= -20


def test_derived_parameters_meet_targets_and_are_minimal() -> None:
    for n in (20, 50, 100, 300, 1000):
        p = SecAggConfig(mode="secagg+", n=n, corrupt_fraction=0.05, dropout_rate=0.2).resolve()
        assert p.k % 2 == 0 or p.k == n - 1
        assert p.log2_disconnect < -41 and p.log2_corrupt_tail < -41 and p.log2_failure <= -20
        if p.k < n - 1 and p.k > 2:
            # one step smaller must fail the targets
            with pytest.raises(ProtocolConfigError):
                SecAggConfig(
                    mode="secagg+", n=n, k=p.k - 2, corrupt_fraction=0.05, dropout_rate=0.2
                ).resolve()
        with pytest.raises(ProtocolConfigError):
            SecAggConfig(
                mode="secagg+", n=n, k=p.k, t=p.t - 1, corrupt_fraction=0.05, dropout_rate=0.2
            ).resolve()


def test_secagg_full_graph_thresholds() -> None:
    p = SecAggConfig(mode="secagg", n=10, dropout_rate=0.2).resolve()
    assert p.k == 9 and p.t == 6
    # active: t >= floor((n + n_C) / 2) + 1
    for n, gamma in ((10, 0.05), (30, 0.2), (50, 0.1)):
        n_c = math.ceil(gamma * n)
        bound = (n + n_c) // 2 + 1
        p = SecAggConfig(mode="secagg", n=n, active=True, corrupt_fraction=gamma, dropout_rate=0.1).resolve()
        assert p.t >= bound
        with pytest.raises(ProtocolConfigError, match="active"):
            SecAggConfig(
                mode="secagg", n=n, t=bound - 1, active=True, corrupt_fraction=gamma, dropout_rate=0.1
            ).resolve()


def test_active_secagg_plus_needs_signer_overlap() -> None:
    p = SecAggConfig(mode="secagg+", n=200, active=True, corrupt_fraction=0.05, dropout_rate=0.1).resolve()
    passive = SecAggConfig(mode="secagg+", n=200, corrupt_fraction=0.05, dropout_rate=0.1).resolve()
    assert 2 * p.t > p.k + 1  # two t-sets of signers in N[u] overlap
    assert p.t > passive.t


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "secagg++", "n": 10}, "mode"),
        ({"n": 1}, "n must"),
        ({"n": 10, "bits": 65}, "bits"),
        ({"n": 10, "bits": 0}, "bits"),
        ({"n": 10, "corrupt_fraction": 1.0}, "corrupt_fraction"),
        ({"n": 10, "dropout_rate": -0.1}, "dropout_rate"),
        ({"n": 10, "corrupt_fraction": 0.5, "dropout_rate": 0.5}, "< 1"),
        ({"mode": "secagg+", "n": 50, "k": 9}, "even"),
        ({"mode": "secagg", "n": 50, "k": 8}, "complete graph"),
        (
            {"mode": "secagg+", "n": 50, "k": 8, "t": 1, "corrupt_fraction": 0, "dropout_rate": 0},
            r"t must be in",
        ),
        (
            {"mode": "secagg+", "n": 50, "k": 8, "t": 10, "corrupt_fraction": 0, "dropout_rate": 0},
            r"t must be in",
        ),
        ({"mode": "secagg+", "n": 50, "k": 8, "t": 5}, "disconnect"),
        ({"mode": "secagg", "n": 10, "t": 10, "dropout_rate": 0.2}, "exceeds"),
        ({"mode": "secagg", "n": 10, "t": 3}, "below the secure minimum"),
        ({"mode": "secagg+", "n": 10, "dropout_rate": 0.85}, "no \\(k, t\\)"),
    ],
)
def test_invalid_or_insecure_configs_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ProtocolConfigError, match=match):
        SecAggConfig(**kwargs).resolve()


def test_flower_setting_validates_only_without_corruption_or_dropout_assumptions() -> None:
    p = SecAggConfig(mode="secagg+", n=50, k=8, t=5, corrupt_fraction=0.0, dropout_rate=0.0).resolve()
    assert (p.k, p.t) == (8, 5)


def test_resolve_requires_n_and_checks_agreement() -> None:
    with pytest.raises(ProtocolConfigError):
        SecAggConfig(mode="secagg").resolve()
    with pytest.raises(ProtocolConfigError):
        SecAggConfig(mode="secagg", n=10).resolve(n=11)
    assert SecAggConfig(mode="secagg").resolve(n=10).n == 10


# ----------------------------------------------------------------------------- graph (property 12)
@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=3, max_value=80), data=st.data())
def test_harary_graph_is_k_regular_and_symmetric(n: int, data: st.DataObject) -> None:
    half = data.draw(st.integers(min_value=1, max_value=max(1, (n - 2) // 2)))
    k = 2 * half
    if k > n - 2:
        k = n - 1
    ids = data.draw(st.lists(st.integers(0, 2**32 - 2), min_size=n, max_size=n, unique=True))
    g = build_graph(nodes=ids, k=k, seed=os.urandom(16))
    for u in ids:
        nb = g.neighbours(u)
        assert u not in nb
        assert len(nb) == k
        assert nb <= set(ids)
        for v in nb:
            assert u in g.neighbours(v)
        assert g.closed_neighbours(u) == nb | {u}
    # the ring is a permutation and neighbours are the k/2 ring positions on each side
    assert sorted(g.ring) == sorted(ids)
    if k < n - 1:
        pos = {u: i for i, u in enumerate(g.ring)}
        for u in ids:
            dists = sorted(min((pos[v] - pos[u]) % n, (pos[u] - pos[v]) % n) for v in g.neighbours(u))
            assert dists == sorted(list(range(1, k // 2 + 1)) * 2)


def test_graph_is_determined_by_the_session_and_random_across_sessions() -> None:
    ids = list(range(100))
    sid = os.urandom(32)
    g1 = build_graph(nodes=ids, k=10, seed=graph_seed(session_id=sid))
    g2 = build_graph(nodes=list(reversed(ids)), k=10, seed=graph_seed(session_id=sid))
    assert g1.ring == g2.ring
    g3 = build_graph(nodes=ids, k=10, seed=graph_seed(session_id=os.urandom(32)))
    assert g3.ring != g1.ring
    assert g1.ring != tuple(ids)


def test_complete_graph_and_graph_validation() -> None:
    g = build_graph(nodes=[5, 1, 9], k=2, seed=os.urandom(16))
    assert g.complete and g.neighbours(1) == {5, 9}
    with pytest.raises(ProtocolConfigError):
        build_graph(nodes=list(range(10)), k=3, seed=os.urandom(16))
    with pytest.raises(ProtocolConfigError):
        build_graph(nodes=[1, 1, 2], k=2, seed=os.urandom(16))
    with pytest.raises(ProtocolConfigError):
        build_graph(nodes=list(range(10)), k=4, seed=b"short")
    with pytest.raises(ProtocolConfigError):
        build_graph(nodes=list(range(10)), k=4, seed=os.urandom(16)).neighbours(99)
