"""One error root per package (issue 20), and every error class of a package under its root.

The roots:

* ``protocols``: :class:`protocols.errors.ProtocolError` and ``privacy``:
  :class:`privacy.errors.PrivacyError` derive from :class:`Exception` directly, since these two
  packages import nothing of ours;
* ``secfed``: :class:`secfed.errors.SecfedError`, also directly from :class:`Exception`;
* ``attacks``: :class:`attacks.errors.AttackError` and ``evaluations``:
  :class:`evaluations.errors.EvaluationError` derive from :class:`secfed.errors.SecfedError`, so the
  ``secfed`` command reports their errors as it reports the runtime's (it used to print a
  traceback for an ``AttackError`` raised outside ``secfed attack``).

The error classes are found in each package's ``errors`` modules and in every other module that
defines a class whose name or a base's name ends in ``Error`` or ``Exception`` (read from the
syntax tree, so only those modules are imported).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from attacks.errors import AttackError
from evaluations.errors import EvaluationError
from privacy.errors import PrivacyError
from protocols.errors import ProtocolError
from secfed.errors import SecfedError

REPO = Path(__file__).resolve().parents[1]
ROOTS: dict[str, type[Exception]] = {
    "protocols": ProtocolError,
    "privacy": PrivacyError,
    "secfed": SecfedError,
    "attacks": AttackError,
    "evaluations": EvaluationError,
}
#: The direct base of each package's root.
ROOT_BASES: dict[str, type[Exception]] = {
    "protocols": Exception,
    "privacy": Exception,
    "secfed": Exception,
    "attacks": SecfedError,
    "evaluations": SecfedError,
}


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _error_modules(package: str) -> list[str]:
    """Modules of ``package`` that are errors modules or may define an error class."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if module.endswith(".__main__"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defines = any(
            isinstance(node, ast.ClassDef)
            and any(n.endswith(("Error", "Exception")) for n in [node.name, *map(_name, node.bases)])
            for node in ast.walk(tree)
        )
        if defines or path.name == "errors.py":
            found.append(module)
    return found


def _error_classes(package: str) -> list[type[BaseException]]:
    classes = []
    for module_name in _error_modules(package):
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module_name:
                classes.append(obj)
    return classes


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_each_package_has_one_root_in_its_errors_module(package: str) -> None:
    root = ROOTS[package]
    assert root.__module__ == f"{package}.errors"
    assert root.__bases__ == (ROOT_BASES[package],), f"{root.__name__} derives from {root.__bases__}"


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_error_class_derives_from_its_packages_root(package: str) -> None:
    classes = _error_classes(package)
    assert ROOTS[package] in classes
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, ROOTS[package])]
    assert not outside, f"not under {ROOTS[package].__name__}: {outside}"


def test_the_attack_run_dir_error_is_one_family() -> None:
    """``RunDirError`` is an invalid attack input; its being a secfed error comes from the root."""
    from attacks.errors import AttackInputError
    from attacks.secfed_adapter import RunDirError

    assert RunDirError.__bases__ == (AttackInputError,)
    assert issubclass(RunDirError, SecfedError) and issubclass(RunDirError, ValueError)


def _names_by_package() -> dict[str, dict[str, str]]:
    """Error class name -> defining module, per package (every class, also under another name)."""
    names: dict[str, dict[str, str]] = {}
    for package in sorted(ROOTS):
        found = names.setdefault(package, {})
        for module_name in _error_modules(package):
            module = importlib.import_module(module_name)
            for attr, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module_name:
                    found.setdefault(obj.__name__, module_name)
                    found.setdefault(attr, module_name)  # an alias names the class too
    return names


def _shared_names(names: dict[str, dict[str, str]]) -> list[str]:
    packages = sorted(names)
    return [
        f"{name}: {names[a][name]} and {names[b][name]}"
        for i, a in enumerate(packages)
        for b in packages[i + 1 :]
        for name in sorted(set(names[a]) & set(names[b]))
    ]


def test_no_two_packages_define_an_error_class_of_the_same_name() -> None:
    """One concept, one name: ``protocols`` had its own ``ConfigError`` and ``MessageError`` beside
    :class:`secfed.errors.ConfigError` and :class:`secfed.errors.MessageError`, in unrelated
    hierarchies, so ``except ConfigError`` meant different things by the import above it."""
    names = _names_by_package()
    shared = _shared_names(names)
    assert not shared, "error classes of the same name in two packages:\n" + "\n".join(shared)
    assert names["protocols"]["ProtocolConfigError"] == "protocols.errors"
    assert names["secfed"]["ConfigError"] == "secfed.errors"


def test_the_same_name_check_sees_a_clash() -> None:
    clash = {"protocols": {"ConfigError": "protocols.errors"}, "secfed": {"ConfigError": "secfed.errors"}}
    assert _shared_names(clash) == ["ConfigError: protocols.errors and secfed.errors"]
    assert _shared_names({"a": {"XError": "a.errors"}, "b": {"YError": "b.errors"}}) == []
