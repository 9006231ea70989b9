"""Tests of per-sample DP-SGD (privacy unit: one record; add/remove adjacency)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from dpsgd_setup import per_sample_dpsgd
from opacus.accountants import RDPAccountant as OpacusRDP
from torch import nn

from privacy.dpsgd import (
    PerSampleDPSGD,
    RecordCouplingModelError,
    SecurePoissonSampler,
    UnsupportedModelError,
    make_poisson_loader,
)
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _trainer(model: nn.Module, **kw) -> PerSampleDPSGD:
    x, y = _data()
    return per_sample_dpsgd(model, **{"x": x, "y": y, **kw})


def test_noise_std_is_z_times_c():
    """Zero gradients (zero inputs, no bias): the update is pure noise with std zC / B."""
    z, c, b = 1.3, 0.8, 1
    model = nn.Linear(400, 50, bias=False)
    before = model.weight.detach().clone()
    x = torch.zeros(32, 400)
    y = torch.zeros(32, dtype=torch.long)
    dp = per_sample_dpsgd(
        model, x=x, y=y, noise_multiplier=z, max_grad_norm=c, sample_rate=0.5, expected_batch_size=b, lr=1.0
    )
    metrics = dp.step()
    noise = (before - model.weight.detach()).ravel()
    assert metrics["noise_std"] == pytest.approx(z * c)
    assert noise.std().item() == pytest.approx(z * c, rel=0.03)
    assert abs(noise.mean().item()) < 4 * z * c / np.sqrt(noise.numel())
    # A public normaliser B divides the noise (never the private batch or dataset size).
    model2 = nn.Linear(400, 50, bias=False)
    before2 = model2.weight.detach().clone()
    per_sample_dpsgd(
        model2, x=x, y=y, noise_multiplier=z, max_grad_norm=c, sample_rate=0.5, expected_batch_size=4, lr=1.0
    ).step()
    assert (before2 - model2.weight.detach()).std().item() == pytest.approx(z * c / 4, rel=0.03)


@pytest.mark.parametrize("mode", ["fast", "ew", "hooks"])
def test_clipping_per_record_and_public_normaliser_without_noise(mode):
    """z = 0, q = 1: the update equals -lr * sum_i clip(g_i) / B with B public (both modes)."""
    model = _mlp()
    x, y = _data(n=12)
    ref = copy.deepcopy(model)
    c, b, lr = 0.05, 5, 0.7
    dp = per_sample_dpsgd(
        model,
        x=x,
        y=y,
        noise_multiplier=0.0,
        max_grad_norm=c,
        sample_rate=1.0,
        expected_batch_size=b,
        lr=lr,
        grad_sample_mode=mode,
    )
    dp.step()
    expected = {k: torch.zeros_like(p) for k, p in ref.named_parameters()}
    for i in range(12):
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads = {k: p.grad.detach().clone() for k, p in ref.named_parameters()}
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        assert norm > c  # clipping is active for every record
        factor = min(1.0, c / (norm.item() + 1e-6))
        for k in grads:
            expected[k] += factor * grads[k]
    for k, p in ref.named_parameters():
        torch.testing.assert_close(
            dict(model.named_parameters())[k].detach(), p.detach() - lr * expected[k] / b
        )


def test_accountant_records_z_and_q_and_persists_across_rounds():
    z, q = 1.1, 0.25
    accountant = OpacusRDP()
    global_model = _mlp()
    for _ in range(2):  # two rounds, a fresh copy of the global model each round
        dp = _trainer(copy.deepcopy(global_model), noise_multiplier=z, sample_rate=q, accountant=accountant)
        for _ in range(3):
            dp.step()
        global_model.load_state_dict(dp.finish().state_dict())
    assert accountant.history == [(z, q, 6)]
    ref = OpacusRDP()
    for _ in range(6):
        ref.step(noise_multiplier=z, sample_rate=q)
    assert accountant.get_epsilon(delta=1e-5) == pytest.approx(ref.get_epsilon(delta=1e-5), rel=1e-12)


def test_works_with_the_project_accountant():
    from privacy.accountants import RDPAccountant

    accountant = RDPAccountant()
    dp = _trainer(_mlp(), noise_multiplier=0.9, sample_rate=0.25, accountant=accountant)
    for _ in range(4):
        dp.step()
    assert accountant.history == [(0.9, 0.25, 4)]


@pytest.mark.parametrize(
    "coupling",
    [nn.BatchNorm1d(8), nn.BatchNorm1d(8, affine=False), nn.InstanceNorm1d(8, track_running_stats=True)],
)
def test_record_coupling_modules_are_refused(coupling):
    model = nn.Sequential(nn.Linear(6, 8), coupling, nn.Linear(8, 3))
    with pytest.raises(RecordCouplingModelError, match="couples records"):
        _trainer(model)


def test_model_is_returned_plain_and_cannot_be_wrapped_twice():
    model = _mlp()
    dp = _trainer(model)
    with pytest.raises(UnsupportedModelError, match="#608"):
        _trainer(model)  # still wrapped
    dp.step()
    plain = dp.finish()
    assert plain is model
    assert not hasattr(model, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    with pytest.raises(Exception, match="after finish"):
        dp.step()
    # The plain model can start a new round.
    again = _trainer(model)
    again.step()
    again.finish()


def test_empty_poisson_batches_still_add_noise_and_account():
    model = nn.Linear(6, 3)
    before = model.weight.detach().clone()
    accountant = OpacusRDP()
    dp = _trainer(model, sample_rate=1e-6, accountant=accountant)
    metrics = dp.step()
    assert metrics["private/batch_size"] == 0.0
    assert not torch.equal(before, model.weight.detach())
    assert accountant.history == [(1.0, 1e-6, 1)]


def test_poisson_sampler_rate_and_loader():
    sampler = SecurePoissonSampler(num_samples=5000, sample_rate=0.1)
    assert len(sampler) == 10
    sizes = [len(batch) for batch in sampler]
    assert len(sizes) == 10 and len(set(sizes)) > 1
    assert abs(np.mean(sizes) - 500) < 5 * np.sqrt(5000 * 0.1 * 0.9 / 10)
    x, y = _data(n=40)
    loader = make_poisson_loader(x=x, y=y, sample_rate=0.2)
    for xb, yb in loader:
        assert xb.shape[1:] == (6,) and xb.shape[0] == yb.shape[0]


def test_class_restricted_steps_use_only_those_records_relabelled():
    x, y = _data(n=60)
    seen: list[torch.Tensor] = []

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(target.clone())
        return nn.functional.cross_entropy(out, target, reduction="none")

    dp = _trainer(_mlp(), x=x, y=y, sample_rate=1.0, per_example_loss=loss)
    dp.step(classes=[2, 0])
    labels = seen[0]
    assert set(labels.tolist()) <= {0, 1}
    assert int((labels == 0).sum()) == int((y == 2).sum()) and int((labels == 1).sum()) == int((y == 0).sum())


def test_bad_inputs_are_refused():
    with pytest.raises(InvalidPrivacyConfigError):
        _trainer(_mlp(), sample_rate=0.0)
    with pytest.raises(InvalidPrivacyConfigError):
        _trainer(_mlp(), noise_multiplier=-1.0)
    with pytest.raises(InvalidPrivacyConfigError):
        _trainer(_mlp(), expected_batch_size=0)
    with pytest.raises(InvalidPrivacyConfigError):
        _trainer(_mlp(), accountant=object())
    with pytest.raises(InvalidInputError):
        _trainer(_mlp(), y=torch.zeros(3, dtype=torch.long))
    dp = _trainer(_mlp(), per_example_loss=lambda out, t: nn.functional.cross_entropy(out, t))
    with pytest.raises(InvalidInputError, match="one loss per record"):
        dp.step()


def test_all_grad_sample_modes_agree_on_a_conv_groupnorm_model():
    """The fast engine, Opacus' expanded weights and Opacus' hooks give the same noiseless updates
    on a conv + GroupNorm + linear model (the shapes DP training uses; the second convolution has
    enough channels for the fast engine's shifted-window path), over steps with Adam."""
    torch.manual_seed(3)
    base = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.GroupNorm(2, 8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.GroupNorm(4, 8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 36, 3),
    )
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 1, 6, 6, generator=g), torch.randint(0, 3, (10,), generator=g)
    models = {}
    for mode in ("fast", "ew", "hooks"):
        model = copy.deepcopy(base)
        dp = _trainer(
            model,
            x=x,
            y=y,
            noise_multiplier=0.0,
            max_grad_norm=0.1,
            sample_rate=1.0,
            expected_batch_size=10,
            lr=0.05,
            optimizer="adam",
            grad_sample_mode=mode,
        )
        for _ in range(3):
            dp.step()
        models[mode] = dp.finish()
    for other in ("fast", "hooks"):
        changed = False
        pairs = zip(models["ew"].named_parameters(), models[other].named_parameters(), strict=True)
        for ((name, a), (_, b)), o in zip(pairs, base.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{other}: {name}")
            changed |= not torch.allclose(b, o)
            assert not hasattr(b, "grad_sample")
        assert changed
    assert all("forward" not in vars(m) for m in models["fast"].modules())


def test_unknown_grad_sample_mode_is_refused():
    with pytest.raises(InvalidPrivacyConfigError, match="grad_sample_mode"):
        _trainer(_mlp(), grad_sample_mode="functorch")


def test_auto_mode_picks_the_fast_engine_only_when_it_covers_every_layer() -> None:
    assert _trainer(_mlp()).grad_sample_mode == "fast"

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * self.scale

    assert _trainer(Scaled()).grad_sample_mode == "ew"
    with pytest.raises(UnsupportedModelError, match="fast"):
        _trainer(Scaled(), grad_sample_mode="fast")


def test_a_model_with_the_fast_engine_attached_is_refused() -> None:
    model = _mlp()
    first = _trainer(model)
    with pytest.raises(UnsupportedModelError, match="wrapping it twice"):
        _trainer(model)
    first.finish()
    _trainer(model).finish()


def test_model_with_an_unsupported_operation_gets_a_typed_error() -> None:
    class RawMatmul(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(6, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.w

    dp = _trainer(RawMatmul(), sample_rate=1.0)
    with pytest.raises(UnsupportedModelError, match="grad_sample_mode='hooks'"):
        dp.step()
