"""Non-private pretraining of the initial model on data the configuration declares public.

DP learning needs better features or much more data (Tramèr & Boneh 2021); the standard way to
get features without spending privacy is to pretrain on public data and train only a small part
under DP (Tobaben et al. 2023, "On the Efficacy of Differentially Private Few-shot Image
Classification"; De et al. 2022 for fine-tuning pretrained models with DP-SGD). Here the public
data is ``data.public_alphabets`` (:func:`secfed.components.load_public`): alphabets no site
holds, removed from every site's shard and disjoint from the validation alphabets; the test
alphabets come from other archives. The server pretrains the initial model with the run's own
learner for ``model.pretrain_steps`` episodes from a seed-derived generator, before round 1; with
``model.pretrain_learner = "protonet"`` it pretrains the body as a ProtoNet embedding instead
(Snell et al. 2017) whatever the run's learner, through
:class:`~secfed.learners.common.EmbeddingView` when the model has a linear head (MAML, FOMAML,
Reptile; the head keeps its initial values: with ``learner.head_init = "proto"`` every task starts
from the prototype classifier of that embedding, Triantafillou et al. 2020). Pretraining as a
ProtoNet (the ProtoNet learner itself, or ``pretrain_learner = "protonet"``) always uses Adam at
``model.pretrain_lr``, whatever the run's own ``learner.local_optimizer`` (a run with local SGD,
as noise sharing needs, starts from the same model as an Adam run).
With ``model.pretrain_shift = S > 0`` every record of every public episode is circularly shifted
by its own offset in ``[-S, S]^2`` pixels (:class:`secfed.tasks.augment.ShiftedTaskSource`,
offsets from a seed-derived generator); the model then reads the shifted raw records, not cached
features (on Latin validation, 2,000 episodes: 95.06 % with S = 2 against 93.68 % without,
``docs/private_training.md`` row q5).
The result is cached (safetensors, no pickle) under ``$SECFED_CACHE_DIR/pretrained`` (default
``~/.cache/secfed/pretrained``), keyed by a hash of every setting it depends on, so the points of
a sweep pretrain once.

Privacy: the pretrained model is a function of public data and the public seed only, so it costs
no privacy for any site; the sites' guarantees (record or client level) are unchanged. What is
public is a declaration of the configuration and is printed in the run's ``config.toml``; a
deployment must only declare data that is in fact public (e.g. a published archive).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from secfed.config import ExperimentConfig, LearnerSection
from secfed.errors import ConfigError
from secfed.learners.common import EmbeddingView
from secfed.learners.declarations import LearnerDeclaration, declaration
from secfed.seeding import derive_seed

__all__ = ["pretrain_cache_path", "pretrain_public"]


def _pretrainer(*, config: ExperimentConfig) -> LearnerDeclaration:
    """The learner that pretrains: ``model.pretrain_learner``, or the run's own with ``"same"``."""
    chosen = config.model.pretrain_learner
    return declaration(config.learner.name if chosen == "same" else chosen)


def _pretraining_learner(*, config: ExperimentConfig) -> tuple[LearnerDeclaration, LearnerSection, int]:
    """What pretraining runs: the pretraining learner, its settings and the episodes' ways.

    The one place both :func:`pretrain_public` and :func:`pretrain_cache_path` read, so the cache
    key holds exactly the settings the training uses.

    Args:
        config: The run's configuration.

    Returns:
        ``(declaration of the pretraining learner, its learner settings, n_way of the episodes)``.
    """
    m = config.model
    pretrainer = _pretrainer(config=config)
    # prototype learners pretrain on wider episodes; learners with an n-way head keep theirs
    n_way = m.pretrain_n_way if pretrainer.embedding_pretrainer else config.task.n_way
    pre_learner = dataclasses.replace(config.learner, local_steps=m.pretrain_steps, local_lr=m.pretrain_lr)
    if pretrainer.embedding_pretrainer:
        # a ProtoNet embedding pretrains with Adam whatever the run's optimiser: a ProtoNet run with
        # local SGD (one plain step a round, as noise sharing needs) pretrained with SGD before and
        # started from a weaker model (89.9 against 92.3 % on the Latin validation alphabet)
        pre_learner = dataclasses.replace(pre_learner, local_optimizer="adam")
    if pretrainer.embedding_pretrainer and pretrainer.name != config.learner.name:
        # the body of any learner pretrains like the ProtoNet examples' (Adam, one episode a
        # step), whatever the run's own optimiser (Reptile's outer SGD step at 1.0, for one)
        pre_learner = dataclasses.replace(
            pre_learner, name=pretrainer.name, head_init="learned", local_optimizer="adam", meta_batch=1
        )
    return pretrainer, pre_learner, n_way


