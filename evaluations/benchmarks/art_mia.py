"""Reference membership inference with the Adversarial Robustness Toolbox (run in ART's own venv).

This script is **not** part of the project's dependencies: it runs under a separate interpreter
that has ``adversarial-robustness-toolbox`` installed (e.g. ``/tmp/artenv/bin/python``) and is
called by :mod:`evaluations.benchmarks.attacks` through ``subprocess``. It imports nothing of the
project; it exchanges plain ``.npy`` files (no pickle) with the caller.

ART's ``MembershipInferenceBlackBox`` (input type ``prediction``) trains an attack classifier on the
target model's output vectors (plus one-hot labels) of records with *known* membership and then
scores the other records. Input folder (``--data``)::

    train_pred.npy (N1, C) float   train_y.npy (N1,) int   train_member.npy (N1,) bool
    eval_pred.npy  (N2, C) float   eval_y.npy  (N2,) int

Output (``--out``): ``art_scores.npy`` (N2,) float64, the attack's membership probability per
evaluation record (higher = member). Metrics are computed by the caller with the project's own
code, on the same records as its own attacks.

Usage::

    /tmp/artenv/bin/python evaluations/benchmarks/art_mia.py --data DIR --out DIR/art_scores.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Fit ART's black-box membership attack and write its scores.

    Args:
        argv: Command-line arguments.

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the .npy inputs")
    parser.add_argument("--out", type=Path, required=True, help="output .npy of membership scores")
    parser.add_argument("--model", default="rf", help="ART attack model type (rf, gb, lr, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import art
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import BlackBoxClassifier

    def load(name: str) -> np.ndarray:
        return np.load(args.data / f"{name}.npy", allow_pickle=False)

    train_pred, train_y, member = load("train_pred"), load("train_y"), load("train_member").astype(bool)
    eval_pred, eval_y = load("eval_pred"), load("eval_y")
    classes = int(train_pred.shape[1])

    def never_called(x: np.ndarray) -> np.ndarray:  # predictions are supplied directly
        raise RuntimeError("the target model is not queried by ART here")

    estimator = BlackBoxClassifier(predict_fn=never_called, input_shape=(1,), nb_classes=classes)
    attack = MembershipInferenceBlackBox(estimator, input_type="prediction", attack_model_type=args.model)
    if hasattr(attack.attack_model, "set_params") and "random_state" in attack.attack_model.get_params():
        attack.attack_model.set_params(random_state=args.seed)  # a reproducible scikit-learn attack model
    attack.fit(
        x=None,
        y=train_y[member],
        test_x=None,
        test_y=train_y[~member],
        pred=train_pred[member],
        test_pred=train_pred[~member],
    )
    scores = attack.infer(x=None, y=eval_y, pred=eval_pred, probabilities=True)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(eval_y), -1)[:, -1]
    np.save(args.out, scores, allow_pickle=False)
    print(
        json.dumps({"art_version": art.__version__, "attack_model": args.model, "scored": int(scores.size)})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
