"""Membership inference: metrics on synthetic scores, LiRA / RMIA versus threshold attacks."""

from __future__ import annotations

import numpy as np
import pytest

from attacks import (
    AttackConfigError,
    AttackInputError,
    collect_reference_stats,
    confidence_attack,
    cross_entropy_loss,
    lira,
    logit_scaled_confidence,
    loss_attack,
    mia_metrics,
    rmia,
    roc_curve,
    save_mia_roc,
    tpr_at_fpr,
    true_class_probability,
)
from attacks.mia import balanced_inclusion_masks

# ---------------------------------------------------------------- metrics


def test_perfect_separation_gives_auc_one() -> None:
    rng = np.random.default_rng(0)
    members, non = rng.uniform(2, 3, 500), rng.uniform(0, 1, 2000)
    m = mia_metrics(scores=np.r_[members, non], is_member=np.r_[np.ones(500), np.zeros(2000)].astype(bool))
    assert m.auc == pytest.approx(1.0)
    assert m.balanced_accuracy == pytest.approx(1.0)
    assert m.tpr_at_fpr["0.001"] == pytest.approx(1.0) and m.tpr_at_fpr["0.01"] == pytest.approx(1.0)
    assert m.best_threshold == pytest.approx(members.min())


def test_identical_distributions_give_chance() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=20000)
    member = rng.random(20000) < 0.5
    m = mia_metrics(scores=s, is_member=member)
    assert abs(m.auc - 0.5) < 0.02
    assert abs(m.balanced_accuracy - 0.5) < 0.02
    assert m.tpr_at_fpr["0.01"] < 0.03
    # All-tied scores: a single ROC step from (0, 0) to (1, 1).
    tied = mia_metrics(scores=np.zeros(10), is_member=np.arange(10) < 5)
    assert tied.auc == pytest.approx(0.5) and tied.balanced_accuracy == pytest.approx(0.5)


def test_tpr_at_fpr_hand_example() -> None:
    scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    member = [True, True, True, False, False, False, False]
    fpr, tpr, thr = roc_curve(scores=scores, is_member=member)
    assert fpr.tolist() == [0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.75, 1.0]
    assert tpr.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0])
    assert thr[0] == np.inf and thr[-1] == 0.1
    assert tpr_at_fpr(fpr=fpr, tpr=tpr, target=0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(fpr=fpr, tpr=tpr, target=0.2) == pytest.approx(2 / 3)
    assert tpr_at_fpr(fpr=fpr, tpr=tpr, target=0.25) == pytest.approx(1.0)
    m = mia_metrics(scores=scores, is_member=member, fpr_targets=(0.25,))
    assert m.auc == pytest.approx(11 / 12)  # 11 of 12 member/non-member pairs ordered correctly
    assert m.balanced_accuracy == pytest.approx((1 + 1.0 - 0.25) / 2)
    assert m.best_threshold == pytest.approx(0.4)
    d = m.to_dict()
    assert d["tpr_at_fpr"] == {"0.25": pytest.approx(1.0)} and "fpr" not in d
    assert m.fpr_resolution == pytest.approx(0.25)


def test_metric_inputs_are_validated() -> None:
    with pytest.raises(AttackInputError, match="differ in length"):
        mia_metrics(scores=[1, 2, 3], is_member=[True, False])
    with pytest.raises(AttackInputError, match="one member and one non-member"):
        mia_metrics(scores=[1, 2], is_member=[True, True])
    with pytest.raises(AttackInputError, match="finite"):
        mia_metrics(scores=[1, np.inf], is_member=[True, False])
    with pytest.raises(AttackInputError):
        tpr_at_fpr(fpr=[0, 1], tpr=[0, 1], target=1.5)


def test_output_statistics() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [300.0, -300.0, 0.0]])
    labels = np.array([0, 2, 1])
    p = true_class_probability(logits=logits, labels=labels)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    ref = (e / e.sum(axis=1, keepdims=True))[np.arange(3), labels]
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    phi = logit_scaled_confidence(logits=logits, labels=labels)
    np.testing.assert_allclose(phi[:2], np.log(ref[:2] / (1 - ref[:2])), rtol=1e-10)
    assert np.isfinite(phi).all() and phi[2] < -599  # stable where p underflows to 0
    np.testing.assert_allclose(
        cross_entropy_loss(logits=logits, labels=labels)[:2], -np.log(ref[:2]), rtol=1e-10
    )
    assert logit_scaled_confidence(logits=np.zeros((2, 4, 3)), labels=np.array([0, 1])).shape == (2, 4)
    with pytest.raises(AttackInputError):
        logit_scaled_confidence(logits=logits, labels=np.array([0, 3, 1]))


# ---------------------------------------------------------------- synthetic world, varying difficulty


