"""The nine sections of an experiment configuration: one frozen dataclass each, checking itself.

Every key is declared here with its default and documented in its section's ``Attributes:`` block
(``secfed config FILE`` prints those entries); the learner's hyperparameters are declared once in
:class:`secfed.learners.settings.LearnerSettings`, a base of :class:`LearnerSection`, and the rules
that depend on the learner read its declaration (:mod:`secfed.learners.declarations`), never its
name. Each section's :meth:`check` refuses a value that
is wrong whatever the other sections say; rules across sections are in :mod:`secfed.config.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secfed.errors import ConfigError
from secfed.learners.declarations import (
    DEFAULT_LEARNER,
    declaration,
    embedding_pretrainer_names,
    learner_names,
    readers_of,
    spoken_list,
)
from secfed.learners.settings import REPLACED_HEADS, SETTING_CHOICES, LearnerSettings

__all__ = [
    "CHOICES",
    "ExperimentSection",
    "DataSection",
    "PartitionSection",
    "TaskSection",
    "ModelSection",
    "LearnerSection",
    "FederationSection",
    "SecAggSection",
    "PrivacySection",
]

# Allowed values of enumerated keys, by "section.key".
CHOICES: dict[str, tuple[str, ...]] = {
    "experiment.backend": ("sequential", "multiprocess", "ray"),
    "experiment.supervised_eval": ("auto", "on", "off"),
    "data.dataset": ("digits", "omniglot", "medmnist"),
    "partition.scheme": ("iid", "dirichlet", "class_disjoint", "quantity_skew"),
    "task.source": ("episodic", "client_as_task"),
    "model.arch": ("conv4", "mlp"),
    "model.norm": ("batch", "group", "none"),
    "model.frontend": ("none", "scatter"),
    "task.test_protocol": ("n_way", "within_alphabet"),
    # the learners' names and settings are declared in secfed.learners (torch-free)
    "learner.name": learner_names(),
    **{f"learner.{key}": allowed for key, allowed in SETTING_CHOICES.items()},
    "model.pretrain_learner": ("same", *embedding_pretrainer_names()),
    "federation.sampling": ("fixed", "poisson"),
    "federation.server_optimizer": ("sgd", "adam"),
    "federation.aggregation": ("plain", "secagg", "secagg+"),
    "federation.weighting": ("uniform", "examples"),
    "privacy.mode": ("none", "record", "client", "distributed"),
    "privacy.accountant": ("rdp", "prv", "pld"),
    "privacy.mechanism": ("gaussian", "skellam", "ddg"),
}


def _check(cond: bool, key: str, requirement: str, value: Any) -> None:
    """Raise the configuration's standard error for ``key`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"{key} = {value!r} is invalid: {requirement}")