def pretrain_cache_path(*, config: ExperimentConfig) -> Path:
    """Where the pretrained state of ``config`` is cached: a hash of what pretraining reads.

    The key holds the data and model sections (less ``model.cache_features``, pre-processing, and
    ``model.trainable``, which pretraining overrides: every parameter trains), the pretraining
    learner's own settings (``learner.local_steps`` / ``local_lr`` are replaced by
    ``model.pretrain_steps`` / ``pretrain_lr``; a body pretrained as another learner keeps only the
    settings that learner reads), ``federation.proximal_mu``, the episodes' shape, the head's size,
    the seed and the torch version. Version 2 of the key (before, a run's own ``local_lr``,
    ``local_steps``, ``trainable`` and task section were in it: runs differing only there
    pretrained the same state again, 25 minutes each on the loaded 2-core machine).

    Args:
        config: The run's configuration.

    Returns:
        ``$SECFED_CACHE_DIR/pretrained/<sha256>.safetensors`` (default ``~/.cache/secfed``).
    """
    from secfed.builders import model_num_classes

    pretrainer, pre_learner, n_way = _pretraining_learner(config=config)
    # the head's size: a global head's follows from the data section (already in the key), so the
    # training split is not loaded just to count its classes
    head = declaration(config.learner.name).head
    outputs = head if head in ("none", "global") else model_num_classes(config=config)
    model = dataclasses.asdict(config.model)
    del model["cache_features"], model["trainable"]
    learner = dataclasses.asdict(pre_learner)
    if pretrainer.name != config.learner.name:
        # the body's pretraining reads only its own learner's settings
        learner = {k: v for k, v in learner.items() if k == "name" or pretrainer.uses(k)}
    key = {
        "v": 2,
        "data": dataclasses.asdict(config.data) | {"root": str(config.data_root())},
        "model": model,
        "learner": learner,
        "proximal_mu": config.federation.proximal_mu,
        "episodes": {"n_way": n_way, "k_shot": 1, "q_query": 5},
        "outputs": outputs,
        "seed": config.experiment.seed,
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    base = Path(os.environ.get("SECFED_CACHE_DIR") or Path.home() / ".cache" / "secfed")
    return base / "pretrained" / f"{digest}.safetensors"


def pretrain_public(*, config: ExperimentConfig, model: nn.Module) -> nn.Module:
    """Train ``model`` (all parameters) on the public alphabets, then restore its frozen set.

    Args:
        config: The run's configuration (``model.pretrain_steps`` > 0, ``data.public_alphabets``).
        model: The freshly initialised model (modified in place).

    Returns:
        The same model, pretrained, in training mode, with the ``requires_grad`` flags it had.

    Raises:
        ConfigError: If pretraining is not configured.
    """
    from safetensors.torch import load_file, save_file

    from secfed import components
    from secfed.models.feature_cache import featurize
    from secfed.tasks.augment import ShiftedTaskSource
    from secfed.tasks.base import TaskSource
    from secfed.tasks.episodic import EpisodicTaskSource

    m = config.model
    if m.pretrain_steps < 1 or not config.data.public_alphabets:
        raise ConfigError("pretraining needs model.pretrain_steps >= 1 and data.public_alphabets")
    cache = pretrain_cache_path(config=config)
    if cache.exists():
        model.load_state_dict(load_file(str(cache)))
        return model
    raw_public = components.load_public(config=config)
    shift = m.pretrain_shift
    if 2 * shift >= min(raw_public.images.shape[-2:]):
        raise ConfigError(
            f"model.pretrain_shift = {shift} is invalid: must be below half the image side "
            f"({min(raw_public.images.shape[-2:])})"
        )
    # model.cache_features: the public records' scattering features, computed once; shifted
    # pretraining needs the raw pixels (the model runs the transform on raw records itself)
    public = featurize(model=config.model, dataset=raw_public) if shift == 0 else raw_public
    pretrainer, pre_learner, n_way = _pretraining_learner(config=config)
    as_embedding = pretrainer.embedding_pretrainer
    source: TaskSource = EpisodicTaskSource(dataset=public, n_way=n_way, k_shot=1, q_query=5)
    if shift > 0:
        # public data: the augmentation costs no privacy; its offsets come from the public seed
        gen = torch.Generator().manual_seed(derive_seed(config.experiment.seed, "pretrain-shift"))
        source = ShiftedTaskSource(source=source, max_shift=shift, generator=gen)
    pre_cfg = dataclasses.replace(config, learner=pre_learner)
    learner = components.build_learner(config=pre_cfg)
    # a model with a linear head is pretrained as an embedding network through a view of its body
    has_head = getattr(model, "head", None) is not None
    trained: nn.Module = EmbeddingView(model) if as_embedding and has_head else model
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    torch_state = torch.get_rng_state()
    torch.manual_seed(derive_seed(config.experiment.seed, "pretrain"))
    try:
        model.train()
        learner.local_update(
            model=trained,
            tasks=source,
            rng=np.random.default_rng(derive_seed(config.experiment.seed, "pretrain")),
        )
    finally:
        torch.set_rng_state(torch_state)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, cache)
    return model
