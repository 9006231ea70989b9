"""Record-level DP as hooks into the learners' own loops: DP engines, private unit sources, accounting.

A learner's local loop is written once (:mod:`secfed.learners`) and forms each step's update
through a gradient engine (:mod:`secfed.learners.engine`). This package supplies, for record-level
DP (privacy unit: one record; adjacency: add/remove one record), one module per job:

* :mod:`secfed.dp.engines.steps` — a DP step's public constants: every engine divides its clipped,
  noised sum by a **public** normaliser (never a data-dependent count: Opacus #571, #819),
  :func:`step_normaliser`, with noise std :func:`step_noise_multiplier` ``· C``; and
  :func:`release_step`, one step's release from per-unit gradients through the engines' own DP
  optimiser (the attack replays, :mod:`attacks.secfed_observe`).
* :mod:`secfed.dp.engines.episodes` — ProtoNet, MAML and FOMAML: a unit is one episode
  (:class:`EpisodeDPEngineFactory`, :class:`privacy.episodic.EpisodicDPSGD`, noise
  ``N(0, (2zC)^2 I)``, normaliser ``privacy.episodes_per_step`` — so a step's update is the mean
  clipped episode gradient when every slot is used, as in the non-private learner's mean over its
  ``meta_batch`` tasks; it used to be ``privacy.expected_batch``, 8× too small a step with the
  defaults 32 and 4), the private episode source :class:`PrivateEpisodes`
  (:class:`privacy.sampling.RecordEpisodeSampler`: public slots, per-record keyed slot and role),
  and augmentation multiplicity (:class:`AugmultEpisodeDPEngineFactory`, De et al. 2022).
* :mod:`secfed.dp.engines.records` — FedAvg's local steps and Reptile's inner steps: a unit is one
  record (:class:`RecordDPEngineFactory`, :class:`privacy.dpsgd.PerSampleDPSGD`, noise
  ``N(0, (zC)^2 I)``, normaliser ``privacy.expected_batch``; Abadi et al. 2016), the Poisson record
  sources :class:`PoissonRecordBatches` (FedAvg) and :class:`PoissonClassTrainer` (Reptile: tasks
  are public class sets, :class:`PlannedClassTasks`, and each inner step Poisson-samples the site's
  records of those classes).
* :mod:`secfed.dp.engines.accounting` — class-aware accounting (:class:`ClassStepCounts`: a
  record of class ``c`` takes part only in steps whose public plan contains ``c``) and the
  engines' :class:`StepCounter`.

Every name stays importable from ``secfed.dp.engines`` (and :func:`shift_records` from here, as
before it moved to :mod:`secfed.tasks.augment`).
"""

from __future__ import annotations

from secfed.dp.engines.accounting import ClassStepCounts, StepCounter
from secfed.dp.engines.episodes import (
    AugmentedEpisode,
    AugmultEpisodeDPEngineFactory,
    EpisodeDPEngineFactory,
    PrivateEpisodes,
    augment_episode,
    augmult_loss,
    episode_task,
)
from secfed.dp.engines.records import (
    ClassTask,
    PlannedClassTasks,
    PoissonClassTrainer,
    PoissonRecordBatches,
    RecordDPEngineFactory,
    draw_class_tasks,
)
from secfed.dp.engines.steps import (
    EPISODIC_LEARNERS,
    DPEngineError,
    release_step,
    step_noise_multiplier,
    step_normaliser,
)
from secfed.tasks.augment import shift_records

__all__ = [
    "EPISODIC_LEARNERS",
    "AugmentedEpisode",
    "AugmultEpisodeDPEngineFactory",
    "ClassStepCounts",
    "ClassTask",
    "DPEngineError",
    "EpisodeDPEngineFactory",
    "PlannedClassTasks",
    "PoissonClassTrainer",
    "PoissonRecordBatches",
    "PrivateEpisodes",
    "RecordDPEngineFactory",
    "StepCounter",
    "draw_class_tasks",
    "augment_episode",
    "augmult_loss",
    "episode_task",
    "release_step",
    "shift_records",
    "step_noise_multiplier",
    "step_normaliser",
]