class _Section:
    """What every section does: check its own values, and refuse a value of an enumerated key
    outside :data:`CHOICES`."""

    def check(self) -> None:
        """Check this section's own values (each section defines it).

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define check()")

    def check_choices(self, *, section: str) -> None:
        """Check this section's enumerated keys against :data:`CHOICES`.

        Args:
            section: The section's name in the TOML file (``"privacy"``).

        Raises:
            ConfigError: Naming the key, the bad value and the allowed values.
        """
        prefix = f"{section}."
        for dotted, allowed in CHOICES.items():
            if dotted.startswith(prefix):
                value = getattr(self, dotted[len(prefix) :])
                if value not in allowed:
                    raise ConfigError(
                        f"{dotted} = {value!r} is not allowed; choose one of: {', '.join(allowed)}"
                    )


@dataclass(frozen=True)
class ExperimentSection(_Section):
    """Run-level settings.

    Attributes:
        name: Free-form experiment name (reported in outputs).
        seed: Master seed; every random choice in the run derives from it.
        rounds: Federated rounds.
        eval_every: Evaluate the global model every this many rounds (0 = only at the end).
        eval_episodes: Test episodes per intermediate evaluation.
        final_eval_episodes: Test episodes of the final evaluation (>= 600 for few-shot claims).
        backend: ``sequential`` (in-process), ``multiprocess`` (one OS process per site) or ``ray``
            (one Ray actor per site; joins the cluster at ``RAY_ADDRESS`` when that is set, else
            starts Ray on this machine). ``ray`` needs the optional package:
            ``pip install "secfed[ray]"``; without it a run stops with a
            :class:`~secfed.errors.MissingDependencyError` before any data is loaded or anything
            is written (loading the configuration, e.g. to report on a finished run, works
            without Ray).
        threads: Torch threads of each process of the run (the server and, on the multiprocess
            and Ray backends, each site). 0 (the default) = automatic, never torch's one thread
            per core in every process: ``OMP_NUM_THREADS`` if set, else cores / (2 x processes
            computing at once: the sites on multiprocess/Ray, 1 in-process), at least 1 and at
            most 4 (see :func:`secfed.federation.backends.default_threads`; 1 on 2 cores).
        supervised_eval: Supervised evaluation of the global model, used as is, on the test split
            (pooled and per held-out site) and the validation split: accuracy, ROC AUC,
            sensitivity and specificity with 95 % intervals (:mod:`secfed.supervised_eval`), at
            every evaluation round and in the final summary. ``auto`` (the default): when it
            applies, i.e. FedAvg (a head over the dataset's classes) on MedMNIST (a test split with
            the training classes); ``on``: required (other learners or datasets are refused);
            ``off``: never. The test and validation labels are public evaluation data: these
            metrics cost no privacy.
        untrained_baseline: Also score the run's starting model on the final evaluation's test
            tasks (same seed) and write it to ``summary.json`` as ``untrained_test_accuracy``
            (the figure an accuracy means something against: an untrained few-shot embedding is
            far above chance). Doubles the final evaluation's time; ``false`` skips it.
    """

    name: str = "secfed"
    seed: int = 0
    rounds: int = 20
    eval_every: int = 5
    eval_episodes: int = 100
    final_eval_episodes: int = 600
    backend: str = "sequential"
    threads: int = 0
    supervised_eval: str = "auto"
    untrained_baseline: bool = True

    def check(self) -> None:
        """Check this section's own values (:func:`secfed.config.schema.validate` runs it).

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="experiment")
        _check(self.rounds >= 1, "experiment.rounds", "must be >= 1", self.rounds)
        _check(self.eval_every >= 0, "experiment.eval_every", "must be >= 0", self.eval_every)
        _check(self.eval_episodes >= 1, "experiment.eval_episodes", "must be >= 1", self.eval_episodes)
        _check(
            self.final_eval_episodes >= 1,
            "experiment.final_eval_episodes",
            "must be >= 1",
            self.final_eval_episodes,
        )
        _check(self.threads >= 0, "experiment.threads", "must be >= 0", self.threads)
        _check(self.seed >= 0, "experiment.seed", "must be >= 0", self.seed)


