"""Scoring a run's model on its few-shot test tasks, and the model a run starts from.

:func:`final_evaluation` is a run's reported test accuracy; :func:`untrained_evaluation` the
untrained baseline beside it (the very starting weights, :func:`initial_model`, on the same
tasks). Every name here is also importable from :mod:`secfed.experiment`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from secfed.config import ExperimentConfig
from secfed.seeding import derive_seed

__all__ = ["evaluate_model", "initial_model", "final_evaluation", "untrained_evaluation", "score_untrained"]


def evaluate_model(
    *, learner: Any, model: torch.nn.Module, source: Any, episodes: int, seed: int
) -> tuple[float, float]:
    """Few-shot accuracy over ``episodes`` test tasks with a 95% confidence interval.

    Args:
        learner: The learner (its ``evaluate`` adapts on the support set).
        model: The global model.
        source: Test task source.
        episodes: Number of test tasks.
        seed: Seed of the test tasks (the same tasks at every evaluation).

    Returns:
        ``(mean accuracy, 1.96 * standard error)``.
    """
    rng = np.random.default_rng(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    accs = np.array([learner.evaluate(model=model, task=source.sample(rng=rng)) for _ in range(episodes)])
    model.train(was_training)
    torch.set_rng_state(torch_state)
    ci = 1.96 * float(accs.std(ddof=1)) / math.sqrt(len(accs)) if len(accs) > 1 else float("nan")
    return float(accs.mean()), ci


def initial_model(
    *, config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int | None
) -> torch.nn.Module:
    """The global model a run starts from (seeded from ``experiment.seed``, as every run is).

    Args:
        config: The run's configuration.
        input_shape: Shape of one input record.
        num_classes: Model outputs, as :func:`secfed.components.model_num_classes` gives them.

    Returns:
        The model: untrained, or pretrained on the declared-public data when
        ``model.pretrain_steps > 0`` (:func:`secfed.pretrain.pretrain_public`).
    """
    from secfed import components

    torch.manual_seed(derive_seed(config.experiment.seed, "init"))
    model = components.build_model(config=config, input_shape=input_shape, num_classes=num_classes)
    if config.model.pretrain_steps > 0:
        from secfed.pretrain import pretrain_public

        # public data only (data.public_alphabets), deterministic from the seed: no privacy cost
        pretrain_public(config=config, model=model)
    return model


def final_evaluation(
    *, config: ExperimentConfig, learner: Any, model: torch.nn.Module, source: Any
) -> tuple[float, float]:
    """A run's final evaluation: ``experiment.final_eval_episodes`` test tasks from its fixed seed.

    Args:
        config: The run's configuration.
        learner: The learner (adapts on each task's support set).
        model: The model to score.
        source: Test task source.

    Returns:
        ``(mean accuracy, 1.96 * standard error)``.
    """
    return evaluate_model(
        learner=learner,
        model=model,
        source=source,
        episodes=config.experiment.final_eval_episodes,
        seed=derive_seed(config.experiment.seed, "final-eval"),
    )


def untrained_evaluation(
    *,
    config: ExperimentConfig,
    learner: Any,
    source: Any,
    input_shape: tuple[int, ...],
    num_classes: int | None,
) -> tuple[float, float]:
    """The untrained baseline: the run's starting model scored on the run's final test tasks.

    A few-shot model that was never trained already beats chance by far (a random Conv-4
    embedding scores about 50 % 5-way 1-shot on Omniglot, chance 20 %), so a run's accuracy means
    something only beside this figure. The model is :func:`initial_model` (same seed, so the very
    weights the run started from) and the tasks are :func:`final_evaluation`'s (same seed and
    episodes), so the two accuracies are paired on identical tasks. The caller's torch random
    state is left as it was.

    Args:
        config: The run's configuration.
        learner: The learner (adapts on each task's support set).
        source: Test task source (the one the final evaluation uses).
        input_shape: Shape of one input record.
        num_classes: Model outputs, as :func:`secfed.components.model_num_classes` gives them.

    Returns:
        ``(mean accuracy, 1.96 * standard error)`` of the untrained model.
    """
    with torch.random.fork_rng(devices=[]):
        model = initial_model(config=config, input_shape=input_shape, num_classes=num_classes)
        return final_evaluation(config=config, learner=learner, model=model, source=source)


def score_untrained(*, config: ExperimentConfig) -> tuple[float, float]:
    """Load a configuration's test data and score its untrained model (:func:`untrained_evaluation`).

    For a configuration or a finished run's ``config.toml`` outside a run
    (``examples/untrained_baseline.py``, ``evaluations/benchmarks/init_accuracy.py``); a run
    computes the same figure itself and writes it to ``summary.json`` as
    ``untrained_test_accuracy``.

    Args:
        config: The configuration (a DP run's calibrated one is fine: the figure does not depend
            on the noise).

    Returns:
        ``(mean accuracy, 1.96 * standard error)`` over ``experiment.final_eval_episodes`` tasks.

    Raises:
        secfed.errors.SecfedError: If the data cannot be loaded.
    """
    from secfed import components

    train, test = components.load_splits(config=config)
    heads = components.model_num_classes(config=config, train=train)
    del train
    return untrained_evaluation(
        config=config,
        learner=components.build_learner(config=config),
        source=components.build_test_source(config=config, test=test),
        input_shape=test.input_shape,
        num_classes=heads,
    )
