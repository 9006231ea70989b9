"""Test helper (not a test module): configuration sections that several secfed tests share."""

from __future__ import annotations

from typing import Any


def omniglot_greek_public(**data: Any) -> dict[str, Any]:
    """The ``data`` section of an Omniglot run (the test data root): Latin validates and Greek is
    declared public (pretraining data no site holds); ``data`` adds or replaces settings."""
    return {
        "dataset": "omniglot",
        "root": "",
        "val_alphabets": ["Latin"],
        "public_alphabets": ["Greek"],
        **data,
    }


def small_digits_dict(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The small digits experiment of the recipe and feature-cache tests (three sites, 3-way 1-shot
    tasks, evaluated once at the end) as a dict; each of ``sections`` updates (or adds) the section
    of its name."""
    raw: dict[str, dict[str, Any]] = {
        "experiment": {"eval_every": 0, "eval_episodes": 5},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 3},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw
