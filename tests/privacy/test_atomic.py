"""The one atomic-write helper (issue 20): a reader of the run directory sees the old content or
the new one, never a torn file, and no temporary file is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from privacy import atomic
from privacy.atomic import atomic_write_text


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    atomic_write_text(path=target, text="old")
    atomic_write_text(path=str(target), text="néw\n")
    assert target.read_text(encoding="utf-8") == "néw\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_write_that_fails_before_the_rename_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between writing and renaming (here: the rename fails) must not expose a partial
    file: a plain ``open(path, "w")`` would already have truncated it."""
    target = tmp_path / "privacy_ledger.jsonl"
    atomic_write_text(path=target, text="line 1\nline 2\n")

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(path=target, text="x" * 10_000)
    assert target.read_text(encoding="utf-8") == "line 1\nline 2\n"


def test_every_package_uses_the_one_helper() -> None:
    """The run directory (secfed.experiment), the reports (evaluations.jsonio) and the ledger
    (privacy.ledger, whose file is written by privacy.ledger.core) write through the same function."""
    from evaluations import jsonio
    from privacy.ledger import core as ledger
    from secfed import experiment

    assert jsonio.atomic_write_text is atomic_write_text
    assert experiment.atomic_write_text is atomic_write_text
    assert ledger.atomic_write_text is atomic_write_text
    assert not hasattr(experiment, "_atomic_write")
    assert os.path.exists(atomic.__file__)
