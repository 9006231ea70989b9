"""Gradient inversion replays for Matching Networks and Siamese networks (issue 19).

The server's view: the run's global model and configuration, and one site's message. For these
learners the message is the gradient of one episode's loss (a local step of plain SGD sends
``-lr`` times it), so the replay must be the learner's own episode loss on the public,
class-sorted label layout. Each test looks at what the server holds: the replayed message must
equal what the site's own ``local_update`` sends, the attack must run on a real run directory and
get closer to the private records than random images do, and no ground truth reaches it.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attacks.errors import AttackConfigError, AttackInputError
from attacks.functional import protonet_episode_labels
from attacks.inversion import (
    GroundTruth,
    InversionConfig,
    InversionInputs,
    observation_distance,
    run_inversion,
)
from attacks.options import AttackOptions
from attacks.runner import run_attack
from attacks.secfed_adapter import LoadedRun, load_run
from attacks.secfed_inversion import applicable_scenarios, prepare_cases
from attacks.secfed_replay import episode_loss_fn, episode_observation
from secfed import components
from secfed.config import ExperimentConfig, config_from_dict
from secfed.experiment import Experiment
from secfed.tasks.base import Task

REPO = Path(__file__).resolve().parents[2]
#: The learners of this file, with the learner options each run uses.
LEARNERS: dict[str, dict[str, Any]] = {
    "matching": {},
    "matching_fce": {"name": "matching", "fce": True, "fce_steps": 2},
    "siamese": {},
    # the N-pair loss (learner.pair_loss = "softmax"): the replay calls the learner's own loss, so it
    # must follow the key
    "siamese_npair": {"name": "siamese", "pair_loss": "softmax"},
}


def _config(key: str) -> ExperimentConfig:
    learner = {"name": key, "local_steps": 2, **LEARNERS[key]}
    return config_from_dict(
        {
            "experiment": {"rounds": 2, "eval_every": 0, "final_eval_episodes": 10, "seed": 3},
            "data": {"dataset": "digits", "rotations": True},
            "partition": {"scheme": "class_disjoint", "num_sites": 4},
            "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
            "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
            "learner": learner,
        },
        base_dir=REPO,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("metric-runs")
    out = {}
    for key in LEARNERS:
        out[key] = root / key
        Experiment(config=_config(key)).run(out_dir=out[key], progress=False)
    return out


class _OneTask:
    """A task source that always returns the same task (the site's private episode)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def sample(self, *, rng: np.random.Generator) -> Task:
        return self.task


def _episode(n_way: int, k_shot: int, n_query: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n_way * (k_shot + n_query), 1, 8, 8), generator=gen)
    return x, protonet_episode_labels(n_way=n_way, k_shot=k_shot, n_query=n_query)


@pytest.mark.parametrize("key", list(LEARNERS))
def test_replay_is_the_message_the_site_sends(runs: dict[str, Path], key: str) -> None:
    """One local SGD step of the site's own learner on one private episode sends -lr x the
    replayed episode gradient, for every parameter (encoder, pair head, FCE LSTMs)."""
    run = load_run(run_dir=runs[key])
    lr = 0.3
    cfg = run.config.replace(
        learner=dataclasses.replace(
            run.config.learner, local_optimizer="sgd", local_lr=lr, local_steps=1, meta_batch=1
        )
    )
    learner = components.build_learner(config=cfg)
    n_way, k_shot, n_query = 3, 2, 2
    x, y = _episode(n_way, k_shot, n_query, seed=11)
    ns = n_way * k_shot
    task = Task(support_x=x[:ns], support_y=y[:ns], query_x=x[ns:], query_y=y[ns:], n_way=n_way)
    sent = learner.local_update(
        model=copy.deepcopy(run.model), tasks=_OneTask(task), rng=np.random.default_rng(0)
    )
    obs = episode_observation(
        config=cfg, learner=learner, model=run.model, n_way=n_way, k_shot=k_shot, n_query=n_query
    )
    params = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    got = obs.observe(params=params, buffers=dict(run.model.named_buffers()), inputs=x, labels=y)
    assert set(got) == set(sent.delta)
    for name, delta in sent.delta.items():
        torch.testing.assert_close(-lr * got[name], delta, rtol=1e-4, atol=1e-7, msg=name)
    own = {"siamese": "pair_head.", "siamese_npair": "pair_head.", "matching_fce": "fce."}.get(key)
    if own is not None:  # the learner's own module is in the message and moves
        assert any(n.startswith(own) and bool(got[n].abs().sum() > 0) for n in got)
    # the message depends on the records: another episode gives another message
    x2, _ = _episode(n_way, k_shot, n_query, seed=12)
    other = obs.observe(params=params, buffers=dict(run.model.named_buffers()), inputs=x2, labels=y)
    assert any(not torch.allclose(other[n], got[n]) for n in got)


