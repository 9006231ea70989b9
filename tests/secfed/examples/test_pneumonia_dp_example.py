"""The PneumoniaMNIST examples state a guarantee; check it as a reader of the run would.

``examples/pneumonia_dp.toml`` (ε = 8; the sweep's ε = 1 point is the same file with
``--set privacy.target_epsilon=1``) and ``examples/pneumonia_dp_eps1.toml`` (the plan chosen for
ε = 1 on the validation split) claim record-level add/remove DP at their target ε, δ = 1e-5, each
site adding its own full noise (no noise sharing, no trust in the server or in other sites). A
reader who knows only the public plan (q, the DP steps a site takes, the noise multiplier the run
writes) recomputes ε with the accountant; it must not exceed the target. docs/private_training.md
quotes σ for every point: they must be the calibrated values of the shipped files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import secfed.dp.planning as planning
from privacy.analysis.calibration import gaussian_epsilon
from secfed.config import ExperimentConfig, load_config
from secfed.dp.calibration import calibrated_noise_multiplier

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
#: (example file, target ε override or None for the file's own, σ = z quoted in
#: docs/private_training.md's PneumoniaMNIST rows).
CASES = [
    ("pneumonia_dp.toml", None, 1.64),
    ("pneumonia_dp.toml", 1.0, 9.15),
    ("pneumonia_dp_eps1.toml", None, 20.35),
]


def _reader_epsilon(config: ExperimentConfig, z: float) -> float:
    """ε a reader recomputes: every site in every round, ``local_steps`` DP-SGD steps a round."""
    steps = config.experiment.rounds * config.learner.local_steps
    return gaussian_epsilon(
        noise_multiplier=z, sample_rate=config.privacy.sample_rate, steps=steps, delta=config.privacy.delta
    )


def _load(name: str, target: float | None) -> ExperimentConfig:
    overrides = [] if target is None else [f"privacy.target_epsilon={target}"]
    return load_config(EXAMPLES / name, overrides=overrides)


@pytest.mark.parametrize(("name", "target", "documented_z"), CASES)
def test_example_epsilon_recomputed_by_a_reader(name: str, target: float | None, documented_z: float) -> None:
    cfg = _load(name, target)
    # The trust assumption of the rows: record level, every site its own full noise.
    assert cfg.privacy.mode == "record"
    assert cfg.privacy.noise_sharing is False
    assert cfg.federation.aggregation == "plain"
    assert cfg.privacy.delta == 1e-5
    goal = cfg.privacy.target_epsilon
    z = calibrated_noise_multiplier(config=cfg)
    eps = _reader_epsilon(cfg, z)
    assert eps <= goal + 1e-6, f"{name}: a reader recomputes eps = {eps:.3f} > {goal}"
    assert eps >= 0.99 * goal  # calibrated to the target, not far below it
    assert z == pytest.approx(documented_z, abs=0.01), f"docs/private_training.md quotes another σ for {name}"


def test_eps1_example_targets_epsilon_one() -> None:
    """The ε = 1 file is the ε = 1 plan: its own target, not an override, is 1."""
    assert _load("pneumonia_dp_eps1.toml", None).privacy.target_epsilon == 1.0


@pytest.mark.parametrize("name", ["pneumonia_dp.toml", "pneumonia_dp_eps1.toml"])
def test_reader_check_catches_an_undercounted_plan(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a planner that counts half the rounds calibrates too little noise."""
    cfg = _load(name, None)
    rounds = cfg.experiment.rounds
    monkeypatch.setattr(planning, "record_rounds", lambda *, config: max(1, rounds // 2))
    monkeypatch.setattr(planning, "_CLASS_STEPS_CACHE", {})
    z = calibrated_noise_multiplier(config=cfg)
    assert _reader_epsilon(cfg, z) > cfg.privacy.target_epsilon


def test_shared_noise_example_holds_epsilon_one_only_under_its_stated_collusion() -> None:
    """``pneumonia_dp_eps1_shared.toml``: noise shared under SecAgg, at most one colluding site.

    A reader of the run recomputes ε from the counted noise: the server and one colluding site
    know that site's share and subtract it, so what protects a record is the other m - 1 = 5
    shares (each σ/√5). ε must be at most 1 with that noise, and above 1 if a second site colluded
    (the trust assumption is what carries the guarantee, not a formality).
    """
    from secfed.dp.calibration import calibrated_config
    from secfed.dp.params import dp_params
    from secfed.dp.sharing import planning_survivors, share_stddev, trust_assumption

    cfg = calibrated_config(config=_load("pneumonia_dp_eps1_shared.toml", None))
    assert cfg.privacy.mode == "record" and cfg.privacy.noise_sharing is True
    assert cfg.federation.aggregation == "secagg" and cfg.privacy.colluding_sites == 1
    params = dp_params(config=cfg)
    m = planning_survivors(params=params)
    assert m == cfg.partition.num_sites == 6  # every site trains every round, none dropped
    sigma = cfg.privacy.noise_multiplier * cfg.privacy.max_grad_norm  # one record, sensitivity C
    share = share_stddev(params=params)
    assert share == pytest.approx(sigma / 5**0.5)

    def reader_eps(colluders: int) -> float:
        counted = share * (m - colluders) ** 0.5 / cfg.privacy.max_grad_norm
        return _reader_epsilon(cfg, counted)

    assert 0.99 <= reader_eps(1) <= 1.0 + 1e-6
    assert reader_eps(2) > 1.05
    assert "1 site(s) may collude with the server" in trust_assumption(params=params)
