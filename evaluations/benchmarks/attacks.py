"""Attack benchmark: inversion, membership inference and canary audits, without and with DP.

A benchmark script, not a test (8-13 minutes measured on one thread of a shared 2-core machine).
Every number comes from :func:`attacks.runner.run_attack` on run directories trained by
:class:`secfed.experiment.Experiment`.

1. **Gradient inversion** (digits, Reptile, 4 class-disjoint sites, MLP 64, plain SGD steps, non-private
   training): PSNR of the reconstruction of one site's records from a single gradient and from a
   Reptile update, batch 1 and batch 4 (Inverting Gradients, Geiping et al. 2020), next to the
   flat-image baseline (every record replaced by its mean grey). The same global model is then
   attacked with the site's message privatised as record-level DP-SGD would send it (clip ``C = 1``,
   noise multiplier ``z`` in ``--inversion-noise``): the run directory is copied and only the
   ``[privacy]`` section of its ``config.toml`` is changed, so the model is identical and only the
   message differs.
2. **Membership inference** (Omniglot small1 alphabets at 28x28, FedAvg, 2 class-disjoint sites, MLP 256,
   40 local Adam steps x 10 rounds: an overfitting model) without DP and with record-level DP-SGD at
   ε = 8 and ε = 1 (``privacy.target_epsilon``, noise calibrated by :func:`secfed.dp.calibrated_config`,
   q = 0.025, C = 1, δ = 1e-5): LiRA (online / offline, global / per-example variance), RMIA
   (offline), loss threshold — AUC, TPR at 0.1 % and 1 % FPR, record level, ``--references``
   reference models per target.
3. **Canary audit** of the same three configurations: one-run and Clopper–Pearson lower bounds beside
   the accountant's ε of the audit run.
4. **ART reference** (Adversarial Robustness Toolbox, ``MembershipInferenceBlackBox``, random-forest
   attack model on the target's softmax vector and label), run in a separate interpreter
   (``--art-python``; not a project dependency) on the same target model and the same
   member / non-member records: the target is replica 0 of each setting; ART is trained on the
   true membership of half of its candidate records (a stronger attacker than LiRA, which only uses
   reference models) and both ART and the project's attacks are scored on the other half with the
   project's metric code.

Usage::

    python -m evaluations.benchmarks.attacks --out /tmp/bench-attacks
    python -m evaluations.benchmarks.attacks --parts inversion --iterations 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.mia import lira, loss_attack, rmia
from attacks.mia_metrics import mia_metrics
from attacks.options import AttackOptions
from attacks.replicas import load_run_data, quantize
from attacks.runner import run_attack
from attacks.secfed_adapter import load_run
from evaluations.benchmarks import shared_dir
from secfed.config import ExperimentConfig, config_from_dict, config_to_dict, config_to_toml, load_config
from secfed.experiment import Experiment

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
#: The official Omniglot archives: ``$SECFED_SHARED/data/omniglot`` (see
#: :func:`evaluations.benchmarks.shared_dir`).
OMNIGLOT = shared_dir() / "data" / "omniglot"


def inversion_config() -> ExperimentConfig:
    """Digits Reptile with plain SGD steps (the replay of attacks.observation is exact)."""
    return config_from_dict(
        {
            "experiment": {
                "name": "bench-inversion",
                "rounds": 5,
                "eval_every": 0,
                "final_eval_episodes": 100,
            },
            "data": {"dataset": "digits", "rotations": True},
            "partition": {"scheme": "class_disjoint", "num_sites": 4},
            "task": {"n_way": 5, "k_shot": 1, "q_query": 5, "test_n_way": 5, "test_q_query": 5},
            "model": {"arch": "mlp", "hidden": 64, "norm": "none", "layers": 1},
            "learner": {
                "name": "reptile",
                "local_steps": 1,
                "local_optimizer": "sgd",
                "local_lr": 1.0,
                "inner_steps": 3,
                "inner_lr": 0.1,
            },
            "federation": {"server_lr": 0.5},
        },
        base_dir=REPO,
    )


def mia_config(*, target_epsilon: float | None) -> ExperimentConfig:
    """Omniglot FedAvg that overfits; record-level DP calibrated for ``target_epsilon`` when given."""
    raw: dict[str, Any] = {
        "experiment": {"name": "bench-mia", "rounds": 10, "eval_every": 0, "final_eval_episodes": 100},
        "data": {
            "dataset": "omniglot",
            "root": str(OMNIGLOT.resolve()),
            "train_archives": ["images_background_small1"],
            "test_archives": ["images_background_small2"],
            "rotations": False,
            "image_size": 28,
        },
        "partition": {"scheme": "class_disjoint", "num_sites": 2},
        "task": {"n_way": 5, "k_shot": 1, "q_query": 5, "test_n_way": 5, "test_q_query": 5},
        "model": {"arch": "mlp", "hidden": 256, "norm": "none", "layers": 1},
        "learner": {"name": "fedavg", "local_steps": 40, "local_lr": 0.002, "batch_size": 32},
    }
    if target_epsilon is not None:
        raw["privacy"] = {
            "mode": "record",
            "target_epsilon": float(target_epsilon),
            "sample_rate": 0.025,
            "expected_batch": 32,
            "max_grad_norm": 1.0,
            "delta": 1e-5,
        }
    cfg = config_from_dict(raw, base_dir=REPO)
    if target_epsilon is not None:
        from secfed.dp import calibrated_config

        cfg = calibrated_config(config=cfg)
    return cfg


def _train(config: ExperimentConfig, run_dir: Path) -> Path:
    if (run_dir / "summary.json").is_file():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    Experiment(config=config).run(out_dir=run_dir, progress=False)
    return run_dir


def _with_privacy(src: Path, dst: Path, *, noise: float) -> Path:
    """Copy a run directory with its messages privatised by record-level DP-SGD (same model)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("attacks"))
    cfg = load_config(dst / "config.toml")
    raw = config_to_dict(cfg)
    raw["privacy"].update({"mode": "record", "noise_multiplier": float(noise), "max_grad_norm": 1.0})
    (dst / "config.toml").write_text(config_to_toml(config_from_dict(raw, base_dir=cfg.base_dir)))
    return dst


