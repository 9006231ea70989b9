"""The metric probe's two pieces of arithmetic (evaluations/benchmarks/metric_probe.py)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluations.benchmarks.metric_probe import prototype_accuracy, within_class_covariance


def test_within_class_covariance_centres_each_class_on_its_own_mean() -> None:
    emb = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [10.0, 12.0]])
    labels = np.array([0, 0, 1, 1])
    # class 0 varies along x by +-1, class 1 along y by +-1: the class means' distance is not variance
    np.testing.assert_allclose(
        within_class_covariance(embeddings=emb, labels=labels), [[0.5, 0.0], [0.0, 0.5]]
    )
    with pytest.raises(ValueError, match="do not match"):
        within_class_covariance(embeddings=emb, labels=labels[:3])


def test_a_metric_that_ignores_the_noisy_axis_classifies_what_euclid_misses() -> None:
    # prototypes (0, 0) and (1, 1); the class-0 query is off along y, the nuisance axis
    emb = np.array([[0.0, 0.0], [1.0, 1.0], [0.2, 1.5], [0.9, 1.0]])
    task = [(np.array([0, 1]), np.array([2, 3]), np.array([0, 1]))]
    euclid = prototype_accuracy(embeddings=emb, tasks=task, metric=np.eye(2))
    x_only = prototype_accuracy(embeddings=emb, tasks=task, metric=np.diag([1.0, 1e-4]))
    assert euclid[0] == 0.5  # the class-0 query is nearer (1, 1) in the plain distance
    assert x_only[0] == 1.0
