"""The attacks of a sweep: ``--attack-option`` parsed and validated, and the attacks run at one point."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluations.attack_results import ATTACK_FILES
from evaluations.errors import SweepError
from secfed.errors import SecfedError

__all__ = ["AttackRunner", "DEFAULT_ATTACKS", "parse_attack_options", "run_point_attacks", "typed_errors"]

#: Attacks run at every point by default (their result files are read by the report).
DEFAULT_ATTACKS: tuple[str, ...] = ("inversion", "mia", "audit")
#: ``run_attack(run_dir=..., attack=...)``; its result files land in ``run_dir/attacks/``.
AttackRunner = Callable[..., Any]


def typed_errors(*, broad: bool) -> tuple[type[BaseException], ...]:
    """The typed errors a point (``broad=False``) or an attack (``broad=True``) may fail with.

    :class:`secfed.errors.SecfedError` covers the attacks' errors too (``AttackError`` derives from it).

    Args:
        broad: Add ``ValueError``, ``RuntimeError`` and ``OSError`` (an attack's own failures).

    Returns:
        The error classes, for an ``except`` clause.
    """
    from privacy.errors import PrivacyError

    errors: list[type[BaseException]] = [SecfedError]
    if broad:
        errors += [ValueError, RuntimeError, OSError]
    return (*errors, PrivacyError)


def parse_attack_options(*, pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` attack options into keyword arguments of :class:`attacks.options.AttackOptions`.

    Values are converted to the field's type (``int``, ``float``, ``bool``, ``str``, an optional
    ``int``, or a tuple of strings written comma-separated), and the whole set is validated by
    building the options object, so that a bad option fails before any training.

    Args:
        pairs: Strings such as ``"iterations=100"`` or ``"levels=record"``.

    Returns:
        The keyword arguments (empty for no pairs).

    Raises:
        SweepError: On a malformed pair, an unknown option name, a value of the wrong type, or a
            value the attacks refuse.
    """
    if not pairs:
        return {}
    import dataclasses
    import typing

    from attacks.options import AttackOptions

    hints = typing.get_type_hints(AttackOptions)
    names = {f.name for f in dataclasses.fields(AttackOptions)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise SweepError(f"attack option {pair!r} must look like NAME=VALUE")
        if key not in names:
            raise SweepError(f"unknown attack option {key!r}; choose from {sorted(names)}")
        hint = str(hints[key])
        try:
            value: Any
            if raw.lower() in ("none", "") and "None" in hint:
                value = None
            elif "tuple" in hint:
                value = tuple(v.strip() for v in raw.split(",") if v.strip())
            elif hints[key] is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(f"expected true or false, got {raw!r}")
                value = raw.lower() in ("true", "1", "yes")
            elif hints[key] is float:
                value = float(raw)
            elif "int" in hint:
                value = int(raw)
            else:
                value = raw
        except ValueError as exc:
            raise SweepError(f"attack option {key}: {exc}") from exc
        out[key] = value
    try:
        AttackOptions(**out)
    except (TypeError, ValueError) as exc:  # AttackConfigError is a ValueError
        raise SweepError(f"attack options {pairs}: {exc}") from exc
    return out


def run_point_attacks(
    *,
    run_dir: Path,
    attacks: Sequence[str],
    runner: AttackRunner | None,
    unavailable: str | None,
    echo: Callable[[str], None] | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Run the attacks on one point's run directory, keeping every result already there.

    Args:
        run_dir: The point's run directory.
        attacks: Attack names.
        runner: The attack entry point (``None``: unavailable, nothing runs).
        unavailable: Why the runner is unavailable, if it is.
        echo: Receives one line per attack started.
        options: Keyword arguments of :class:`attacks.options.AttackOptions` (from
            :func:`parse_attack_options`).

    Returns:
        Attack name -> ``reused``, ``ran``, ``not run: ...`` or ``failed: ...`` (the attack's typed
        error, which does not stop the sweep).
    """
    status: dict[str, str] = {}
    for name in attacks:
        json_name = ATTACK_FILES.get(name, (f"{name}.json", None))[0]
        if (run_dir / "attacks" / json_name).is_file():
            status[name] = "reused"
            continue
        if runner is None:
            status[name] = f"not run: {unavailable.split(': ', 1)[-1]}" if unavailable else "not run"
            continue
        if echo is not None:
            echo(f"sweep: point {run_dir.name}: attack {name}")
        try:
            if options:
                from attacks.options import AttackOptions

                runner(run_dir=run_dir, attack=name, options=AttackOptions(**options))
            else:
                runner(run_dir=run_dir, attack=name)
            status[name] = "ran"
        except typed_errors(broad=True) as exc:
            status[name] = f"failed: {type(exc).__name__}: {exc}"
    return status