def inversion_part(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Inversion PSNR without DP and with DP noise on the message."""
    base = _train(inversion_config(), out / "inversion" / "run")
    opts = AttackOptions(
        iterations=args.iterations,
        restarts=args.restarts,
        scenarios=("gradient_b1", "gradient_b4", "update_b1", "update_b4"),
        seed=args.seed,
    )
    rows: dict[str, Any] = {}
    for z in [None, *args.inversion_noise]:
        run_dir = base if z is None else _with_privacy(base, out / "inversion" / f"dp-z{z:g}", noise=z)
        t0 = time.perf_counter()
        doc = run_attack(run_dir=run_dir, attack="inversion", options=opts)
        key = "no DP" if z is None else f"DP z={z:g}"
        rows[key] = {
            name: {
                "psnr": sc["score"]["psnr"],
                "flat_baseline_psnr": sc["score"]["flat_baseline_psnr"],
                "ssim": sc["score"]["ssim"],
                "label_accuracy": sc["score"]["label_accuracy"],
            }
            for name, sc in doc["scenarios"].items()
        }
        rows[key]["seconds"] = time.perf_counter() - t0
        print(
            f"[inversion] {key}: "
            + ", ".join(f"{n} {v['psnr']:.1f} dB" for n, v in rows[key].items() if n != "seconds")
        )
    return rows


def _art(run_dir: Path, npz: dict[str, np.ndarray], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """ART's black-box attack and the project's attacks on replica 0, same evaluation records."""
    run = load_run(run_dir=run_dir)
    data = load_run_data(config=run.config)
    site = 0
    cand = npz["record_candidates"]
    x = torch.from_numpy(quantize(data.site_images(site))[cand])
    y = data.site_labels(site)[cand]
    target = load_run(run_dir=run_dir / "attacks" / "work" / "mia" / "mia-record-0" / "run")
    with torch.no_grad():
        target.model.eval()
        probs = torch.softmax(target.model(x).double(), dim=1).numpy()
    member = npz["record_masks"][0]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(cand.size)
    train_idx, eval_idx = np.sort(order[: cand.size // 2]), np.sort(order[cand.size // 2 :])
    # Evaluate on records whose references hold an IN and an OUT model (every attack below can score
    # them); with independent masks this does not depend on the record's membership in the target.
    refs_mask = npz["record_masks"][1:]
    eligible = (refs_mask.sum(axis=0) >= 1) & ((~refs_mask).sum(axis=0) >= 1)
    eval_idx = eval_idx[eligible[eval_idx]]
    work.mkdir(parents=True, exist_ok=True)
    for name, arr in {
        "train_pred": probs[train_idx],
        "train_y": y[train_idx],
        "train_member": member[train_idx],
        "eval_pred": probs[eval_idx],
        "eval_y": y[eval_idx],
    }.items():
        np.save(work / f"{name}.npy", arr, allow_pickle=False)
    result: dict[str, Any] = {
        "eval_members": int(member[eval_idx].sum()),
        "eval_nonmembers": int((~member[eval_idx]).sum()),
    }
    # The project's attacks, target 0 against references 1..K-1, restricted to the evaluation half.
    refs = np.arange(1, npz["record_masks"].shape[0])
    phi, prob, masks = npz["record_phi"], npz["record_prob"], npz["record_masks"]
    sel = eval_idx
    ours = {
        "loss": loss_attack(losses=-np.log(np.maximum(prob[0][sel], 1e-30))),
        "lira_online_global": lira(
            target_stats=phi[0][sel], reference_stats=phi[refs][:, sel], reference_in_mask=masks[refs][:, sel]
        ),
        "lira_offline_global": lira(
            target_stats=phi[0][sel],
            reference_stats=phi[refs][:, sel],
            reference_in_mask=masks[refs][:, sel],
            mode="offline",
        ),
        "rmia_offline": rmia(
            target_probs=prob[0][sel].mean(axis=1),
            reference_probs=prob[refs][:, sel].mean(axis=2),
            reference_in_mask=masks[refs][:, sel],
            population_target_probs=npz["record_population_prob"][0],
            population_reference_probs=npz["record_population_prob"][refs],
        ),
    }
    for name, s in ours.items():
        m = mia_metrics(scores=s, is_member=member[sel])
        result[name] = {"auc": m.auc, "tpr_at_fpr": m.tpr_at_fpr}
    python = Path(args.art_python)
    if not python.is_file():
        result["art"] = f"not run: {python} does not exist (install ART into a separate venv)"
        return result
    script = REPO / "evaluations" / "benchmarks" / "art_mia.py"
    proc = subprocess.run(
        [
            str(python),
            str(script),
            "--data",
            str(work),
            "--out",
            str(work / "art_scores.npy"),
            "--seed",
            str(args.seed),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        result["art"] = (
            f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
        return result
    art_scores = np.load(work / "art_scores.npy", allow_pickle=False)
    m = mia_metrics(scores=art_scores, is_member=member[eval_idx])
    result["art"] = {
        "auc": m.auc,
        "tpr_at_fpr": m.tpr_at_fpr,
        "info": json.loads(proc.stdout.strip().splitlines()[-1]),
    }
    return result


def mia_part(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MIA, audit and the ART reference for the non-private and the DP configurations."""
    if not OMNIGLOT.is_dir():
        return {"skipped": f"Omniglot archives not found at {OMNIGLOT}"}
    results: dict[str, Any] = {}
    for eps in [None, *args.epsilons]:
        key = "no DP" if eps is None else f"eps={eps:g}"
        cfg = mia_config(target_epsilon=eps)
        t0 = time.perf_counter()
        run_dir = _train(cfg, out / "mia" / key.replace(" ", "-").replace("=", ""))
        summary = json.loads((run_dir / "summary.json").read_text())
        row: dict[str, Any] = {
            "noise_multiplier": cfg.privacy.noise_multiplier if eps is not None else None,
            "accountant_epsilon": summary.get("epsilon"),
            "test_accuracy": summary["test_accuracy"],
            "train_s": time.perf_counter() - t0,
        }
        if "mia" in args.parts:
            t0 = time.perf_counter()
            doc = run_attack(
                run_dir=run_dir,
                attack="mia",
                options=AttackOptions(
                    references=args.references,
                    levels=("record",),
                    save_scores=True,
                    keep_work=True,
                    seed=args.seed,
                ),
            )
            row["mia"] = {
                name: {
                    "auc": m["auc"],
                    "tpr_at_fpr": m["tpr_at_fpr"],
                    "balanced_accuracy": m["balanced_accuracy"],
                }
                for name, m in doc["record_level"]["attacks"].items()
            }
            row["mia_skipped"] = doc["record_level"]["design"]["skipped"]
            row["mia_s"] = time.perf_counter() - t0
            if "art" in args.parts:
                npz = dict(np.load(run_dir / "attacks" / "mia_scores.npz", allow_pickle=False))
                row["art_comparison"] = _art(run_dir, npz, args, out / "art" / key.replace(" ", "-"))
            shutil.rmtree(run_dir / "attacks" / "work", ignore_errors=True)
            best = max(row["mia"].items(), key=lambda kv: kv[1]["auc"])
            print(
                f"[mia] {key}: best {best[0]} AUC {best[1]['auc']:.3f} "
                f"TPR@1% {best[1]['tpr_at_fpr']['0.01']:.3f}"
            )
        if "audit" in args.parts:
            t0 = time.perf_counter()
            doc = run_attack(
                run_dir=run_dir, attack="audit", options=AttackOptions(canaries=args.canaries, seed=args.seed)
            )
            row["audit"] = {
                "accountant_epsilon": doc["accountant_epsilon"],
                "one_run": doc["one_run"]["epsilon"],
                "clopper_pearson": (doc["clopper_pearson"] or {}).get("epsilon"),
                "canaries": doc["canaries"],
                "seconds": time.perf_counter() - t0,
            }
            print(f"[audit] {key}: {row['audit']}")
        results[key] = row
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark parts and write ``OUT/attacks_benchmark.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/secfed-bench-attacks"))
    parser.add_argument("--parts", nargs="+", default=["inversion", "mia", "audit", "art"])
    parser.add_argument("--iterations", type=int, default=400, help="inversion iterations")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--inversion-noise", type=float, nargs="+", default=[0.0, 0.01, 0.1, 1.0])
    parser.add_argument("--epsilons", type=float, nargs="*", default=[8.0, 1.0])
    parser.add_argument("--references", type=int, default=4)
    parser.add_argument("--canaries", type=int, default=500)
    parser.add_argument("--art-python", default="/tmp/artenv/bin/python")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }
    if "inversion" in args.parts:
        report["inversion"] = inversion_part(args.out, args)
    if {"mia", "audit"} & set(args.parts):
        report["mia"] = mia_part(args.out, args)
    report["seconds"] = time.perf_counter() - t0
    path = args.out / "attacks_benchmark.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