@dataclass(frozen=True)
class DataSection(_Section):
    """Which data to load.

    Attributes:
        dataset: ``digits`` (embedded, scikit-learn), ``omniglot`` or ``medmnist``.
        root: Path to the data (Omniglot archive folder or MedMNIST ``.npz``); relative paths are
            resolved against the config file's folder. Empty for ``digits``. For ``omniglot``,
            empty or ``"embedded"`` selects the copy shipped inside secfed (both small background
            archives at 28x28, no download; see :mod:`secfed.data.omniglot_embedded`); a folder
            that is literally named ``embedded`` must then be written ``"./embedded"``.
        train_archives: Omniglot archives whose alphabets are meta-train (e.g.
            ``["images_background_small1"]``).
        test_archives: Omniglot archives whose alphabets (minus the training ones) are meta-test.
        rotations: Add 90/180/270-degree rotations of the *training* classes as extra classes.
        test_rotations: Also add them to the *test* classes (digits, Omniglot). This is the standard
            Omniglot protocol (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017: every
            character's four rotations are classes, in meta-training and meta-test alike); with
            ``false`` meta-test uses the unrotated characters only, a harder test set.
        test_classes: Digits only: held-out digit classes for meta-test.
        val_alphabets: Omniglot only: training alphabets held out of meta-training as a
            meta-validation set (for choosing settings such as test-time adaptation without
            looking at the meta-test classes). Empty (the default): train on every training
            alphabet. Validation classes follow ``test_rotations``.
        public_alphabets: Omniglot only: training alphabets the configuration declares PUBLIC
            (like an ImageNet for vision): held out of every site and of validation, and used
            only to pretrain the initial model without privacy (``model.pretrain_steps``). Their
            records are outside every site's privacy guarantee by declaration; they must not be
            test or validation alphabets. Public classes follow ``rotations``.
        image_size: Side length images are resized to (Omniglot).
    """

    dataset: str = "digits"
    root: str = ""
    train_archives: list[str] = field(default_factory=lambda: ["images_background_small1"])
    test_archives: list[str] = field(default_factory=lambda: ["images_background_small2"])
    rotations: bool = True
    test_rotations: bool = False
    test_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    val_alphabets: list[str] = field(default_factory=list)
    public_alphabets: list[str] = field(default_factory=list)
    image_size: int = 28

    @property
    def embedded(self) -> bool:
        """Whether this section selects the Omniglot copy embedded in secfed (no path)."""
        return self.dataset == "omniglot" and self.root in ("", "embedded")

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="data")
        d = self
        if d.dataset == "medmnist":
            _check(bool(d.root), "data.root", f"a path is required for dataset {d.dataset!r}", d.root)
        if d.embedded:
            from secfed.data.omniglot_embedded import EMBEDDED_ARCHIVES, EMBEDDED_IMAGE_SIZE

            _check(
                d.image_size == EMBEDDED_IMAGE_SIZE,
                "data.image_size",
                f"the embedded Omniglot (data.root empty or 'embedded') is {EMBEDDED_IMAGE_SIZE}x"
                f"{EMBEDDED_IMAGE_SIZE} only; set data.root to the official archives for other sizes",
                d.image_size,
            )
            for key in ("train_archives", "test_archives"):
                names = getattr(d, key)
                _check(
                    bool(names) and set(names) <= set(EMBEDDED_ARCHIVES),
                    f"data.{key}",
                    f"the embedded Omniglot holds only {list(EMBEDDED_ARCHIVES)}; set data.root to the "
                    f"official archives for others",
                    names,
                )
        _check(4 <= d.image_size <= 105, "data.image_size", "must be in [4, 105]", d.image_size)
        _check(
            not d.test_rotations or d.dataset in ("digits", "omniglot"),
            "data.test_rotations",
            "is for digits and omniglot only",
            d.test_rotations,
        )
        _check(
            not d.val_alphabets or d.dataset == "omniglot",
            "data.val_alphabets",
            "is for omniglot only",
            d.val_alphabets,
        )
        _check(
            len(set(d.val_alphabets)) == len(d.val_alphabets) and all(a.strip() for a in d.val_alphabets),
            "data.val_alphabets",
            "distinct, non-empty alphabet names",
            d.val_alphabets,
        )
        _check(
            not d.public_alphabets or d.dataset == "omniglot",
            "data.public_alphabets",
            "is for omniglot only",
            d.public_alphabets,
        )
        _check(
            len(set(d.public_alphabets)) == len(d.public_alphabets)
            and all(a.strip() for a in d.public_alphabets)
            and not set(d.public_alphabets) & set(d.val_alphabets),
            "data.public_alphabets",
            "distinct, non-empty alphabet names, none of them a validation alphabet",
            d.public_alphabets,
        )
        if d.dataset == "digits":
            _check(
                len(set(d.test_classes)) == len(d.test_classes) and all(0 <= c <= 9 for c in d.test_classes),
                "data.test_classes",
                "distinct digit classes in 0..9",
                d.test_classes,
            )
            _check(
                len(d.test_classes) <= 8,
                "data.test_classes",
                "leave at least 2 training classes",
                d.test_classes,
            )


@dataclass(frozen=True)
class PartitionSection(_Section):
    """How the training data is split across sites.

    Attributes:
        scheme: ``class_disjoint`` (each site owns its classes), ``iid``, ``dirichlet`` or
            ``quantity_skew``.
        num_sites: Number of sites (clients).
        alpha: Concentration of the Dirichlet / quantity-skew schemes.
        test_sites: ``task.source = "client_as_task"`` only: the held-out (test) split is
            partitioned with the same scheme into this many held-out sites, which never train;
            every test task draws one of them and splits its data into support and query.
    """

    scheme: str = "class_disjoint"
    num_sites: int = 4
    alpha: float = 0.5
    test_sites: int = 1

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="partition")
        _check(self.num_sites >= 1, "partition.num_sites", "must be >= 1", self.num_sites)
        _check(self.alpha > 0, "partition.alpha", "must be > 0", self.alpha)
        _check(self.test_sites >= 1, "partition.test_sites", "must be >= 1", self.test_sites)


