"""Tests of per-episode DP meta-gradients (privacy unit: one record; add/remove adjacency)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dpsgd_setup import episodic_dpsgd, episodic_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants import RDPAccountant as OpacusRDP
from torch import nn
from torch.func import functional_call, grad, vmap

from privacy.dpsgd import RecordCouplingModelError
from privacy.episodic import (
    EpisodicDPSGD,
    MaskedEpisode,
    clip_and_sum,
    gather_episodes,
    per_episode_gradients,
)
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.sampling import RecordEpisodeSampler

SEED = b"episodic-test-secret-seed-0123456789"


# ---------------------------------------------------------------------------------------------
# Small models and episodic losses written for the tests
# ---------------------------------------------------------------------------------------------
class TinyConvGN(nn.Module):
    """Conv -> GroupNorm -> ReLU -> mean-pool -> Linear: per-record, no batch coupling."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.conv(x)))
        return self.head(h.mean(dim=(2, 3)))


def _embedder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


def protonet_loss(model: nn.Module, n_way: int):
    """Masked ProtoNet loss: prototypes = mean support embedding, logits = -squared distance."""

    def loss(params, buffers, ep: MaskedEpisode) -> torch.Tensor:
        emb_s = functional_call(model, (params, buffers), (ep.support_x,))
        emb_q = functional_call(model, (params, buffers), (ep.query_x,))
        classes = torch.arange(n_way, device=ep.support_y.device)
        onehot = (ep.support_y[:, None] == classes).to(emb_s.dtype) * ep.support_mask[
            :, None
        ]  # vmap-safe one-hot
        counts = onehot.sum(0)
        protos = onehot.T @ emb_s / counts.clamp(min=1.0)[:, None]
        dist = ((emb_q[:, None, :] - protos[None]) ** 2).sum(-1)
        present = counts > 0
        logits = torch.where(present[None, :], -dist, torch.full_like(dist, -1e9))
        ce = F.cross_entropy(logits, ep.query_y, reduction="none")
        weight = ep.query_mask * present[ep.query_y].to(ce.dtype)  # queries of support-less classes ignored
        return (ce * weight).sum() / weight.sum().clamp(min=1.0)

    return loss


INNER_STEPS, INNER_LR = 2, 0.3


def maml_loss(model: nn.Module):
    """Masked second-order MAML loss: inner SGD on the support set (torch.func.grad), query CE."""

    def masked_ce(p, buffers, x, y, mask):
        ce = F.cross_entropy(functional_call(model, (p, buffers), (x,)), y, reduction="none")
        return (ce * mask).sum() / mask.sum().clamp(min=1.0)

    def loss(params, buffers, ep: MaskedEpisode) -> torch.Tensor:
        fast = params
        for _ in range(INNER_STEPS):
            g = grad(masked_ce)(fast, buffers, ep.support_x, ep.support_y, ep.support_mask)
            fast = {k: fast[k] - INNER_LR * g[k] for k in fast}
        return masked_ce(fast, buffers, ep.query_x, ep.query_y, ep.query_mask)

    return loss


def maml_reference_grad(model: nn.Module, sx, sy, qx, qy) -> dict[str, torch.Tensor]:
    """The classic create_graph loop on real parameters and unpadded tensors."""
    names = [k for k, _ in model.named_parameters()]
    base = list(model.parameters())
    fast = list(base)
    for _ in range(INNER_STEPS):
        logits = functional_call(model, dict(zip(names, fast, strict=True)), (sx,))
        gs = torch.autograd.grad(F.cross_entropy(logits, sy), fast, create_graph=True)
        fast = [w - INNER_LR * g for w, g in zip(fast, gs, strict=True)]
    qloss = F.cross_entropy(functional_call(model, dict(zip(names, fast, strict=True)), (qx,)), qy)
    return dict(zip(names, torch.autograd.grad(qloss, base), strict=True))


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach() for k, p in model.named_parameters()}


