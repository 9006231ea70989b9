"""``secfed config FILE``: every key that applies to a configuration, with its value and meaning.

:func:`explain_config` writes the resolved configuration as TOML with, after each key, a comment
holding its one-line documentation (the first sentence of the key's entry in its section's
dataclass docstring in :mod:`secfed.config`) and, for enumerated keys, the allowed values. Only the
sections and keys that apply are shown: ``[secagg]`` only with secure aggregation, the rest of
``[privacy]`` only with DP, Omniglot-only keys only for Omniglot, a learner's keys only for that
learner, and so on (:func:`applies`). A key that does not apply but was set to something other
than its default is still printed, marked "not used by this configuration", so that the output
loads back to the same configuration (a test checks this on every example).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, get_type_hints

import tomli_w

from secfed.config import CHOICES, SECTIONS, ExperimentConfig, config_to_dict
from secfed.learners.declarations import LearnerDeclaration, declaration
from secfed.learners.settings import COMMON_SETTINGS, setting_names

__all__ = ["key_docs", "applies", "explain_config"]


def _learner(config: ExperimentConfig) -> LearnerDeclaration:
    return declaration(config.learner.name)


def _read_by_learner(key: str) -> Callable[[ExperimentConfig], bool]:
    """``learner.<key>`` applies when the run's learner declares that it reads the key."""
    return lambda c: _learner(c).uses(key)


# ``section.key`` -> when the key is used (keys not listed always apply).
_APPLIES: dict[str, Callable[[ExperimentConfig], bool]] = {
    # data
    "data.root": lambda c: c.data.dataset in ("omniglot", "medmnist"),
    "data.train_archives": lambda c: c.data.dataset == "omniglot",
    "data.test_archives": lambda c: c.data.dataset == "omniglot",
    "data.rotations": lambda c: c.data.dataset in ("digits", "omniglot"),
    "data.test_rotations": lambda c: c.data.dataset in ("digits", "omniglot"),
    "data.test_classes": lambda c: c.data.dataset == "digits",
    "data.val_alphabets": lambda c: c.data.dataset == "omniglot",
    "data.public_alphabets": lambda c: c.data.dataset == "omniglot",
    "data.image_size": lambda c: c.data.dataset == "omniglot",
    # partition
    "partition.alpha": lambda c: c.partition.scheme in ("dirichlet", "quantity_skew"),
    "partition.test_sites": lambda c: c.task.source == "client_as_task",
    # task
    "task.support_fraction": lambda c: c.task.source == "client_as_task",
    "task.test_protocol": lambda c: c.data.dataset == "omniglot",
    # model
    "model.groups": lambda c: c.model.norm == "group",
    "model.layers": lambda c: c.model.arch == "mlp",
    "model.scatter_j": lambda c: c.model.frontend == "scatter",
    "model.scatter_l": lambda c: c.model.frontend == "scatter",
    "model.weight_standardization": lambda c: c.model.arch == "conv4",
    "model.cache_features": lambda c: c.model.frontend == "scatter",
    "model.pretrain_steps": lambda c: c.data.dataset == "omniglot" and _learner(c).trains_on_tasks,
    "model.pretrain_lr": lambda c: c.model.pretrain_steps > 0,
    "model.pretrain_n_way": lambda c: c.model.pretrain_steps > 0,
    "model.pretrain_learner": lambda c: c.model.pretrain_steps > 0,
    # learner: the settings each learner declares it reads (secfed.learners.declarations)
    **{f"learner.{key}": _read_by_learner(key) for key in setting_names() if key not in COMMON_SETTINGS},
    "learner.fce_steps": lambda c: _learner(c).uses("fce_steps") and c.learner.fce,
    # federation
    "federation.clients_per_round": lambda c: c.federation.sampling == "fixed",
    "federation.sample_rate": lambda c: c.federation.sampling == "poisson",
    # privacy (the section applies only with DP, see _section_applies)
    "privacy.sample_rate": lambda c: c.privacy.mode == "record",
    "privacy.expected_batch": lambda c: c.privacy.mode == "record",
    "privacy.episodes_per_step": lambda c: c.privacy.mode == "record" and _learner(c).episodic,
    "privacy.augmult": lambda c: c.privacy.mode == "record",
    "privacy.noise_sharing": lambda c: c.privacy.mode == "record" and c.federation.aggregation != "plain",
    "privacy.colluding_sites": lambda c: c.privacy.noise_sharing,
    "privacy.mechanism": lambda c: c.privacy.mode == "distributed",
    "privacy.bits": lambda c: c.privacy.mode == "distributed",
}


