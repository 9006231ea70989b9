"""Tests of the record-to-episode sampler (privacy unit: one record; add/remove adjacency)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.sampling import (
    RecordEpisodeSampler,
    assign_records,
    derive_sampling_key,
    draw_slots,
    record_uniforms,
)

SEED = b"site-secret-seed-for-tests-0123456789"
CLASSES = list(range(10))


def _assignment(*, labels, record_ids, step, q=0.6, p_s=0.5, num_slots=4, n_way=3, seed=SEED):
    key = derive_sampling_key(secret_seed=seed)
    slots = draw_slots(classes=CLASSES, num_slots=num_slots, n_way=n_way, public_seed=7, step=step)
    u = record_uniforms(key=key, record_ids=record_ids, step=step)
    return assign_records(labels=labels, slots=slots, uniforms=u, sample_rate=q, support_prob=p_s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data_seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 60),
    step=st.integers(0, 1000),
    q=st.floats(0.05, 1.0),
    removed=st.integers(0, 10_000),
)
def test_removing_a_record_leaves_every_other_assignment_unchanged(data_seed, n, step, q, removed):
    """Independence: record i's (sampled, slot, role) is the same whether or not record j exists."""
    rng = np.random.default_rng(data_seed)
    labels = rng.integers(0, len(CLASSES), size=n)
    ids = rng.choice(10 * n, size=n, replace=False)  # stable, non-contiguous record ids
    j = removed % n
    keep = np.arange(n) != j
    full = _assignment(labels=labels, record_ids=ids, step=step, q=q)
    less = _assignment(labels=labels[keep], record_ids=ids[keep], step=step, q=q)
    for a, b in zip(full, less, strict=True):
        np.testing.assert_array_equal(a[keep], b)


def test_assignment_of_others_does_not_depend_on_whether_record_j_was_sampled():
    """Force record j in and out of the Poisson sample: nobody else's decision moves."""
    rng = np.random.default_rng(3)
    n = 200
    labels = rng.integers(0, len(CLASSES), size=n)
    key = derive_sampling_key(secret_seed=SEED)
    slots = draw_slots(classes=CLASSES, num_slots=5, n_way=4, public_seed=1, step=11)
    u = record_uniforms(key=key, record_ids=np.arange(n), step=11)
    for j in (0, 17, 199):
        u_in, u_out = u.copy(), u.copy()
        u_in[j, 0], u_out[j, 0] = 0.0, 0.999999
        a = assign_records(labels=labels, slots=slots, uniforms=u_in, sample_rate=0.3, support_prob=0.5)
        b = assign_records(labels=labels, slots=slots, uniforms=u_out, sample_rate=0.3, support_prob=0.5)
        assert a[0][j] and not b[0][j]
        others = np.arange(n) != j
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x[others], y[others])


def test_poisson_inclusion_rate_and_independence_across_steps():
    n, q, steps = 20_000, 0.1, 6
    labels = np.arange(n) % len(CLASSES)
    sampler = RecordEpisodeSampler(
        labels=labels, classes=CLASSES, num_slots=3, n_way=3, sample_rate=q, secret_seed=SEED
    )
    draws = np.stack([sampler.sample().sampled for _ in range(steps)])
    se = np.sqrt(q * (1 - q) / (n * steps))
    assert abs(draws.mean() - q) < 5 * se
    # Batch sizes vary (Poisson, not fixed-size batches).
    assert len(set(draws.sum(axis=1).tolist())) > 1
    # Consecutive steps are independent: P(in both) ~= q^2.
    both = (draws[:-1] & draws[1:]).mean()
    assert abs(both - q * q) < 5 * np.sqrt(q * q * (1 - q * q) / (n * (steps - 1)))
    assert sampler.step == steps


def test_roles_slots_and_relabelling():
    rng = np.random.default_rng(5)
    n = 6000
    labels = rng.integers(0, len(CLASSES), size=n)
    sampler = RecordEpisodeSampler(
        labels=labels,
        classes=CLASSES,
        num_slots=6,
        n_way=4,
        sample_rate=0.5,
        support_prob=0.3,
        secret_seed=SEED,
    )
    out = sampler.sample()
    assigned = out.slot_of >= 0
    # Every assigned record was sampled and its class is in its slot; unassigned sampled records'
    # classes are in no slot.
    assert np.all(out.sampled[assigned])
    for i in np.flatnonzero(assigned):
        assert labels[i] in out.slots[out.slot_of[i]]
    unused = out.sampled & ~assigned
    assert not np.isin(labels[unused], out.slots.ravel()).any()
    # Support fraction ~ p_s.
    frac = out.is_support[assigned].mean()
    assert abs(frac - 0.3) < 5 * np.sqrt(0.3 * 0.7 / assigned.sum())
    # Episodes partition the assigned records; labels are positions in the slot's class tuple.
    seen = []
    for ep in out.episodes:
        for idx, lab in ((ep.support_index, ep.support_label), (ep.query_index, ep.query_label)):
            np.testing.assert_array_equal(np.asarray(ep.classes)[lab], labels[idx])
            assert np.all(out.slot_of[idx] == ep.slot)
            seen.extend(idx.tolist())
        assert np.all(out.is_support[ep.support_index]) and not np.any(out.is_support[ep.query_index])
    assert sorted(seen) == np.flatnonzero(assigned).tolist()
    assert all(ep.usable == (ep.support_index.size > 0 and ep.query_index.size > 0) for ep in out.episodes)