def _episodes_for(*, x, labels, record_ids, step, q, num_slots=3, n_way=3, classes=range(6)):
    sampler = RecordEpisodeSampler(
        labels=labels,
        classes=list(classes),
        num_slots=num_slots,
        n_way=n_way,
        sample_rate=q,
        support_prob=0.5,
        secret_seed=SEED,
        public_seed=0,
        record_ids=record_ids,
        start_step=step,
    )
    usable = sampler.sample().usable_episodes()
    return usable, gather_episodes(x=x, episodes=usable)


# ---------------------------------------------------------------------------------------------
# Sensitivity of the project's scheme (<= 2C) and failure of naive per-record clipping
# ---------------------------------------------------------------------------------------------
C_SMALL = 0.02  # well below typical episode-gradient norms, so clipping is active


def _removal_change(data_seed: int, removed: int, step: int) -> tuple[float, int]:
    rng = np.random.default_rng(data_seed)
    n = 30
    labels = rng.integers(0, 6, size=n)
    x = torch.as_tensor(rng.normal(size=(n, 8)) + labels[:, None] * 0.3, dtype=torch.float32)
    ids = np.arange(n)
    j = removed % n
    keep = ids != j
    model = _embedder(data_seed % 7)
    loss = protonet_loss(model, n_way=3)
    sums, eps = [], []
    for sel in (np.ones(n, dtype=bool), keep):
        usable, masked = _episodes_for(x=x[sel], labels=labels[sel], record_ids=ids[sel], step=step, q=0.9)
        eps.append(
            [(e.slot, ids[sel][e.support_index].tolist(), ids[sel][e.query_index].tolist()) for e in usable]
        )
        if masked:
            g = per_episode_gradients(loss_fn=loss, params=_params(model), buffers={}, episodes=masked)
            assert g.mode == "vmap"
            sums.append(clip_and_sum(grads=g.grads, max_grad_norm=C_SMALL))
        else:
            sums.append({k: torch.zeros_like(v) for k, v in _params(model).items()})
    diff = torch.sqrt(sum(((sums[0][k] - sums[1][k]) ** 2).sum() for k in sums[0])).item()
    changed = len(set(map(str, eps[0])) ^ set(map(str, eps[1])))
    return diff, changed


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_seed=st.integers(0, 10_000), removed=st.integers(0, 1000), step=st.integers(0, 50))
def test_removing_one_record_moves_clipped_episode_sum_by_at_most_2c(data_seed, removed, step):
    diff, changed = _removal_change(data_seed, removed, step)
    assert diff <= 2 * C_SMALL * (1 + 1e-5)
    # Only the removed record's own episode can change (appear, vanish or differ).
    assert changed <= 2


def test_sensitivity_bound_is_exercised():
    """On fixed datasets the change exceeds C: a sensitivity of C (one clipped episode) would be wrong.

    Removing a record both removes its contribution and turns its episode's gradient, so the
    factor 2 in the noise std 2zC is needed.
    """
    diffs = [_removal_change(seed, seed * 7, seed % 5)[0] for seed in range(30)]
    assert max(diffs) <= 2 * C_SMALL * (1 + 1e-5)
    assert max(diffs) > C_SMALL * (1 + 1e-3)


def _linear_protonet_per_record_grads(sx, sy, qx, qy) -> torch.Tensor:
    """Naive per-record gradients: record r's gradient flows only through its own embedding."""
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2, dtype=torch.float64))
    allx = torch.cat([sx, qx])
    k, s = allx.shape[0], sx.shape[0]
    copies = {n: p.detach().expand(k, *p.shape).clone() for n, p in model.named_parameters()}

    def loss(c):
        emb = vmap(lambda p, xi: functional_call(model, p, (xi[None],))[0])(c, allx)
        onehot = F.one_hot(sy, 2).double()
        protos = onehot.T @ emb[:s] / onehot.sum(0)[:, None]
        dist = ((emb[s:, None, :] - protos[None]) ** 2).sum(-1)
        return F.cross_entropy(-dist, qy, reduction="sum")

    g = grad(loss)(copies)
    return torch.cat([v.reshape(k, -1) for v in g.values()], dim=1)


def _clipped_rows_sum(rows: torch.Tensor, c: float) -> torch.Tensor:
    return clip_and_sum(grads={"w": rows}, max_grad_norm=c)["w"]


