"""The white-box audit's canaries through each privacy mode's own mechanism (:mod:`attacks.whitebox_audit`).

Every release function takes the configuration, the inclusion bits of the ``m`` Dirac canaries
and the background rows, pushes them through the project's own clip-and-noise code
(:class:`privacy.dpsgd.PerSampleDPSGD`, :class:`privacy.episodic.EpisodicDPSGD`,
:class:`privacy.client_dp.DPFedAvgAggregator`, :class:`privacy.distributed.DistributedDPEncoder`,
or the plain sum without DP) and returns the released vectors ``(steps, d)`` in units of the
clipped sum: what the threat model lets the auditor observe. :data:`RELEASES` maps a mode to its
function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks import audit_common as common
from attacks.whitebox_config import WhiteBoxAuditConfig

__all__ = ["RELEASES", "background_rows", "distributed_plan"]

Progress = Callable[[str], None]


def distributed_plan(cfg: WhiteBoxAuditConfig, *, clients: int, z: float, clip: float) -> Any:
    """The distributed-DP plan (:func:`privacy.distributed.plan_distributed_dp`) of the audit's mechanism.

    Args:
        cfg: The audit configuration (mechanism, ``dim``, ``bits``).
        clients: Clients whose noise shares make up the sum (expected and at most).
        z: Noise multiplier the plan is built with.
        clip: Clip bound the plan is built with.

    Returns:
        The plan (its ``event`` feeds the accountant, its encoders the release).

    Raises:
        privacy.errors.PrivacyError: If the plan refuses the parameters.
    """
    from privacy.distributed import plan_distributed_dp

    return plan_distributed_dp(
        mechanism=cfg.distributed_mechanism,
        dim=cfg.dim,
        clip_norm=clip,
        noise_multiplier=z,
        expected_clients=clients,
        bits=cfg.bits,
        max_clients=clients,
    )


class _NullAccountant:
    def step(self, *, noise_multiplier: float, sample_rate: float, num_steps: int = 1) -> None:
        del noise_multiplier, sample_rate, num_steps


def background_rows(cfg: WhiteBoxAuditConfig, rng: np.random.Generator) -> np.ndarray:
    """Background gradients off the canary axes, norm ``canary_scale · C``.

    Args:
        cfg: The audit configuration (``background`` rows of ``dim`` coordinates).
        rng: The auditor's generator.

    Returns:
        ``(background, dim)`` rows, zero on the ``num_canaries`` canary coordinates.
    """
    n, d, m = cfg.background, cfg.dim, cfg.num_canaries
    out = np.zeros((n, d))
    if n:
        g = rng.standard_normal((n, d - m))
        g *= cfg.canary_scale * cfg.max_grad_norm / np.linalg.norm(g, axis=1, keepdims=True)
        out[:, m:] = g
    return out


def _canary_rows(
    cfg: WhiteBoxAuditConfig, canaries: np.ndarray, sign: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``s·C·e_i`` (times ``sign``) for the given canary indices, each ``group_size`` times."""
    idx = np.repeat(canaries, cfg.group_size)
    rows = np.zeros((idx.size, cfg.dim))
    val = cfg.canary_scale * cfg.max_grad_norm
    rows[np.arange(idx.size), idx] = val if sign is None else val * np.repeat(sign, cfg.group_size)
    return rows


