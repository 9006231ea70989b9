"""DP planning, the configuration's rules, ``secfed config`` and the public pretraining read what
each learner declares, never its name.

A learner says how many record-level DP steps a local step takes (``dp_steps_per_local_step``),
how the planner replays its public plan (``dp_plan``) and whether noise sharing supports it
(``noise_sharing``); :mod:`secfed.dp.planning`, :mod:`secfed.dp.params`, :mod:`secfed.dp.sharing`,
:mod:`secfed.dp.site` and :func:`secfed.config.check_noise_sharing_config` read those facts.
Old code: the planner, the site hook and the rule listed learner names, so changing a class's
declaration changed nothing.

The facts live in the torch-free :mod:`secfed.learners.declarations` (the configuration loads
without torch); each class copies its declaration into its attributes. The settings a learner may
read are declared once (:class:`secfed.learners.settings.LearnerSettings`), the source of both the
``[learner]`` section and :class:`~secfed.learners.base.LearnerConfig`. Old code: the rules of
:mod:`secfed.config`, :mod:`secfed.config_doc` and :mod:`secfed.pretrain` listed learner names
(which take ``head_init``, ``fce``, which are episodic, ...), and the settings were declared in
both the section and the learners' config.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from secfed.config import LearnerSection, config_from_dict
from secfed.config_doc import applies
from secfed.dp import planning
from secfed.dp.params import record_steps_per_round
from secfed.errors import ConfigError
from secfed.learners import LEARNERS, LearnerConfig, ProtoNet, Reptile, sharing_learner_names
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration, learner_names
from secfed.learners.episodic import EpisodicLearner
from secfed.learners.settings import LearnerSettings, setting_names

REPO = Path(__file__).resolve().parents[3]
READERS = (
    "secfed/dp/planning.py",
    "secfed/dp/params.py",
    "secfed/dp/sharing.py",
    "secfed/dp/site/__init__.py",
    "secfed/dp/site/base.py",
    "secfed/dp/site/build.py",
    "secfed/dp/site/client.py",
    "secfed/dp/site/episodic.py",
    "secfed/dp/site/params.py",
    "secfed/dp/site/per_sample.py",
    "secfed/dp/site/record.py",
    "secfed/components.py",
)


def _record(**learner: Any) -> Any:
    return config_from_dict(
        {
            "experiment": {"rounds": 2, "seed": 3},
            "partition": {"num_sites": 3, "scheme": "iid"},
            "task": {"n_way": 2},
            "model": {"norm": "group", "hidden": 8, "groups": 4},
            "learner": {"local_steps": 2, **learner},
            "privacy": {"mode": "record", "episodes_per_step": 1},
        }
    )


@pytest.mark.parametrize("path", READERS)
def test_the_dp_planning_modules_name_no_learner(path: str) -> None:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    named = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in LEARNERS
        }
    )
    assert named == [], f"{path} names learners {named}: read a class attribute instead"


def test_steps_per_round_follow_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _record(name="reptile", meta_batch=2, inner_steps=3)
    assert record_steps_per_round(config=cfg) == 2 * 2 * 3
    monkeypatch.setattr(Reptile, "dp_steps_per_local_step", classmethod(lambda cls, **_: 5))
    assert record_steps_per_round(config=cfg) == 2 * 5


def test_class_aware_replay_follows_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _record(name="protonet")
    every = planning.record_rounds(config=cfg) * record_steps_per_round(config=cfg)
    assert planning.record_class_aware_steps(config=cfg) < every  # slots: the worst class only
    planning._CLASS_STEPS_CACHE.clear()
    monkeypatch.setattr(ProtoNet, "dp_plan", "every_step")
    assert planning.record_class_aware_steps(config=cfg) == every
    planning._CLASS_STEPS_CACHE.clear()


def test_noise_sharing_follows_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sharing_learner_names() == ("protonet", "maml", "fomaml", "fedavg")
    data = {
        "partition": {"num_sites": 4},
        "model": {"norm": "group", "hidden": 8, "groups": 4},
        "learner": {"name": "protonet", "local_steps": 1, "local_optimizer": "sgd"},
        "federation": {"aggregation": "secagg"},
        "privacy": {"mode": "record", "noise_sharing": True},
    }
    config_from_dict(data)
    assert ProtoNet.noise_sharing is DECLARATIONS["protonet"].noise_sharing  # the class copies it
    _declare(monkeypatch, "protonet", noise_sharing=False)
    with pytest.raises(ConfigError, match=r"learner.name = 'protonet' \(supported: maml, fomaml, fedavg;"):
        config_from_dict(data)


def _declare(monkeypatch: pytest.MonkeyPatch, name: str, **facts: Any) -> None:
    """Change what learner ``name`` declares, for this test only."""
    monkeypatch.setitem(DECLARATIONS, name, dataclasses.replace(DECLARATIONS[name], **facts))


# ---- the declarations are the one source --------------------------------------------------------


def test_every_declared_learner_has_its_class_and_the_class_copies_the_declaration() -> None:
    assert tuple(LEARNERS) == learner_names()  # same learners, same order
    for name, cls in LEARNERS.items():
        declared = DECLARATIONS[name]
        assert cls.declaration is declared
        assert (cls.name, cls.episodic, cls.head, cls.needs_every_class, cls.dp_plan, cls.noise_sharing) == (
            declared.name,
            declared.episodic,
            declared.head,
            declared.needs_every_class,
            declared.dp_plan,
            declared.noise_sharing,
        )
        # a per-episode meta-loss is what EpisodicLearner provides
        assert issubclass(cls, EpisodicLearner) == declared.episodic, name


def test_the_settings_are_declared_once() -> None:
    section = [f.name for f in dataclasses.fields(LearnerSection)]
    learner = [f.name for f in dataclasses.fields(LearnerConfig)]
    assert section == ["name", *setting_names()]  # the order the resolved TOML keeps
    assert learner == [*setting_names(), "proximal_mu"]
    assert issubclass(LearnerSection, LearnerSettings) and issubclass(LearnerConfig, LearnerSettings)
    defaults = LearnerSettings()
    for key in setting_names():
        assert getattr(LearnerSection(), key) == getattr(LearnerConfig(), key) == getattr(defaults, key)


def test_a_declaration_that_others_could_not_read_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"learner 'x' reads unknown settings \['nope'\]"):
        LearnerDeclaration(name="x", episodic=True, head="none", message="episode_gradient", reads=("nope",))
    with pytest.raises(ConfigError, match=r"learner 'x': head must be one of"):
        LearnerDeclaration(name="x", episodic=True, head="shared", message="episode_gradient")
    with pytest.raises(ConfigError, match=r"learner 'x': \['local_lr'\] are read by every learner"):
        LearnerDeclaration(
            name="x", episodic=True, head="none", message="episode_gradient", reads=("local_lr",)
        )
    with pytest.raises(ConfigError, match=r"learner 'x': message must be one of \['episode_gradient'"):
        LearnerDeclaration(name="x", episodic=True, head="none", message="gradient")


def test_a_new_learner_must_say_what_its_sites_send() -> None:
    # no default: a learner added without the fact gets a TypeError at import, not a wrong replay
    with pytest.raises(TypeError, match="message"):
        LearnerDeclaration(name="x", episodic=True, head="none")  # type: ignore[call-arg]


def test_the_configuration_loads_without_torch() -> None:
    code = (
        "import sys\n"
        "from secfed.config import config_from_dict\n"
        "from secfed.config_doc import explain_config\n"
        "cfg = config_from_dict({'partition': {'num_sites': 4},"
        " 'model': {'norm': 'group', 'hidden': 8, 'groups': 4},"
        " 'learner': {'name': 'maml', 'local_steps': 1, 'local_optimizer': 'sgd', 'head_init': 'proto'},"
        " 'federation': {'aggregation': 'secagg'},"
        " 'privacy': {'mode': 'record', 'noise_sharing': True}})\n"
        "explain_config(config=cfg)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    assert out.stdout.strip() == "False", out.stdout + out.stderr


# ---- the configuration's rules follow the declarations ------------------------------------------


def test_which_learners_take_a_setting_follows_what_they_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError, match=r"learner.fce = True is invalid: applies to learner.name = 'matching'$"
    ):
        config_from_dict({"learner": {"name": "protonet", "fce": True}})
    with pytest.raises(ConfigError, match=r"'zero' applies to maml, fomaml and reptile \(learners"):
        config_from_dict({"learner": {"name": "protonet", "head_init": "zero"}})
    _declare(monkeypatch, "protonet", reads=("fce", "head_init"))
    cfg = config_from_dict({"learner": {"name": "protonet", "fce": True, "head_init": "proto"}})
    assert applies(config=cfg, key="learner.fce") and applies(config=cfg, key="learner.head_init")
    assert not applies(config=cfg, key="learner.pair_loss")
    with pytest.raises(ConfigError, match=r"applies to learner.name = 'protonet' or 'matching'$"):
        config_from_dict({"learner": {"name": "siamese", "fce": True}})
    with pytest.raises(ConfigError, match=r"'proto' applies to protonet, maml, fomaml and reptile \("):
        config_from_dict({"learner": {"name": "siamese", "head_init": "proto"}})


def test_inner_step_minimums_follow_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    config_from_dict({"learner": {"name": "protonet", "inner_steps": 1}})
    _declare(monkeypatch, "protonet", min_inner_steps=2)
    with pytest.raises(
        ConfigError, match=r"learner.inner_steps = 1 is invalid: protonet needs >= 2 inner steps$"
    ):
        config_from_dict({"learner": {"name": "protonet", "inner_steps": 1}})
    zero = {"name": "reptile", "head_init": "zero", "inner_steps": 2}
    config_from_dict({"learner": zero})
    _declare(monkeypatch, "reptile", zero_head_min_inner_steps=3)
    with pytest.raises(ConfigError, match=r"reptile with head_init = 'zero' needs >= 3 \(the first step"):
        config_from_dict({"learner": zero})
    monkeypatch.setattr(Reptile, "declaration", DECLARATIONS["reptile"])  # the class reads its own
    with pytest.raises(ConfigError, match=r"inner_steps must be >= 3 for reptile with head_init='zero'"):
        Reptile(config=LearnerConfig(head_init="zero", inner_steps=2))


def test_per_episode_rules_follow_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    dp = {"model": {"norm": "group", "hidden": 8, "groups": 4}, "privacy": {"mode": "record", "augmult": 2}}
    cfg = config_from_dict({"learner": {"name": "protonet"}, **dp})
    assert applies(config=cfg, key="privacy.episodes_per_step")
    _declare(monkeypatch, "protonet", episodic=False)
    with pytest.raises(ConfigError, match=r"\(the episodic learners, not protonet, reptile or fedavg\)$"):
        config_from_dict({"learner": {"name": "protonet"}, **dp})
    assert not applies(config=cfg, key="privacy.episodes_per_step")
    proto = {"learner": {"name": "maml", "head_init": "proto"}, **dp, "privacy": {"mode": "record"}}
    config_from_dict(proto)
    _declare(monkeypatch, "maml", episodic=False)
    with pytest.raises(ConfigError, match=r"'proto' sets maml's head from several records of a task"):
        config_from_dict(proto)


def test_head_and_pretraining_rules_follow_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    from secfed.config import supervised_eval_applies

    assert supervised_eval_applies(learner="fedavg", dataset="medmnist") is None
    assert "use learner.name = 'fedavg'" in str(supervised_eval_applies(learner="maml", dataset="medmnist"))
    public = {"data": {"dataset": "omniglot", "public_alphabets": ["Greek"]}, "model": {"pretrain_steps": 2}}
    with pytest.raises(ConfigError, match=r"public pretraining is for the episodic learners and reptile"):
        config_from_dict({"learner": {"name": "fedavg"}, **public})
    _declare(monkeypatch, "maml", head="global")
    assert supervised_eval_applies(learner="maml", dataset="medmnist") is None
    assert "use learner.name = 'maml' or 'fedavg'" in str(
        supervised_eval_applies(learner="siamese", dataset="medmnist")
    )
    with pytest.raises(ConfigError, match=r"public pretraining is for the episodic learners and reptile"):
        config_from_dict({"learner": {"name": "maml"}, **public})


def test_the_pretrainer_is_the_declared_embedding_learner(monkeypatch: pytest.MonkeyPatch) -> None:
    from secfed.pretrain import _pretrainer, pretrain_cache_path

    public = {"data": {"dataset": "omniglot", "public_alphabets": ["Greek"]}, "model": {"pretrain_steps": 2}}
    same = config_from_dict({"learner": {"name": "protonet", "local_optimizer": "sgd"}, **public})
    assert _pretrainer(config=same).embedding_pretrainer
    adam = config_from_dict({"learner": {"name": "protonet", "local_optimizer": "adam"}, **public})
    assert pretrain_cache_path(config=same) == pretrain_cache_path(config=adam)  # pretrains with Adam
    _declare(monkeypatch, "protonet", embedding_pretrainer=False)
    assert not _pretrainer(config=same).embedding_pretrainer
    assert pretrain_cache_path(config=same) != pretrain_cache_path(config=adam)  # its own optimiser


# ---- no module outside secfed/learners/ names a learner -----------------------------------------

#: Modules of the runtime outside secfed/learners/ that read learner facts (the scope of issue 20;
#: secfed/dp/ is READERS above; federation/, cli* name no learner).
SCANNED = (
    "secfed/config",
    "secfed/config_doc.py",
    "secfed/pretrain.py",
    "secfed/components.py",
    "secfed/builders.py",
    "secfed/experiment.py",
    "secfed/rundir.py",
    "secfed/scoring.py",
    "secfed/supervised_eval.py",
    "secfed/tasks",
    "secfed/models",
    "secfed/data",
)
#: ``path: (name, reason)`` for a learner name that stays. None today.
EXCEPTIONS: dict[str, tuple[str, str]] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                nodes.add(id(first.value))
    return nodes


def _named_learners(path: Path) -> list[str]:
    """Learner names ``path`` holds as a string constant, or quoted inside one (a message's
    ``'fedavg'``), outside docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            for name in LEARNERS:
                if node.value == name or f"'{name}'" in node.value or f'"{name}"' in node.value:
                    found.add(name)
    return sorted(found)


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@pytest.mark.parametrize("path", _scanned_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_outside_the_learners_names_a_learner(path: Path) -> None:
    rel = str(path.relative_to(REPO))
    allowed = {EXCEPTIONS[rel][0]} if rel in EXCEPTIONS else set()
    named = [n for n in _named_learners(path) if n not in allowed]
    assert named == [], f"{rel} names learners {named}: read secfed.learners.declarations instead"


def test_the_scan_finds_a_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Docstrings may say \'maml\'."""\n'
        'A = "reptile"\n'
        "B = \"use learner.name = 'fedavg'\"\n"
        'C = "MAML relabels classes"\n',
        encoding="utf-8",
    )
    assert _named_learners(bad) == ["fedavg", "reptile"]