@dataclass(frozen=True)
class TaskSection(_Section):
    """Task sampling for training and evaluation.

    Attributes:
        source: ``episodic`` (N-way K-shot from a site's own classes) or ``client_as_task``.
        n_way: Classes per training episode.
        k_shot: Support records per class in training episodes.
        q_query: Query records per class in training episodes.
        test_n_way: Classes per test episode.
        test_k_shot: Support records per class in test episodes.
        test_q_query: Query records per class in test episodes.
        support_fraction: client_as_task only: fraction of a site's records used as support.
        test_protocol: ``n_way`` (N-way K-shot episodes over all test classes) or
            ``within_alphabet`` (Omniglot only; Lake, Salakhutdinov & Tenenbaum 2015): every test
            task takes ``test_n_way`` characters of one test alphabet, ``test_k_shot`` drawers'
            images of each as the support and ``test_q_query`` other drawers' images as the
            queries (Lake et al.'s 20-way one-shot runs: ``test_n_way = 20``, ``test_k_shot = 1``,
            ``test_q_query = 1``). Alphabets with fewer than ``test_n_way`` characters are skipped
            (:mod:`secfed.tasks.within_alphabet`).
    """

    source: str = "episodic"
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    test_n_way: int = 5
    test_k_shot: int = 1
    test_q_query: int = 15
    support_fraction: float = 0.5
    test_protocol: str = "n_way"

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="task")
        t = self
        for key in ("n_way", "k_shot", "q_query", "test_n_way", "test_k_shot", "test_q_query"):
            _check(getattr(t, key) >= 1, f"task.{key}", "must be >= 1", getattr(t, key))
        _check(t.n_way >= 2 and t.test_n_way >= 2, "task.n_way", "ways must be >= 2", (t.n_way, t.test_n_way))
        _check(0 < t.support_fraction < 1, "task.support_fraction", "must be in (0, 1)", t.support_fraction)


