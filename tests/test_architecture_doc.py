"""docs/architecture.md's tree names every module of the five packages (issue 20: "the new tree, one
line per module: its job"). A module added without its line fails here, as does a line for a
module that no longer exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocols", "privacy", "secfed", "attacks", "evaluations")


def _listed() -> set[str]:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"^- `([A-Za-z0-9_/]+\.py)` — \S", doc, re.M))


def _modules() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }


def test_every_module_has_its_line_in_the_tree() -> None:
    missing = sorted(_modules() - _listed())
    assert not missing, f"docs/architecture.md's tree lacks: {missing}"


def test_the_tree_names_no_module_that_is_gone() -> None:
    gone = sorted(m for m in _listed() if not (ROOT / m).is_file())
    assert not gone, f"docs/architecture.md's tree names missing files: {gone}"
