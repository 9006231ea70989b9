"""Membership inference from model outputs: threshold attacks, LiRA and RMIA.

Everything here works on numbers the attacker can obtain: the target model's outputs on the
records of interest, and the outputs of reference ("shadow") models the attacker trained itself
with known membership. Training those models is the caller's business (see
:func:`collect_reference_stats`), which keeps this module agnostic of the granularity:

* record level — "was record x in site X's training data?": a record is a data point, a reference
  model is trained on a random half of a data pool;
* client level — "did site X take part in the federation?": a "record" is a whole site, a
  reference federation is run with a random half of the candidate sites.

Score convention: higher means "more likely a member". Ground-truth membership enters only
:func:`attacks.mia_metrics.mia_metrics`.

References:
    Yeom et al., "Privacy Risk in Machine Learning", CSF 2018 (loss threshold).
    Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (LiRA).
    Zarifzadeh, Liu, Mahloujifar, Shokri, "Low-Cost High-Power Membership Inference Attacks",
    ICML 2024 (RMIA).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from scipy.special import logsumexp

from attacks.errors import AttackConfigError, AttackInputError

__all__ = [
    "true_class_probability",
    "cross_entropy_loss",
    "logit_scaled_confidence",
    "loss_attack",
    "confidence_attack",
    "lira",
    "rmia",
    "ReferenceStats",
    "ReferenceTrainer",
    "collect_reference_stats",
    "balanced_inclusion_masks",
]

#: ``train_reference(include_mask=mask)`` trains one reference model (or runs one reference
#: federation) on the pool records (or sites) where ``mask`` is True, and returns a scorer mapping
#: an array of record indices to one statistic per record (e.g. logit-scaled confidence).
ReferenceTrainer = Callable[..., Callable[[np.ndarray], np.ndarray]]


def _logits_labels(logits: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim not in (2, 3):
        raise AttackInputError(f"logits must be (N, C) or (N, A, C) for A queries, got shape {z.shape}")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise AttackInputError(f"labels must be integers of shape ({z.shape[0]},), got {y.shape} {y.dtype}")
    if y.min() < 0 or y.max() >= z.shape[-1]:
        raise AttackInputError(f"labels must lie in [0, {z.shape[-1]})")
    return z, y.astype(np.int64)


def _true_logit(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy = y.reshape((-1,) + (1,) * (z.ndim - 1))
    true = np.take_along_axis(z, yy, axis=-1)[..., 0]
    others = np.where(np.arange(z.shape[-1]) == yy, -np.inf, z)
    return true, others


def true_class_probability(*, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Softmax probability of the true class.

    Args:
        logits: ``(N, C)`` or ``(N, A, C)``.
        labels: ``(N,)`` integer labels.

    Returns:
        ``(N,)`` or ``(N, A)`` probabilities.

    Raises:
        AttackInputError: On malformed inputs.
    """
    z, y = _logits_labels(logits, labels)
    true, _ = _true_logit(z, y)
    return np.exp(true - logsumexp(z, axis=-1))


