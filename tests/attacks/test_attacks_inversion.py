"""Gradient inversion: label recovery, reconstruction quality, replay exactness, noise, threat model."""

from __future__ import annotations

import copy

import pytest
import torch
from attacks_toy import blob_images, conv4, mlp8, params_of
from torch.func import functional_call

from attacks import (
    AggregateObservation,
    AttackConfigError,
    AttackInputError,
    GradientObservation,
    GroundTruth,
    InversionConfig,
    InversionInputs,
    MAMLObservation,
    MultiStepObservation,
    ThreatModelError,
    batch_labels_from_last_layer,
    classification_loss,
    idlg_label,
    label_counts_by_simulation,
    protonet_episode_labels,
    protonet_episode_loss,
    run_inversion,
    save_inversion_grid,
    score_inversion,
    sequential_batches,
)
from attacks.inversion import observation_distance


def _threat(model, obs, observed, n, *, shape=(1, 8, 8), classes=10, known=None):
    return InversionInputs(
        model=model,
        observed=observed,
        observation=obs,
        num_records=n,
        input_shape=shape,
        num_classes=classes,
        known_labels=known,
    )


# ---------------------------------------------------------------- label recovery (iDLG)


@pytest.mark.parametrize("label", [0, 3, 9])
@pytest.mark.parametrize("source", ["bias", "weight"])
def test_idlg_recovers_single_label_exactly(label: int, source: str) -> None:
    model = mlp8(seed=label)
    x = blob_images(n=1, seed=label)
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=torch.tensor([label]))
    assert idlg_label(observed=g, num_classes=10, sign=obs.sign, source=source) == label


def test_idlg_label_through_run_inversion_and_multi_step_update() -> None:
    model = mlp8(seed=1)
    x = blob_images(n=1, seed=4)
    y = torch.tensor([6])
    # A 3-step local update (new - old): iDLG must undo the sign.
    obs = MultiStepObservation(
        loss_fn=classification_loss(model=model),
        lr=0.1,
        batches=sequential_batches(num_records=1, batch_size=1, steps=3),
    )
    delta = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    assert obs.sign == -1.0
    assert idlg_label(observed=delta, num_classes=10, sign=obs.sign) == 6
    assert idlg_label(observed=delta, num_classes=10, sign=1.0) != 6  # the sign matters
    res = run_inversion(
        threat=_threat(model, obs, delta, 1), config=InversionConfig(method="idlg", iterations=3)
    )
    assert res.label_source == "analytic" and res.labels.tolist() == [6]


def test_batch_labels_from_last_layer_distinct_labels() -> None:
    model = mlp8(seed=2)
    x = blob_images(n=4, seed=2)
    y = torch.tensor([1, 4, 7, 8])
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    got = batch_labels_from_last_layer(observed=g, num_classes=10, num_records=4)
    assert got.tolist() == [1, 4, 7, 8]


def test_label_counts_by_simulation_handles_repeated_labels() -> None:
    # Two classes, two records each: only one bias entry is negative, so the sign rule alone fails.
    model = mlp8(num_classes=2, seed=4)
    x = blob_images(n=4, seed=4)
    y = torch.tensor([1, 0, 1, 0])
    lf = classification_loss(model=model)
    for obs in (
        GradientObservation(loss_fn=lf),
        MultiStepObservation(
            loss_fn=lf, lr=0.1, batches=sequential_batches(num_records=4, batch_size=2, steps=4)
        ),
        AggregateObservation(
            parts=((GradientObservation(loss_fn=lf), 2), (GradientObservation(loss_fn=lf), 2))
        ),
    ):
        g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
        assert batch_labels_from_last_layer(
            observed=g, num_classes=2, num_records=4, sign=obs.sign
        ).tolist() != [0, 0, 1, 1]
        got = label_counts_by_simulation(
            observation=obs,
            params=params_of(model),
            buffers={},
            observed=g,
            num_records=4,
            num_classes=2,
            input_shape=(1, 8, 8),
        )
        assert got.tolist() == [0, 0, 1, 1]
        res = run_inversion(threat=_threat(model, obs, g, 4, classes=2), config=InversionConfig(iterations=2))
        assert res.label_source == "analytic" and res.labels.tolist() == [0, 0, 1, 1]


# ---------------------------------------------------------------- reconstruction quality


def _one_record_gradient(*, model_seed: int, image_seed: int, label: int):
    """A FedSGD client with one blob image: model, record, label, observation model and its gradient."""
    model = mlp8(seed=model_seed)
    x = blob_images(n=1, seed=image_seed)
    y = torch.tensor([label])
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    return model, x, y, obs, obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)