@dataclass(frozen=True)
class ModelSection(_Section):
    """Model architecture.

    Attributes:
        arch: ``conv4`` (4 x [conv, norm, ReLU, pool]) or ``mlp``.
        hidden: Filters (Conv-4) or hidden units (MLP).
        norm: ``batch``, ``group`` (required under DP) or ``none``.
        groups: Groups of GroupNorm.
        layers: Hidden layers of the MLP (0: the embedding is the flattened input, e.g. the
            scattering features themselves; with ProtoNet that model has nothing to train and
            serves to score the features, ``evaluations.benchmarks.init_accuracy``).
        frontend: ``none``, or ``scatter``: a fixed 2-D scattering transform (ScatterNet; Bruna &
            Mallat 2013, Oyallon & Mallat 2015, Tramèr & Boneh 2021) before the body, with no
            trainable parameter, so it spends no privacy (see ``docs/scatternet.md``).
        scatter_j: Scales J of the scattering transform (the images' height and width must be
            multiples of 2^J; the maps are 2^J times smaller).
        scatter_l: Orientations L of the scattering transform (1 + J L + L^2 J (J - 1) / 2
            channels per image channel: 81 at J = 2, L = 8).
        weight_standardization: Standardise every convolution's weight per output channel before
            use (Qiao et al. 2019; with GroupNorm, the DP recipe of De et al. 2022). A function of
            the parameters only: each record's output still depends on that record alone.
        pretrain_steps: Episodes of non-private pretraining of the initial model on
            ``data.public_alphabets`` with the run's learner (0: none). Done by the server
            before round 1 from public data and the seed, so it costs no privacy.
        pretrain_lr: Learning rate of that pretraining (Adam when it pretrains a ProtoNet
            embedding, whatever ``learner.local_optimizer``; else the learner's optimizer).
        pretrain_n_way: Classes per pretraining episode (1 shot, 5 queries per class).
        pretrain_learner: Which learner pretrains: ``same`` (the run's learner, on
            ``task.n_way``-way episodes for learners with an n-way head and ``pretrain_n_way``
            for ProtoNet) or ``protonet``
            (the body is pretrained as a ProtoNet embedding on ``pretrain_n_way``-way episodes,
            Adam at ``pretrain_lr``, one episode a step, whatever the run's learner and its
            optimiser, Snell et al. 2017; the head is left as initialised. With
            MAML, FOMAML or Reptile pair it with ``learner.head_init = "proto"`` (Triantafillou et
            al. 2020), which starts every task from that embedding's prototype classifier).
        pretrain_shift: Random-shift augmentation of the public pretraining episodes: every
            record of every episode is circularly shifted by its own offset in
            ``[-pretrain_shift, pretrain_shift]`` pixels along each axis
            (:func:`secfed.tasks.augment.shift_records`; public data, so no privacy cost). 0 (the
            default): no augmentation, the pretrained state of earlier versions. With
            ``cache_features`` the pretraining then runs the scattering transform on the shifted
            raw images. Must be >= 0 and below half the image side.
        trainable: Which parameters the sites train (the others stay as initialised, e.g.
            pretrained on public data): ``all``; ``last`` (the last block and the head);
            ``norm`` (every normalisation layer's per-channel scale and shift and the head:
            FiLM-style adapters, Perez et al. 2018; Tobaben et al. 2023 train these under DP).
        cache_features: Compute the scattering features of every record once, when the data is
            loaded, instead of at every forward pass (needs ``frontend = "scatter"``). The
            transform is a fixed public function of each record, so this is pre-processing:
            same updates, same privacy, several times faster rounds
            (:mod:`secfed.models.feature_cache`). Refused with ``privacy.augmult > 1`` (it shifts pixels).
    """

    arch: str = "conv4"
    hidden: int = 64
    norm: str = "batch"
    groups: int = 8
    layers: int = 2
    frontend: str = "none"
    scatter_j: int = 2
    scatter_l: int = 8
    weight_standardization: bool = False
    pretrain_steps: int = 0
    pretrain_lr: float = 1e-3
    pretrain_n_way: int = 20
    pretrain_learner: str = "same"
    pretrain_shift: int = 0
    trainable: str = "all"
    cache_features: bool = False

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="model")
        m = self
        _check(m.hidden >= 1, "model.hidden", "must be >= 1", m.hidden)
        _check(
            m.groups >= 1 and m.hidden % m.groups == 0, "model.groups", "must divide model.hidden", m.groups
        )
        _check(m.layers >= 0, "model.layers", "must be >= 0 (0 = no hidden layer, MLP only)", m.layers)
        _check(m.layers >= 1 or m.arch == "mlp", "model.layers", "0 is for arch = 'mlp' only", m.layers)
        if m.frontend == "scatter":
            _check(1 <= m.scatter_j <= 6, "model.scatter_j", "must be in [1, 6]", m.scatter_j)
            _check(1 <= m.scatter_l <= 32, "model.scatter_l", "must be in [1, 32]", m.scatter_l)
        _check(m.pretrain_steps >= 0, "model.pretrain_steps", "must be >= 0", m.pretrain_steps)
        _check(m.pretrain_lr > 0, "model.pretrain_lr", "must be > 0", m.pretrain_lr)
        _check(m.pretrain_n_way >= 2, "model.pretrain_n_way", "must be >= 2", m.pretrain_n_way)
        _check(
            m.pretrain_learner == "same" or m.pretrain_steps > 0,
            "model.pretrain_learner",
            "chooses the pretraining learner: set model.pretrain_steps > 0",
            m.pretrain_learner,
        )
        _check(
            isinstance(m.pretrain_shift, int)
            and not isinstance(m.pretrain_shift, bool)
            and m.pretrain_shift >= 0,
            "model.pretrain_shift",
            "must be an integer >= 0 (pixels)",
            m.pretrain_shift,
        )
        _check(
            m.pretrain_shift == 0 or m.pretrain_steps > 0,
            "model.pretrain_shift",
            "augments the public pretraining: set model.pretrain_steps > 0",
            m.pretrain_shift,
        )
        _check(
            m.trainable in ("all", "last", "norm"), "model.trainable", "one of all, last, norm", m.trainable
        )
        _check(
            m.trainable != "norm" or m.norm != "none",
            "model.trainable",
            "'norm' trains the normalisation layers' scale and shift: set model.norm",
            m.trainable,
        )
        _check(
            not m.cache_features or m.frontend == "scatter",
            "model.cache_features",
            "caches the scattering front-end's output: it needs model.frontend = 'scatter'",
            m.cache_features,
        )