def _section_applies(config: ExperimentConfig, section: str) -> bool:
    if section == "secagg":
        return config.federation.aggregation != "plain"
    return True


def applies(*, config: ExperimentConfig, key: str) -> bool:
    """Whether a key is used by a configuration.

    Args:
        config: The configuration.
        key: ``section.key``.

    Returns:
        False for keys the configuration does not read (a section that is off, another dataset's
        or learner's keys); True otherwise.
    """
    section, _, name = key.partition(".")
    if not _section_applies(config, section):
        return False
    if section == "privacy" and name != "mode" and config.privacy.mode == "none":
        return False
    rule = _APPLIES.get(key)
    return True if rule is None else bool(rule(config))


def key_docs(section_cls: type) -> dict[str, str]:
    """The one-line documentation of every key of a section dataclass.

    Args:
        section_cls: A section dataclass of :mod:`secfed.config` (its docstring, or for a key
            declared in a base that base's, has an ``Attributes:`` block with one entry per key).

    Returns:
        ``{key: first sentence of its entry}`` (reST markup removed, cut to one line of about 110
        characters with an ellipsis); keys without an entry map to an empty string.
    """
    names = {f.name for f in dataclasses.fields(section_cls)}
    entries: dict[str, list[str]] = {}
    # a key declared in a base (the learner settings of LearnerSection) is documented there; the
    # class's own entry wins
    for klass in reversed(section_cls.__mro__):
        entries.update(_attribute_entries(klass.__doc__ or "", names=names))
    out = {}
    for f in dataclasses.fields(section_cls):
        text = " ".join(entries.get(f.name, []))
        text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
        out[f.name] = _one_line(_first_sentence(text))
    return out


def _attribute_entries(doc: str, *, names: set[str]) -> dict[str, list[str]]:
    """The lines of each entry of a docstring's ``Attributes:`` block that documents one of ``names``."""
    entries: dict[str, list[str]] = {}
    current: str | None = None
    in_block = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_block = True
            continue
        if not in_block:
            continue
        m = re.match(r"^ {4}(\w+): ?(.*)$", line) or re.match(r"^ {8}(\w+): ?(.*)$", line)
        if m and m.group(1) in names:
            current = m.group(1)
            entries[current] = [m.group(2).strip()]
        elif current is not None and line.strip():
            entries[current].append(line.strip())
    return entries


def _first_sentence(text: str) -> str:
    # a sentence ends at ". " followed by a capital or an opening bracket, not after "e.g." or "i.e."
    for m in re.finditer(r"\.(?=\s+[A-Z(])", text):
        before = text[: m.start()]
        if not re.search(r"\b(e\.g|i\.e|et al|vs|cf)$", before):
            return before + "."
    return text


def _one_line(text: str, limit: int = 110) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:(")
    return cut + " …"


def _toml_value(value: Any) -> str:
    if isinstance(value, list):  # inline, so that the comment stays on the key's line
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def explain_config(*, config: ExperimentConfig) -> str:
    """The configuration as commented TOML: each key that applies, its value and its meaning.

    Args:
        config: A validated configuration.

    Returns:
        TOML text that loads back to ``config`` (comments hold the documentation and the allowed
        values; keys that do not apply are left out unless set to a non-default value).
    """
    data = config_to_dict(config)
    if config.data.root:
        data["data"]["root"] = str(config.data_root())  # as config_to_toml writes it
    lines = ["# Resolved configuration: every key that applies, its value and its meaning."]
    lines.append("# Keys of other datasets, learners or modes are left out (all keys: --plain);")
    lines.append("# the full documentation of each key is in secfed/config/sections.py.")
    defaults = config_to_dict(ExperimentConfig())
    types = get_type_hints(ExperimentConfig)
    for section in SECTIONS:
        cls = types[section]
        docs = key_docs(cls)
        values = data.get(section, {})
        rows: list[str] = []
        for key, value in values.items():
            dotted = f"{section}.{key}"
            used = applies(config=config, key=dotted)
            default = defaults.get(section, {}).get(key)
            if not used and value == default:
                continue
            comment = docs.get(key, "")
            if dotted in CHOICES:
                comment += f" [one of: {', '.join(CHOICES[dotted])}]"
            if not used:
                comment = "not used by this configuration. " + comment
            rows.append(f"{key} = {_toml_value(value)}" + (f"  # {comment.strip()}" if comment else ""))
        if not rows:
            continue
        head = f"[{section}]"
        if section == "privacy" and config.privacy.mode == "none":
            head += "  # no DP: the other privacy keys do not apply"
        lines += ["", head, *rows]
    return "\n".join(lines) + "\n"
