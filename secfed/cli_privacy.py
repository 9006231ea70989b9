"""``secfed privacy``: ε of a planned run, and the noise multiplier for a target ε.

Commands::

    secfed privacy epsilon --noise-multiplier Z --sample-rate Q --steps T --delta D [--accountant rdp|prv|pld]
    secfed privacy epsilon --config CONFIG.toml [--set section.key=value ...] [--delta D] [--accountant ...]
    secfed privacy calibrate --target-epsilon E --delta D --sample-rate Q --steps T [--accountant ...]

All of them account the Poisson-subsampled Gaussian mechanism (Abadi et al. 2016; Mironov, Talwar &
Zhang 2019) with :mod:`privacy.calibration`; ``--sample-rate`` below 1 claims amplification by
sampling, which holds only for a sample the adversary does not see (a site's own secret record
sampling in DP-SGD). ``--config`` reports the planned record-level ε (the DP-SGD steps of the site
sampled in the most rounds, at ``privacy.sample_rate``, class-aware where the public plans allow;
with ``privacy.noise_sharing`` the counted noise and the trust assumption, see
:mod:`secfed.dp.sharing`) and client-level ε of a configuration, with
its noise multiplier calibrated first when ``privacy.target_epsilon`` is set; in ``distributed``
mode also the distributed mechanism's ε. The client sample is public (drawn from
``experiment.seed``, logged, seen by the server), so the client-level ε is accounted per
participation with no amplification: the composition over the rounds of the site sampled most
often (:func:`secfed.dp.planning.planned_epsilon`). A configuration without DP
(``privacy.mode = none``) is reported as such ("no DP configured"), with no ε. ``--json``
prints one JSON object instead of text. Invalid input exits with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from secfed.cli_types import int_at_least
from secfed.config import CHOICES
from secfed.errors import ConfigError

__all__ = ["register"]


# --------------------------------------------------------------------------------------------------
# Argument types (argparse turns ArgumentTypeError into "error: argument --x: ..." and exit 2)
# --------------------------------------------------------------------------------------------------
def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _pos_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a sampling probability in (0, 1], got {text}")
    return value


def _delta(text: str) -> float:
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


_steps = int_at_least(minimum=0)
_pos_steps = int_at_least(minimum=1)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------
def _emit(payload: dict[str, Any], *, as_json: bool, text: str) -> None:
    print(json.dumps(payload, sort_keys=True) if as_json else text)


def _flag_epsilon(args: argparse.Namespace, *, noise_multiplier: float, accountant: str) -> float:
    """Epsilon of ``noise_multiplier`` at the flags' sample rate, steps and delta (may raise PrivacyError)."""
    from privacy.calibration import epsilon_for

    return epsilon_for(
        noise_multiplier=noise_multiplier,
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=args.delta,
        accountant=accountant,
    )


def _emit_flag_result(
    args: argparse.Namespace, *, accountant: str, values: dict[str, float], head: str, noise: str
) -> int:
    """Print a flag-given result: ``values`` and the flags' setting (JSON), or ``head`` and the setting."""
    payload = {
        **values,
        "sample_rate": args.sample_rate,
        "steps": args.steps,
        "delta": args.delta,
        "accountant": accountant,
    }
    text = f"{head} ({accountant} accountant; {noise}sample rate {args.sample_rate:g}, {args.steps} steps)"
    _emit(payload, as_json=args.json, text=text)
    return 0