def test_naive_per_record_clipping_of_a_protonet_episode_exceeds_2c():
    """A 10-record ProtoNet episode (4 support, 6 query, embedding e = W x with W = I).

    Removing support record 0 moves the sum of per-record-clipped gradients by ~7.6 C: far above
    the C (add/remove) or 2C (replace) that per-record DP-SGD would claim, because the prototypes
    couple records. Per-episode clipping of the same episode moves by at most 2C.
    """
    c = 1.0
    sx = torch.tensor([[-1.9, -1.8], [1.1, 0.8], [0.4, 0.8], [-0.4, 1.0]], dtype=torch.float64)
    sy = torch.tensor([0, 0, 1, 1])
    qx = torch.tensor(
        [[-1.2, 0.3], [1.7, 0.7], [0.0, 1.1], [1.0, -1.7], [-0.4, -2.3], [1.3, -1.1]], dtype=torch.float64
    )
    qy = torch.tensor([0, 0, 0, 1, 1, 1])
    full = _linear_protonet_per_record_grads(sx, sy, qx, qy)
    less = _linear_protonet_per_record_grads(sx[1:], sy[1:], qx, qy)
    naive_change = (_clipped_rows_sum(full, c) - _clipped_rows_sum(less, c)).norm().item()
    assert naive_change > 2 * c
    assert naive_change == pytest.approx(7.5696, abs=1e-3)
    # Coupling: every other record's own gradient changed.
    assert bool((~torch.isclose(full[1:], less, atol=1e-6).all(dim=1)).all())
    # The per-episode scheme on the same data: one clipped gradient per episode.
    per_episode = _clipped_rows_sum(full.sum(0, keepdim=True), c) - _clipped_rows_sum(
        less.sum(0, keepdim=True), c
    )
    assert per_episode.norm().item() <= 2 * c


# ---------------------------------------------------------------------------------------------
# Mechanism: noise, accounting, equality with the pure clipped sum
# ---------------------------------------------------------------------------------------------
def _zero_loss(params, buffers, episode):
    return 0.0 * sum(p.sum() for p in params.values()) + 0.0 * episode.sum()


@pytest.mark.parametrize("expected_episodes", [1, 4])
def test_noise_std_is_2zc_over_public_normaliser(expected_episodes):
    z, c = 0.7, 1.5
    model = nn.Linear(200, 100, bias=False)
    before = model.weight.detach().clone()
    dp = episodic_dpsgd(
        model,
        noise_multiplier=z,
        max_grad_norm=c,
        sample_rate=0.1,
        expected_episodes=expected_episodes,
        lr=1.0,
    )
    metrics = dp.step(
        episodes=[torch.zeros(3)] * 5, loss_fn=_zero_loss, params=dict(model.named_parameters()), buffers={}
    )
    noise = (before - model.weight.detach()).ravel() * expected_episodes
    assert metrics["noise_std"] == pytest.approx(2 * z * c)
    assert noise.std().item() == pytest.approx(2 * z * c, rel=0.03)
    assert abs(noise.mean().item()) < 4 * 2 * z * c / np.sqrt(noise.numel())


def test_accountant_records_z_not_2z():
    z, q, steps = 1.2, 0.05, 7
    model = _embedder()
    accountant = OpacusRDP()
    dp = episodic_dpsgd(model, noise_multiplier=z, sample_rate=q, lr=0.01, accountant=accountant)
    assert dp.optimizer.noise_multiplier == pytest.approx(2 * z)  # Opacus adds std 2zC ...
    for i in range(steps):
        episodes = [] if i == 0 else [torch.zeros(1)]  # empty steps are accounted too
        dp.step(episodes=episodes, loss_fn=_zero_loss, params=dict(model.named_parameters()), buffers={})
    assert accountant.history == [(z, q, steps)]  # ... but the accountant is told z
    ref, wrong = OpacusRDP(), OpacusRDP()
    for _ in range(steps):
        ref.step(noise_multiplier=z, sample_rate=q)
        wrong.step(noise_multiplier=2 * z, sample_rate=q)
    assert accountant.get_epsilon(delta=1e-5) == pytest.approx(ref.get_epsilon(delta=1e-5), rel=1e-12)
    assert accountant.get_epsilon(delta=1e-5) > 1.5 * wrong.get_epsilon(delta=1e-5)

    from privacy.accountants import RDPAccountant

    project = RDPAccountant()
    dp2 = episodic_dpsgd(model, noise_multiplier=z, sample_rate=q, lr=0.01, accountant=project)
    dp2.step(episodes=[], loss_fn=_zero_loss, params=dict(model.named_parameters()), buffers={})
    assert project.history == [(z, q, 1)]