@pytest.mark.parametrize("key", ["matching", "siamese"])
def test_the_public_label_layout_loses_nothing(runs: dict[str, Path], key: str) -> None:
    """The site relabels its episode's classes; the server uses the canonical class-sorted layout.
    The loss (hence the message) does not depend on the renaming, so the layout is public."""
    run = load_run(run_dir=runs[key])
    lf = episode_loss_fn(learner=run.learner, model=run.model, n_way=3, k_shot=1, n_query=2)
    x, canon = _episode(3, 1, 2, seed=5)
    renamed = torch.tensor([2, 0, 1])[canon]
    params = {n: p.detach() for n, p in run.model.named_parameters()}
    buffers = dict(run.model.named_buffers())
    a, b = lf(params, buffers, x, canon), lf(params, buffers, x, renamed)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    with pytest.raises(AttackInputError, match="soft labels"):
        lf(params, buffers, x, torch.nn.functional.one_hot(canon, 3).float())
    with pytest.raises(AttackInputError, match="records"):
        lf(params, buffers, x[:-1], canon[:-1])


@pytest.mark.parametrize("key", list(LEARNERS))
def test_scenarios_and_public_labels(runs: dict[str, Path], key: str) -> None:
    run = load_run(run_dir=runs[key])
    cases, why = prepare_cases(run=run, options=AttackOptions(aggregate_clients=2))
    assert {c.name for c in cases} == {"gradient_b4", "episode", "secure_aggregate"}
    assert set(why) == {"gradient_b1", "update_b1", "update_b4"} and all(why.values())
    by_name = {c.name: c for c in cases}
    t = run.config.task
    assert by_name["episode"].threat.num_records == t.n_way * (t.k_shot + t.q_query)
    assert by_name["gradient_b4"].threat.num_records == 4  # the smallest episode: 2-way, 1 + 1
    assert by_name["secure_aggregate"].clients == [0, 1]
    assert by_name["secure_aggregate"].threat.num_records == 8
    for case in cases:
        # the attacker gets the public layout, never the ground truth
        assert case.threat.known_labels is not None
        assert not isinstance(case.threat.known_labels, GroundTruth)
        for t_ in case.threat.observed.values():
            assert t_.shape != case.truth.inputs.shape or not torch.equal(t_, case.truth.inputs)


def test_the_refusal_is_gone_and_unknown_learners_still_get_a_typed_error() -> None:
    for name in ("matching", "siamese"):
        reasons = applicable_scenarios(learner=name)
        assert reasons["episode"] is None and reasons["gradient_b4"] is None
        assert reasons["secure_aggregate"] is None
    from secfed.errors import ConfigError

    with pytest.raises(ConfigError, match="learner name"):
        applicable_scenarios(learner="prototypical")
    with pytest.raises(AttackConfigError, match="episode"):
        episode_loss_fn(learner=_learner("maml"), model=torch.nn.Linear(2, 2), n_way=2, k_shot=1, n_query=1)


def _learner(name: str) -> Any:
    from secfed.learners import build_learner
    from secfed.learners.base import LearnerConfig

    return build_learner(name=name, config=LearnerConfig())


def _random_distance(case: Any, run: LoadedRun, seeds: int = 3) -> float:
    gen = torch.Generator().manual_seed(99)
    obs, threat = case.threat.observation, case.threat
    out = []
    for _ in range(seeds):
        sim = obs.simulate(
            params=threat.params,
            buffers=threat.buffers,
            inputs=torch.rand(case.truth.inputs.shape, generator=gen),
            labels=threat.known_labels,
            create_graph=False,
        )
        out.append(float(observation_distance(simulated=sim, observed=threat.observed, kind="cosine")))
    return min(out)


@pytest.mark.parametrize(("key", "ratio"), [("matching", 0.3), ("siamese", 0.8)])
def test_attack_on_a_run_directory_matches_the_message(
    runs: dict[str, Path], key: str, ratio: float, tmp_path: Path
) -> None:
    """End to end through ``secfed attack``'s entry point (inversion.json written, the message
    sent in the run, labels from the public layout), and the reconstruction of the smallest
    episode's 4 records explains the observed message far better than random images do."""
    import shutil

    run_dir = tmp_path / key
    shutil.copytree(runs[key], run_dir)
    doc = run_attack(
        run_dir=run_dir,
        attack="inversion",
        options=AttackOptions(scenarios=("gradient_b4", "episode"), iterations=40),
    )
    assert (run_dir / "attacks" / "inversion.json").is_file()
    assert set(doc["scenarios"]) == {"gradient_b4", "episode"} and doc["learner"] == run_dir.name
    sc = doc["scenarios"]["gradient_b4"]
    assert sc["sent_in_run"] and sc["records"] == 4
    assert sc["result"]["label_source"] == "known"
    assert isinstance(sc["score"]["psnr"], float)
    run = load_run(run_dir=run_dir)
    (case,) = prepare_cases(run=run, options=AttackOptions(scenarios=("gradient_b4",)))[0]
    res = run_inversion(threat=case.threat, config=InversionConfig(iterations=150))
    assert res.distance < ratio * _random_distance(case, run)
    assert isinstance(case.threat, InversionInputs)
