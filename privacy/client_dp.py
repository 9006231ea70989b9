"""Client-level DP with a trusted aggregator: DP-FedAvg (McMahan, Ramage, Talwar & Zhang, ICLR 2018).

Each round the server samples every client independently with probability ``q`` (Poisson sampling,
what the Poisson-subsampled-Gaussian accountants assume), clips each sampled client's whole model
update to L2 norm ``C``, sums the clipped updates and adds Gaussian noise ``N(0, (zC)² I)`` to the
sum. The average is the noisy sum divided by a *public* constant (the expected number of sampled
clients ``q·N``; McMahan et al.'s fixed-denominator estimator) — dividing by the actual number of
sampled clients would leak it.

Privacy unit: one client's entire local dataset; adjacency: adding or removing one client. Account
each round with ``accountant.step(noise_multiplier=z, sample_rate=q)`` (L2 sensitivity of the sum is
``C`` under add/remove).

With only a handful of clients (e.g. ~10 hospitals) this guarantee is weak at any useful noise
level: McMahan et al. needed ~5,000 clients per round (z ≈ 1, ε ≈ 4.6 at δ = 1e-9 over 763k users).

Randomness: client sampling uses :mod:`secrets` (OS CSPRNG). The noise comes from
:func:`privacy.noise.add_gaussian_noise`: an AES-256-CTR keystream under a fresh 256-bit key from
:func:`os.urandom` (no longer a numpy PCG64 generator, which is not a cryptographic generator),
with the clipped sum snapped to a lattice far below the noise scale and exact discrete Gaussian
noise added (Canonne, Kamath & Steinke 2020, arXiv 2004.00010), so the release does not leak the
low bits of the sum (Mironov 2012; Jin et al. 2022, arXiv 2112.05307); the sensitivity grows by at
most ``zC·2^-20``. Runs are not reproducible from the seed; tests fix the noise with
:func:`privacy.noise.fixed_noise_source` or inject a source.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from privacy.analysis._checks import check_finite_nonneg, check_int, check_positive, check_rate
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.noise import NoiseSource, add_gaussian_noise, noise_source

__all__ = [
    "ADJACENCY",
    "MECHANISM",
    "PRIVACY_UNIT",
    "DPFedAvgAggregator",
    "DPFedAvgConfig",
    "clip_update",
    "sample_clients",
]

#: What one privacy unit is for DP-FedAvg: all the data of one client.
PRIVACY_UNIT = "client"
#: Neighbouring relation: add or remove one client's entire dataset.
ADJACENCY = "add/remove"
#: Mechanism name used in ledgers.
MECHANISM = "dp-fedavg"

Vector = TypeVar("Vector", np.ndarray, torch.Tensor)
T = TypeVar("T", bound=Hashable)


def _as_flat(update: np.ndarray | torch.Tensor, name: str) -> None:
    if isinstance(update, torch.Tensor):
        if update.ndim != 1 or not torch.is_floating_point(update):
            raise InvalidInputError(
                f"{name} must be a 1-D floating-point tensor, got shape {tuple(update.shape)}"
            )
        if not bool(torch.isfinite(update).all()):
            raise InvalidInputError(f"{name} contains NaN or inf")
    elif isinstance(update, np.ndarray):
        if update.ndim != 1 or not np.issubdtype(update.dtype, np.floating):
            raise InvalidInputError(
                f"{name} must be a 1-D floating-point array, got {update.dtype} {update.shape}"
            )
        if not np.all(np.isfinite(update)):
            raise InvalidInputError(f"{name} contains NaN or inf")
    else:
        raise InvalidInputError(f"{name} must be a numpy array or torch tensor, got {type(update).__name__}")


def clip_update(*, update: Vector, clip_norm: float) -> tuple[Vector, float]:
    """Scale ``update`` so its L2 norm is at most ``clip_norm`` (McMahan et al. 2018, flat clipping).

    Args:
        update: flat (1-D) floating-point numpy array or torch tensor; not modified.
        clip_norm: C > 0.

    Returns:
        ``(clipped, original_norm)``; ``clipped`` has the input's type, dtype and device.

    Raises:
        InvalidPrivacyConfigError: C <= 0.
        InvalidInputError: not a finite 1-D float vector.
    """
    c = check_positive("clip_norm", clip_norm)
    _as_flat(update, "update")
    if isinstance(update, torch.Tensor):
        norm = float(torch.linalg.vector_norm(update.detach().to(torch.float64)))
        factor = min(1.0, c / norm) if norm > 0 else 1.0
        return update.detach() * factor, norm
    norm = float(np.linalg.norm(update.astype(np.float64)))
    factor = min(1.0, c / norm) if norm > 0 else 1.0
    return (update * factor).astype(update.dtype, copy=False), norm


def sample_clients(*, client_ids: Sequence[T], sample_rate: float) -> list[T]:
    """Poisson client sampling: each client is kept independently with probability ``sample_rate``.

    Uses :class:`secrets.SystemRandom` (the OS CSPRNG): the privacy amplification relies on the
    sample staying hidden.

    Args:
        client_ids: the population (hashable, distinct ids).
        sample_rate: q in [0, 1].

    Returns:
        The sampled ids, in input order (possibly empty).

    Raises:
        InvalidPrivacyConfigError: q not in [0, 1].
        InvalidInputError: duplicate ids.
    """
    q = check_rate("sample_rate", sample_rate)
    ids = list(client_ids)
    if len(set(ids)) != len(ids):
        raise InvalidInputError("client_ids must be distinct")
    rng = secrets.SystemRandom()
    return [cid for cid in ids if rng.random() < q]


@dataclass(frozen=True)
class DPFedAvgConfig:
    """Parameters of DP-FedAvg.

    Attributes:
        clip_norm: C, the L2 bound on each client's update.
        noise_multiplier: z; the noise on the sum has std ``z·C``.
        sample_rate: q, the Poisson client-sampling probability per round.
        num_clients: N, the population size (public); the mean divides by ``q·N``.

    Raises:
        InvalidPrivacyConfigError: invalid values.
    """

    clip_norm: float
    noise_multiplier: float
    sample_rate: float
    num_clients: int

    def __post_init__(self) -> None:
        check_positive("clip_norm", self.clip_norm)
        check_finite_nonneg("noise_multiplier", self.noise_multiplier)
        if check_rate("sample_rate", self.sample_rate) == 0:
            raise InvalidPrivacyConfigError("sample_rate must be > 0")
        check_int("num_clients", self.num_clients, minimum=1)

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the sum: ``z·C``."""
        return float(self.noise_multiplier * self.clip_norm)

    @property
    def expected_clients(self) -> float:
        """Public denominator of the mean: ``q·N``."""
        return float(self.sample_rate * self.num_clients)


