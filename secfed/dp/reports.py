"""A site's public privacy report for one round, as the server reads it: a typed value.

Every site that trained under DP sends ``meta["privacy"]`` with its train reply (built by
:mod:`secfed.dp.site`): what its mechanism was (``mode``, ``unit``, ``adjacency``, ``mechanism``)
and what it cost (noise multiplier z, sample rate q, DP steps, whether the site's own budget is
spent). The message crosses a trust boundary, so :func:`parse_site_report` checks every field
against the run's mode and returns a :class:`SiteReport` (in the spirit of dp_accounting's
``DpEvent``: the event a ledger line is computed from), and the accounting downstream never reads
the raw mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from privacy.adjacency import Adjacency
from privacy.errors import PrivacyError
from secfed.errors import MessageError

__all__ = ["CLIENT_CLIP", "RECORD_MECHANISMS", "REPORT_KEYS", "SiteReport", "parse_site_report"]

#: Site mechanisms of :mod:`secfed.dp.site` in record mode: episodic or per-sample Gaussian.
RECORD_MECHANISMS = ("episodic-gaussian", "per-sample-gaussian")
#: The site mechanism in client and distributed mode: the whole update clipped to C.
CLIENT_CLIP = "client-clip"
#: The keys every report carries.
REPORT_KEYS = ("mode", "unit", "adjacency", "mechanism", "noise_multiplier", "sample_rate", "steps")


@dataclass(frozen=True)
class SiteReport:
    """One site's DP cost in one round, checked against the run's mode.

    Attributes:
        mechanism: One of :data:`RECORD_MECHANISMS` (record mode) or :data:`CLIENT_CLIP`.
        adjacency: The site's adjacency relation (record mode: add/remove one record; otherwise
            add/remove one client's dataset).
        noise_multiplier: z of the site's steps (>= 0).
        sample_rate: q of the site's steps, in [0, 1].
        steps: DP steps taken this round (>= 0).
        budget_exhausted: The site's own ledger says its budget is spent.
    """

    mechanism: str
    adjacency: Adjacency
    noise_multiplier: float
    sample_rate: float
    steps: int
    budget_exhausted: bool = False


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def parse_site_report(*, sid: int, report: Any, mode: str) -> SiteReport:
    """Check a site's public round report (``meta["privacy"]``) and return it typed.

    Args:
        sid: The reporting site (for messages only).
        report: The report as received.
        mode: The run's ``privacy.mode`` (``record``, ``client`` or ``distributed``).

    Returns:
        The report.

    Raises:
        MessageError: The report is missing, lacks a key, is for another mode, unit, mechanism or
            adjacency, or carries a number outside its range.
    """
    where = f"site {sid}: privacy report"
    if not isinstance(report, Mapping):
        raise MessageError(f"{where} is missing or not an object (got {type(report).__name__})")
    missing = [k for k in REPORT_KEYS if k not in report]
    if missing:
        raise MessageError(f"{where} lacks {missing}")
    if report["mode"] != mode:
        raise MessageError(f"{where} is for privacy.mode {report['mode']!r}, the server runs {mode!r}")
    expected_unit, mechanisms = (
        ("record", RECORD_MECHANISMS) if mode == "record" else ("client", (CLIENT_CLIP,))
    )
    if report["unit"] != expected_unit or report["mechanism"] not in mechanisms:
        raise MessageError(
            f"{where}: unit {report['unit']!r} / mechanism {report['mechanism']!r} do not fit mode {mode!r} "
            f"(expected unit {expected_unit!r}, mechanism in {list(mechanisms)})"
        )
    z = _number(report["noise_multiplier"], f"{where}: noise_multiplier")
    q = _number(report["sample_rate"], f"{where}: sample_rate")
    steps = report["steps"]
    if z < 0 or not 0 <= q <= 1:
        raise MessageError(f"{where}: noise_multiplier {z} must be >= 0 and sample_rate {q} in [0, 1]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise MessageError(f"{where}: steps must be an integer >= 0, got {steps!r}")
    try:
        adjacency = Adjacency.parse(report["adjacency"])
    except PrivacyError as exc:
        raise MessageError(f"{where}: {exc}") from exc
    if adjacency is not (Adjacency.RECORD if mode == "record" else Adjacency.CLIENT):
        raise MessageError(f"{where}: adjacency {adjacency.value!r} does not fit mode {mode!r}")
    exhausted = report.get("budget_exhausted", False)
    if not isinstance(exhausted, bool):
        raise MessageError(f"{where}: budget_exhausted must be a boolean, got {exhausted!r}")
    return SiteReport(
        mechanism=str(report["mechanism"]),
        adjacency=adjacency,
        noise_multiplier=z,
        sample_rate=q,
        steps=int(steps),
        budget_exhausted=exhausted,
    )
