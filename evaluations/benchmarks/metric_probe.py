"""Would a within-class covariance metric learned from the sites' data lift ProtoNet on validation?

A probe for issue 17 (private learning above the public floor), run on the validation alphabets
only. It embeds every record with the run's *initial* model (public pretraining, no site data),
estimates the within-class covariance Σ of the embeddings from (a) the public alphabets and (b) the
sites' records pooled, without noise (the ceiling a DP estimate of Σ could reach: one Gaussian
release of a clipped second-moment sum costs little ε), and scores nearest-prototype
classification on the same validation tasks with the Euclidean distance and with the Mahalanobis
distance under ``(Σ + λ·tr(Σ)/d·I)^{-1}`` for several shrinkages λ (Simple CNAPS, Bateni et al.
2020, uses such class-covariance metrics). The differences are paired: the same tasks, the same
embeddings.

Measured (docs/private_training.md, validation log row "mc"): no λ lifts accuracy by more than
0.25 points, and the sites' Σ is no better than the public one: the metric adds nothing a DP
release could carry.

Usage::

    OMP_NUM_THREADS=1 python -m evaluations.benchmarks.metric_probe \\
        examples/omniglot_protonet_dp.toml --tasks 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["within_class_covariance", "prototype_accuracy", "main"]

#: Shrinkage values λ (times tr(Σ)/d added to the diagonal).
LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0)


def within_class_covariance(*, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pooled within-class covariance of ``embeddings`` (each class centred on its own mean).

    Args:
        embeddings: ``(N, d)`` embeddings.
        labels: ``(N,)`` class labels.

    Returns:
        ``(d, d)`` covariance (divided by N).

    Raises:
        ValueError: If the shapes disagree or there are no records.
    """
    if embeddings.ndim != 2 or len(embeddings) != len(labels) or len(labels) == 0:
        raise ValueError(f"embeddings {embeddings.shape} and labels {labels.shape} do not match")
    centred = np.concatenate(
        [embeddings[labels == c] - embeddings[labels == c].mean(0) for c in np.unique(labels)]
    )
    return centred.T @ centred / len(centred)


def prototype_accuracy(
    *, embeddings: np.ndarray, tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], metric: np.ndarray
) -> np.ndarray:
    """Per-task accuracy of nearest-prototype classification under ``(q - p)^T W (q - p)``.

    Args:
        embeddings: ``(N, d)`` embeddings of every record the tasks index.
        tasks: ``(support indices (n_way,), query indices (Q,), query labels (Q,))`` per task (one shot).
        metric: ``(d, d)`` positive definite ``W`` (the identity: Euclidean).

    Returns:
        ``(len(tasks),)`` accuracies in [0, 1].
    """
    out = []
    for support, query, labels in tasks:
        diff = embeddings[query][:, None, :] - embeddings[support][None]
        dist = np.einsum("qnd,de,qne->qn", diff, metric, diff)
        out.append(float((dist.argmin(1) == labels).mean()))
    return np.asarray(out)


def _embed(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        parts = [
            model(torch.tensor(images[i : i + 512])).reshape(len(images[i : i + 512]), -1)
            for i in range(0, len(images), 512)
        ]
    return torch.cat(parts).double().numpy()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: one JSON line per metric (accuracy, 95 % half-width, paired difference)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--tasks", type=int, default=1000, help="5-way 1-shot 15-query validation tasks")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the validation tasks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from secfed import components
    from secfed.config import load_config
    from secfed.data.dataset import ImageDataset
    from secfed.experiment import initial_model
    from secfed.models.feature_cache import featurize

    cfg = load_config(args.config)
    val = components.load_validation(config=cfg)
    model = initial_model(
        config=cfg, input_shape=val.input_shape, num_classes=components.model_num_classes(config=cfg)
    ).eval()

    def embed(dataset: ImageDataset) -> np.ndarray:
        return _embed(model, featurize(model=cfg.model, dataset=dataset).images)

    ev, yv = embed(val), np.asarray(val.labels)
    public = components.load_public(config=cfg)
    sigma_public = within_class_covariance(embeddings=embed(public), labels=np.asarray(public.labels))
    site_emb, site_lab = [], []
    for s in range(cfg.partition.num_sites):
        site = components.build_site(config=cfg, site_id=s)
        site_emb.append(embed(site.dataset))
        site_lab.append(np.asarray(site.dataset.labels) + 1_000_000 * s)  # classes stay per site
    sigma_sites = within_class_covariance(
        embeddings=np.concatenate(site_emb), labels=np.concatenate(site_lab)
    )

    rng = np.random.default_rng(args.seed)
    classes = np.unique(yv)
    tasks = []
    for _ in range(args.tasks):
        support: list[int] = []
        query: list[int] = []
        labels: list[int] = []
        for j, c in enumerate(rng.choice(classes, 5, replace=False)):
            idx = rng.permutation(np.flatnonzero(yv == c))
            support.append(idx[0])
            query.extend(idx[1:16])
            labels.extend([j] * 15)
        tasks.append((np.asarray(support), np.asarray(query), np.asarray(labels)))

    d = ev.shape[1]
    base = prototype_accuracy(embeddings=ev, tasks=tasks, metric=np.eye(d))

    def line(name: str, acc: np.ndarray) -> None:
        half = 196 * acc.std(ddof=1) / np.sqrt(len(acc))
        diff = acc - base
        print(
            json.dumps(
                {
                    "metric": name,
                    "accuracy": round(100 * acc.mean(), 2),
                    "ci95": round(half, 2),
                    "paired_diff": round(100 * diff.mean(), 2),
                    "paired_diff_ci95": round(196 * diff.std(ddof=1) / np.sqrt(len(diff)), 2),
                }
            ),
            flush=True,
        )

    line("euclidean", base)
    for name, sigma in (("public", sigma_public), ("sites", sigma_sites)):
        for lam in LAMBDAS:
            metric = np.linalg.inv(sigma + lam * np.trace(sigma) / d * np.eye(d))
            line(f"{name} lambda={lam}", prototype_accuracy(embeddings=ev, tasks=tasks, metric=metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
