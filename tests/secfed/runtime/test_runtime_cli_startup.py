"""``secfed --help`` is fast: the command line and ``import secfed`` load no torch.

Old code: ``import secfed`` imported the experiment (torch, scikit-learn) and ``secfed privacy``
imported the privacy package, so ``secfed --help`` took 6-9 s; now about 0.4 s. Checked by what
gets imported (not by timing, which depends on the machine).
"""

from __future__ import annotations

import subprocess
import sys

from runtime_cfg import REPO

HEAVY = ("torch", "numpy", "sklearn", "matplotlib", "scipy", "privacy.calibration", "attacks")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from secfed.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy or m in heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_public_api_still_imports_from_the_package() -> None:
    import secfed
    from secfed import Experiment, ExperimentConfig, RunResult, load_config

    assert Experiment.__module__ == "secfed.experiment" and RunResult.__module__ == "secfed.experiment"
    assert ExperimentConfig.__module__ == "secfed.config" and load_config.__module__ == "secfed.config"
    assert secfed.__version__