@dataclass(frozen=True)
class _LearnerName:
    """``learner.name``: a base of :class:`LearnerSection` listed after the settings, so that its
    field comes first (a dataclass's fields follow its bases from the last to the first)."""

    name: str = DEFAULT_LEARNER


@dataclass(frozen=True)
class LearnerSection(_Section, LearnerSettings, _LearnerName):
    """Meta-learner and its hyperparameters (see :class:`secfed.learners.base.LearnerConfig`).

    The hyperparameters and their documentation are declared once, in
    :class:`secfed.learners.settings.LearnerSettings`; what each learner reads and which rules
    apply to it, in :mod:`secfed.learners.declarations`.

    Attributes:
        name: ``protonet``, ``matching`` (Matching Networks), ``siamese`` (Siamese networks),
            ``maml``, ``fomaml``, ``reptile`` or ``fedavg`` (:data:`secfed.learners.LEARNERS`).
    """

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="learner")
        lr = self
        for key in ("local_steps", "meta_batch", "batch_size"):
            _check(getattr(lr, key) >= 1, f"learner.{key}", "must be >= 1", getattr(lr, key))
        for key in ("inner_steps", "test_inner_steps", "reptile_inner_batch"):
            _check(getattr(lr, key) >= 0, f"learner.{key}", "must be >= 0", getattr(lr, key))
        for key in ("local_lr", "inner_lr", "test_inner_lr"):
            _check(getattr(lr, key) > 0, f"learner.{key}", "must be > 0", getattr(lr, key))
        declared = declaration(lr.name)
        least = declared.min_inner_steps
        if least:
            _check(
                lr.inner_steps >= least,
                "learner.inner_steps",
                f"{lr.name} needs >= {least} inner step{'s' if least > 1 else ''}",
                lr.inner_steps,
            )
        _check(lr.fce_steps >= 1, "learner.fce_steps", "must be >= 1", lr.fce_steps)
        _check(
            0.0 < lr.cosine_scale < float("inf"),
            "learner.cosine_scale",
            "must be a finite number > 0",
            lr.cosine_scale,
        )
        _check(
            not lr.fce or declared.uses("fce"),
            "learner.fce",
            f"applies to learner.name = {spoken_list(readers_of('fce'), last='or', quote=True)}",
            lr.fce,
        )
        if lr.head_init in REPLACED_HEADS:
            _check(
                declared.uses("head_init"),
                "learner.head_init",
                f"{lr.head_init!r} applies to {spoken_list(readers_of('head_init'))} "
                "(learners with a linear head adapted per task)",
                lr.name,
            )
        if lr.head_init == "zero":
            _check(
                lr.test_inner_steps >= 1,
                "learner.test_inner_steps",
                "head_init = 'zero' needs >= 1 test-time step (a zero head predicts nothing)",
                lr.test_inner_steps,
            )
            least = declared.zero_head_min_inner_steps
            if least:
                _check(
                    lr.inner_steps >= least,
                    "learner.inner_steps",
                    f"{lr.name} with head_init = 'zero' needs >= {least} "
                    "(the first step from a zero head moves only the head)",
                    lr.inner_steps,
                )


