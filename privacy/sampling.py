"""Record-to-episode assignment that keeps record-level DP valid for episodic meta-losses.

Privacy unit and adjacency
--------------------------
The privacy unit is **one record of a site's dataset**; two datasets are adjacent when one is the
other plus one record (add/remove adjacency). Records carry stable identifiers (``record_ids``) so
that removing one record does not change the identity, and hence the randomness, of any other.

Why a special sampler
---------------------
DP-SGD (Abadi et al., CCS 2016, arXiv 1607.00133) and its accountant (Mironov, Talwar & Zhang 2019,
"Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv 1908.10530) assume that every
record enters a step independently with probability ``q`` (Poisson sampling) and that a record only
influences its own clipped gradient. An episodic loss (ProtoNet, Snell et al. 2017; MAML, Finn et
al. 2017) couples the records of an episode, so the clipping unit has to be the *episode*. The usual
"pick N classes, then K shots per class" sampler also makes each record's membership depend on the
others. This module implements the scheme of :mod:`privacy.episodic` instead:

1. every record is sampled independently with probability ``q`` (Poisson);
2. every sampled record is assigned to an episode *slot* and a *role* (support or query) with its own
   randomness, keyed by ``(record id, step, secret site key)``. The slots are drawn per step from the
   **public** class list using only public randomness; a record joins, uniformly at random, one of
   the slots that contain its class (if none does, it is unused this step) and becomes support with
   probability ``p_s``, query otherwise.

A record's (sampled, slot, role) is a function of its own label, its own keyed randomness and the
public slots only — never of which other records exist or were sampled. Removing a record therefore
changes exactly one episode (its own), which is what gives the per-episode clipped sum a
sensitivity of ``2C`` (see :mod:`privacy.episodic`). A record takes part in a step with probability
``q' = q * P(its class is in a slot) <= q``; the accountant is told ``q``, which is conservative
(the mechanism with rate ``q'`` is a mixture of the rate-``q`` one and the record-free one, and
Rényi divergences are jointly quasi-convex).

Randomness
----------
The per-record randomness is a pseudorandom function: AES-256 applied to the distinct 16-byte block
``(record id, step, purpose)`` (i.e. counter-mode keystream with structured counters) under a key
derived with HKDF-SHA256 (RFC 5869) from the site's secret seed. It is computationally
indistinguishable from independent uniforms for anyone without the seed. The slot plan uses a NumPy
generator seeded with a *public* seed: it is data-independent and may be published. Never reuse a
``(secret seed, step)`` pair for two different steps of training: :class:`RecordEpisodeSampler`
advances its step counter itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.errors import InvalidInputError, InvalidPrivacyConfigError

__all__ = [
    "EpisodeIndices",
    "RecordEpisodeSampler",
    "StepAssignment",
    "assign_records",
    "check_record_ids",
    "derive_sampling_key",
    "draw_slots",
    "record_uniforms",
]

#: Purposes of the three keyed uniforms drawn per record and step.
_PURPOSE_SAMPLE = 0
_PURPOSE_SLOT = 1
_PURPOSE_ROLE = 2
_NUM_PURPOSES = 3

_HKDF_INFO = b"secfed/privacy/sampling/record-episode-assignment/v1"
_MIN_SEED_BYTES = 16
_MAX_STEP = 2**32 - 1
_BLOCK_DTYPE = np.dtype([("record", "<u8"), ("step", "<u4"), ("purpose", "<u4")])


@dataclass(frozen=True)
class EpisodeIndices:
    """The records one episode slot received at one step.

    Attributes:
        slot: Index of the slot in the step's slot plan.
        classes: The slot's (public) class ids; a record of ``classes[k]`` gets episode label ``k``.
        support_index: Positions (into the site's data arrays) of the support records, int64.
        support_label: Episode labels of the support records, int64 in ``[0, n_way)``.
        query_index: Positions of the query records, int64.
        query_label: Episode labels of the query records, int64 in ``[0, n_way)``.
    """

    slot: int
    classes: tuple[int, ...]
    support_index: np.ndarray
    support_label: np.ndarray
    query_index: np.ndarray
    query_label: np.ndarray

    @property
    def n_way(self) -> int:
        """Number of classes of the slot."""
        return len(self.classes)

    @property
    def num_records(self) -> int:
        """Support plus query records."""
        return int(self.support_index.shape[0] + self.query_index.shape[0])

    def drop_queries_without_support(self) -> EpisodeIndices:
        """The same episode without the query records whose class has no support record.

        Useful for losses that cannot score a class without a prototype/support example. It is
        a deterministic function of this episode's own content, so the per-episode sensitivity
        argument is unaffected.

        Returns:
            A new :class:`EpisodeIndices` (the support set is unchanged).
        """
        keep = np.isin(self.query_label, self.support_label)
        return EpisodeIndices(
            slot=self.slot,
            classes=self.classes,
            support_index=self.support_index,
            support_label=self.support_label,
            query_index=self.query_index[keep],
            query_label=self.query_label[keep],
        )

    @property
    def usable(self) -> bool:
        """True when the episode has at least one support and one query record.

        Episodes that are not usable contribute a zero gradient. That rule is a function of the
        episode's own content, so the per-episode sensitivity argument is unaffected.
        """
        return bool(self.support_index.shape[0] > 0 and self.query_index.shape[0] > 0)


@dataclass(frozen=True)
class StepAssignment:
    """Everything the sampler decided for one local step.

    Attributes:
        step: The step index the randomness was keyed with.
        slots: Public slot plan, shape ``(num_slots, n_way)``, int64 class ids.
        sampled: Poisson inclusion of every record, bool, shape ``(n,)``.
        slot_of: Slot of every record, ``-1`` when not sampled or no slot contains its class.
        is_support: Role draw of every record (meaningful only where ``slot_of >= 0``).
        episodes: One :class:`EpisodeIndices` per slot, in slot order (possibly empty ones).
    """

    step: int
    slots: np.ndarray
    sampled: np.ndarray
    slot_of: np.ndarray
    is_support: np.ndarray
    episodes: tuple[EpisodeIndices, ...]

    def usable_episodes(self) -> list[EpisodeIndices]:
        """Episodes with non-empty support and query sets (the others contribute zero).

        Returns:
            The usable episodes, in slot order.
        """
        return [episode for episode in self.episodes if episode.usable]


def derive_sampling_key(*, secret_seed: bytes) -> bytes:
    """Derive the AES-256 key of the per-record pseudorandom function from a site secret.

    Args:
        secret_seed: The site's secret seed, at least 16 bytes (e.g. ``os.urandom(32)``).

    Returns:
        A 32-byte key (HKDF-SHA256, RFC 5869, with a fixed domain-separation label).

    Raises:
        InvalidPrivacyConfigError: If the seed is not bytes or is shorter than 16 bytes.
    """
    if not isinstance(secret_seed, bytes | bytearray):
        raise InvalidPrivacyConfigError(f"secret_seed must be bytes, got {type(secret_seed).__name__}")
    if len(secret_seed) < _MIN_SEED_BYTES:
        raise InvalidPrivacyConfigError(
            f"secret_seed must have at least {_MIN_SEED_BYTES} bytes, got {len(secret_seed)}"
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return hkdf.derive(bytes(secret_seed))


def check_record_ids(record_ids: np.ndarray) -> np.ndarray:
    """Validate stable record ids (the keys of the per-record randomness).

    Args:
        record_ids: The ids, shape ``(n,)``.

    Returns:
        The ids as ``uint64``.

    Raises:
        InvalidInputError: If they are not unique non-negative integers in one dimension.
    """
    ids = np.asarray(record_ids)
    if ids.ndim != 1:
        raise InvalidInputError(f"record_ids must be one-dimensional, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"record_ids must be integers, got dtype {ids.dtype}")
    if ids.size and int(ids.min()) < 0:
        raise InvalidInputError("record_ids must be non-negative")
    if np.unique(ids).size != ids.size:
        raise InvalidInputError("record_ids must be unique")
    return ids.astype(np.uint64)


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int | np.integer):
        raise InvalidPrivacyConfigError(f"step must be an int, got {type(step).__name__}")
    if not 0 <= int(step) <= _MAX_STEP:
        raise InvalidPrivacyConfigError(f"step must be in [0, {_MAX_STEP}], got {step}")


def record_uniforms(*, key: bytes, record_ids: np.ndarray, step: int) -> np.ndarray:
    """Keyed uniforms of every record for one step: a PRF of ``(key, record id, step, purpose)``.

    Record ``i``'s row depends only on ``(key, record_ids[i], step)``: it is the same whatever other
    ids are passed, which is the independence property record-level DP needs.

    Args:
        key: 32-byte key from :func:`derive_sampling_key`.
        record_ids: Unique non-negative integer ids, shape ``(n,)``.
        step: Step index in ``[0, 2**32)``.

    Returns:
        Float64 array of shape ``(n, 3)`` with values in ``[0, 1)`` (53-bit resolution); columns are
        the sampling, slot-choice and role uniforms.

    Raises:
        InvalidPrivacyConfigError: If the key or step is invalid.
        InvalidInputError: If ``record_ids`` is not a unique non-negative integer vector.
    """
    if not isinstance(key, bytes) or len(key) != 32:
        raise InvalidPrivacyConfigError("key must be 32 bytes (use derive_sampling_key)")
    _check_step(step)
    ids = check_record_ids(record_ids)
    n = ids.shape[0]
    if n == 0:
        return np.zeros((0, _NUM_PURPOSES), dtype=np.float64)
    blocks = np.zeros((n, _NUM_PURPOSES), dtype=_BLOCK_DTYPE)
    blocks["record"] = ids[:, None]
    blocks["step"] = np.uint32(step)
    blocks["purpose"] = np.arange(_NUM_PURPOSES, dtype=np.uint32)[None, :]
    # AES on distinct blocks = a keyed PRP used as a PRF (counter-mode keystream with structured
    # counters); ECB mode here means "apply the block cipher to each counter block", nothing more.
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out = encryptor.update(blocks.tobytes()) + encryptor.finalize()
    words = np.frombuffer(out, dtype="<u8").reshape(n, _NUM_PURPOSES, 2)[:, :, 0]
    return (words >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def draw_slots(
    *, classes: Sequence[int], num_slots: int, n_way: int, public_seed: int, step: int
) -> np.ndarray:
    """Draw the public slot plan of one step: ``n_way`` distinct classes per slot.

    Uses only public randomness (a NumPy generator seeded with ``(public_seed, step)``) and the
    public class list, never the data, so the plan may be published.

    Args:
        classes: The public class list (distinct integers).
        num_slots: Number of episode slots per step (``E``).
        n_way: Classes per slot.
        public_seed: Public, non-negative seed of the plan.
        step: Step index.

    Returns:
        Int64 array of shape ``(num_slots, n_way)``.

    Raises:
        InvalidPrivacyConfigError: If the sizes are inconsistent or the classes are not distinct.
    """
    class_arr = _check_slot_plan(classes=classes, num_slots=num_slots, n_way=n_way, public_seed=public_seed)
    _check_step(step)
    rng = np.random.default_rng([int(public_seed), int(step)])
    return np.stack([rng.choice(class_arr, size=n_way, replace=False) for _ in range(num_slots)]).astype(
        np.int64
    )


def _check_classes(classes: Sequence[int]) -> np.ndarray:
    class_arr = np.asarray(classes)
    if class_arr.ndim != 1 or class_arr.size == 0:
        raise InvalidPrivacyConfigError("classes must be a non-empty one-dimensional list of class ids")
    if not np.issubdtype(class_arr.dtype, np.integer):
        raise InvalidPrivacyConfigError(f"classes must be integers, got dtype {class_arr.dtype}")
    if np.unique(class_arr).size != class_arr.size:
        raise InvalidPrivacyConfigError("classes must be distinct")
    return class_arr.astype(np.int64)


def _check_slot_plan(*, classes: Sequence[int], num_slots: int, n_way: int, public_seed: int) -> np.ndarray:
    """The public class list as int64, once the slot plan's sizes and seed are checked."""
    class_arr = _check_classes(classes)
    if num_slots < 1:
        raise InvalidPrivacyConfigError(f"num_slots must be >= 1, got {num_slots}")
    if not 1 <= n_way <= class_arr.size:
        raise InvalidPrivacyConfigError(f"n_way must be in [1, {class_arr.size}], got {n_way}")
    if public_seed < 0:
        raise InvalidPrivacyConfigError(f"public_seed must be non-negative, got {public_seed}")
    return class_arr


def _check_rates(*, sample_rate: float, support_prob: float) -> None:
    if not 0.0 < sample_rate <= 1.0:
        raise InvalidPrivacyConfigError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if not 0.0 < support_prob < 1.0:
        raise InvalidPrivacyConfigError(f"support_prob must be in (0, 1), got {support_prob}")


def assign_records(
    *, labels: np.ndarray, slots: np.ndarray, uniforms: np.ndarray, sample_rate: float, support_prob: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson-sample the records and give each sampled one a slot and a role (pure function).

    Record ``i``'s outputs depend only on ``labels[i]``, ``uniforms[i]`` and the public ``slots``.

    Args:
        labels: Class id of every record, shape ``(n,)``; every id must occur in some public class
            list (it need not occur in ``slots``).
        slots: Public slot plan from :func:`draw_slots`, shape ``(E, n_way)``.
        uniforms: Keyed uniforms from :func:`record_uniforms`, shape ``(n, 3)``.
        sample_rate: Poisson sampling probability ``q`` in ``(0, 1]``.
        support_prob: Probability ``p_s`` in ``(0, 1)`` that a record is a support record.

    Returns:
        ``(sampled, slot_of, is_support)``: bool ``(n,)``, int64 ``(n,)`` with ``-1`` for records that
        are unused this step, bool ``(n,)``.

    Raises:
        InvalidPrivacyConfigError: If a rate is out of range.
        InvalidInputError: If shapes are inconsistent.
    """
    _check_rates(sample_rate=sample_rate, support_prob=support_prob)
    labels = np.asarray(labels)
    slots = np.asarray(slots)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    if labels.ndim != 1:
        raise InvalidInputError(f"labels must be one-dimensional, got shape {labels.shape}")
    if slots.ndim != 2 or slots.shape[0] < 1 or slots.shape[1] < 1:
        raise InvalidInputError(f"slots must have shape (num_slots, n_way), got {slots.shape}")
    if uniforms.shape != (labels.shape[0], _NUM_PURPOSES):
        raise InvalidInputError(f"uniforms must have shape ({labels.shape[0]}, 3), got {uniforms.shape}")
    n = labels.shape[0]
    sampled = uniforms[:, _PURPOSE_SAMPLE] < sample_rate
    is_support = uniforms[:, _PURPOSE_ROLE] < support_prob
    slot_of = np.full(n, -1, dtype=np.int64)
    # For every record: the (public) list of slots that contain its class, then a keyed uniform pick.
    contains = labels[:, None, None] == slots[None, :, :]  # (n, E, n_way)
    in_slot = contains.any(axis=2)  # (n, E)
    counts = in_slot.sum(axis=1)
    pick = np.minimum(
        np.floor(uniforms[:, _PURPOSE_SLOT] * counts).astype(np.int64), np.maximum(counts - 1, 0)
    )
    # The pick-th True of each row of in_slot.
    rank = np.cumsum(in_slot, axis=1) - 1
    chosen = np.argmax(in_slot & (rank == pick[:, None]), axis=1)
    eligible = sampled & (counts > 0)
    slot_of[eligible] = chosen[eligible]
    return sampled, slot_of, is_support


def _build_episodes(
    *, labels: np.ndarray, slots: np.ndarray, slot_of: np.ndarray, is_support: np.ndarray
) -> tuple:
    episodes = []
    for e in range(slots.shape[0]):
        members = np.flatnonzero(slot_of == e)
        classes = slots[e]
        relabel = np.argmax(labels[members][:, None] == classes[None, :], axis=1).astype(np.int64)
        support = is_support[members]
        episodes.append(
            EpisodeIndices(
                slot=e,
                classes=tuple(int(c) for c in classes),
                support_index=members[support].astype(np.int64),
                support_label=relabel[support],
                query_index=members[~support].astype(np.int64),
                query_label=relabel[~support],
            )
        )
    return tuple(episodes)


class RecordEpisodeSampler:
    """Stateful per-site sampler producing each local step's episodes (notes §1, steps 1-2).

    The sampler owns its step counter so that no ``(secret seed, step)`` pair is ever used twice;
    keep one sampler per site for the whole training run (or persist ``step`` with the seed).

    Args:
        labels: Class id of every record of the site, shape ``(n,)``.
        classes: The public class list; every label must be in it.
        num_slots: Episode slots per step ``E`` (public; a natural public normaliser of the sum).
        n_way: Classes per slot.
        sample_rate: Poisson sampling probability ``q`` (what the accountant is told).
        support_prob: Probability that a sampled record is a support record.
        secret_seed: The site's secret (>= 16 bytes); ``None`` draws 32 bytes from ``os.urandom``.
        public_seed: Seed of the public slot plan.
        record_ids: Stable unique ids of the records (default ``0..n-1``).
        start_step: First step index (to resume a run with a persisted secret seed).

    Raises:
        InvalidPrivacyConfigError: On invalid rates, sizes, seeds or steps.
        InvalidInputError: If labels/ids are malformed or a label is not a public class.
    """

    def __init__(
        self,
        *,
        labels: np.ndarray,
        classes: Sequence[int],
        num_slots: int,
        n_way: int,
        sample_rate: float,
        support_prob: float = 0.5,
        secret_seed: bytes | None = None,
        public_seed: int = 0,
        record_ids: np.ndarray | None = None,
        start_step: int = 0,
    ) -> None:
        _check_rates(sample_rate=sample_rate, support_prob=support_prob)
        class_arr = _check_slot_plan(
            classes=classes, num_slots=num_slots, n_way=n_way, public_seed=public_seed
        )
        _check_step(start_step)
        label_arr = np.asarray(labels)
        if label_arr.ndim != 1 or not np.issubdtype(label_arr.dtype, np.integer):
            raise InvalidInputError(f"labels must be a 1-D integer array, got shape {label_arr.shape}")
        unknown = np.setdiff1d(label_arr, class_arr)
        if unknown.size:
            raise InvalidInputError(
                f"labels contain classes not in the public class list: {unknown[:10].tolist()}"
            )
        ids = np.arange(label_arr.shape[0]) if record_ids is None else np.asarray(record_ids)
        if ids.shape != label_arr.shape:
            raise InvalidInputError(
                f"record_ids shape {ids.shape} differs from labels shape {label_arr.shape}"
            )
        self._record_ids = check_record_ids(ids)
        self._labels = label_arr.astype(np.int64)
        self._classes = class_arr
        self._num_slots = int(num_slots)
        self._n_way = int(n_way)
        self._sample_rate = float(sample_rate)
        self._support_prob = float(support_prob)
        self._key = derive_sampling_key(secret_seed=os.urandom(32) if secret_seed is None else secret_seed)
        self._public_seed = int(public_seed)
        self._step = int(start_step)

    @property
    def step(self) -> int:
        """Index of the next step to be sampled."""
        return self._step

    @property
    def sample_rate(self) -> float:
        """The Poisson sampling probability ``q``."""
        return self._sample_rate

    @property
    def num_slots(self) -> int:
        """Episode slots per step (public)."""
        return self._num_slots

    def sample(self) -> StepAssignment:
        """Sample the next step and advance the step counter.

        Returns:
            The step's assignment (slot plan, per-record decisions and episodes).
        """
        step = self._step
        _check_step(step)
        slots = draw_slots(
            classes=self._classes.tolist(),
            num_slots=self._num_slots,
            n_way=self._n_way,
            public_seed=self._public_seed,
            step=step,
        )
        uniforms = record_uniforms(key=self._key, record_ids=self._record_ids, step=step)
        sampled, slot_of, is_support = assign_records(
            labels=self._labels,
            slots=slots,
            uniforms=uniforms,
            sample_rate=self._sample_rate,
            support_prob=self._support_prob,
        )
        self._step = step + 1
        return StepAssignment(
            step=step,
            slots=slots,
            sampled=sampled,
            slot_of=slot_of,
            is_support=is_support,
            episodes=_build_episodes(
                labels=self._labels, slots=slots, slot_of=slot_of, is_support=is_support
            ),
        )