def _world(seed: int, *, n: int = 2000, r: int = 16):
    """Per-record difficulty varies a lot; membership adds +1.5 to a record's statistic."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 3.0, n)
    member = rng.random(n) < 0.5
    target = difficulty + 1.5 * member + rng.normal(0, 0.5, n)
    masks = balanced_inclusion_masks(num_models=r, pool_size=n, seed=seed + 1)
    ref = difficulty[None, :] + 1.5 * masks + rng.normal(0, 0.5, (r, n))
    return member, target, ref, masks


def test_lira_beats_loss_attack_when_difficulty_varies() -> None:
    member, target, ref, masks = _world(0)
    base = mia_metrics(scores=confidence_attack(confidences=target), is_member=member)
    loss_based = mia_metrics(scores=loss_attack(losses=-target), is_member=member)
    assert loss_based.auc == pytest.approx(base.auc)
    results = {"loss": loss_based}
    for mode in ("online", "offline"):
        for var in ("global", "per_example"):
            s = lira(
                target_stats=target, reference_stats=ref, reference_in_mask=masks, mode=mode, variance=var
            )
            results[f"lira-{mode}-{var}"] = mia_metrics(scores=s, is_member=member)
    assert base.auc < 0.7
    for name, res in results.items():
        if name == "loss":
            continue
        assert res.auc > base.auc + 0.2, name
        assert res.tpr_at_fpr["0.01"] > base.tpr_at_fpr["0.01"] + 0.1, name
    s_pdf = lira(
        target_stats=target,
        reference_stats=ref,
        reference_in_mask=masks,
        mode="offline",
        offline_score="logpdf",
    )
    assert np.isfinite(s_pdf).all()


def test_lira_offline_scores_are_monotone_in_the_statistic() -> None:
    _, target, ref, masks = _world(1, n=50)
    s1 = lira(target_stats=target, reference_stats=ref, reference_in_mask=masks, mode="offline")
    s2 = lira(target_stats=target + 0.3, reference_stats=ref, reference_in_mask=masks, mode="offline")
    assert (s2 > s1).all()
    # Several queries per record: scores are averaged over the query axis.
    s3 = lira(
        target_stats=np.stack([target, target], axis=1),
        reference_stats=np.stack([ref, ref], axis=2),
        reference_in_mask=masks,
        mode="offline",
    )
    np.testing.assert_allclose(s3, s1)


def test_rmia_offline_beats_loss_attack_with_few_reference_models() -> None:
    member, target, ref, masks = _world(2, r=2)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    rng = np.random.default_rng(9)
    pop_difficulty = rng.normal(0.0, 3.0, 1000)
    pop_target = sigmoid(pop_difficulty + rng.normal(0, 0.5, 1000))
    pop_ref = sigmoid(pop_difficulty[None, :] + rng.normal(0, 0.5, (2, 1000)))
    probs = {
        "target_probs": sigmoid(target),
        "reference_probs": sigmoid(ref),
        "reference_in_mask": masks,
        "population_target_probs": pop_target,
        "population_reference_probs": pop_ref,
    }
    scores = rmia(**probs, offline_a=0.3)
    assert scores.min() >= 0 and scores.max() <= 1
    base = mia_metrics(scores=target, is_member=member)
    res = mia_metrics(scores=scores, is_member=member)
    assert res.auc > base.auc + 0.1
    online = rmia(**probs, mode="online")
    assert mia_metrics(scores=online, is_member=member).auc > base.auc


def test_rmia_hand_example() -> None:
    # One reference model, OUT everywhere; a = 1 makes Pr(x) equal to the OUT probability.
    scores = rmia(
        target_probs=[0.8, 0.2],
        reference_probs=[[0.4, 0.4]],
        reference_in_mask=np.array([[False, False]]),
        population_target_probs=[0.4, 0.6, 0.9],
        population_reference_probs=[[0.4, 0.4, 0.3]],
        offline_a=1.0,
        gamma=1.0,
    )
    # ratios: x -> [2.0, 0.5]; z -> [1.0, 1.5, 3.0]; LR(x,z) >= 1 iff ratio_z <= ratio_x
    np.testing.assert_allclose(scores, [2 / 3, 0.0])


def test_reference_collection_and_validation(tmp_path) -> None:
    seen = []

    def train_reference(*, include_mask: np.ndarray):
        seen.append(include_mask.copy())
        return lambda idx: include_mask[idx].astype(float) + 0.01 * idx

    rs = collect_reference_stats(
        train_reference=train_reference,
        pool_size=10,
        num_models=4,
        query_indices={"pool": np.arange(10), "some": np.array([1, 3])},
        seed=0,
    )
    assert rs.in_mask.shape == (4, 10) and (rs.in_mask.sum(axis=0) == 2).all()
    assert rs.stats["pool"].shape == (4, 10) and rs.stats["some"].shape == (4, 2)
    np.testing.assert_allclose(rs.stats["pool"], rs.in_mask + 0.01 * np.arange(10))
    assert len(seen) == 4 and all((s == m).all() for s, m in zip(seen, rs.in_mask, strict=True))
    masks = balanced_inclusion_masks(num_models=5, pool_size=1000, seed=1)
    assert set(np.unique(masks.sum(axis=0))) == {2, 3}
    with pytest.raises(AttackInputError, match="IN reference"):
        lira(
            target_stats=np.zeros(3),
            reference_stats=np.zeros((2, 3)),
            reference_in_mask=np.zeros((2, 3), bool),
        )
    with pytest.raises(AttackConfigError):
        lira(
            target_stats=np.zeros(3),
            reference_stats=np.zeros((2, 3)),
            reference_in_mask=np.zeros((2, 3), bool),
            mode="shadow",
        )
    with pytest.raises(AttackInputError):
        lira(
            target_stats=np.zeros(3),
            reference_stats=np.zeros((2, 4)),
            reference_in_mask=np.zeros((2, 4), bool),
        )
    with pytest.raises(AttackInputError, match="probabilities"):
        rmia(
            target_probs=[2.0],
            reference_probs=[[0.5]],
            reference_in_mask=np.array([[False]]),
            population_target_probs=[0.5],
            population_reference_probs=[[0.5]],
        )
    member, target, ref, m = _world(3, n=300)
    curves = {
        "loss": mia_metrics(scores=target, is_member=member),
        "lira": mia_metrics(
            scores=lira(target_stats=target, reference_stats=ref, reference_in_mask=m), is_member=member
        ),
    }
    png = save_mia_roc(path=tmp_path / "roc.png", results=curves)
    assert png.read_bytes()[:4] == b"\x89PNG"
