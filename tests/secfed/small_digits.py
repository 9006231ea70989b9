"""Test helper (not a test module): the small digits experiment of the recipe and feature-cache
tests, three sites, 3-way 1-shot tasks, evaluated once at the end."""

from __future__ import annotations

from typing import Any


def small_digits_dict(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configuration as a dict; each of ``sections`` updates (or adds) the section of its name."""
    raw: dict[str, dict[str, Any]] = {
        "experiment": {"eval_every": 0, "eval_episodes": 5},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 3},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 2, "test_n_way": 3, "test_q_query": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw
