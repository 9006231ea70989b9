"""The direction of every dependency among our modules, read from the code's syntax tree.

The graph has one node per module of ``protocols/``, ``privacy/``, ``secfed/``, ``attacks/`` and
``evaluations/`` and an arrow for every import of one of them, wherever it stands: at the top of
a file, inside a function, under ``if TYPE_CHECKING``, relative or absolute, and through the
dynamic forms (``importlib.import_module("…")``, ``__import__``, ``importlib.util.find_spec``,
``pkgutil.resolve_name``, ``runpy.run_module``). Three rules hold for that graph:

1. **No import by string.** None of our modules names another of ours in a string literal that is
   not a docstring (``"attacks.runner"``, ``("evaluations.cli", "register")``,
   ``"secfed.dp:calibrated_config"``), nor keeps Python code in a string that imports ours, nor calls
   a dynamic importer with a computed name (except :data:`DYNAMIC_ALLOWED`, whose callers pass
   third-party names as literals, which rule 1 reads).
2. **No upward import.** Every module belongs to one layer of :data:`LAYERS`, lowest first; it
   imports modules of its own layer or of layers below, never above, and never a sibling layer of
   the same rank (``protocols`` and ``privacy`` do not know each other).
3. **No cycle.** No module reaches itself through imports, counting every arrow above.

``from P import name`` is an arrow to ``P.name`` when that is a module, else to ``P``; the
implicit import of parent packages (``import a.b`` runs ``a/__init__.py``) is not an arrow, as in
import-linter and pydeps.

The layers, lowest first:

* ``protocols``, ``privacy``: secure aggregation and differential privacy; nothing of ours.
* ``secfed`` — the federated runtime, each part above what it builds on:
  ``secfed.errors``, ``secfed.optional``, ``secfed.seeding`` (errors, optional packages, seed
  derivation) ← ``secfed.data`` ← ``secfed.tasks``, ``secfed.models`` ← ``secfed.learners``,
  ``secfed.site`` (one site's data and tasks) ← ``secfed.config`` (the sections, each validating
  itself, and the cross-section rules, checked once by ``config_from_dict``) ←
  ``secfed.federation`` (the plain federated runtime and secure aggregation),
  ``secfed.supervised_eval`` ← ``secfed.builders`` (the data splits, model and learner every process
  builds, and the run's shape) ← ``secfed.dp`` (the DP wrappers around the runtime) ← the assembly of a
  run (``secfed.components``, ``secfed.pretrain``, ``secfed.experiment`` and the package face
  ``secfed/__init__.py``).
* ``attacks``: attacks and audits against finished runs.
* ``evaluations``: benchmarks, sweeps and reports (and the ``sweep``/``report`` commands' parsers).
* the command line: ``secfed.cli`` (the ``secfed`` console script and ``python -m secfed`` through
  ``secfed/__main__.py``), ``secfed.cli_privacy``, ``secfed.cli_attack``. It sits where it may
  import everything it dispatches to; nothing below imports it.

Run this file as a script (``python tests/test_layering.py``) to print the cycles, upward and
string imports of the tree as it stands.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("protocols", "privacy", "secfed", "attacks", "evaluations")

#: ``(rank, module-name prefixes)``, lowest rank first. The longest matching prefix places a module.
#: Entries of equal rank are siblings: neither may import the other.
LAYERS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (0, ("protocols",)),
    (0, ("privacy",)),
    (1, ("secfed.errors", "secfed.optional", "secfed.seeding")),
    (2, ("secfed.data",)),
    (3, ("secfed.tasks",)),
    (3, ("secfed.models",)),
    (4, ("secfed.learners",)),
    (4, ("secfed.site",)),
    (5, ("secfed.config",)),
    (6, ("secfed.federation",)),
    (6, ("secfed.supervised_eval",)),
    (7, ("secfed.builders",)),
    (8, ("secfed.dp",)),
    (9, ("secfed", "secfed.components", "secfed.pretrain", "secfed.experiment")),
    (10, ("attacks",)),
    (11, ("evaluations",)),
    (12, ("secfed.cli", "secfed.cli_privacy", "secfed.cli_attack", "secfed.__main__")),
)

#: Modules that may call a dynamic importer with a computed name, and why.
DYNAMIC_ALLOWED = {
    "secfed.optional": "imports a third-party optional package (ray) named by a literal at each caller",
}

#: Modules that name modules of ours as strings to run them in a new process (``python -m NAME``):
#: nothing is imported into the running one. The names still count as arrows for rules 2 and 3.
PROCESS_TARGETS = {
    "evaluations.bench": "runs each benchmark script as its own process, python -m MODULE",
}

_IMPORTERS = {"import_module", "__import__", "find_spec", "resolve_name", "run_module"}
_CODE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(PACKAGES) + r")\b", re.MULTILINE)


@dataclass
class Graph:
    """The module graph of a tree and what breaks its rules."""

    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    by_string: list[str] = field(default_factory=list)


def module_name(path: Path, root: Path) -> str:
    """``secfed/dp/__init__.py`` -> ``secfed.dp``; ``secfed/config.py`` -> ``secfed.config``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def build_graph(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> Graph:
    """Read every module of ``packages`` under ``root`` and its imports of the others.

    Args:
        root: The folder holding the packages.
        packages: Top-level package names.

    Returns:
        The graph, with every import by string listed as ``"module: what"``.
    """
    files = sorted(f for p in packages for f in (root / p).rglob("*.py") if ".venv" not in f.parts)
    graph = Graph(modules={module_name(f, root): f for f in files})
    known = graph.modules

    def resolve(name: str) -> str | None:
        """The longest module of ours that ``name`` (dotted, possibly ``mod:attr``) names."""
        parts = name.split(":")[0].split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in known:
                return candidate
            parts.pop()
        return None

    for mod, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = graph.edges.setdefault(mod, set())
        is_pkg = path.name == "__init__.py"
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (target := resolve(alias.name)) is not None:
                        edges.add(target)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in known:
                        edges.add(f"{source}.{alias.name}")
                    elif (target := resolve(source)) is not None:
                        edges.add(target)
            elif isinstance(node, ast.Call) and _callee(node) in _IMPORTERS:
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if (target := resolve(arg.value)) is not None:
                        edges.add(target)  # also reported below as a string naming a module
                elif mod not in DYNAMIC_ALLOWED:
                    graph.by_string.append(f"{mod}: {_callee(node)}() with a computed module name")
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            ):
                text = node.value
                named = text.strip().split(":")[0]
                if "." in named and resolve(named) == named:  # a dotted name of one of our modules
                    edges.add(named)
                    if mod not in PROCESS_TARGETS:
                        graph.by_string.append(f"{mod}: names module {named!r} in the string {text!r}")
                for match in _CODE_IMPORT.finditer(text):
                    graph.by_string.append(f"{mod}: code in a string imports {match.group(1)!r}")
    return graph


