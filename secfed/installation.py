"""The five import names secfed installs, and a clear error when another distribution shadows one.

secfed installs five top-level import packages: ``protocols``, ``privacy``, ``secfed``,
``attacks`` and ``evaluations`` (the repository layout of the design card: one folder per layer).
Four of those names are generic, and ``evaluations`` is already the name of another distribution
on the package index. Two distributions that install the same top-level name into one environment
overwrite each other's files, or the first one on ``sys.path`` hides the other.

Why the names stay top-level (decided in issue 20; docs/architecture.md, "Installed names"):
Python's import name is the folder's name unless an import hook maps it. Installing the folders
as subpackages of one namespace (``secfed.protocols`` and so on) would need either renamed
folders (the design card fixes them) or setuptools' package-dir remapping, whose editable
installs work through an import hook that static checkers do not follow (setuptools' "Editable
installs" documentation: tools that do not run the hook, such as mypy, see no package; its
``editable_mode=compat`` uses a ``.pth`` path entry, which cannot rename a folder). The names are
therefore kept, secfed is meant for a virtual environment of its own (the Makefile makes one),
and this module turns a shadowed name into one line saying what happened instead of a traceback.

No import by string happens here (``tests/test_layering.py``): the command line imports its
packages statically and hands the :class:`ImportError` it caught to :func:`shadowing_message`.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["OWN_PACKAGES", "shadowing_message"]

#: The top-level import packages of the secfed distribution, bottom layer first.
OWN_PACKAGES: tuple[str, ...] = ("protocols", "privacy", "secfed", "attacks", "evaluations")


def shadowing_message(*, exc: ImportError) -> str | None:
    """Say which of secfed's import names another package shadows, if that is what ``exc`` means.

    Args:
        exc: The error raised by a static import of one of secfed's own modules.

    Returns:
        One line naming the shadowed package, where Python found it, where secfed's own copy
        would be, and what to do; ``None`` when ``exc`` concerns no package of secfed's, or when
        the package Python loaded is secfed's own (a genuine missing module, to be raised as is).
    """
    name = exc.name or ""
    top = name.split(".", 1)[0]
    if top not in OWN_PACKAGES:
        return None
    own_root = Path(__file__).resolve().parent.parent
    loaded = sys.modules.get(top)
    if loaded is None:
        return (
            f"secfed's import package {top!r} is missing (expected at {own_root / top}; missing: "
            f"{name}): reinstall secfed (`make install`)"
        )
    found = getattr(loaded, "__file__", None)
    if found is None:
        where = "a folder without __init__.py (a namespace package)"
    else:
        found_path = Path(found).resolve()
        if found_path.parent.parent == own_root:
            return None
        where = str(found_path.parent)
    return (
        f"the import package {top!r} is not secfed's: Python loaded it from {where}, while secfed's "
        f"is {own_root / top} (missing: {name}). Another installed distribution uses the same "
        f"top-level name; install secfed in a virtual environment of its own (`make install` "
        f"makes one) or remove the other distribution"
    )
