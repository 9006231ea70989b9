"""FedProx (Li et al., MLSys 2020): the proximal term in every learner's local optimisation.

* A quadratic: local SGD / Adam on ``1/2 ||w - t||^2`` with the proximal term converges to the
  minimiser of the FedProx objective, ``(t + mu w_g) / (1 + mu)``, not to ``t``.
* Every learner, exactly: with SGD the FedProx step is ``w - lr (g(w) + mu (w - w_g))``; the first
  local step starts at ``w_g`` (no pull), so after two steps the update must be the plain two-step
  update minus ``lr * mu * (plain one-step update)``. Checked for all seven learners and under the
  record-level DP engines (zero noise), which shows the proximal gradient is added once, after
  the DP engine formed its (clipped, noised, normalised) gradient.
* ``mu = 0`` registers nothing and gives bit-for-bit the plain update.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.optim.optimizer as torch_optimizer

from privacy.sampling import RecordEpisodeSampler
from secfed.config import config_from_dict
from secfed.dp.engines import (
    EpisodeDPEngineFactory,
    PrivateEpisodes,
    RecordDPEngineFactory,
    StepCounter,
)
from secfed.errors import ConfigError
from secfed.experiment import Experiment
from secfed.learners import LEARNERS, LearnerConfig, build_learner
from secfed.learners.engine import proximal_term
from secfed.models.build import build_model
from tests.secfed.learners.learner_blobs import BlobProblem

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("mu", [0.5, 3.0])
def test_quadratic_converges_to_the_fedprox_minimiser(optimizer: str, mu: float) -> None:
    w_global = torch.tensor([1.0, -2.0, 0.5])
    target = torch.tensor([3.0, 2.0, -1.0])
    w = torch.nn.Parameter(w_global.clone())
    opt = torch.optim.SGD([w], lr=0.05) if optimizer == "sgd" else torch.optim.Adam([w], lr=0.01)
    with proximal_term(params={"w": w}, mu=mu):
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * ((w - target) ** 2).sum()).backward()
            opt.step()
    expected = (target + mu * w_global) / (1 + mu)
    assert torch.allclose(w.detach(), expected, atol=1e-3)
    # outside the block the hook is gone: plain steps go to the target
    for _ in range(3000):
        opt.zero_grad()
        (0.5 * ((w - target) ** 2).sum()).backward()
        opt.step()
    assert torch.allclose(w.detach(), target, atol=1e-3)


def test_other_parameters_and_bad_mu() -> None:
    w, other = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w, other], lr=0.1)
    with proximal_term(params={"w": w}, mu=10.0):
        with torch.no_grad():
            w.add_(1.0)
            other.add_(1.0)
        opt.zero_grad()
        w.grad = torch.zeros(2)
        other.grad = torch.zeros(2)
        opt.step()
    assert torch.allclose(w.detach(), torch.full((2,), 1.0 - 0.1 * 10.0), atol=1e-6)  # pulled to w_global = 0
    assert torch.allclose(other.detach(), torch.ones(2))  # not a tracked parameter: untouched
    for bad in (-1.0, math.inf, math.nan, True):
        with pytest.raises(ConfigError, match="proximal_mu"):
            with proximal_term(params={"w": w}, mu=bad):  # type: ignore[arg-type]
                pass
    with pytest.raises(ConfigError, match="proximal_mu"):
        build_learner(name="fedavg", config=LearnerConfig(proximal_mu=-0.1))


# ------------------------------------------------------------------------------------------------
# Every learner, plain engines
# ------------------------------------------------------------------------------------------------
LR, MU = 0.05, 2.0


def _setup(name: str) -> tuple[torch.nn.Module, Any]:
    problem = BlobProblem(n_way=3, k_shot=1, q_query=2, num_classes=12)
    head = LEARNERS[name].head
    classes = None if head == "none" else (12 if head == "global" else 3)
    torch.manual_seed(0)
    model = build_model(
        arch="mlp", input_shape=(1, 8, 8), num_classes=classes, hidden=8, norm="none", depth=1
    )
    model = LEARNERS[name].extend_model(model=model, config=LearnerConfig(fce=name == "matching"))
    return model, problem


def _delta(
    name: str, model: torch.nn.Module, problem: Any, *, steps: int, mu: float, **kw: Any
) -> torch.Tensor:
    cfg = LearnerConfig(
        local_steps=steps,
        local_lr=LR if name != "reptile" else 1.0,
        local_optimizer="sgd",
        inner_steps=1,
        inner_lr=0.1,
        batch_size=6,
        fce=name == "matching",
        proximal_mu=mu,
    )
    learner = build_learner(name=name, config=cfg)
    update = learner.local_update(
        model=copy.deepcopy(model), tasks=problem, rng=np.random.default_rng(5), **kw
    )
    return torch.cat([d.reshape(-1) for d in update.delta.values()])


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_learner_takes_the_fedprox_step(name: str) -> None:
    model, problem = _setup(name)
    lr = LR if name != "reptile" else 1.0
    one = _delta(name, model, problem, steps=1, mu=0.0)
    two = _delta(name, model, problem, steps=2, mu=0.0)
    prox = _delta(name, model, problem, steps=2, mu=MU)
    assert torch.equal(_delta(name, model, problem, steps=1, mu=MU), one)  # no pull at w_global
    assert torch.allclose(prox, two - lr * MU * one, atol=1e-6, rtol=1e-5)
    assert prox.norm() < two.norm()  # pulled toward the global model
    # mu = 0 is the plain learner, bit for bit (the default config has mu = 0)
    cfg_default = _delta(name, model, problem, steps=2, mu=LearnerConfig().proximal_mu)
    assert torch.equal(cfg_default, two)


def test_mu_zero_registers_no_hook() -> None:
    before = len(torch_optimizer._global_optimizer_pre_hooks)
    w = torch.nn.Parameter(torch.zeros(1))
    with proximal_term(params={"w": w}, mu=0.0):
        assert len(torch_optimizer._global_optimizer_pre_hooks) == before
    with proximal_term(params={"w": w}, mu=1.0):
        assert len(torch_optimizer._global_optimizer_pre_hooks) == before + 1
    assert len(torch_optimizer._global_optimizer_pre_hooks) == before


# ------------------------------------------------------------------------------------------------
# Under the record-level DP engines: the proximal gradient is added once, after clip-and-noise
# ------------------------------------------------------------------------------------------------
def _episode_dp(model: torch.nn.Module, problem: BlobProblem) -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    x = problem._records(rng=rng, labels=labels)

    def kwargs() -> dict[str, Any]:
        sampler = RecordEpisodeSampler(
            labels=labels,
            classes=list(range(6)),
            num_slots=2,
            n_way=3,
            sample_rate=0.8,
            support_prob=0.5,
            secret_seed=b"fedprox-test-secret-seed-0123456789",
            public_seed=1,
            record_ids=np.arange(labels.size),
        )
        return {
            "engine": EpisodeDPEngineFactory(
                noise_multiplier=0.0,
                max_grad_norm=0.5,
                sample_rate=0.8,
                normaliser=2,
                accountant=StepCounter(noise_multiplier=0.0, sample_rate=0.8),
            ),
            "units": PrivateEpisodes(sampler=sampler, x=x),
        }

    return {"kwargs": kwargs}


@pytest.mark.parametrize("name", ["protonet", "matching", "siamese", "fedavg"])
def test_dp_engines_take_the_fedprox_step_once(name: str) -> None:
    model, problem = _setup(name)
    if name == "fedavg":
        batch_rng = np.random.default_rng(9)
        x, y = problem.sample_batch(rng=batch_rng, batch_size=10)

        def kwargs() -> dict[str, Any]:
            return {
                "engine": RecordDPEngineFactory(
                    x=x,
                    y=y,
                    noise_multiplier=0.0,
                    max_grad_norm=0.5,
                    sample_rate=0.5,
                    normaliser=5,
                    accountant=StepCounter(noise_multiplier=0.0, sample_rate=0.5),
                    record_ids=np.arange(10),
                )
            }

        class _Fixed:
            def sample_batch(
                self, *, rng: np.random.Generator, batch_size: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
                return x, y

        problem = _Fixed()  # type: ignore[assignment]
    else:
        kwargs = _episode_dp(model, problem)["kwargs"]
    one = _delta(name, model, problem, steps=1, mu=0.0, **kwargs())
    two = _delta(name, model, problem, steps=2, mu=0.0, **kwargs())
    prox = _delta(name, model, problem, steps=2, mu=MU, **kwargs())
    assert one.norm() > 0
    assert torch.allclose(prox, two - LR * MU * one, atol=1e-6, rtol=1e-5)


def test_fedprox_config_reaches_the_learner_and_a_run(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "experiment": {"rounds": 2, "eval_every": 0, "final_eval_episodes": 5, "seed": 0},
            "data": {"dataset": "digits"},
            "partition": {"scheme": "dirichlet", "alpha": 0.1, "num_sites": 3},
            "task": {"n_way": 3, "test_n_way": 3, "q_query": 2, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
            "learner": {"name": "fedavg", "local_steps": 3, "batch_size": 8},
            "federation": {"proximal_mu": 0.1},
        },
        base_dir=REPO,
    )
    from secfed import components

    assert components.learner_config(config=cfg).proximal_mu == 0.1
    Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    assert "proximal_mu = 0.1" in (tmp_path / "run" / "config.toml").read_text()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["learner"] == "fedavg"
    with pytest.raises(ConfigError, match="proximal_mu"):
        config_from_dict({"federation": {"proximal_mu": -1.0}}, base_dir=REPO)
