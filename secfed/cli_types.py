"""Argument types shared by the ``secfed`` subcommands (argparse turns their ArgumentTypeError
into ``error: argument --x: ...`` and exit status 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least"]


def int_at_least(*, minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ``>= minimum``.

    Args:
        minimum: The smallest value allowed.

    Returns:
        The parser of one argument; it raises ``argparse.ArgumentTypeError`` naming the text
        given when that is not an integer or is below ``minimum``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse
