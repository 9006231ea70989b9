"""Lake et al.'s 20-way within-alphabet one-shot evaluation (task.test_protocol = "within_alphabet")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from secfed import components
from secfed.config import config_from_dict
from secfed.data.dataset import ImageDataset
from secfed.data.errors import InsufficientDataError
from secfed.data.omniglot_embedded import embedded_drawers, load_embedded_omniglot_split
from secfed.errors import ConfigError
from secfed.experiment import Experiment
from secfed.learners import LEARNERS
from secfed.tasks.within_alphabet import WithinAlphabetTaskSource, rank_drawers

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def test_split() -> ImageDataset:
    _, test = load_embedded_omniglot_split(
        train_archives=["images_background_small1"],
        test_archives=["images_background_small2"],
        train_rotations=False,
        test_rotations=True,
        image_size=28,
    )
    return test


def test_tasks_are_one_alphabet_one_support_drawer_another_query_drawer(test_split: ImageDataset) -> None:
    src = WithinAlphabetTaskSource(dataset=test_split, n_way=20, k_shot=1, q_query=1)
    assert src.alphabets == ("Japanese_(katakana)", "Sanskrit")
    assert src.skipped_alphabets == ("Tagalog",)  # 17 characters < 20: skipped, documented
    drawers = embedded_drawers(dataset=test_split)  # read from the packed file names
    assert np.array_equal(rank_drawers(dataset=test_split), drawers)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        alphabet, classes, support, query = src.sample_indices(rng=rng)
        seen.add(alphabet)
        assert len(set(classes.tolist())) == 20
        assert {test_split.class_groups[c] for c in classes} == {alphabet}
        assert not any(test_split.class_names[c].endswith(("/rot090", "/rot180", "/rot270")) for c in classes)
        assert np.array_equal(test_split.labels[support], classes)  # label-major, label k = classes[k]
        assert np.array_equal(test_split.labels[query], classes)
        s_drawer, q_drawer = set(drawers[support].tolist()), set(drawers[query].tolist())
        assert len(s_drawer) == 1 and len(q_drawer) == 1 and s_drawer != q_drawer
    assert seen == set(src.alphabets)
    task = src.sample(rng=np.random.default_rng(1))
    assert task.support_x.shape == (20, 1, 28, 28) and task.query_x.shape == (20, 1, 28, 28)
    assert torch.equal(task.support_y, torch.arange(20)) and torch.equal(task.query_y, torch.arange(20))
    again = src.sample(rng=np.random.default_rng(1))
    assert torch.equal(task.query_x, again.query_x)


def test_several_shots_and_queries_use_distinct_drawers(test_split: ImageDataset) -> None:
    src = WithinAlphabetTaskSource(dataset=test_split, n_way=5, k_shot=2, q_query=3)
    drawers = rank_drawers(dataset=test_split)
    _, classes, support, query = src.sample_indices(rng=np.random.default_rng(3))
    assert support.size == 10 and query.size == 15
    assert set(drawers[support].tolist()).isdisjoint(drawers[query].tolist())
    assert len(set(drawers[support].tolist())) == 2 and len(set(drawers[query].tolist())) == 3
    assert "Tagalog" in src.alphabets  # 5-way: every alphabet qualifies


def _toy(chars_per_alphabet: dict[str, int], drawers: int = 4) -> ImageDataset:
    names, groups, labels = [], [], []
    for a, n in chars_per_alphabet.items():
        for i in range(n):
            names.append(f"{a}/character{i:02d}")
            groups.append(a)
            labels += [len(names) - 1] * drawers
    y = np.asarray(labels, dtype=np.int64)
    return ImageDataset(
        images=np.zeros((y.size, 1, 4, 4), dtype=np.float32),
        labels=y,
        class_names=tuple(names),
        class_groups=tuple(groups),
        name="toy",
    )


def test_small_alphabets_are_skipped_and_impossible_settings_refused() -> None:
    src = WithinAlphabetTaskSource(dataset=_toy({"A": 3, "B": 6}), n_way=5, k_shot=1, q_query=1)
    assert src.alphabets == ("B",) and src.skipped_alphabets == ("A",)
    with pytest.raises(InsufficientDataError, match="characters per alphabet"):
        WithinAlphabetTaskSource(dataset=_toy({"A": 3, "B": 4}), n_way=5, k_shot=1, q_query=1)
    with pytest.raises(InsufficientDataError, match="drawers"):
        WithinAlphabetTaskSource(dataset=_toy({"A": 6}, drawers=2), n_way=5, k_shot=1, q_query=2)


def _config(learner: str, **over: Any) -> Any:
    lr: dict[str, Any] = {"name": learner, "local_steps": 1, "inner_steps": 2, "test_inner_steps": 1}
    if LEARNERS[learner].head == "n_way":
        lr["head_init"] = "zero"  # a zeroed head serves 20-way tests after 5-way training
    return config_from_dict(
        {
            "experiment": {"rounds": 1, "eval_every": 0, "final_eval_episodes": 4, "seed": 0},
            "data": {"dataset": "omniglot", "root": "embedded"},
            "partition": {"scheme": "class_disjoint", "num_sites": 2},
            "task": {
                "n_way": 5,
                "q_query": 1,
                "test_n_way": 20,
                "test_k_shot": 1,
                "test_q_query": 1,
                "test_protocol": "within_alphabet",
            },
            "model": {"arch": "conv4", "hidden": 8, "norm": "group", "groups": 2},
            "learner": lr,
            **over,
        },
        base_dir=REPO,
    )


def test_config_selects_the_protocol_and_refuses_other_datasets(test_split: ImageDataset) -> None:
    cfg = _config("protonet")
    assert isinstance(components.build_test_source(config=cfg, test=test_split), WithinAlphabetTaskSource)
    with pytest.raises(ConfigError, match="within_alphabet"):
        config_from_dict({"task": {"test_protocol": "within_alphabet"}}, base_dir=REPO)  # digits


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_every_learner_is_evaluated_on_within_alphabet_tasks(learner: str, test_split: ImageDataset) -> None:
    cfg = _config(learner)
    torch.manual_seed(0)
    heads = 3 if learner == "fedavg" else -1  # FedAvg's global head is not used at test time
    model = components.build_model(config=cfg, input_shape=test_split.input_shape, num_classes=heads)
    source = components.build_test_source(config=cfg, test=test_split)
    acc = components.build_learner(config=cfg).evaluate(
        model=model, task=source.sample(rng=np.random.default_rng(0))
    )
    assert 0.0 <= acc <= 1.0


def test_a_run_reports_within_alphabet_accuracy(tmp_path: Path) -> None:
    Experiment(config=_config("siamese")).run(out_dir=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_episodes"] == 4 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert 'test_protocol = "within_alphabet"' in (tmp_path / "run" / "config.toml").read_text()
