"""Client-level DP from the adversary's view: what the released model reveals about the survivors.

A reader of the released global state (any later round's model, or the checkpoint) sees
``state_t - state_{t-1} = lr * (noisy sum) / normaliser``. With zero updates that difference is pure
noise, so its empirical standard deviation over a large ``d`` is ``z·C / normaliser``. If the
normaliser were the number of updates that survived, that count could be read off the noise scale
(issue 16, item 4); it must be a public constant of the configuration, and a round in which no
update survived must still release noise (otherwise "the model did not move" reveals it).

The central noise source is fixed through a test-only seeded generator (the production generator is
an ``os.urandom``-seeded one), so every run below draws the same noise vector.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp import ServerPrivacy
from secfed.federation.aggregation import AggregateResult, Channel, ServerAggregator
from secfed.federation.backends import Backend
from secfed.federation.messages import decode_message, encode_message
from secfed.federation.plain import STAGE, PlainServerAggregator
from secfed.federation.server import FederatedServer, sampled_sites

REPO = Path(__file__).resolve().parents[3]
DIM = 200_000
Z, CLIP = 1.5, 0.8


def _config(*, mode: str, num_sites: int = 6, clients_per_round: int = 5, **fed: Any) -> ExperimentConfig:
    federation: dict[str, Any] = {"sampling": "fixed", "clients_per_round": clients_per_round}
    federation.update(fed)
    privacy: dict[str, Any] = {"mode": mode, "noise_multiplier": Z, "max_grad_norm": CLIP}
    if mode == "distributed":
        privacy["mechanism"] = "ddg"
    raw: dict[str, Any] = {
        "experiment": {"rounds": 3, "eval_every": 0, "eval_episodes": 5, "final_eval_episodes": 5, "seed": 7},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": num_sites},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 1},
        "federation": federation,
        "privacy": privacy,
    }
    return config_from_dict(raw, base_dir=REPO)


class ZeroUpdateBackend(Backend):
    """Sites that train instantly and upload a zero update; ``silent`` sites never upload."""

    name = "zero"

    def __init__(self, *, silent: Sequence[int] = (), dim: int = DIM) -> None:
        self.silent = set(silent)
        self.dim = dim

    def start(self, *, site_ids: Sequence[int]) -> None:
        """Nothing to start."""

    def close(self) -> None:
        """Nothing to stop."""

    def request(self, *, messages: dict[int, bytes]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for sid, data in messages.items():
            msg = decode_message(data)
            if msg.kind == "train":
                out[sid] = encode_message(kind="train_reply", meta={"weight": 1.0, "train_loss": None})
            elif msg.kind == "agg" and sid not in self.silent:
                inner = encode_message(
                    kind="agg_reply",
                    meta={"round": msg.meta["round"], "stage": STAGE},
                    tensors={"weighted_update": np.zeros(self.dim)},
                )
                out[sid] = encode_message(kind="agg_reply", meta=msg.meta, blob=inner)
        return out


def _released_difference(
    *, config: ExperimentConfig, silent: Sequence[int], tmp_path: Path, noise_seed: int = 11
) -> tuple[np.ndarray, list[int]]:
    """Run round 1 and return (new state - old state, the survivors) as a reader of the model sees them."""
    with _fixed_noise(noise_seed):
        sp = ServerPrivacy(config=config, run_dir=tmp_path / "run")
        if getattr(sp, "_rng", None) is not None:  # the numpy generator, before privacy.noise
            sp._rng = np.random.Generator(np.random.PCG64(noise_seed))
        state = np.zeros(DIM, dtype=np.float32)
        server = FederatedServer(
            config=config,
            backend=ZeroUpdateBackend(silent=silent),
            aggregator=PlainServerAggregator(),
            state=state,
            param_mask=np.ones(DIM, dtype=bool),
            central_noise=sp.central_noise,
        )
        out = server.run_round(round_idx=1)
    return server.state.astype(np.float64) - state, out.clients


@contextlib.contextmanager
def _fixed_noise(seed: int) -> Iterator[None]:
    """Test-only: fix the central noise source (production draws a fresh cryptographic key)."""
    try:
        from privacy.noise import fixed_noise_source
    except ImportError:  # pragma: no cover - before privacy.noise existed
        yield
        return
    with fixed_noise_source(seed=seed):
        yield


def _normaliser(cfg: ExperimentConfig) -> float:
    """The public normaliser the tests expect: ``m`` (fixed-size sampling) or ``q·N`` (Poisson)."""
    f = cfg.federation
    if f.sampling == "poisson":
        return f.sample_rate * cfg.partition.num_sites
    return float(f.clients_per_round or cfg.partition.num_sites)


def test_public_normaliser_is_a_configuration_constant() -> None:
    from secfed.federation.server import public_normaliser

    assert public_normaliser(config=_config(mode="client")) == 5.0
    assert public_normaliser(config=_config(mode="client", clients_per_round=0)) == 6.0
    poisson = _config(mode="client", sampling="poisson", sample_rate=0.3, clients_per_round=0)
    assert public_normaliser(config=poisson) == pytest.approx(0.3 * 6)


def test_released_noise_scale_does_not_reveal_the_survivor_count(tmp_path: Path) -> None:
    """3 / 4 / 5 survivors of a public sample of 5 (zero updates): one noise scale, z·C / 5."""
    cfg = _config(mode="client")
    sampled = _sampled(cfg)
    expected_std = Z * CLIP / _normaliser(cfg)
    diffs: dict[int, np.ndarray] = {}
    for n_silent in (2, 1, 0):
        diff, clients = _released_difference(config=cfg, silent=sampled[:n_silent], tmp_path=tmp_path)
        assert len(clients) == len(sampled) - n_silent
        diffs[len(clients)] = diff
    for n, diff in diffs.items():
        # A reader's estimate of the noise std (d = 2e5: relative standard error ~ 0.16 %).
        assert float(np.std(diff)) == pytest.approx(expected_std, rel=0.01), n
    # Same noise, same public normaliser: the releases are identical whatever the survivor count.
    np.testing.assert_allclose(diffs[3], diffs[5], rtol=0, atol=1e-6)
    np.testing.assert_allclose(diffs[4], diffs[5], rtol=0, atol=1e-6)


def test_a_round_without_survivors_still_releases_noise(tmp_path: Path) -> None:
    cfg = _config(mode="client")
    sampled = _sampled(cfg)
    diff, clients = _released_difference(config=cfg, silent=sampled, tmp_path=tmp_path)
    assert clients == []
    assert float(np.std(diff)) == pytest.approx(Z * CLIP / _normaliser(cfg), rel=0.01)
    with_all, _ = _released_difference(config=cfg, silent=(), tmp_path=tmp_path)
    np.testing.assert_allclose(diff, with_all, rtol=0, atol=1e-6)


class _FixedSumAggregator(ServerAggregator):
    """A decoded distributed-DP sum: the same vector whatever the number of survivors."""

    name = "fixed"
    stages = ("upload",)

    def __init__(self, *, survivors: int, value: float) -> None:
        self.survivors, self.value = survivors, value

    def aggregate(
        self,
        *,
        round_idx: int,
        participants: list[int],
        weights: dict[int, float],
        dim: int,
        channel: Channel,
    ) -> AggregateResult:
        kept = sorted(participants)[: self.survivors]
        return AggregateResult(
            total=np.full(dim, self.value),
            weight_sum=float(len(kept)),
            survivors=kept,
            dropped=sorted(set(participants) - set(kept)),
            metrics={},
        )


@pytest.mark.parametrize("survivors", [3, 4, 5])
def test_distributed_release_divides_by_the_public_normaliser(survivors: int) -> None:
    cfg = _config(mode="distributed", aggregation="secagg")
    server = FederatedServer(
        config=cfg,
        backend=ZeroUpdateBackend(dim=8),
        aggregator=_FixedSumAggregator(survivors=survivors, value=6.0),
        state=np.zeros(8, dtype=np.float32),
        param_mask=np.ones(8, dtype=bool),
    )
    out = server.run_round(round_idx=1)
    assert len(out.clients) == survivors
    np.testing.assert_allclose(server.state, 6.0 / _normaliser(cfg), rtol=1e-6)


def _sampled(cfg: ExperimentConfig) -> list[int]:
    return list(sampled_sites(config=cfg, round_idx=1))