def cross_entropy_loss(*, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-record cross-entropy loss.

    Args:
        logits: ``(N, C)`` or ``(N, A, C)``.
        labels: ``(N,)`` integer labels.

    Returns:
        ``(N,)`` or ``(N, A)`` losses.

    Raises:
        AttackInputError: On malformed inputs.
    """
    z, y = _logits_labels(logits, labels)
    true, _ = _true_logit(z, y)
    return logsumexp(z, axis=-1) - true


def logit_scaled_confidence(*, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))``, computed stably as ``z_y - logsumexp_{j != y} z_j``.

    Carlini et al. (2022, Sec. IV-B) use this statistic because it is close to Gaussian across
    reference models, which LiRA's parametric test assumes.

    Args:
        logits: ``(N, C)`` or ``(N, A, C)``.
        labels: ``(N,)`` integer labels.

    Returns:
        ``(N,)`` or ``(N, A)`` statistics.

    Raises:
        AttackInputError: On malformed inputs or fewer than two classes.
    """
    z, y = _logits_labels(logits, labels)
    if z.shape[-1] < 2:
        raise AttackInputError("logit-scaled confidence needs at least two classes")
    true, others = _true_logit(z, y)
    return true - logsumexp(others, axis=-1)


def loss_attack(*, losses: ArrayLike) -> np.ndarray:
    """Loss-threshold attack (Yeom et al. 2018): members have low loss, so the score is ``-loss``.

    Args:
        losses: Target model's loss per record, ``(N,)`` (or ``(N, A)``, averaged over queries).

    Returns:
        ``(N,)`` scores.

    Raises:
        AttackInputError: If losses are not finite.
    """
    v = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(v).all() or v.ndim not in (1, 2):
        raise AttackInputError("losses must be a finite (N,) or (N, A) array")
    return -(v.mean(axis=1) if v.ndim == 2 else v)


def confidence_attack(*, confidences: ArrayLike) -> np.ndarray:
    """Confidence-threshold attack: the target's confidence in the true class is the score.

    Args:
        confidences: ``(N,)`` (or ``(N, A)``, averaged over queries) true-class probabilities or any
            monotone transform of them.

    Returns:
        ``(N,)`` scores.

    Raises:
        AttackInputError: If confidences are not finite.
    """
    v = np.asarray(confidences, dtype=np.float64)
    if not np.isfinite(v).all() or v.ndim not in (1, 2):
        raise AttackInputError("confidences must be a finite (N,) or (N, A) array")
    return v.mean(axis=1) if v.ndim == 2 else v


def _as_queries(a: np.ndarray, lead: int) -> np.ndarray:
    """Append a query axis of length 1 when the array has none."""
    return a[..., None] if a.ndim == lead else a


def _validate_reference(
    target_stats: ArrayLike, reference_stats: ArrayLike, reference_in_mask: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(target_stats, dtype=np.float64)
    r = np.asarray(reference_stats, dtype=np.float64)
    m = np.asarray(reference_in_mask)
    if t.ndim not in (1, 2):
        raise AttackInputError(f"target_stats must be (N,) or (N, A), got shape {t.shape}")
    t = _as_queries(t, 1)
    r = _as_queries(r, 2)
    n, a = t.shape
    if r.ndim != 3 or r.shape[1:] != (n, a):
        raise AttackInputError(
            f"reference_stats must be (R, {n}) or (R, {n}, {a}), got shape {np.shape(reference_stats)}"
        )
    if m.dtype != np.bool_ or m.shape != r.shape[:2]:
        raise AttackInputError(f"reference_in_mask must be a boolean array of shape {r.shape[:2]}")
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise AttackInputError("statistics must be finite")
    return t, r, m


def _mean_std(r: np.ndarray, sel: np.ndarray, variance: str, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-record (and per-query) mean and std of the reference statistics selected by ``sel`` (R, N)."""
    w = sel[:, :, None].astype(np.float64)
    cnt = w.sum(axis=0)  # (N, 1)
    mu = (w * r).sum(axis=0) / np.maximum(cnt, 1.0)
    resid2 = w * (r - mu[None]) ** 2
    if variance == "per_example":
        sd = np.sqrt(resid2.sum(axis=0) / np.maximum(cnt, 1.0))
    else:
        # One variance shared by all records (per query), pooled over the residuals.
        pooled = np.sqrt(resid2.sum(axis=(0, 1)) / max(float(cnt.sum()), 1.0))
        sd = np.broadcast_to(pooled, mu.shape).copy()
    return mu, np.maximum(sd, min_std)


def lira(
    *,
    target_stats: ArrayLike,
    reference_stats: ArrayLike,
    reference_in_mask: ArrayLike,
    mode: str = "online",
    variance: str = "global",
    offline_score: str = "one_sided",
    min_std: float = 1e-4,
) -> np.ndarray:
    """Likelihood-ratio attack (LiRA, Carlini et al. 2022).

    For each record, Gaussians are fitted to the reference models' statistics (use
    :func:`logit_scaled_confidence`) when the record was IN their training data and when it was
    OUT.

    * ``mode="online"``: score ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``.
    * ``mode="offline"`` (OUT models only), ``offline_score="one_sided"`` (default, the paper's
      one-sided test): the score is ``-log P[Z > phi]`` for ``Z ~ N(mu_out, s_out^2)``, a monotone
      transform of the Gaussian CDF ``P[Z <= phi]`` that does not saturate at 1;
      ``offline_score="logpdf"``: ``-log N(phi; mu_out, s_out^2)`` (two-sided; what some public
      implementations use).
    * ``variance="global"``: one standard deviation shared by all records (pooled residuals; per
      IN/OUT side and per query) — recommended with few reference models;
      ``"per_example"``: per record.

    With several queries per record (augmentations; trailing axis ``A``) the per-query scores are
    averaged.

    Args:
        target_stats: Target model's statistic per record, ``(N,)`` or ``(N, A)``.
        reference_stats: Reference models' statistics, ``(R, N)`` or ``(R, N, A)``.
        reference_in_mask: Boolean ``(R, N)``: record n was in reference model r's training data.
        mode: ``"online"`` or ``"offline"``.
        variance: ``"global"`` or ``"per_example"``.
        offline_score: ``"one_sided"`` or ``"logpdf"`` (offline only).
        min_std: Floor on fitted standard deviations.

    Returns:
        ``(N,)`` scores (higher = member).

    Raises:
        AttackConfigError: On unknown options.
        AttackInputError: On malformed inputs, or records without the reference models the mode needs.
    """
    if mode not in ("online", "offline"):
        raise AttackConfigError(f"mode must be 'online' or 'offline', got {mode!r}")
    if variance not in ("global", "per_example"):
        raise AttackConfigError(f"variance must be 'global' or 'per_example', got {variance!r}")
    if offline_score not in ("one_sided", "logpdf"):
        raise AttackConfigError(f"offline_score must be 'one_sided' or 'logpdf', got {offline_score!r}")
    if not min_std > 0:
        raise AttackConfigError(f"min_std must be > 0, got {min_std}")
    t, r, m = _validate_reference(target_stats, reference_stats, reference_in_mask)
    n_out = (~m).sum(axis=0)
    need_two = variance == "per_example"
    if (n_out < (2 if need_two else 1)).any():
        raise AttackInputError(f"every record needs {'two' if need_two else 'one'} OUT reference model(s)")
    mu_out, sd_out = _mean_std(r, ~m, variance, min_std)
    if mode == "offline":
        zscore = (t - mu_out) / sd_out
        if offline_score == "one_sided":
            per_query = -sps.norm.logsf(zscore)
        else:
            per_query = -sps.norm.logpdf(t, loc=mu_out, scale=sd_out)
        return per_query.mean(axis=1)
    n_in = m.sum(axis=0)
    if (n_in < (2 if need_two else 1)).any():
        raise AttackInputError(
            f"online LiRA: every record needs {'two' if need_two else 'one'} IN reference model(s)"
        )
    mu_in, sd_in = _mean_std(r, m, variance, min_std)
    per_query = sps.norm.logpdf(t, loc=mu_in, scale=sd_in) - sps.norm.logpdf(t, loc=mu_out, scale=sd_out)
    return per_query.mean(axis=1)


def rmia(
    *,
    target_probs: ArrayLike,
    reference_probs: ArrayLike,
    reference_in_mask: ArrayLike,
    population_target_probs: ArrayLike,
    population_reference_probs: ArrayLike,
    mode: str = "offline",
    offline_a: float = 0.3,
    gamma: float = 1.0,
    approximate_population: bool = True,
) -> np.ndarray:
    """Robust membership inference attack (RMIA, Zarifzadeh et al. 2024).

    ``LR(x, z) = (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z))`` and the score of x is the fraction
    of population records z with ``LR(x, z) >= gamma``. ``Pr(.|theta)`` is the target model's
    true-class probability, ``Pr(.)`` its average over reference models.

    * ``mode="offline"`` (only OUT reference models are used): ``Pr(x)`` is approximated from the
      OUT average as ``((1 + a) Pr_OUT(x) + (1 - a)) / 2`` (the paper's linear approximation of the
      unseen IN models, ``a`` tuned on reference models); with ``approximate_population`` the same
      map is applied to the population records so that both sides of the ratio are comparable.
    * ``mode="online"``: ``Pr(x)`` is the average over all reference models (IN and OUT).

    Args:
        target_probs: Target model's true-class probability of each candidate, ``(N,)``.
        reference_probs: Reference models' probabilities on the candidates, ``(R, N)``.
        reference_in_mask: Boolean ``(R, N)`` membership of candidates in reference models.
        population_target_probs: Target model's probabilities on population records z, ``(Z,)``
            (records known not to be in the target's training data).
        population_reference_probs: Reference models' probabilities on z, ``(R, Z)``.
        mode: ``"offline"`` or ``"online"``.
        offline_a: The offline approximation parameter ``a`` in ``[0, 1]``.
        gamma: Likelihood-ratio threshold (1 in the paper's default setting).
        approximate_population: Apply the offline map to ``Pr(z)`` too.

    Returns:
        ``(N,)`` scores in ``[0, 1]`` (higher = member).

    Raises:
        AttackConfigError: On invalid options.
        AttackInputError: On malformed inputs.
    """
    if mode not in ("online", "offline"):
        raise AttackConfigError(f"mode must be 'online' or 'offline', got {mode!r}")
    if not 0.0 <= offline_a <= 1.0:
        raise AttackConfigError(f"offline_a must lie in [0, 1], got {offline_a}")
    if not gamma > 0:
        raise AttackConfigError(f"gamma must be > 0, got {gamma}")
    px_t = np.asarray(target_probs, dtype=np.float64)
    px_r = np.asarray(reference_probs, dtype=np.float64)
    m = np.asarray(reference_in_mask)
    pz_t = np.asarray(population_target_probs, dtype=np.float64)
    pz_r = np.asarray(population_reference_probs, dtype=np.float64)
    if (
        px_t.ndim != 1
        or px_r.shape != (px_r.shape[0], px_t.size)
        or m.shape != px_r.shape
        or m.dtype != np.bool_
    ):
        raise AttackInputError(
            "need target_probs (N,), reference_probs (R, N) and a boolean reference_in_mask (R, N)"
        )
    if pz_t.ndim != 1 or pz_r.shape != (px_r.shape[0], pz_t.size) or pz_t.size == 0:
        raise AttackInputError(
            "need population_target_probs (Z,) with Z >= 1 and population_reference_probs (R, Z)"
        )
    for name, arr in (
        ("target_probs", px_t),
        ("reference_probs", px_r),
        ("population_target_probs", pz_t),
        ("population_reference_probs", pz_r),
    ):
        if not (np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all()):
            raise AttackInputError(f"{name} must be probabilities in [0, 1]")
    tiny = 1e-30
    if mode == "offline":
        out = ~m
        if (out.sum(axis=0) < 1).any():
            raise AttackInputError("offline RMIA: every candidate needs at least one OUT reference model")
        p_out = (px_r * out).sum(axis=0) / out.sum(axis=0)
        p_x = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
        p_z_ref = pz_r.mean(axis=0)
        p_z = 0.5 * ((1 + offline_a) * p_z_ref + (1 - offline_a)) if approximate_population else p_z_ref
    else:
        p_x = px_r.mean(axis=0)
        p_z = pz_r.mean(axis=0)
    ratio_x = px_t / np.maximum(p_x, tiny)
    ratio_z = np.sort(pz_t / np.maximum(p_z, tiny))
    # LR(x, z) >= gamma  <=>  ratio_z <= ratio_x / gamma
    counts = np.searchsorted(ratio_z, ratio_x / gamma, side="right")
    return counts.astype(np.float64) / ratio_z.size


def balanced_inclusion_masks(*, num_models: int, pool_size: int, seed: int) -> np.ndarray:
    """Random inclusion masks where every pool record is IN for half of the models (Carlini et al. 2022).

    Args:
        num_models: Reference models R (>= 2).
        pool_size: Records (or sites) in the pool.
        seed: Seed of the (non-cryptographic; nothing secret depends on it) generator.

    Returns:
        Boolean ``(R, pool_size)``; with odd R each record is IN for ``floor(R/2)`` or ``ceil(R/2)``.

    Raises:
        AttackConfigError: If ``num_models < 2`` or ``pool_size < 1``.
    """
    if num_models < 2 or pool_size < 1:
        raise AttackConfigError(f"need num_models >= 2 and pool_size >= 1, got {num_models}, {pool_size}")
    rng = np.random.default_rng(seed)
    ranks = np.argsort(rng.random((num_models, pool_size)), axis=0)
    k = np.where(rng.random(pool_size) < 0.5, num_models // 2, (num_models + 1) // 2)
    return ranks < k[None, :]


@dataclass
class ReferenceStats:
    """Statistics of reference models with known membership.

    Attributes:
        in_mask: Boolean ``(R, pool_size)`` inclusion masks used to train the reference models.
        stats: Name of each query set to ``(R, len(query set))`` statistics.
        query_indices: Name to the queried record indices.
    """

    in_mask: np.ndarray
    stats: dict[str, np.ndarray]
    query_indices: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "in_mask": self.in_mask.astype(int).tolist(),
            "stats": {k: v.tolist() for k, v in self.stats.items()},
            "query_indices": {k: v.tolist() for k, v in self.query_indices.items()},
        }


def collect_reference_stats(
    *,
    train_reference: ReferenceTrainer,
    pool_size: int,
    num_models: int,
    query_indices: Mapping[str, ArrayLike] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ReferenceStats:
    """Train reference models on balanced random halves of a pool and query them.

    Args:
        train_reference: ``train_reference(include_mask=mask) -> scorer``; ``scorer(indices)``
            returns one statistic per queried record (any indexing the caller defines; the pool is
            ``0 .. pool_size-1``). For client-level inference the pool is the candidate sites.
        pool_size: Records (or sites) that may be included.
        num_models: Reference models to train.
        query_indices: Name to indices to query (default: ``{"pool": arange(pool_size)}``).
        seed: Seed of the inclusion masks.
        progress: Called with one line of text before and after each reference model (with its
            time and an estimate of the rest); ``None``: silent.

    Returns:
        The masks and the statistics per query set.

    Raises:
        AttackInputError: If a scorer returns the wrong number of statistics.
    """
    queries = {
        k: np.asarray(v, dtype=np.int64) for k, v in (query_indices or {"pool": np.arange(pool_size)}).items()
    }
    masks = balanced_inclusion_masks(num_models=num_models, pool_size=pool_size, seed=seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in queries}
    start = time.perf_counter()
    for r in range(num_models):
        if progress is not None:
            progress(f"reference model {r + 1}/{num_models} training ...")
        t0 = time.perf_counter()
        scorer = train_reference(include_mask=masks[r].copy())
        if progress is not None:
            now = time.perf_counter()
            left = (now - start) / (r + 1) * (num_models - r - 1)
            progress(
                f"reference model {r + 1}/{num_models} done in {now - t0:.1f} s"
                + (f"; about {left:.0f} s left" if r + 1 < num_models else "")
            )
        for k, idx in queries.items():
            s = np.asarray(scorer(idx), dtype=np.float64)
            if s.shape[0] != idx.shape[0]:
                raise AttackInputError(
                    f"reference scorer returned {s.shape[0]} statistics for {idx.shape[0]} records ({k})"
                )
            out[k].append(s)
    return ReferenceStats(
        in_mask=masks, stats={k: np.stack(v) for k, v in out.items()}, query_indices=queries
    )