def test_inverting_gradients_mlp_single_image_beats_flat_baseline() -> None:
    model, x, y, obs, g = _one_record_gradient(model_seed=0, image_seed=1, label=3)
    res = run_inversion(threat=_threat(model, obs, g, 1), config=InversionConfig(method="ig", iterations=60))
    score = score_inversion(result=res, truth=GroundTruth(inputs=x, labels=y))
    assert res.labels.tolist() == [3] and score.label_accuracy == 1.0
    assert score.psnr > 30.0
    assert score.psnr > score.flat_baseline_psnr + 10.0
    assert score.ssim is not None and score.ssim > 0.95
    d = res.to_dict()
    assert d["config"]["method"] == "ig" and d["reconstruction_shape"] == [1, 1, 8, 8]


def test_dlg_joint_labels_mlp_single_image() -> None:
    model, x, y, obs, g = _one_record_gradient(model_seed=3, image_seed=7, label=2)
    res = run_inversion(threat=_threat(model, obs, g, 1), config=InversionConfig(method="dlg", iterations=60))
    score = score_inversion(result=res, truth=GroundTruth(inputs=x, labels=y))
    assert res.label_source == "joint"
    assert score.label_accuracy == 1.0
    assert score.psnr > score.flat_baseline_psnr + 10.0


def test_noise_on_the_gradient_degrades_reconstruction() -> None:
    model, x, y, obs, g = _one_record_gradient(model_seed=0, image_seed=1, label=3)
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in g.items()}
    cfg = InversionConfig(method="ig", iterations=60)
    truth = GroundTruth(inputs=x, labels=y)
    clean = score_inversion(result=run_inversion(threat=_threat(model, obs, g, 1), config=cfg), truth=truth)
    noised = score_inversion(
        result=run_inversion(threat=_threat(model, obs, noisy, 1), config=cfg), truth=truth
    )
    assert noised.psnr < clean.psnr - 10.0
    assert noised.psnr < noised.flat_baseline_psnr + 3.0  # little more than average brightness survives


def test_secure_aggregate_reveals_the_union_of_batches() -> None:
    model = mlp8(seed=0)
    x = blob_images(n=3, seed=1)
    y = torch.tensor([3, 7, 1])
    per_client = GradientObservation(loss_fn=classification_loss(model=model))
    agg = AggregateObservation(parts=((per_client, 1), (per_client, 1), (per_client, 1)))
    observed = agg.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    # The aggregate of mean-reduced single-record gradients is 3x the gradient of the union batch.
    union = per_client.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    for k in observed:
        torch.testing.assert_close(observed[k], 3 * union[k], rtol=1e-5, atol=1e-6)
    res = run_inversion(threat=_threat(model, agg, observed, 3), config=InversionConfig(iterations=120))
    score = score_inversion(result=res, truth=GroundTruth(inputs=x, labels=y))
    assert score.label_accuracy == 1.0
    assert score.psnr > score.flat_baseline_psnr + 5.0
    assert all(p["psnr"] > score.flat_baseline_psnr for p in score.per_record)


# ---------------------------------------------------------------- replay exactness


def _sgd_reference(model, x, y, lr, batches):
    """Independent FedAvg/Reptile client: an nn.Module trained with torch.optim.SGD."""
    m = copy.deepcopy(model)
    before = params_of(m)
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    for b in batches:
        idx = torch.tensor(b)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
        opt.step()
    return {n: p.detach() - before[n] for n, p in m.named_parameters()}


def test_reptile_update_replay_reproduces_observed_update() -> None:
    model = conv4(channels=4, num_classes=5, seed=0)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 4])
    batches = sequential_batches(num_records=4, batch_size=2, steps=5)
    observed = _sgd_reference(model, x, y, 0.05, batches)
    obs = MultiStepObservation(loss_fn=classification_loss(model=model), lr=0.05, batches=batches)
    for create_graph in (False, True):
        sim = obs.simulate(params=params_of(model), buffers={}, inputs=x, labels=y, create_graph=create_graph)
        assert set(sim) == set(observed)
        for k in observed:
            torch.testing.assert_close(sim[k].detach(), observed[k], rtol=1e-4, atol=1e-6)
    # The replay is differentiable w.r.t. the inputs through all 5 steps.
    xr = x.clone().requires_grad_(True)
    sim = obs.simulate(params=params_of(model), buffers={}, inputs=xr, labels=y, create_graph=True)
    d = observation_distance(simulated=sim, observed=observed, kind="cosine")
    assert float(d.detach()) < 1e-5
    (gx,) = torch.autograd.grad(sum(v.sum() for v in sim.values()), xr)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0