def test_step_without_noise_equals_clipped_sum_over_public_normaliser():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=40)
    x = torch.as_tensor(rng.normal(size=(40, 8)), dtype=torch.float32)
    _, masked = _episodes_for(x=x, labels=labels, record_ids=np.arange(40), step=3, q=0.8)
    assert len(masked) >= 2
    model = _embedder(3)
    loss = protonet_loss(model, n_way=3)
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    g = per_episode_gradients(loss_fn=loss, params=start, buffers={}, episodes=masked)
    expected = clip_and_sum(grads=g.grads, max_grad_norm=0.1)
    dp = episodic_dpsgd(
        model, noise_multiplier=0.0, max_grad_norm=0.1, sample_rate=0.8, expected_episodes=3, lr=1.0
    )
    metrics = dp.step(episodes=masked, loss_fn=loss, params=dict(model.named_parameters()), buffers={})
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), start[k] - expected[k] / 3)
    assert metrics["private/num_episodes"] == len(masked)
    assert metrics["private/clip_fraction"] == 1.0


# ---------------------------------------------------------------------------------------------
# torch.func paths: second-order MAML, padding/masks, loop fallback
# ---------------------------------------------------------------------------------------------
def _variable_maml_episodes(n_way: int = 3):
    g = torch.Generator().manual_seed(0)
    raw = []
    for s, q in ((4, 3), (6, 2), (3, 5)):  # different sizes: padding is needed for vmap
        raw.append(
            (
                torch.randn(s, 1, 5, 5, generator=g),
                torch.randint(0, n_way, (s,), generator=g),
                torch.randn(q, 1, 5, 5, generator=g),
                torch.randint(0, n_way, (q,), generator=g),
            )
        )
    return raw


def _pad_raw(raw):
    s_max = max(r[0].shape[0] for r in raw)
    q_max = max(r[2].shape[0] for r in raw)

    def pad(t, size):
        return torch.cat([t, torch.zeros((size - t.shape[0], *t.shape[1:]), dtype=t.dtype)])

    def mask(n, size):
        return torch.cat([torch.ones(n), torch.zeros(size - n)])

    return [
        MaskedEpisode(
            pad(sx, s_max),
            pad(sy, s_max),
            mask(len(sy), s_max),
            pad(qx, q_max),
            pad(qy, q_max),
            mask(len(qy), q_max),
        )
        for sx, sy, qx, qy in raw
    ]


