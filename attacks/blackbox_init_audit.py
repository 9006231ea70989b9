"""Black-box audit of DP-SGD with worst-case initial parameters (Annamalai & De Cristofaro 2024).

Design (Annamalai & De Cristofaro 2024, "Nearly Tight Black-Box Auditing of Differentially Private
Machine Learning", NeurIPS, arXiv 2405.14106): the auditor sees **only the final model**, inserts an
**input canary** (a record, not a gradient), and chooses the **initial parameters** adversarially:
the model is first trained, without DP, to convergence on the other records, so that their
gradients are close to zero during the audited run and the canary's gradient — an out-of-distribution
input (every pixel at its maximum) labelled with the class the initial model finds least likely, so
its gradient is clipped to exactly ``C`` — stands out. Each *trial* trains the small model from those
parameters with the project's DP-SGD (:class:`privacy.dpsgd.PerSampleDPSGD`: Poisson sampling,
per-record clipping, noise from :mod:`privacy.noise`) on the records, with the canary included by the
auditor's coin (probability 1/2, add/remove adjacency). The score of a trial is the canary's loss
difference ``ℓ(θ_0; canary) − ℓ(θ_T; canary)`` on the final model (the initial model is public: the
auditor chose it). Trials are independent runs, so the bounds need no one-run assumptions:

* Clopper–Pearson ε lower bound of the threshold rules (Jagielski et al. 2020; Nasr et al. 2021;
  Bonferroni over a pooled-quantile threshold grid, :func:`attacks.audit.epsilon_lower_bound_from_scores`);
* the GDP bound (Dong, Roth & Su 2019; Nasr et al. 2023; :func:`attacks.fdp.gdp_audit`) — the trials
  are independent by construction, which is exactly what its analysis assumes;

each beside its **ceiling** (the bound if every trial were classified correctly, same number of
trials), the same bounds on an **idealised** Gaussian mechanism with the claimed parameters
(scores ``N(√T/z·[in], 1)`` for full batches), and the **accountant's ε** of the audited steps. The
small model is a softmax-linear classifier on the 8×8 digits of the smoke configuration's training
classes (``examples/digits_protonet.toml``: digits 0–4); ``init="random"`` gives the average-case
contrast (a random initial model, as in ordinary training). Negative control: ``noise_factor``.

Run: ``python -m attacks.blackbox_init_audit --epsilon 8 --steps 10`` (progress on stderr), or against
a record-level run's parameters with :func:`attacks.runner.run_attack` (``attack="blackbox-init-audit"``,
:func:`attacks.secfed_whitebox.run_blackbox_init_audit_attack`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from attacks import audit_common as common
from attacks.audit import epsilon_lower_bound_from_scores
from attacks.errors import AttackConfigError

__all__ = [
    "BlackBoxInitAuditConfig",
    "BlackBoxInitAuditResult",
    "digits_training_records",
    "run_blackbox_init_audit",
    "main",
]

Progress = Callable[[str], None]

#: Digit classes the smoke configuration trains on (its ``test_classes`` are 5–9).
SMOKE_TRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class BlackBoxInitAuditConfig:
    """What to audit and how.

    Attributes:
        noise_multiplier: The claimed ``z`` (noise std ``z·C`` on the clipped sum).
        max_grad_norm: The claimed clip bound ``C``.
        sample_rate: Poisson rate ``q`` of every record per step.
        steps: DP-SGD steps per trial (all accounted).
        lr: Learning rate of the audited training (the normaliser is the public ``expected_batch``);
            small, so that the canary's final-model loss difference is nearly linear in the update
            (measured at ε = 8, 10 full-batch steps: lr 0.1 loses the signal, 0.001 keeps it).
        expected_batch: Public normaliser of the noisy sum.
        trials: Models trained (each with the canary by the auditor's coin).
        records: Training records besides the canary (from the smoke configuration's classes).
        init: ``"worst_case"`` (pretrained to convergence on the records) or ``"random"``.
        pretrain_steps: Full-batch optimiser steps of the worst-case initialisation.
        delta: δ of the bounds and of the accountant's ε.
        significance: Error probability of every bound.
        noise_factor: Actual over claimed noise (negative control; 1 = honest).
        accountant: ``"rdp"``, ``"prv"`` or ``"pld"``.
        reference_runs: Runs of the idealised Gaussian reference (median reported; 0 = skip).
        seed: Seed of the auditor's choices (records, coins, initial model); the mechanism's noise
            and sampling come from :mod:`privacy.noise`.
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    sample_rate: float = 1.0
    steps: int = 10
    lr: float = 0.001
    expected_batch: int = 1
    trials: int = 400
    records: int = 500
    init: str = "worst_case"
    pretrain_steps: int = 300
    delta: float = 1e-5
    significance: float = 0.05
    noise_factor: float = 1.0
    accountant: str = "rdp"
    reference_runs: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        common.check_audit_config(
            config=self,
            positive=("noise_multiplier", "max_grad_norm", "lr", "noise_factor"),
            minimums=(
                ("steps", 1),
                ("expected_batch", 1),
                ("trials", 4),
                ("records", 1),
                ("pretrain_steps", 0),
                ("reference_runs", 0),
            ),
            choices=(("init", ("worst_case", "random")),),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


@dataclass
class BlackBoxInitAuditResult(common.AuditReport):
    """Bounds, their ceilings, the idealised reference and the accountant's ε (see :meth:`to_dict`)."""

    method: ClassVar[str | None] = (
        "black-box, final model, worst-case initial parameters (Annamalai & De Cristofaro 2024)"
    )
    bounds: dict[str, dict[str, Any]]
    idealised: dict[str, Any]
    canary: dict[str, Any]

    @property
    def violation(self) -> bool:
        """True when a bound exceeds the accountant's ε."""
        return any(float(b["epsilon"]) > self.accountant_epsilon for b in self.bounds.values())

    def findings(self) -> dict[str, Any]:
        """The bounds with their ceilings, the idealised reference and the canary."""
        return {"bounds": self.bounds, "idealised_gaussian": self.idealised, "canary": self.canary}


def digits_training_records(*, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` records of the smoke configuration's training classes, flattened, and their labels.

    Args:
        count: Records to draw (at most the ~900 of digits 0–4).
        seed: Seed of the draw.

    Returns:
        ``(x, y)``: float64 ``(count, 64)`` in ``[0, 1]`` and int64 ``(count,)`` in ``[0, 5)``.

    Raises:
        AttackConfigError: If ``count`` exceeds the available records.
    """
    from secfed.data.digits import load_digits_dataset

    ds = load_digits_dataset()
    keep = np.flatnonzero(np.isin(ds.labels, SMOKE_TRAIN_CLASSES))
    if count > keep.size:
        raise AttackConfigError(f"records must be <= {keep.size} (digits 0-4), got {count}")
    pick = np.random.default_rng([seed, 31]).choice(keep, size=count, replace=False)
    x = torch.from_numpy(ds.images[pick].reshape(count, -1).astype(np.float64))
    y = torch.from_numpy(ds.labels[pick].astype(np.int64))
    return x, y


def _initial_model(cfg: BlackBoxInitAuditConfig, x: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):  # the auditor's public initial model (not a privacy draw)
        torch.manual_seed(cfg.seed)
        model = nn.Linear(x.shape[1], len(SMOKE_TRAIN_CLASSES)).to(torch.float64)
    if cfg.init == "worst_case" and cfg.pretrain_steps > 0:
        opt = torch.optim.LBFGS(
            model.parameters(), lr=1.0, max_iter=cfg.pretrain_steps, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y) + 1e-4 * model.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return model


def _canary(model: nn.Linear, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel at its maximum, labelled with the class the initial model finds least likely."""
    x = torch.ones(1, dim, dtype=torch.float64)
    with torch.no_grad():
        label = int(model(x).argmin())
    return x, torch.tensor([label], dtype=torch.int64)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


class _NullAccountant:
    def step(self, *, noise_multiplier: float, sample_rate: float, num_steps: int = 1) -> None:
        del noise_multiplier, sample_rate, num_steps


def _trial(
    cfg: BlackBoxInitAuditConfig,
    init: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    canary: tuple[torch.Tensor, torch.Tensor],
    included: bool,
) -> float:
    from privacy.dpsgd import PerSampleDPSGD

    model = copy.deepcopy(init)
    xs = torch.cat([x, canary[0]]) if included else x
    ys = torch.cat([y, canary[1]]) if included else y
    dp = PerSampleDPSGD(
        model=model,
        x=xs,
        y=ys,
        noise_multiplier=cfg.noise_multiplier * cfg.noise_factor,
        max_grad_norm=cfg.max_grad_norm,
        sample_rate=cfg.sample_rate,
        expected_batch_size=cfg.expected_batch,
        lr=cfg.lr,
        accountant=_NullAccountant(),
    )
    for _ in range(cfg.steps):
        dp.step()
    final = dp.finish()
    return _loss(init, *canary) - _loss(final, *canary)


def _bounds(
    scores: np.ndarray, included: np.ndarray, cfg: BlackBoxInitAuditConfig
) -> dict[str, dict[str, Any]]:
    d, a = cfg.delta, cfg.significance
    cp = epsilon_lower_bound_from_scores(
        scores_in=scores[included], scores_out=scores[~included], delta=d, alpha=a
    )
    cp_c = epsilon_lower_bound_from_scores(
        scores_in=np.ones(int(included.sum())), scores_out=np.zeros(int((~included).sum())), delta=d, alpha=a
    )
    proven = common.canary_bounds(scores=scores, included=included, delta=d, significance=a)
    return {
        "clopper_pearson": {"epsilon": float(cp.epsilon), "ceiling": float(cp_c.epsilon)},
        "gdp": proven.gdp_entry(),
        "one_run": {
            "epsilon": float(proven.one_run.epsilon),
            "ceiling": float(proven.one_run_ceiling.epsilon),
        },
    }


def _statement(acc: float, bounds: dict[str, dict[str, Any]], trials: int) -> str:
    return common.audit_statement(
        accountant_epsilon=acc,
        ceilings=[(name, b["ceiling"]) for name, b in bounds.items()],
        sample=f"{trials} trials",
        violation=any(b["epsilon"] > acc for b in bounds.values()),
    )


def run_blackbox_init_audit(
    *, config: BlackBoxInitAuditConfig, progress: Progress | None = None
) -> BlackBoxInitAuditResult:
    """Train ``config.trials`` small models from the chosen initialisation and bound ε (module docstring).

    Args:
        config: What to audit.
        progress: Called with a line of text every 10 % of the trials.

    Returns:
        The :class:`BlackBoxInitAuditResult`.

    Raises:
        AttackConfigError: If ``config`` is not a :class:`BlackBoxInitAuditConfig`.
        privacy.errors.PrivacyError: If the mechanism refuses the parameters.
    """
    common.require_config(config=config, kind=BlackBoxInitAuditConfig)
    say = common.progress_sink(progress)
    t0 = time.perf_counter()
    x, y = digits_training_records(count=config.records, seed=config.seed)
    init = _initial_model(config, x, y)
    canary = _canary(init, x.shape[1])
    with torch.enable_grad():
        probe = copy.deepcopy(init)
        nn.functional.cross_entropy(probe(canary[0]), canary[1]).backward()
        canary_norm = math.sqrt(
            sum(float(p.grad.pow(2).sum()) for p in probe.parameters() if p.grad is not None)
        )
        probe.zero_grad()
        per_record = []
        for i in range(x.shape[0]):
            nn.functional.cross_entropy(probe(x[i : i + 1]), y[i : i + 1]).backward()
            per_record.append(
                math.sqrt(sum(float(p.grad.pow(2).sum()) for p in probe.parameters() if p.grad is not None))
            )
            probe.zero_grad()
    say(
        f"{config.init} initial model: canary gradient norm {canary_norm:.3g} "
        f"(clipped to {config.max_grad_norm:g}), "
        f"median record gradient norm {float(np.median(per_record)):.3g}"
    )
    rng = np.random.default_rng([config.seed, 32])
    included = rng.random(config.trials) < 0.5
    while included.sum() < 2 or (~included).sum() < 2:
        included = rng.random(config.trials) < 0.5
    scores = np.zeros(config.trials)
    tick = max(1, config.trials // 10)
    for i in range(config.trials):
        scores[i] = _trial(config, init, x, y, canary, bool(included[i]))
        if (i + 1) % tick == 0 or i + 1 == config.trials:
            say(f"trial {i + 1}/{config.trials} ({time.perf_counter() - t0:.0f} s)")
    t_mech = time.perf_counter() - t0
    bounds = _bounds(scores, included, config)
    acc = common.gaussian_accountant_epsilon(config=config)
    ideal: dict[str, Any] = {}
    if config.reference_runs > 0:
        ref = np.random.default_rng([config.seed, 33])
        shift = math.sqrt(config.steps) / config.noise_multiplier if config.sample_rate >= 1 else None
        if shift is not None:
            runs: dict[str, list[float]] = {k: [] for k in bounds}
            for _ in range(config.reference_runs):
                inc = ref.random(config.trials) < 0.5
                s = ref.standard_normal(config.trials) + shift * inc
                for k, b in _bounds(s, inc, config).items():
                    runs[k].append(b["epsilon"])
            ideal = {"runs": config.reference_runs, "mu": shift}
            for k, v in runs.items():
                ideal[f"{k}_epsilon_median"] = float(np.median(v))
    say(
        "bounds: "
        + ", ".join(f"{k} {b['epsilon']:.3f} (ceiling {b['ceiling']:.2f})" for k, b in bounds.items())
        + f"; accountant {acc:.3f}"
    )
    return BlackBoxInitAuditResult(
        config=config,
        accountant_epsilon=acc,
        bounds=bounds,
        idealised=ideal,
        canary={
            "label": int(canary[1]),
            "gradient_norm_at_init": canary_norm,
            "median_record_gradient_norm_at_init": float(np.median(per_record)),
            "score_mean_in": float(scores[included].mean()),
            "score_mean_out": float(scores[~included].mean()),
            "score_std_out": float(scores[~included].std(ddof=1)),
        },
        statement=_statement(acc, bounds, config.trials),
        timings={"trials": t_mech, "total": time.perf_counter() - t0},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attacks.blackbox_init_audit``: run the audit, print its figures (JSON with ``--json``).

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (0; 2 on invalid options).
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--epsilon", type=float, default=None, help="calibrate z for this accountant epsilon")
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-rate", type=float, default=1.0)
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--init", choices=("worst_case", "random"), default="worst_case")
    p.add_argument("--noise-factor", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        z = args.noise_multiplier
        if args.epsilon is not None:
            from privacy.calibration import calibrate_noise

            z = float(
                calibrate_noise(
                    target_epsilon=args.epsilon, delta=1e-5, sample_rate=args.sample_rate, steps=args.steps
                )
            )
        cfg = BlackBoxInitAuditConfig(
            noise_multiplier=z,
            steps=args.steps,
            sample_rate=args.sample_rate,
            trials=args.trials,
            init=args.init,
            noise_factor=args.noise_factor,
            seed=args.seed,
        )
    except AttackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = run_blackbox_init_audit(
        config=cfg, progress=lambda line: print(f"[blackbox-init-audit] {line}", file=sys.stderr, flush=True)
    )
    doc = res.to_dict()
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    print(
        f"black-box audit, final model only, {cfg.init} initial parameters ({cfg.trials} trials, "
        f"z = {z:.4g}, q = {cfg.sample_rate:g}, {cfg.steps} steps, delta = {cfg.delta:g}):"
    )
    print(f"  accountant epsilon     {res.accountant_epsilon:.3f}")
    for k, b in res.bounds.items():
        print(f"  {k:22s} {b['epsilon']:.3f}  ceiling {b['ceiling']:.3f}")
    for k in res.bounds:
        if f"{k}_epsilon_median" in res.idealised:
            print(f"  idealised Gaussian {k}: {res.idealised[f'{k}_epsilon_median']:.3f}")
    print(f"  {res.statement}")
    print(f"  {res.timings['total']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
