"""The site's privacy hook takes one typed value, read from the configuration once (issue 20).

:func:`secfed.dp.site.build_site_privacy` builds a :class:`~secfed.dp.site.params.SiteDPParams`
(the run's :class:`~secfed.dp.params.DPParams` and the public facts of local training) once per
site and hands it to the hook; the hook modules never see the configuration. Old code: the hook
kept the configuration and read ``config.privacy`` / ``config.learner`` / ``config.task`` in a
dozen places beside the ``DPParams`` it built.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import secfed.dp.params as dp_params_module
from secfed import components
from secfed.dp.engines import step_normaliser
from secfed.dp.params import DPParams, DPParamsError, dp_params
from secfed.dp.site import SiteDPParams, build_site_privacy, site_dp_params
from secfed.errors import ConfigError
from tests.secfed.dp.test_dp_site import tiny_config

REPO = Path(__file__).resolve().parents[3]
#: The hook's modules: they take a SiteDPParams and must not read the configuration.
HOOK_MODULES = ("base", "client", "record", "episodic", "per_sample")


def _counting_dp_params(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = dp_params_module.dp_params

    def counting(**kwargs: Any) -> DPParams:
        calls.append(1)
        return original(**kwargs)

    monkeypatch.setattr(dp_params_module, "dp_params", counting)
    return calls


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {"learner": {"name": "reptile"}},
        {"learner": {"name": "fedavg"}},
        {"privacy": {"mode": "client"}},
    ],
)
def test_the_hook_builds_its_dp_params_once(
    monkeypatch: pytest.MonkeyPatch, sections: dict[str, Any]
) -> None:
    cfg = tiny_config(**sections)
    site = components.build_site(config=cfg, site_id=0)
    calls = _counting_dp_params(monkeypatch)
    hook = build_site_privacy(config=cfg, site_id=0, site=site)
    assert len(calls) == 1
    assert isinstance(hook.params, SiteDPParams)
    assert hook.params.dp == dp_params(config=cfg)


def test_a_handed_down_dp_params_value_is_the_one_the_hook_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config()
    site = components.build_site(config=cfg, site_id=0)
    value = dp_params(config=cfg)
    calls = _counting_dp_params(monkeypatch)
    hook = build_site_privacy(config=cfg, site_id=0, site=site, params=value)
    assert calls == []
    assert hook.params.dp is value
    assert hook.describe()["noise_multiplier"] == value.noise_multiplier


def test_dp_params_of_another_configuration_are_refused() -> None:
    cfg = tiny_config()
    site = components.build_site(config=cfg, site_id=0)
    other = dp_params(config=tiny_config(privacy={"noise_multiplier": 2.0}))
    with pytest.raises(ConfigError, match="another configuration"):
        build_site_privacy(config=cfg, site_id=0, site=site, params=other)


@pytest.mark.parametrize("learner", ["protonet", "reptile", "fedavg"])
def test_site_dp_params_carry_the_configured_values(learner: str) -> None:
    augmult = 2 if learner == "protonet" else 1  # per-episode units only
    privacy = {"episodes_per_step": 2, "augmult": augmult}
    cfg = tiny_config(learner={"name": learner, "meta_batch": 3}, privacy=privacy)
    sp = site_dp_params(config=cfg)
    lr, p = cfg.learner, cfg.privacy
    assert (sp.learner, sp.local_steps, sp.meta_batch, sp.inner_steps) == (
        lr.name,
        lr.local_steps,
        lr.meta_batch,
        lr.inner_steps,
    )
    assert (sp.n_way, sp.episodes_per_step, sp.expected_batch, sp.augmult, sp.seed) == (
        cfg.task.n_way,
        2,
        p.expected_batch,
        augmult,
        cfg.experiment.seed,
    )
    assert sp.normaliser == step_normaliser(config=cfg)
    assert sp.episodic == (learner == "protonet")
    assert sp.dp_plan == {"protonet": "slots", "reptile": "tasks", "fedavg": "every_step"}[learner]


def test_site_dp_params_refuse_what_has_no_site_hook() -> None:
    with pytest.raises(ConfigError, match="has no site privacy hook"):
        site_dp_params(config=tiny_config(privacy={"mode": "none"}))
    with pytest.raises(ConfigError, match="must be an ExperimentConfig"):
        site_dp_params(config={"privacy": {"mode": "record"}})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_way", 0), ("normaliser", 0), ("augmult", True), ("local_steps", -1), ("dp", None), ("learner", "")],
)
def test_a_bad_field_names_itself(field: str, value: Any) -> None:
    sp = site_dp_params(config=tiny_config())
    with pytest.raises(DPParamsError, match=rf"DPParams\.site\.{field} = ") as err:
        dataclasses.replace(sp, **{field: value})
    assert err.value.field == f"site.{field}"


@pytest.mark.parametrize("module", HOOK_MODULES)
def test_the_hook_modules_do_not_read_the_configuration(module: str) -> None:
    tree = ast.parse((REPO / "secfed" / "dp" / "site" / f"{module}.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "ExperimentConfig" not in names
    assert not attrs & {"_cfg", "privacy", "experiment", "partition", "federation"}