class DPFedAvgAggregator:
    """Trusted aggregator for DP-FedAvg (McMahan et al. 2018): sample, clip, sum, add noise.

    Args:
        config: the mechanism's parameters.
        source: noise source; ``None`` (the default, and the only choice for real runs) uses
            :func:`privacy.noise.noise_source` (a fresh AES-256-CTR source). Inject one only in
            tests.

    Raises:
        InvalidPrivacyConfigError: ``config`` is not a :class:`DPFedAvgConfig`.
        InvalidInputError: ``source`` is not a :class:`privacy.noise.NoiseSource`.
    """

    PRIVACY_UNIT = PRIVACY_UNIT
    ADJACENCY = ADJACENCY
    MECHANISM = MECHANISM

    def __init__(self, *, config: DPFedAvgConfig, source: NoiseSource | None = None) -> None:
        if not isinstance(config, DPFedAvgConfig):
            raise InvalidPrivacyConfigError(f"config must be a DPFedAvgConfig, got {type(config).__name__}")
        if source is not None and not isinstance(source, NoiseSource):
            raise InvalidInputError(
                f"source must be a privacy.noise.NoiseSource, got {type(source).__name__}"
            )
        self.config = config
        self._noise = noise_source() if source is None else source

    def sample(self, *, client_ids: Sequence[T]) -> list[T]:
        """Poisson-sample this round's clients (see :func:`sample_clients`)."""
        return sample_clients(client_ids=client_ids, sample_rate=self.config.sample_rate)

    def clip(self, *, update: Vector) -> Vector:
        """Clip one client's flat update to ``C`` (see :func:`clip_update`)."""
        return clip_update(update=update, clip_norm=self.config.clip_norm)[0]

    def noisy_sum(self, *, updates: Sequence[Vector], dim: int) -> np.ndarray | torch.Tensor:
        """Clip every update, sum, and add ``N(0, (zC)² I)`` (:func:`privacy.noise.add_gaussian_noise`).

        Args:
            updates: the sampled clients' flat updates (possibly none; all numpy or all torch).
            dim: the update dimension (needed when no client was sampled).

        Returns:
            The noisy sum, float64 numpy array if the inputs are numpy (or empty), else a torch tensor
            with the first update's dtype and device.

        Raises:
            InvalidInputError: mixed types, wrong dimensions, non-finite values.
        """
        d = check_int("dim", dim, minimum=1)
        is_torch = [isinstance(u, torch.Tensor) for u in updates]
        if any(is_torch) and not all(is_torch):
            raise InvalidInputError("updates must be all numpy arrays or all torch tensors")
        total = np.zeros(d, dtype=np.float64)
        for i, u in enumerate(updates):
            _as_flat(u, f"updates[{i}]")
            if u.shape[0] != d:
                raise InvalidInputError(f"updates[{i}] has dimension {u.shape[0]}, expected {d}")
        for u in updates:
            clipped = self.clip(update=u)
            if isinstance(clipped, torch.Tensor):
                total += clipped.detach().to(device="cpu", dtype=torch.float64).numpy()
            else:
                total += clipped.astype(np.float64)
        std = self.config.noise_std
        if std > 0:
            total = add_gaussian_noise(values=total, sigma=std, source=self._noise)
        if updates and isinstance(updates[0], torch.Tensor):
            first = updates[0]
            return torch.from_numpy(total).to(device=first.device, dtype=first.dtype)
        return total

    def noisy_mean(self, *, updates: Sequence[Vector], dim: int) -> np.ndarray | torch.Tensor:
        """:meth:`noisy_sum` divided by the public constant ``q·N`` (never the actual count).

        Args:
            updates: the sampled clients' flat updates.
            dim: the update dimension.

        Returns:
            The noisy mean update (same type rules as :meth:`noisy_sum`).
        """
        return self.noisy_sum(updates=updates, dim=dim) / self.config.expected_clients

    def account(self, *, accountant: object, rounds: int = 1) -> None:
        """Record ``rounds`` rounds in a Gaussian accountant: ``step(noise_multiplier=z, sample_rate=q)``.

        Args:
            accountant: any object with the Gaussian accountant ``step`` signature.
            rounds: number of rounds.

        Raises:
            InvalidPrivacyConfigError: the accountant has no compatible ``step``.
        """
        step = getattr(accountant, "step", None)
        if step is None:
            raise InvalidPrivacyConfigError(
                "accountant must have a step(*, noise_multiplier, sample_rate, num_steps)"
            )
        step(
            noise_multiplier=self.config.noise_multiplier,
            sample_rate=self.config.sample_rate,
            num_steps=check_int("rounds", rounds, minimum=0),
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DPFedAvgAggregator(C={c.clip_norm}, z={c.noise_multiplier}, q={c.sample_rate}, "
            f"N={c.num_clients}, "
            f"unit={PRIVACY_UNIT!r}, adjacency={ADJACENCY!r})"
        )