def test_second_order_maml_vmap_matches_create_graph_loop():
    torch.manual_seed(0)
    model = TinyConvGN(out=3)
    raw = _variable_maml_episodes()
    padded = _pad_raw(raw)
    loss = maml_loss(model)
    vm = per_episode_gradients(loss_fn=loss, params=_params(model), buffers={}, episodes=padded, mode="vmap")
    lp = per_episode_gradients(loss_fn=loss, params=_params(model), buffers={}, episodes=padded, mode="loop")
    chunked = per_episode_gradients(
        loss_fn=loss, params=_params(model), buffers={}, episodes=padded, mode="vmap", chunk_size=2
    )
    assert vm.mode == "vmap" and lp.mode == "loop"
    for e, (sx, sy, qx, qy) in enumerate(raw):
        ref = maml_reference_grad(model, sx, sy, qx, qy)
        for k in ref:
            torch.testing.assert_close(vm.grads[k][e], ref[k], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(lp.grads[k][e], ref[k], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(chunked.grads[k][e], vm.grads[k][e], atol=1e-6, rtol=1e-5)
    # Second order matters: the first-order (FOMAML) gradient of the same episode differs.
    first_order = _fomaml(model, *raw[-1])
    assert any(not torch.allclose(vm.grads[k][-1], first_order[k], atol=1e-4) for k in first_order)


def _fomaml(model, sx, sy, qx, qy):
    names = [k for k, _ in model.named_parameters()]
    fast = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    for _ in range(INNER_STEPS):
        logits = functional_call(model, dict(zip(names, fast, strict=True)), (sx,))
        gs = torch.autograd.grad(F.cross_entropy(logits, sy), fast)
        fast = [(w - INNER_LR * g).detach().requires_grad_(True) for w, g in zip(fast, gs, strict=True)]
    qloss = F.cross_entropy(functional_call(model, dict(zip(names, fast, strict=True)), (qx,)), qy)
    return dict(zip(names, torch.autograd.grad(qloss, fast), strict=True))


def test_unpadded_variable_size_episodes_fall_back_to_loop():
    torch.manual_seed(0)
    model = TinyConvGN(out=3)
    raw = _variable_maml_episodes()
    unpadded = [
        MaskedEpisode(sx, sy, torch.ones(len(sy)), qx, qy, torch.ones(len(qy))) for sx, sy, qx, qy in raw
    ]
    auto = per_episode_gradients(
        loss_fn=maml_loss(model), params=_params(model), buffers={}, episodes=unpadded
    )
    assert auto.mode == "loop"
    padded = per_episode_gradients(
        loss_fn=maml_loss(model), params=_params(model), buffers={}, episodes=_pad_raw(raw)
    )
    assert padded.mode == "vmap"
    for k in auto.grads:
        torch.testing.assert_close(auto.grads[k], padded.grads[k], atol=1e-5, rtol=1e-4)
    with pytest.raises(InvalidInputError, match="vmap"):
        per_episode_gradients(
            loss_fn=maml_loss(model), params=_params(model), buffers={}, episodes=unpadded, mode="vmap"
        )


def test_nonfinite_episode_gradients_are_zeroed():
    model = nn.Linear(3, 1)

    def loss(params, buffers, ep):
        return (functional_call(model, params, (ep,)) ** 2).sum()

    eps = [torch.ones(2, 3), torch.full((2, 3), float("nan"))]
    g = per_episode_gradients(loss_fn=loss, params=_params(model), buffers={}, episodes=eps)
    assert g.num_nonfinite == 1
    assert all(torch.isfinite(v).all() for v in g.grads.values())
    assert all((v[1] == 0).all() for v in g.grads.values())


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
class _BNNet(nn.Module):
    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4, affine=affine)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_model_is_refused(affine):
    with pytest.raises(RecordCouplingModelError, match="BatchNorm"):
        episodic_dpsgd(_BNNet(affine))  # z = 1, C = 1, q = 0.1: nothing else to refuse


def test_bad_arguments_are_refused():
    model = _embedder()
    base = episodic_kwargs(model)  # z = 1, C = 1, q = 0.1, 4 expected episodes, lr 0.1: all valid
    for key, value in (
        ("noise_multiplier", -1.0),
        ("max_grad_norm", 0.0),
        ("sample_rate", 1.5),
        ("expected_episodes", 0),
        ("accountant", object()),
        ("optimizer", "rmsprop"),
    ):
        with pytest.raises(InvalidPrivacyConfigError):
            EpisodicDPSGD(**{**base, key: value})
    with pytest.raises(InvalidInputError):
        EpisodicDPSGD(**base, params={"w": nn.Parameter(torch.zeros(2))})
    dp = EpisodicDPSGD(**base)
    other = {k: p.detach().clone() for k, p in model.named_parameters()}
    with pytest.raises(InvalidInputError, match="trained parameter itself"):
        dp.step(episodes=[], loss_fn=_zero_loss, params=other, buffers={})
    with pytest.raises(InvalidInputError, match="smaller than the largest"):
        usable, _ = _episodes_for(
            x=torch.zeros(40, 8), labels=np.arange(40) % 6, record_ids=np.arange(40), step=0, q=1.0
        )
        gather_episodes(x=torch.zeros(40, 8), episodes=usable, support_size=1)
