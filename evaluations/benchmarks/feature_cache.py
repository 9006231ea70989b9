"""Time of one record-level DP round of a site with and without ``model.cache_features``.

Builds site 0 of a configuration twice (scattering features cached or not), the same initial
model and the site's DP hook, then times ``local_update`` (one round: ``learner.local_steps`` DP
steps of ``privacy.episodes_per_step`` slots) alternately with and without the cache, in one
process, so both see the same machine load. The one-time featurisation of the site's shard is
timed separately.

Usage::

    OMP_NUM_THREADS=1 python -m evaluations.benchmarks.feature_cache examples/omniglot_protonet_dp.toml \
        --reps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["time_rounds", "main"]


def time_rounds(*, config_path: Path, overrides: list[str], reps: int, site_id: int = 0) -> dict[str, Any]:
    """Seconds of one DP round with and without the feature cache, interleaved.

    Args:
        config_path: The experiment's TOML file (record-level DP, scattering front-end).
        overrides: ``section.key=value`` overrides.
        reps: Rounds timed per variant.
        site_id: The site whose round is timed.

    Returns:
        ``{"featurise_s", "records", "plain_s": [...], "cached_s": [...], "speedup"}`` (speed-up
        of the medians).

    Raises:
        secfed.errors.ConfigError: If the configuration has no record-level DP or no scattering
            front-end.
    """
    from secfed import components
    from secfed.errors import ConfigError
    from secfed.experiment import Experiment
    from secfed.models.feature_cache import clear_feature_memo

    base = Experiment.from_file(config_path, overrides=overrides).config
    if base.privacy.mode != "record" or base.model.frontend != "scatter":
        raise ConfigError("needs privacy.mode = 'record' and model.frontend = 'scatter'")
    variants: dict[str, Any] = {}
    featurise_s = 0.0
    for name, cache in (("plain", False), ("cached", True)):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, cache_features=cache))
        clear_feature_memo()
        t0 = time.perf_counter()
        site = components.build_site(config=cfg, site_id=site_id)
        if cache:
            featurise_s = time.perf_counter() - t0
        torch.manual_seed(0)
        model = components.build_model(config=cfg, input_shape=site.input_shape)
        variants[name] = (
            cfg,
            site,
            model,
            components.build_site_privacy(config=cfg, site_id=site_id, site=site),
        )
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    for rep in range(reps):
        for name in ("plain", "cached") if rep % 2 == 0 else ("cached", "plain"):
            cfg, site, model, privacy = variants[name]
            t0 = time.perf_counter()
            privacy.local_update(
                learner=components.build_learner(config=cfg),
                model=model,
                site=site,
                rng=np.random.default_rng(rep),
                round_idx=rep + 1,
            )
            times[name].append(time.perf_counter() - t0)
    return {
        "records": int(variants["plain"][1].num_records),
        "featurise_s": round(featurise_s, 2),
        "plain_s": [round(t, 2) for t in times["plain"]],
        "cached_s": [round(t, 2) for t in times["cached"]],
        "speedup": round(float(np.median(times["plain"]) / np.median(times["cached"])), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (prints one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(time_rounds(config_path=args.config, overrides=args.overrides, reps=args.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