def test_reptile_scale_and_wrong_batch_layout() -> None:
    model = mlp8(seed=0)
    x, y = blob_images(n=2, seed=0), torch.tensor([1, 2])
    b = sequential_batches(num_records=2, batch_size=1, steps=2)
    base = MultiStepObservation(loss_fn=classification_loss(model=model), lr=0.1, batches=b)
    scaled = MultiStepObservation(loss_fn=classification_loss(model=model), lr=0.1, batches=b, scale=0.5)
    a = base.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    s = scaled.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    for k in a:
        torch.testing.assert_close(s[k], 0.5 * a[k])
    with pytest.raises(AttackInputError):
        InversionInputs(
            model=model, observed=a, observation=base, num_records=1, input_shape=(1, 8, 8), num_classes=10
        )


def _maml_reference(model, x, y, n_support, steps, lr, first_order):
    """Independent MAML/FOMAML meta-gradient with an explicit create_graph loop on a functional model."""
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}

    def loss(p, xx, yy):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (xx,)), yy)

    fast = dict(params)
    for _ in range(steps):
        g = torch.autograd.grad(
            loss(fast, x[:n_support], y[:n_support]), list(fast.values()), create_graph=True
        )
        fast = {n: w - lr * gi for (n, w), gi in zip(fast.items(), g, strict=True)}
    if first_order:
        fast = {n: w.detach().requires_grad_(True) for n, w in fast.items()}
        g = torch.autograd.grad(loss(fast, x[n_support:], y[n_support:]), list(fast.values()))
    else:
        g = torch.autograd.grad(loss(fast, x[n_support:], y[n_support:]), list(params.values()))
    return dict(zip(params, g, strict=True))


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_replay_matches_independent_meta_gradient(first_order: bool) -> None:
    model = mlp8(num_classes=3, seed=5)
    x, y = blob_images(n=6, seed=5), torch.tensor([0, 1, 2, 0, 1, 2])
    ref = _maml_reference(model, x, y, 3, 2, 0.4, first_order)
    obs = MAMLObservation(
        loss_fn=classification_loss(model=model),
        n_support=3,
        inner_steps=2,
        inner_lr=0.4,
        first_order=first_order,
    )
    for create_graph in (False, True):
        sim = obs.simulate(params=params_of(model), buffers={}, inputs=x, labels=y, create_graph=create_graph)
        for k in ref:
            torch.testing.assert_close(sim[k].detach(), ref[k], rtol=1e-5, atol=1e-7)
    if first_order:
        # FOMAML's observation still depends on the support inputs through the adapted parameters.
        xr = x.clone().requires_grad_(True)
        sim = obs.simulate(params=params_of(model), buffers={}, inputs=xr, labels=y, create_graph=True)
        (gx,) = torch.autograd.grad(sum((v**2).sum() for v in sim.values()), xr)
        assert gx[:3].abs().sum() > 0


def test_protonet_episode_gradient_is_invariant_to_class_relabelling() -> None:
    model = mlp8(num_classes=16, seed=0)  # used as a 16-d embedding network
    lf = protonet_episode_loss(model=model, n_way=3, k_shot=2, n_query=1)
    x = blob_images(n=9, seed=3)
    canon = protonet_episode_labels(n_way=3, k_shot=2, n_query=1)
    assert canon.tolist() == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    perm = torch.tensor([2, 0, 1])  # rename the classes
    obs = GradientObservation(loss_fn=lf)
    g1 = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=canon)
    g2 = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=perm[canon])
    # Reordering the support records (with their labels) changes nothing either.
    order = torch.tensor([1, 0, 3, 2, 5, 4, 6, 7, 8])
    g3 = obs.observe(params=params_of(model), buffers={}, inputs=x[order], labels=canon[order])
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g1[k], g3[k], rtol=1e-5, atol=1e-7)
    assert sum(float(v.abs().sum()) for v in g1.values()) > 0


def test_protonet_attack_runs_with_public_layout() -> None:
    model = mlp8(num_classes=16, seed=0)
    lf = protonet_episode_loss(model=model, n_way=2, k_shot=1, n_query=1)
    x = blob_images(n=4, seed=9)
    y = torch.tensor([1, 0, 1, 0])  # the client's relabelling; the attacker uses the canonical one
    obs = GradientObservation(loss_fn=lf)
    g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    known = protonet_episode_labels(n_way=2, k_shot=1, n_query=1)
    res = run_inversion(
        threat=_threat(model, obs, g, 4, classes=2, known=known), config=InversionConfig(iterations=40)
    )
    assert res.label_source == "known" and res.labels.tolist() == known.tolist()
    assert res.distance < res.history[0][1]
    score = score_inversion(result=res, truth=GroundTruth(inputs=x, labels=y))
    assert score.label_accuracy is None  # labels were public, nothing to score


