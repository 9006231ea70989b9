"""A package of another distribution under one of secfed's import names: one clear line, no traceback.

The adversary's view here is an ordinary environment: another distribution (``evaluations`` is
one on the package index) installs a top-level package of the same name as one of secfed's, ahead
of it on ``sys.path``. Before :mod:`secfed.installation`, ``secfed --help`` died in an import
traceback (``cannot import name 'cli' from 'evaluations'``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from secfed.installation import OWN_PACKAGES, shadowing_message

ROOT = Path(__file__).resolve().parents[3]


def _run_with_shadow(tmp_path: Path, package: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "shadow" / package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Another distribution\'s package of the same name."""\n')
    # -S: no site hook, so no editable-install finder; the path then reads like a plain
    # environment in which the other distribution's folder comes first
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    path = os.pathsep.join([str(tmp_path / "shadow"), str(ROOT), *site_dirs])
    env = dict(os.environ, PYTHONPATH=path)
    code = f"import sys; from secfed.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


def test_a_shadowed_evaluations_package_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    proc = _run_with_shadow(tmp_path, "evaluations", ["--help"])
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "secfed: error: the import package 'evaluations' is not secfed's" in proc.stderr
    assert str(tmp_path / "shadow" / "evaluations") in proc.stderr
    assert str(ROOT / "evaluations") in proc.stderr


def test_a_shadowed_attacks_package_is_reported_when_the_command_imports_it(tmp_path: Path) -> None:
    # `secfed attack` imports the attacks package only when it runs
    proc = _run_with_shadow(tmp_path, "attacks", ["attack", str(tmp_path / "no-run"), "--attack", "mia"])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    assert "secfed: error: the import package 'attacks' is not secfed's" in proc.stderr
    assert str(tmp_path / "shadow" / "attacks") in proc.stderr


def test_the_real_installation_is_secfeds_own() -> None:
    # every own package resolves beside secfed: no message for a genuine missing submodule
    import attacks
    import evaluations
    import privacy
    import protocols
    import secfed

    for module in (protocols, privacy, secfed, attacks, evaluations):
        assert module.__name__ in OWN_PACKAGES
        assert shadowing_message(exc=ImportError("x", name=f"{module.__name__}.no_such_module")) is None
    assert shadowing_message(exc=ImportError("x", name="numpy.nothing")) is None


@pytest.mark.parametrize("name", ["evaluations", "attacks"])
def test_a_missing_own_package_is_named(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, name, raising=False)
    message = shadowing_message(exc=ImportError("x", name=f"{name}.cli"))
    assert message is not None and f"secfed's import package {name!r} is missing" in message
