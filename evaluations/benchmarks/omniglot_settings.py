"""The Omniglot benchmark's few-shot settings (``5w1s``, ``20w1s-within``) and adaptation grids, from text."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Setting", "parse_settings", "setting_name", "parse_adaptation_grid", "WITHIN", "WITHIN_OVERRIDES"]

#: Suffix of a setting name that selects Lake et al.'s within-alphabet tasks (``20w1s-within``).
WITHIN = "-within"
#: Overrides of a within-alphabet evaluation: one drawer's image per character as the support,
#: another drawer's as the query (:mod:`secfed.tasks.within_alphabet`).
WITHIN_OVERRIDES = ("task.test_protocol=within_alphabet", "task.test_q_query=1")


class Setting(NamedTuple):
    """A few-shot test setting: ``n_way``-way ``k_shot``-shot tasks over all test classes, or
    Lake et al.'s within-alphabet tasks (``within``; one query per character, another drawer)."""

    n_way: int
    k_shot: int
    within: bool = False

    def overrides(self) -> list[str]:
        """The configuration overrides that select this setting's test protocol."""
        return list(WITHIN_OVERRIDES) if self.within else []


def parse_settings(*, text: str) -> list[Setting]:
    """Parse ``"5w1s,5w5s,20w1s,20w1s-within"`` into :class:`Setting` values.

    Args:
        text: Comma-separated ``<N>w<K>s`` items; ``-within`` selects the within-alphabet
            protocol of Lake et al. 2015 (:mod:`secfed.tasks.within_alphabet`).

    Returns:
        The settings in the given order (``Setting(5, 1) == Setting(5, 1, False)``).

    Raises:
        ValueError: On a malformed item, a way below 2 or a shot below 1, or duplicates.
    """
    out: list[Setting] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        m = re.fullmatch(r"(\d+)w(\d+)s(" + re.escape(WITHIN) + r")?", item)
        if m is None or int(m.group(1)) < 2 or int(m.group(2)) < 1:
            raise ValueError(
                f"--settings: {item!r} is not of the form <N>w<K>s[{WITHIN}] with N >= 2, K >= 1 "
                "(e.g. 5w1s, 20w1s-within)"
            )
        out.append(Setting(int(m.group(1)), int(m.group(2)), m.group(3) is not None))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"--settings: give distinct settings such as 5w1s,5w5s,20w1s (got {text!r})")
    return out


def setting_name(setting: Setting) -> str:
    """The setting as written on the command line and in result files, e.g. ``20w1s-within``.

    Args:
        setting: The setting.

    Returns:
        ``<N>w<K>s``, with ``-within`` for the within-alphabet protocol.
    """
    return f"{setting.n_way}w{setting.k_shot}s" + (WITHIN if setting.within else "")


def parse_adaptation_grid(*, text: str) -> list[tuple[int, float]]:
    """Parse ``"steps=3,5,10;lr=0.1,0.2,0.4"`` into every ``(steps, lr)`` pair.

    Args:
        text: ``steps=...;lr=...`` with comma-separated positive values.

    Returns:
        The grid, steps-major.

    Raises:
        ValueError: If the text is malformed or a value is not positive.
    """
    parts: dict[str, list[str]] = {}
    for chunk in text.split(";"):
        name, sep, values = chunk.partition("=")
        if not sep or name.strip() not in ("steps", "lr"):
            raise ValueError(f"--tune-adaptation: expected 'steps=...;lr=...', got {text!r}")
        parts[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    if set(parts) != {"steps", "lr"}:
        raise ValueError(f"--tune-adaptation: give both steps= and lr=, got {text!r}")
    try:
        steps = [int(v) for v in parts["steps"]]
        lrs = [float(v) for v in parts["lr"]]
    except ValueError as exc:
        raise ValueError(f"--tune-adaptation: {exc}") from exc
    if not steps or not lrs or min(steps) < 1 or min(lrs) <= 0:
        raise ValueError(f"--tune-adaptation: steps must be >= 1 and lr > 0, got {text!r}")
    return [(st, lr) for st in steps for lr in lrs]