def layer_of(module: str) -> tuple[int, int]:
    """``(rank, index in LAYERS)`` of the longest prefix in :data:`LAYERS` that names ``module``."""
    best: tuple[int, int, int] | None = None  # (prefix length, rank, index)
    for index, (rank, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank, index)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of LAYERS: place it")
    return best[1], best[2]


def upward_imports(graph: Graph) -> list[str]:
    """Every arrow to a higher layer, or to a sibling layer of the same rank."""
    bad = []
    for mod, targets in sorted(graph.edges.items()):
        rank, index = layer_of(mod)
        for target in sorted(targets):
            t_rank, t_index = layer_of(target)
            if t_rank > rank or (t_rank == rank and t_index != index):
                bad.append(f"{mod} (layer {rank}) imports {target} (layer {t_rank})")
    return bad


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative Tarjan: the graph may be deep
        nonlocal counter
        work = [(start, iter(sorted(graph.edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.edges.get(node, ()):
                    found.append(sorted(component))

    for mod in sorted(graph.edges):
        if mod not in index:
            visit(mod)
    return sorted(found)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_every_module_has_a_layer(graph: Graph) -> None:
    for mod in graph.modules:
        layer_of(mod)


def test_no_import_by_string(graph: Graph) -> None:
    assert not graph.by_string, "imports by string:\n" + "\n".join(graph.by_string)


def test_no_upward_import(graph: Graph) -> None:
    bad = upward_imports(graph)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle(graph: Graph) -> None:
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# -- the checker itself fails where it should ------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_checker_sees_every_form_of_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "secfed/a.py": """
                import importlib
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from secfed.b import B
                def f():
                    from . import c
                    from .d import thing
                    importlib.import_module("attacks.runner")
                    __import__("evaluations.cli")
                COMMANDS = [("privacy.x", "register")]
            """,
            "secfed/b.py": "",
            "secfed/c.py": "",
            "secfed/d.py": "thing = 1\n",
            "attacks/runner.py": "",
            "evaluations/cli.py": "",
            "privacy/x.py": "",
        },
    )
    g = build_graph(root)
    assert g.edges["secfed.a"] == {
        "secfed.b",
        "secfed.c",
        "secfed.d",
        "attacks.runner",
        "evaluations.cli",
        "privacy.x",
    }
    assert len(g.by_string) == 3


def test_checker_flags_strings_code_and_computed_names(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "evaluations/e.py": '''
                """Docstrings may name secfed.cfg freely."""
                import importlib
                HARNESS = "import os\\nfrom secfed.cfg import x\\n"
                def load(name):
                    return importlib.import_module(name)
                TARGET = "secfed.cfg:calibrate"
                PROSE = "see secfed.cfg for details"
            ''',
            "secfed/cfg.py": "",
        },
    )
    g = build_graph(root)
    assert sorted(g.by_string) == [
        "evaluations.e: code in a string imports 'secfed'",
        "evaluations.e: import_module() with a computed module name",
        "evaluations.e: names module 'secfed.cfg' in the string 'secfed.cfg:calibrate'",
    ]


def test_checker_finds_cycles_and_upward_arrows(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "secfed/config.py": "def check():\n    from secfed.federation import secure\n",
            "secfed/federation/__init__.py": "",
            "secfed/federation/secure.py": "from secfed.config import check\n",
            "privacy/p.py": "import protocols\n",
        },
    )
    g = build_graph(root)
    assert cycles(g) == [["secfed.config", "secfed.federation.secure"]]
    assert upward_imports(g) == [
        "privacy.p (layer 0) imports protocols (layer 0)",
        "secfed.config (layer 5) imports secfed.federation.secure (layer 6)",
    ]


if __name__ == "__main__":  # pragma: no cover - a measuring aid
    g = build_graph()
    found = cycles(g)
    up = upward_imports(g)
    print(f"{len(g.modules)} modules, {sum(len(t) for t in g.edges.values())} arrows")
    print(f"cycles: {len(found)} ({sum(len(c) for c in found)} modules)")
    for c in found:
        print("  " + ", ".join(c))
    print(f"upward imports: {len(up)}")
    for line in up:
        print("  " + line)
    print(f"imports by string: {len(g.by_string)}")
    for line in g.by_string:
        print("  " + line)