def test_conv4_28x28_multi_step_attack_makes_progress(tmp_path) -> None:
    model = conv4(channels=4, num_classes=5, seed=1)
    x = torch.nn.functional.interpolate(blob_images(n=2, seed=3), size=28, mode="bilinear")
    y = torch.tensor([1, 4])
    obs = MultiStepObservation(
        loss_fn=classification_loss(model=model),
        lr=0.1,
        batches=sequential_batches(num_records=2, batch_size=1, steps=2),
    )
    delta = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    res = run_inversion(
        threat=_threat(model, obs, delta, 2, shape=(1, 28, 28), classes=5),
        config=InversionConfig(iterations=30, tv_weight=1e-2),
    )
    assert res.reconstruction.shape == (2, 1, 28, 28)
    assert float(res.reconstruction.min()) >= 0.0 and float(res.reconstruction.max()) <= 1.0
    gen = torch.Generator().manual_seed(123)
    random_d = []
    for _ in range(3):
        sim = obs.simulate(
            params=params_of(model),
            buffers={},
            inputs=torch.rand(x.shape, generator=gen),
            labels=y,
            create_graph=False,
        )
        random_d.append(float(observation_distance(simulated=sim, observed=delta, kind="cosine")))
    assert res.distance < 0.75 * min(random_d)
    truth = GroundTruth(inputs=x, labels=y)
    png = save_inversion_grid(path=tmp_path / "grid.png", result=res, truth=truth)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    npy = res.save_reconstruction(path=tmp_path / "rec.npy")
    assert npy.stat().st_size > 28 * 28 * 2 * 4


# ---------------------------------------------------------------- threat model and validation


def test_attack_entry_points_refuse_ground_truth() -> None:
    model = mlp8()
    x, y = blob_images(n=1), torch.tensor([1])
    truth = GroundTruth(inputs=x, labels=y)
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    with pytest.raises(TypeError):
        run_inversion(threat=truth, config=InversionConfig())  # type: ignore[arg-type]
    with pytest.raises(ThreatModelError):
        run_inversion(threat=truth, config=InversionConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        InversionInputs(
            model=model,
            observed=g,
            observation=obs,
            num_records=1,
            input_shape=(1, 8, 8),
            num_classes=10,
            known_labels=truth,  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError):
        InversionInputs(
            model=model,
            observed=truth,
            observation=obs,  # type: ignore[arg-type]
            num_records=1,
            input_shape=(1, 8, 8),
            num_classes=10,
        )
    with pytest.raises(TypeError):
        run_inversion(threat=_threat(model, obs, g, 1), config=truth)  # type: ignore[arg-type]
    with pytest.raises(AttackInputError):
        score_inversion(result=truth, truth=truth)  # type: ignore[arg-type]


def test_bad_configuration_and_inputs_are_rejected_before_work() -> None:
    with pytest.raises(AttackConfigError, match="method"):
        InversionConfig(method="gradinv")
    with pytest.raises(AttackConfigError, match="iterations"):
        InversionConfig(iterations=0)
    with pytest.raises(AttackConfigError):
        InversionConfig(method="idlg", label_strategy="joint")
    model = mlp8()
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    good = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    with pytest.raises(AttackInputError, match="not among"):
        _threat(model, obs, {"nope": torch.zeros(3)}, 1)
    with pytest.raises(AttackInputError, match="shape"):
        _threat(model, obs, {"1.weight": torch.zeros(3)}, 1)
    with pytest.raises(AttackInputError, match="known_labels"):
        _threat(model, obs, good, 2, known=torch.tensor([0, 11]))
    with pytest.raises(AttackConfigError):
        run_inversion(threat=_threat(model, obs, good, 1), config=InversionConfig(label_strategy="known"))
    with pytest.raises(AttackInputError, match="cannot recover labels"):
        emb = mlp8(num_classes=16)
        pobs = GradientObservation(loss_fn=protonet_episode_loss(model=emb, n_way=2, k_shot=1, n_query=1))
        g = {n: torch.zeros_like(p) for n, p in emb.named_parameters()}
        run_inversion(threat=_threat(emb, pobs, g, 4, classes=2), config=InversionConfig(method="idlg"))


def test_client_batch_checks_its_records_and_observes_as_the_keywords_do() -> None:
    from attacks.observation import ClientBatch

    model = mlp8(seed=0)
    x, y = blob_images(n=3, seed=2), torch.tensor([1, 2, 3])
    with pytest.raises(AttackInputError, match="inputs have 3 records but labels have 2"):
        ClientBatch(params=params_of(model), buffers={}, inputs=x, labels=y[:2])
    batch = ClientBatch(params=params_of(model), buffers={}, inputs=x, labels=y)
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    two = obs.observe_batch(batch.rows(slice(0, 2)))
    want = obs.observe(params=params_of(model), buffers={}, inputs=x[:2], labels=y[:2])
    assert batch.num_records == 3 and two.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(two[k], want[k], rtol=0, atol=0)