def _setting_flags(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """The setting's flags with their values (``--config`` reads these from the file instead)."""
    return (
        ("--noise-multiplier", args.noise_multiplier),
        ("--sample-rate", args.sample_rate),
        ("--steps", args.steps),
    )


def _epsilon_from_config(args: argparse.Namespace) -> int:
    from secfed.config import load_config
    from secfed.dp.calibration import calibrated_config
    from secfed.dp.planning import planned_epsilon

    given = [flag for flag, value in _setting_flags(args) if value is not None]
    if given:
        raise ConfigError(
            f"--config reads the noise multiplier, sample rates and steps from the file; drop {given}"
        )
    overrides = list(args.set or [])
    if args.delta is not None:
        overrides.append(f"privacy.delta={args.delta!r}")
    cfg = load_config(args.config, overrides=overrides)
    if cfg.privacy.mode == "none":
        # nothing to account: no epsilon at record or client level (not the epsilon of an
        # imaginary DP run with the section's default noise multiplier)
        payload: dict[str, Any] = {"mode": "none", "epsilon": None, "record_epsilon": None}
        payload["client_epsilon"] = None
        text = (
            f"{args.config}: no DP configured (privacy.mode = none): the run has no differential-"
            "privacy guarantee at record or client level (epsilon = infinity). Set privacy.mode to "
            "record, client or distributed to plan one."
        )
        _emit(payload, as_json=args.json, text=text)
        return 0
    calibrated = cfg.privacy.target_epsilon > 0 and cfg.privacy.mode != "none"
    if calibrated:
        cfg = calibrated_config(config=cfg)
    out = planned_epsilon(config=cfg, accountant=args.accountant)
    out["calibrated_for_target_epsilon"] = cfg.privacy.target_epsilon if calibrated else None
    z_note = f"calibrated for target epsilon {cfg.privacy.target_epsilon:g}" if calibrated else "configured"
    head = f"planned run of {args.config} (privacy.mode = {out['mode']}; "
    head += f"noise multiplier {out['noise_multiplier']:.6g} {z_note}; "
    head += f"delta = {out['delta']:g}; {out['accountant']} accountant):"
    record = f"  record level (DP-SGD, q = {out['record_sample_rate']:g}, {out['record_steps']} steps "
    record += f"class-aware of {out['record_steps_all']} for the site sampled most often, in "
    record += f"{out['record_rounds']} of {out['rounds']} rounds): epsilon = {out['record_epsilon']:.4f}"
    if "noise_sharing" in out:
        ns = out["noise_sharing"]
        record += (
            f"\n  noise shared across sites (counted z = {out['record_noise_multiplier']:.6g} at "
            f"{out['record_planning_survivors']} of {ns['sites_per_round']} survivors, "
            f"{ns['colluding_sites']} colluding; a site's own worst-case ledger at t = "
            f"{ns['threshold_floor']} survivors: epsilon = {out['record_epsilon_site_ledger']:.4f})"
            f"\n  trust assumption: {ns['trust_assumption']}"
        )
    client = "  client level (DP-FedAvg per participation: the site sampled most often takes part in "
    client += f"{out['client_rounds']} of {out['rounds']} rounds; the sample (q_client = "
    client += f"{out['client_sample_rate']:g}) is public, so no sampling amplification): "
    client += f"epsilon = {out['client_epsilon']:.4f}"
    lines = [head, record, client]
    if "distributed_epsilon" in out:
        lines.append(
            f"  client level, distributed {cfg.privacy.mechanism} per participation with the expected "
            f"participants surviving: epsilon = {out['distributed_epsilon']:.4f}"
        )
    _emit(out, as_json=args.json, text="\n".join(lines))
    return 0


def _cmd_epsilon(args: argparse.Namespace) -> int:
    if args.config:
        return _epsilon_from_config(args)
    if args.set:
        raise ConfigError("--set needs --config")
    missing = [flag for flag, value in (*_setting_flags(args), ("--delta", args.delta)) if value is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give --config FILE)")
    from privacy.errors import PrivacyError

    accountant = args.accountant or "rdp"
    try:
        eps = _flag_epsilon(args, noise_multiplier=args.noise_multiplier, accountant=accountant)
    except PrivacyError as exc:
        raise ConfigError(str(exc)) from exc
    return _emit_flag_result(
        args,
        accountant=accountant,
        values={"epsilon": eps, "noise_multiplier": args.noise_multiplier},
        head=f"epsilon = {eps:.4f} at delta = {args.delta:g}",
        noise=f"noise multiplier {args.noise_multiplier:g}, ",
    )


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from privacy.calibration import calibrate_noise
    from privacy.errors import PrivacyError

    try:
        sigma = calibrate_noise(
            target_epsilon=args.target_epsilon,
            delta=args.delta,
            sample_rate=args.sample_rate,
            steps=args.steps,
            accountant=args.accountant,
        )
        eps = _flag_epsilon(args, noise_multiplier=sigma, accountant=args.accountant)
    except PrivacyError as exc:
        raise ConfigError(f"cannot calibrate: {exc}") from exc
    return _emit_flag_result(
        args,
        accountant=args.accountant,
        values={"noise_multiplier": sigma, "epsilon": eps, "target_epsilon": args.target_epsilon},
        head=f"noise multiplier = {sigma:.6g} gives epsilon = {eps:.4f} <= {args.target_epsilon:g} "
        f"at delta = {args.delta:g}",
        noise="",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``secfed privacy epsilon`` and ``secfed privacy calibrate`` to the ``secfed`` parser.

    Args:
        subparsers: The ``secfed`` command's subparsers (see :func:`secfed.cli.build_parser`).
    """
    priv = subparsers.add_parser(
        "privacy",
        help="privacy accounting: epsilon of a planned run, noise calibration",
        description="Differential-privacy accounting for planned runs (Poisson-subsampled Gaussian).",
    )
    sub = priv.add_subparsers(dest="privacy_command", metavar="SUBCOMMAND")

    def _help(_: argparse.Namespace) -> int:
        priv.print_help()
        return 2

    priv.set_defaults(func=_help)
    # the configuration's privacy.accountant choices (every one of them is a privacy.calibration
    # Gaussian accountant; tests check that the two agree), without importing privacy (torch) here
    accountants = list(CHOICES["privacy.accountant"])

    eps = sub.add_parser(
        "epsilon",
        help="epsilon of a planned run",
        description="Epsilon after T Poisson-subsampled Gaussian steps, or of a configuration's planned run.",
    )
    eps.add_argument("--noise-multiplier", type=_nonneg_float, metavar="Z", help="noise std / sensitivity")
    eps.add_argument(
        "--sample-rate",
        type=_rate,
        metavar="Q",
        help="Poisson sampling probability per step (amplifies only a secret sample; use 1 for a public one)",
    )
    eps.add_argument("--steps", type=_steps, metavar="T", help="number of steps (or rounds)")
    eps.add_argument("--delta", type=_delta, metavar="D", help="target delta (with --config: overrides it)")
    eps.add_argument("--accountant", choices=accountants, help="rdp (default), prv or pld")
    eps.add_argument("--config", metavar="FILE", help="read z, q, steps and delta from an experiment config")
    eps.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="config override (repeatable)"
    )
    eps.add_argument("--json", action="store_true", help="print one JSON object")
    eps.set_defaults(func=_cmd_epsilon)

    cal = sub.add_parser(
        "calibrate",
        help="noise multiplier for a target epsilon",
        description="Smallest noise multiplier whose epsilon after T steps is at most the target.",
    )
    cal.add_argument("--target-epsilon", type=_pos_float, required=True, metavar="E")
    cal.add_argument("--delta", type=_delta, required=True, metavar="D")
    cal.add_argument("--sample-rate", type=_rate, required=True, metavar="Q")
    cal.add_argument("--steps", type=_pos_steps, required=True, metavar="T")
    cal.add_argument("--accountant", choices=accountants, default="rdp", help="rdp (default), prv or pld")
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    cal.set_defaults(func=_cmd_calibrate)
