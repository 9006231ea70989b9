"""The CLI and the configuration accept the same accountants, and a PLD run accounts with PLD.

Old code: ``secfed privacy epsilon --accountant pld`` existed while ``privacy.accountant = "pld"``
was refused by the configuration (and the sites mapped anything but "prv" to RDP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runtime_cfg import REPO, tiny_config_dict

from privacy.accountants import PLDAccountant, RDPAccountant
from privacy.ledger import PrivacyLedger
from secfed.cli import build_parser, main
from secfed.config import CHOICES, config_from_dict
from secfed.experiment import Experiment

Z, Q, STEPS, DELTA = 1.1, 0.2, 2, 1e-5


def _choices(argv: list[str], option: str) -> tuple[str, ...]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["privacy"]  # type: ignore[union-attr]
    cmd = sub._subparsers._group_actions[0].choices[argv[0]]  # type: ignore[union-attr]
    (action,) = [a for a in cmd._actions if option in a.option_strings]
    return tuple(action.choices)


def test_cli_and_config_accept_the_same_accountants() -> None:
    config = CHOICES["privacy.accountant"]
    assert "pld" in config
    assert set(_choices(["epsilon"], "--accountant")) == set(config)
    assert set(_choices(["calibrate"], "--accountant")) == set(config)


def test_a_pld_run_accounts_with_pld(tmp_path: Path) -> None:
    d = tiny_config_dict(
        experiment={"rounds": 2, "eval_every": 0, "final_eval_episodes": 5},
        learner={"local_steps": STEPS},
        privacy={
            "mode": "record",
            "noise_multiplier": Z,
            "sample_rate": Q,
            "expected_batch": 4,
            "episodes_per_step": 2,
            "accountant": "pld",
        },
    )
    result = Experiment(config=config_from_dict(d, base_dir=REPO)).run(out_dir=tmp_path / "r", progress=False)
    assert result.summary["accountant"] == "pld"
    site = PrivacyLedger.read(path=tmp_path / "r" / "site_state" / "site-0" / "ledger.jsonl")
    sites, _ = site.rebuild_accountants()
    assert isinstance(sites["0"], PLDAccountant)  # old code: RDP for anything but "prv"
    server_header = json.loads((tmp_path / "r" / "privacy_ledger.jsonl").read_text().splitlines()[0])
    assert server_header["accountant"] == "pld"
    # the same steps composed by RDP give a larger (looser) epsilon than PLD
    rdp = RDPAccountant()
    for z, q, n in sites["0"].history:
        rdp.step(noise_multiplier=z, sample_rate=q, num_steps=n)
    assert 0 < sites["0"].get_epsilon(delta=DELTA) < rdp.get_epsilon(delta=DELTA)


def test_every_config_accountant_is_a_calibration_accountant() -> None:
    from privacy.calibration import GAUSSIAN_ACCOUNTANTS

    assert set(CHOICES["privacy.accountant"]) == set(GAUSSIAN_ACCOUNTANTS)


def test_epsilon_of_a_config_without_dp_says_no_dp(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(REPO / "examples" / "digits_protonet.toml")
    assert main(["privacy", "epsilon", "--config", example]) == 0
    out = capsys.readouterr().out
    assert "no DP configured" in out
    assert "epsilon = 0" not in out and "DP-SGD" not in out  # old code: record and client epsilon
    assert main(["privacy", "epsilon", "--config", example, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "none" and doc["epsilon"] is None and doc["record_epsilon"] is None
