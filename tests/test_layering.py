"""The package layering of DEVELOPERS.md, checked on every import statement.

protocols/ and privacy/ import nothing of ours; secfed/ may import protocols and privacy;
attacks/ may import secfed and privacy; evaluations/ may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"secfed", "protocols", "privacy", "attacks", "evaluations"}
ALLOWED = {
    "protocols": set(),
    "privacy": set(),
    "secfed": {"protocols", "privacy"},
    "attacks": {"secfed", "privacy"},
    "evaluations": {"secfed", "protocols", "privacy", "attacks"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layering(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = []
    for f in files:
        for imported in _imports(f) - {package} - ALLOWED[package]:
            bad.append(f"{f.relative_to(REPO)} imports {imported}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom secfed.config import load_config\nif True:\n    import attacks.audit\n")
    assert _imports(f) == {"secfed", "attacks"}