def _included_rows(cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """The units a release sums: the included canaries' rows, then the background ``bg``."""
    return np.concatenate([_canary_rows(cfg, np.flatnonzero(included)), bg])


def _actual(cfg: WhiteBoxAuditConfig) -> tuple[float, float]:
    """(noise multiplier, clip bound) the mechanism is built with: noise std ``noise_factor·z·C``
    whatever the clip bound."""
    clip = cfg.max_grad_norm * cfg.clip_factor
    return cfg.noise_multiplier * cfg.noise_factor / cfg.clip_factor, clip


def _participation(cfg: WhiteBoxAuditConfig, count: int) -> np.ndarray:
    """Per-step Poisson coins (rate q) of ``count`` units from the mechanism's noise source."""
    return common.participation(sample_rate=cfg.sample_rate, count=count)


def _release_record(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    from privacy.dpsgd import PerSampleDPSGD

    rows = _included_rows(cfg, included, bg)
    x = torch.from_numpy(rows).to(torch.float64)
    model = nn.Linear(cfg.dim, 1, bias=False).to(torch.float64)
    nn.init.zeros_(model.weight)
    z, clip = _actual(cfg)
    dp = PerSampleDPSGD(
        model=model,
        x=x,
        y=torch.zeros(x.shape[0], dtype=torch.long),
        noise_multiplier=z,
        max_grad_norm=clip,
        sample_rate=cfg.sample_rate,
        expected_batch_size=1,
        lr=1.0,
        accountant=_NullAccountant(),
        per_example_loss=lambda out, _y: out[:, 0],
    )
    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        before = model.weight.detach().clone()
        dp.step()
        out[t] = -(model.weight.detach() - before).reshape(-1).numpy()  # w <- w - lr * noisy sum
        progress(f"record-level DP-SGD step {t + 1}/{cfg.steps}")
    dp.finish()
    return out


def _release_episode(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    from privacy.episodic import EpisodicDPSGD

    m = cfg.num_canaries
    sign = np.where(included, 1.0, -1.0)
    episodes_all = np.concatenate([_canary_rows(cfg, np.arange(m), sign), bg])
    model = nn.Linear(cfg.dim, 1, bias=False).to(torch.float64)
    nn.init.zeros_(model.weight)
    z, clip = _actual(cfg)
    dp = EpisodicDPSGD(
        model=model,
        noise_multiplier=z,
        max_grad_norm=clip,
        sample_rate=cfg.sample_rate,
        expected_episodes=1,
        lr=1.0,
        accountant=_NullAccountant(),
    )
    params = {"weight": model.weight}

    def loss_fn(
        p: dict[str, torch.Tensor], _b: dict[str, torch.Tensor], episode: torch.Tensor
    ) -> torch.Tensor:
        return (p["weight"][0] * episode).sum()

    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        take = _participation(cfg, episodes_all.shape[0])
        eps_t = torch.from_numpy(episodes_all[take])
        before = model.weight.detach().clone()
        dp.step(episodes=list(eps_t), loss_fn=loss_fn, params=params, buffers={})
        out[t] = -(model.weight.detach() - before).reshape(-1).numpy()
        progress(f"per-episode DP-SGD step {t + 1}/{cfg.steps}")
    return out


def _release_client(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    rows = _included_rows(cfg, included, bg)
    z, clip = _actual(cfg)
    return common.dp_fedavg_sums(
        rows=rows,
        clip_norm=clip,
        noise_multiplier=z,
        sample_rate=cfg.sample_rate,
        rounds=cfg.steps,
        progress=progress,
    )


def _release_distributed(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    import os

    m = cfg.num_canaries
    # every canary client sends: its update if included, zero otherwise (zero-out adjacency)
    rows = np.concatenate(
        [_canary_rows(cfg, np.arange(m)) * np.repeat(included, cfg.group_size)[:, None], bg]
    )
    n = rows.shape[0]
    z, clip = _actual(cfg)
    plan = distributed_plan(cfg, clients=n, z=z, clip=clip)
    out = np.zeros((cfg.steps, cfg.dim))
    for t in range(cfg.steps):
        seed = os.urandom(32)  # the round's public rotation seed
        take = _participation(cfg, n)
        out[t] = common.distributed_sum(
            plan=plan, bits=cfg.bits, rows=rows, take=np.flatnonzero(take), rotation_seed=seed
        )
        progress(f"distributed DP round {t + 1}/{cfg.steps} ({int(take.sum())} encodings)")
    return out


def _release_none(
    cfg: WhiteBoxAuditConfig, included: np.ndarray, bg: np.ndarray, progress: Progress
) -> np.ndarray:
    rows = _included_rows(cfg, included, bg)
    out = np.repeat(rows.sum(axis=0, keepdims=True), cfg.steps, axis=0)
    progress("plain sum (no DP)")
    return out


RELEASES: dict[str, Callable[[WhiteBoxAuditConfig, np.ndarray, np.ndarray, Progress], np.ndarray]] = {
    "record": _release_record,
    "episode": _release_episode,
    "client": _release_client,
    "distributed": _release_distributed,
    "none": _release_none,
}
