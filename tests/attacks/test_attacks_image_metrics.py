"""Image metrics (MSE, PSNR, SSIM), Hungarian matching, and JSON-serialisable results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from attacks_toy import blob_images, mlp8, params_of

from attacks import (
    AttackInputError,
    GaussianMechanismAudit,
    GradientObservation,
    GroundTruth,
    InversionConfig,
    InversionInputs,
    classification_loss,
    mia_metrics,
    run_inversion,
    score_inversion,
)
from attacks.image_metrics import PSNR_CAP_DB, label_accuracy, match_reconstructions, mse, psnr, ssim


def test_mse_and_psnr_known_values() -> None:
    x = torch.zeros(1, 8, 8)
    y = torch.full((1, 8, 8), 0.1)
    assert mse(x=x, y=y) == pytest.approx(0.01)
    assert psnr(x=x, y=y) == pytest.approx(20.0)
    assert psnr(x=x, y=y, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0))
    assert psnr(x=y, y=y) == PSNR_CAP_DB
    with pytest.raises(AttackInputError, match="shape"):
        mse(x=x, y=torch.zeros(8, 8))


def test_ssim_properties() -> None:
    img = blob_images(n=1, size=28, seed=0)[0]
    assert ssim(x=img, y=img) == pytest.approx(1.0)
    # Constant images: the structure terms are 1 and SSIM reduces to the luminance term.
    a, b = torch.full((16, 16), 0.2, dtype=torch.float64), torch.full((16, 16), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(x=a, y=b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-9)
    gen = torch.Generator().manual_seed(0)
    noisy = [(img + s * torch.randn(img.shape, generator=gen)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    vals = [ssim(x=n, y=img) for n in noisy]
    assert vals[0] > vals[1] > vals[2] > -1
    assert ssim(x=noisy[1], y=img) == pytest.approx(ssim(x=img, y=noisy[1]))
    assert ssim(x=1 - img, y=img) < 0  # inverted structure
    # Tiny images shrink the window instead of failing; numpy input is accepted.
    small = blob_images(n=1, size=8, seed=1)[0].numpy()
    assert ssim(x=small, y=small) == pytest.approx(1.0)
    with pytest.raises(AttackInputError):
        ssim(x=torch.zeros(2, 3, 8, 8), y=torch.zeros(2, 3, 8, 8))


def test_hungarian_matching_and_label_accuracy() -> None:
    originals = blob_images(n=5, seed=2)
    perm = torch.tensor([3, 0, 4, 1, 2])
    recon = originals[perm] + 0.01
    rows, cols = match_reconstructions(reconstructions=recon, originals=originals)
    assert cols[np.argsort(rows)].tolist() == perm.tolist()
    true = np.array([0, 1, 2, 3, 4])
    assert label_accuracy(predicted=true[perm.numpy()], true=true, rows=rows, cols=cols) == 1.0
    assert label_accuracy(predicted=np.zeros(5, int), true=true, rows=rows, cols=cols) == pytest.approx(0.2)


def test_results_are_json_serialisable() -> None:
    model = mlp8()
    x, y = blob_images(n=2, seed=0), torch.tensor([1, 2])
    obs = GradientObservation(loss_fn=classification_loss(model=model))
    g = obs.observe(params=params_of(model), buffers={}, inputs=x, labels=y)
    threat = InversionInputs(
        model=model, observed=g, observation=obs, num_records=2, input_shape=(1, 8, 8), num_classes=10
    )
    res = run_inversion(threat=threat, config=InversionConfig(iterations=5, restarts=2))
    assert len(res.restart_distances) == 2 and res.distance == min(res.restart_distances)
    score = score_inversion(result=res, truth=GroundTruth(inputs=x, labels=y))
    rng = np.random.default_rng(0)
    mia = mia_metrics(scores=rng.normal(size=20), is_member=np.arange(20) < 10)
    audit = GaussianMechanismAudit(mu=1.0).run_clopper_pearson(trials_per_side=200)
    blob = json.dumps(
        {
            "inv": res.to_dict(include_reconstruction=True),
            "score": score.to_dict(),
            "mia": mia.to_dict(include_curve=True),
            "audit": audit.to_dict(),
        }
    )
    back = json.loads(blob)
    assert back["score"]["num_original"] == 2 and len(back["score"]["per_record"]) == 2
    assert np.asarray(back["inv"]["reconstruction"]).shape == (2, 1, 8, 8)
    assert back["audit"]["lower_bound"]["method"] == "clopper_pearson"
