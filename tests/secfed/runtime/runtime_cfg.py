"""Fixtures for runtime tests: a tiny, fast digits configuration, and a command-line run."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run_example(*, setting: str, out: Path) -> int:
    """``secfed run examples/digits_protonet.toml --set SETTING --out OUT``: its exit status."""
    from secfed.cli import main

    return main(["run", str(REPO / "examples" / "digits_protonet.toml"), "--set", setting, "--out", str(out)])


def tiny_config_dict(**sections: dict) -> dict:
    base = {
        "experiment": {
            "rounds": 3,
            "eval_every": 2,
            "eval_episodes": 10,
            "final_eval_episodes": 20,
            "seed": 3,
        },
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base
