"""``secfed config FILE`` prints every key that applies with its value and one-line documentation.

Old code printed the values only (no documentation) and every key of every section, Omniglot's
archives and alphabets for a digits run included. The reader's view: the printed text.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from runtime_cfg import REPO

from secfed.cli import main
from secfed.config import CHOICES, SECTIONS, ExperimentConfig, config_to_toml, load_config
from secfed.config_doc import applies, explain_config, key_docs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))
OMNIGLOT_ONLY = ("train_archives", "test_archives", "val_alphabets", "public_alphabets", "image_size")


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["config", *argv]) == 0
    return capsys.readouterr().out


def _keys(text: str) -> dict[str, dict[str, str]]:
    """``{section: {key: comment}}`` of the printed text."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.split("]")[0][1:]
            out[section] = {}
        elif "=" in line and not line.startswith("#"):
            key, _, rest = line.partition(" = ")
            out[section][key] = rest.partition("  # ")[2]
    return out


def test_every_key_of_every_section_is_documented() -> None:
    from typing import get_type_hints

    types = get_type_hints(ExperimentConfig)
    missing = [f"{s}.{k}" for s in SECTIONS for k, doc in key_docs(types[s]).items() if not doc]
    assert not missing, f"keys without a docstring entry in secfed/config/sections.py: {missing}"


def test_digits_shows_documented_keys_and_no_omniglot_keys(capsys: pytest.CaptureFixture[str]) -> None:
    text = _printed(capsys, str(REPO / "examples" / "digits_protonet.toml"))
    keys = _keys(text)
    assert not set(OMNIGLOT_ONLY) & set(keys["data"]), keys["data"]  # old code: all five printed
    assert "pretrain_steps" not in keys["model"] and "test_protocol" not in keys["task"]
    assert "secagg" not in keys  # plain aggregation
    assert list(keys["privacy"]) == ["mode"]  # no DP: the other privacy keys do not apply
    for section, rows in keys.items():
        for key, comment in rows.items():
            assert comment, f"{section}.{key} printed without its documentation"
            if f"{section}.{key}" in CHOICES:
                assert "one of:" in comment
    assert "Master seed" in keys["experiment"]["seed"]
    assert "Digits only" in keys["data"]["test_classes"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_printed_configuration_loads_back_to_the_same(example: Path, tmp_path: Path) -> None:
    cfg = load_config(example)
    text = explain_config(config=cfg)
    tomllib.loads(text)  # valid TOML, comments included
    f = tmp_path / "printed.toml"
    f.write_text(text, encoding="utf-8")
    assert config_to_toml(load_config(f)) == config_to_toml(cfg)  # data.root printed absolute


def test_omniglot_and_dp_keys_appear_where_they_apply(capsys: pytest.CaptureFixture[str]) -> None:
    keys = _keys(_printed(capsys, str(REPO / "examples" / "omniglot_protonet_dp.toml")))
    cfg = load_config(REPO / "examples" / "omniglot_protonet_dp.toml")
    assert "image_size" in keys["data"] and "train_archives" in keys["data"]
    assert cfg.privacy.mode != "none" and {"noise_multiplier", "delta", "accountant"} <= set(keys["privacy"])
    assert "pld" in keys["privacy"]["accountant"]


def test_a_key_that_does_not_apply_but_was_set_is_kept_and_marked(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(REPO / "examples" / "digits_protonet.toml")
    keys = _keys(_printed(capsys, example, "--set", "model.scatter_j=3"))
    assert keys["model"]["scatter_j"].startswith("not used by this configuration")
    cfg = load_config(example, overrides=["model.scatter_j=3"])
    assert not applies(config=cfg, key="model.scatter_j")


def test_plain_prints_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    text = _printed(capsys, str(REPO / "examples" / "digits_protonet.toml"), "--plain")
    assert "train_archives" in tomllib.loads(text)["data"]
