"""The learners' hyperparameters, declared once: names, defaults, allowed values and meaning.

:class:`LearnerSettings` is the one declaration of the keys a learner may read. The configuration's
``[learner]`` section (:class:`secfed.config.LearnerSection`) is these settings plus
``learner.name``; a learner's own :class:`~secfed.learners.base.LearnerConfig` is these settings
plus FedProx's ``proximal_mu`` (a ``[federation]`` key). The first sentence of each entry below is
what ``secfed config FILE`` prints after the key (:func:`secfed.config_doc.key_docs`).

Torch-free: the configuration layer imports this module to load a configuration without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = [
    "LearnerSettings",
    "COMMON_SETTINGS",
    "SETTING_CHOICES",
    "OPTIMIZERS",
    "HEAD_INITS",
    "PAIR_LOSSES",
    "REPLACED_HEADS",
    "setting_names",
]

#: Allowed values of ``local_optimizer`` and ``inner_optimizer``.
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
#: Allowed values of ``head_init``: the meta-learned head, Kao et al.'s zeroed head, or the
#: Proto-MAML head set from the task's support prototypes (Triantafillou et al. 2020).
HEAD_INITS: tuple[str, ...] = ("learned", "zero", "proto")
#: Allowed values of ``pair_loss`` (Siamese networks): Koch et al.'s balanced pair BCE, or the
#: multi-class N-pair loss over a query's pair scores (Sohn 2016).
PAIR_LOSSES: tuple[str, ...] = ("bce", "softmax")
#: Head initialisations that replace the stored head before every task (the stored head is then
#: never used and gets no update).
REPLACED_HEADS: tuple[str, ...] = ("zero", "proto")

#: The allowed values of the enumerated settings, in the order the configuration lists them (its
#: default first): ``CHOICES["learner.<key>"]`` of :mod:`secfed.config`.
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "local_optimizer": OPTIMIZERS,
    "inner_optimizer": ("sgd", "adam"),
    "head_init": HEAD_INITS,
    "pair_loss": PAIR_LOSSES,
}

#: Settings every learner reads; a learner declares the others it reads
#: (:attr:`secfed.learners.declarations.LearnerDeclaration.reads`).
COMMON_SETTINGS: tuple[str, ...] = ("local_steps", "meta_batch", "local_lr", "local_optimizer")


@dataclass(frozen=True)
class LearnerSettings:
    """Hyperparameters shared by all learners (each learner reads the ones it needs).

    Attributes:
        local_steps: Local (outer) steps per site per round. Outer (meta) steps a site takes.
        meta_batch: Tasks per local step.
        local_lr: Local learning rate. Learning rate of the local (outer) optimiser.
        local_optimizer: ``adam`` or ``sgd``.
        inner_steps: Inner adaptation steps in training. MAML/FOMAML/Reptile.
        inner_lr: Inner learning rate in training.
        test_inner_steps: Adaptation steps at test time. MAML/FOMAML/Reptile/FedAvg fine-tuning.
        test_inner_lr: Adaptation learning rate at test time.
        inner_optimizer: Reptile inner optimiser. Also FedAvg's test-time fine-tuning: ``sgd`` or
            ``adam``.
        reptile_inner_batch: Records per Reptile inner step (0 = whole task).
        batch_size: FedAvg local minibatch size. Records per FedAvg local step when FedAvg draws
            from a ``SupervisedBatchSource`` (ignored by the episodic learners).
        head_init: ``learned``, ``zero`` or ``proto`` (MAML/FOMAML/Reptile: zero the linear
            head before every task, Kao et al. 2022, or set it from the task's support
            prototypes, ``W_k = 2 c_k``, ``b_k = -||c_k||^2``, Proto-MAML, Triantafillou et al.
            2020, so that before any inner step the model is the ProtoNet classifier; both let
            ``task.n_way`` differ from ``task.test_n_way``). ``proto`` couples the records of a
            task, so it is refused for Reptile under record-level DP (its DP unit is one record).
            ``learned`` is the meta-learned head (Finn et al. 2017); ``zero`` sets the weights
            and bias to zero before every task's inner loop, in training and at test time (the
            "zeroing trick" of Kao, Chiu & Chen 2022, "MAML is a Noisy Contrastive Learner in
            Classification", ICLR); ``proto`` sets them before every task from the task's
            support prototypes (Triantafillou et al. 2020, "Meta-Dataset", ICLR). With ``zero``
            or ``proto`` the head is the same for every class, so the training and test ways may
            differ.
        fce: Matching Networks: full context embeddings (Vinyals et al. 2016). Appendix: a
            bidirectional LSTM over the support embeddings and an attention LSTM for each query.
        fce_steps: Matching Networks: processing steps of the FCE attention LSTM. ``K`` in the
            paper (with ``fce``).
        cosine_scale: Matching Networks: ``tau`` in the attention ``softmax(tau * cos)``; 1 is
            the paper's kernel, larger values sharpen it (metric scaling, Oreshkin et al. 2018).
            A cosine lies in [-1, 1], so with ``tau = 1`` a 20-way episode can give its correct
            class at most ``P = e / (e + 19/e) = 0.28``; scaling the metric (Oreshkin, Rodriguez
            & Lacoste 2018, "TADAM", NeurIPS) lets the attention sharpen.
        pair_loss: Siamese networks: the loss over an episode's pair scores, ``bce`` (Koch et al.
            2015's balanced pair binary cross-entropy) or ``softmax`` (the multi-class N-pair
            loss, Sohn 2016: a softmax over a query's pair scores against the episode's supports).
            See :mod:`secfed.learners.siamese`.
    """

    local_steps: int = 10
    meta_batch: int = 1
    local_lr: float = 1e-3
    local_optimizer: str = "adam"
    inner_steps: int = 1
    inner_lr: float = 0.4
    test_inner_steps: int = 3
    test_inner_lr: float = 0.4
    inner_optimizer: str = "sgd"
    reptile_inner_batch: int = 0
    batch_size: int = 32
    head_init: str = "learned"
    fce: bool = False
    fce_steps: int = 1
    cosine_scale: float = 1.0
    pair_loss: str = "bce"


def setting_names() -> tuple[str, ...]:
    """The keys of :class:`LearnerSettings`, in declaration order.

    Returns:
        The field names.
    """
    return tuple(f.name for f in fields(LearnerSettings))