@dataclass(frozen=True)
class FederationSection(_Section):
    """Server-side federation settings.

    Attributes:
        clients_per_round: Sites sampled per round with ``fixed`` sampling (0 = all).
        sampling: ``fixed`` (uniform without replacement) or ``poisson`` (each site with
            probability ``sample_rate``).
        sample_rate: Poisson client sampling rate.
        server_optimizer: ``sgd`` (FedAvg with server learning rate) or ``adam`` (FedAdam).
        server_lr: Server learning rate.
        dropout_rate: Probability that a sampled site drops out during a round (the stage is
            drawn from the seed).
        straggler_rate: Probability that a site answers too late at one stage (treated as a
            dropout at that stage; its late answer is discarded).
        aggregation: ``plain`` weighted sum, ``secagg`` or ``secagg+``.
        weighting: Public aggregation weights: ``uniform`` or ``examples`` (records per site; not
            private under DP).
        proximal_mu: FedProx (Li et al., MLSys 2020): ``mu`` of the proximal term
            ``mu / 2 ||w - w_global||^2`` added to every site's local objective, for every learner
            (:func:`secfed.learners.engine.proximal_term`). 0 (the default) = FedAvg.
        ema: Exponential moving average of the released global models, kept by the server and
            used for every evaluation and the final model (Polyak & Juditsky 1992; De et al.
            2022): ``ema_t = ema * ema_{t-1} + (1 - ema) * state_t``, ``ema_0`` = the initial
            state. Post-processing of released states: no privacy cost. 0 = off.
    """

    clients_per_round: int = 0
    sampling: str = "fixed"
    sample_rate: float = 1.0
    server_optimizer: str = "sgd"
    server_lr: float = 1.0
    dropout_rate: float = 0.0
    straggler_rate: float = 0.0
    aggregation: str = "plain"
    weighting: str = "uniform"
    proximal_mu: float = 0.0
    ema: float = 0.0

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="federation")
        f = self
        _check(
            0 <= f.proximal_mu < float("inf"),
            "federation.proximal_mu",
            "must be a finite number >= 0 (0 = FedAvg)",
            f.proximal_mu,
        )
        _check(f.clients_per_round >= 0, "federation.clients_per_round", "must be >= 0", f.clients_per_round)
        _check(0 < f.sample_rate <= 1, "federation.sample_rate", "must be in (0, 1]", f.sample_rate)
        _check(f.server_lr > 0, "federation.server_lr", "must be > 0", f.server_lr)
        _check(0 <= f.ema < 1, "federation.ema", "must be in [0, 1)", f.ema)
        _check(0 <= f.dropout_rate < 1, "federation.dropout_rate", "must be in [0, 1)", f.dropout_rate)
        _check(0 <= f.straggler_rate < 1, "federation.straggler_rate", "must be in [0, 1)", f.straggler_rate)
        if f.aggregation != "plain":
            # with fewer, a round cannot reach the protocol's threshold (and the sum of one or two
            # updates would reveal them): refuse before any work rather than skip every round
            _check(
                f.sampling != "fixed" or f.clients_per_round == 0 or f.clients_per_round >= 3,
                "federation.clients_per_round",
                "secure aggregation needs >= 3 sites per round (0 = all sites)",
                f.clients_per_round,
            )


@dataclass(frozen=True)
class SecAggSection(_Section):
    """Secure-aggregation options (used when ``federation.aggregation`` is not ``plain``).

    Attributes:
        k: SecAgg+ neighbourhood size (0 = derive from n, corruption and dropout rates).
        t: Shamir threshold (0 = derive).
        clip: Per-coordinate clipping range of the quantiser.
        precision_bits: Fractional bits of the fixed-point quantiser.
        active: Active-adversary mode (signatures and consistency check).
        corrupt_fraction: Assumed fraction of corrupt clients.
    """

    k: int = 0
    t: int = 0
    clip: float = 1.0
    precision_bits: int = 16
    active: bool = False
    corrupt_fraction: float = 0.05

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="secagg")
        s = self
        _check(s.k >= 0 and s.t >= 0, "secagg.k/t", "must be >= 0 (0 = derive)", (s.k, s.t))
        _check(s.clip > 0, "secagg.clip", "must be > 0", s.clip)
        _check(1 <= s.precision_bits <= 40, "secagg.precision_bits", "must be in [1, 40]", s.precision_bits)
        _check(
            0 <= s.corrupt_fraction < 0.5,
            "secagg.corrupt_fraction",
            "must be in [0, 0.5)",
            s.corrupt_fraction,
        )