def test_slot_choice_is_uniform_among_slots_containing_the_class():
    # Public plan where class 0 is in slots 0, 2 and 3.
    slots = np.array([[0, 1], [2, 3], [0, 4], [5, 0]])
    n = 30_000
    labels = np.zeros(n, dtype=np.int64)
    key = derive_sampling_key(secret_seed=SEED)
    u = record_uniforms(key=key, record_ids=np.arange(n), step=0)
    _, slot_of, _ = assign_records(labels=labels, slots=slots, uniforms=u, sample_rate=1.0, support_prob=0.5)
    counts = np.bincount(slot_of, minlength=4)
    assert counts[1] == 0
    np.testing.assert_allclose(counts[[0, 2, 3]] / n, 1 / 3, atol=0.015)


def test_slots_are_public_and_data_independent():
    a = draw_slots(classes=CLASSES, num_slots=5, n_way=3, public_seed=9, step=4)
    b = draw_slots(classes=CLASSES, num_slots=5, n_way=3, public_seed=9, step=4)
    c = draw_slots(classes=CLASSES, num_slots=5, n_way=3, public_seed=9, step=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert all(len(set(row.tolist())) == 3 for row in a)
    # The plan inside the sampler does not depend on the labels.
    s1 = RecordEpisodeSampler(
        labels=np.zeros(50, dtype=int), classes=CLASSES, num_slots=5, n_way=3, sample_rate=0.5, public_seed=9
    )
    s2 = RecordEpisodeSampler(
        labels=np.arange(50) % 10, classes=CLASSES, num_slots=5, n_way=3, sample_rate=0.5, public_seed=9
    )
    for _ in range(5):
        s1.sample(), s2.sample()
    np.testing.assert_array_equal(s1.sample().slots, s2.sample().slots)


def test_randomness_is_keyed_by_secret_and_step():
    ids = np.arange(1000)
    k1 = derive_sampling_key(secret_seed=SEED)
    k2 = derive_sampling_key(secret_seed=b"another-secret-seed-0123456789")
    u = record_uniforms(key=k1, record_ids=ids, step=3)
    np.testing.assert_array_equal(u, record_uniforms(key=k1, record_ids=ids, step=3))
    assert not np.allclose(u, record_uniforms(key=k1, record_ids=ids, step=4))
    assert not np.allclose(u, record_uniforms(key=k2, record_ids=ids, step=3))
    assert u.min() >= 0.0 and u.max() < 1.0
    # A default sampler uses a fresh os.urandom secret: two of them disagree.
    labels = np.arange(1000) % 10
    a = RecordEpisodeSampler(labels=labels, classes=CLASSES, num_slots=2, n_way=2, sample_rate=0.5).sample()
    b = RecordEpisodeSampler(labels=labels, classes=CLASSES, num_slots=2, n_way=2, sample_rate=0.5).sample()
    assert not np.array_equal(a.sampled, b.sampled)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sample_rate": 0.0}, InvalidPrivacyConfigError),
        ({"sample_rate": 1.5}, InvalidPrivacyConfigError),
        ({"support_prob": 1.0}, InvalidPrivacyConfigError),
        ({"secret_seed": b"short"}, InvalidPrivacyConfigError),
        ({"n_way": 11}, InvalidPrivacyConfigError),
        ({"num_slots": 0}, InvalidPrivacyConfigError),
        ({"labels": np.array([0, 1, 42])}, InvalidInputError),
        ({"record_ids": np.array([0, 0, 1])}, InvalidInputError),
        ({"record_ids": np.array([0, 1])}, InvalidInputError),
    ],
)
def test_bad_configuration_is_refused(kwargs, error):
    base = {
        "labels": np.array([0, 1, 2]),
        "classes": CLASSES,
        "num_slots": 2,
        "n_way": 2,
        "sample_rate": 0.5,
        "secret_seed": SEED,
    }
    with pytest.raises(error):
        RecordEpisodeSampler(**{**base, **kwargs})


def test_drop_queries_without_support_keeps_only_scorable_queries():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, len(CLASSES), size=300)
    sampler = RecordEpisodeSampler(
        labels=labels, classes=CLASSES, num_slots=4, n_way=5, sample_rate=0.05, secret_seed=SEED
    )
    dropped_any = False
    for _ in range(20):
        for ep in sampler.sample().episodes:
            kept = ep.drop_queries_without_support()
            np.testing.assert_array_equal(kept.support_index, ep.support_index)
            assert set(kept.query_label.tolist()) <= set(ep.support_label.tolist())
            expected = [
                i for i, lab in zip(ep.query_index, ep.query_label, strict=True) if lab in ep.support_label
            ]
            assert kept.query_index.tolist() == expected
            dropped_any |= kept.query_index.size < ep.query_index.size
    assert dropped_any
