"""Evaluations: audit reports, privacy–utility sweeps and benchmarks.

* :mod:`evaluations.report` — :func:`~evaluations.report.write_report` writes ``report.html``
  (self-contained), ``report.md`` and ``report.json`` for a run or a sweep directory.
* :mod:`evaluations.sweep` — :func:`~evaluations.sweep.run_sweep` trains one configuration at
  several target ε (and learners / aggregations) and runs the attacks on every point.
* :mod:`evaluations.cli` — the ``secfed sweep`` and ``secfed report`` commands.
* :mod:`evaluations.bench` — ``python -m evaluations.bench`` (``make bench``) runs every benchmark.

Reading: :mod:`~evaluations.rundata` (run directories and the privacy ledger),
:mod:`~evaluations.attack_results` (attack result files); content: :mod:`~evaluations.facts`
(the report's facts; each section built by a ``facts_*`` module), :mod:`~evaluations.wording`
(plain-language text); layout: :mod:`~evaluations.plots`, :mod:`~evaluations.render_html`,
:mod:`~evaluations.render_md`.
"""