@dataclass(frozen=True)
class PrivacySection(_Section):
    """Differential privacy settings.

    Attributes:
        mode: ``none``; ``record`` (each site protects its records: DP-SGD inside local
            training); ``client`` (each site is the unit: DP-FedAvg with a trusted aggregator);
            ``distributed`` (client level, noise added by clients under secure aggregation).
        noise_multiplier: z (noise std divided by sensitivity scale).
        max_grad_norm: Clipping norm C (per record / episode, or per client update).
        sample_rate: Record-level Poisson sampling rate q of DP-SGD.
        expected_batch: Public expected number of records (or episodes) per DP step.
        delta: Target delta.
        accountant: ``rdp``, ``prv`` or ``pld`` (:mod:`privacy.accountants`; the same choices as
            ``secfed privacy --accountant``).
        epsilon_budget: Stop before a site's or the global epsilon would exceed this (0 = none).
        target_epsilon: If > 0, calibrate ``noise_multiplier`` for this epsilon before the run.
        mechanism: Distributed DP noise: ``skellam`` or ``ddg``; ``gaussian`` otherwise.
        bits: Modulus bits of the distributed-DP encoder.
        episodes_per_step: Episode slots per record-level episodic DP step.
        augmult: Augmentation multiplicity K (De et al. 2022): each privacy unit's gradient is
            the mean of the gradients of K randomly augmented copies of the unit (for an
            episode, K augmented copies of the whole episode), clipped once. 1 = off.
        noise_sharing: Record mode under secure aggregation only: every site adds a *share* of the
            noise, std ``σ/√(m − c)`` (``σ = z·S``, ``S`` = 2C per episode or C per record, ``m`` the
            most sites a round can hold), so the SecAgg sum of ``s`` survivors carries counted noise
            ``σ·√((s − c)/(m − c))`` (Truex et al. 2019; Lowy & Razaviyayn 2023). Needs
            ``federation.aggregation`` ``secagg``/``secagg+``, one DP step per round
            (``learner.local_steps = 1``) with plain SGD, a learner among ProtoNet, MAML, FOMAML
            and FedAvg, and ``noise_multiplier > 0``. See :mod:`secfed.dp.sharing`.
        colluding_sites: With ``noise_sharing``: ``c``, how many sites' noise shares the server may
            know (sites colluding with it); their noise is not counted. Must be below the SecAgg
            threshold, so that every decodable sum holds counted noise.
    """

    mode: str = "none"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    sample_rate: float = 0.05
    expected_batch: int = 32
    delta: float = 1e-5
    accountant: str = "rdp"
    epsilon_budget: float = 0.0
    target_epsilon: float = 0.0
    mechanism: str = "gaussian"
    bits: int = 32
    episodes_per_step: int = 4
    augmult: int = 1
    noise_sharing: bool = False
    colluding_sites: int = 0

    def check(self) -> None:
        """Check this section's own values.

        Raises:
            ConfigError: Naming the key, the bad value and what is allowed.
        """
        self.check_choices(section="privacy")
        pr = self
        _check(pr.noise_multiplier >= 0, "privacy.noise_multiplier", "must be >= 0", pr.noise_multiplier)
        _check(pr.max_grad_norm > 0, "privacy.max_grad_norm", "must be > 0", pr.max_grad_norm)
        _check(0 < pr.sample_rate <= 1, "privacy.sample_rate", "must be in (0, 1]", pr.sample_rate)
        _check(pr.expected_batch >= 1, "privacy.expected_batch", "must be >= 1", pr.expected_batch)
        _check(0 < pr.delta < 1, "privacy.delta", "must be in (0, 1)", pr.delta)
        _check(
            pr.epsilon_budget >= 0,
            "privacy.epsilon_budget",
            "must be >= 0 (0 = no budget)",
            pr.epsilon_budget,
        )
        _check(
            pr.target_epsilon >= 0,
            "privacy.target_epsilon",
            "must be >= 0 (0 = use noise_multiplier)",
            pr.target_epsilon,
        )
        _check(8 <= pr.bits <= 62, "privacy.bits", "must be in [8, 62]", pr.bits)
        _check(pr.episodes_per_step >= 1, "privacy.episodes_per_step", "must be >= 1", pr.episodes_per_step)
        _check(pr.augmult >= 1, "privacy.augmult", "must be >= 1 (1 = off)", pr.augmult)
        _check(pr.colluding_sites >= 0, "privacy.colluding_sites", "must be >= 0", pr.colluding_sites)
