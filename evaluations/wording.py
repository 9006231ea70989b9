"""Plain-language wording shared by the HTML and Markdown reports (for readers who are not ML researchers)."""

from __future__ import annotations

import math

__all__ = [
    "GLOSSARY",
    "fmt_eps",
    "fmt_pct",
    "fmt_num",
    "unit_words",
    "adjacency_words",
    "epsilon_explanation",
    "strength_words",
    "trust_words",
    "baseline_words",
]

#: Term -> explanation, shown at the end of every report.
GLOSSARY: list[tuple[str, str]] = [
    (
        "Differential privacy (DP)",
        "A mathematical guarantee that the trained model and everything a site sends would look almost "
        "the same whether or not any one protected unit (a record, or a whole site) took part.",
    ),
    (
        "ε (epsilon)",
        "The privacy-loss budget. Any outcome can become at most e^ε times more (or less) likely because "
        "of one protected unit. Smaller is stronger; ∞ means no guarantee.",
    ),
    (
        "δ (delta)",
        "A small probability with which the ε guarantee is allowed to fail; it should be much smaller "
        "than one divided by the number of protected units.",
    ),
    (
        "Accountant",
        "The method that adds up the privacy loss of every training step into the final ε "
        "(RDP: Rényi differential privacy, Mironov 2017; PRV: privacy random variables, Gopi et al. 2021).",
    ),
    (
        "Privacy ledger",
        "An append-only, hash-chained file in the run folder recording the ε of every site after every "
        "round, written before that round's model is released. Editing or removing lines is detected.",
    ),
    (
        "Secure aggregation",
        "A cryptographic protocol with which the server learns only the sum of the sites' updates, "
        "not any single site's update (SecAgg: Bonawitz et al. 2017; SecAgg+: Bell et al. 2020).",
    ),
    (
        "Honest-but-curious",
        "A threat model where the server follows the protocol but tries to learn as much as it can from "
        "what it sees. An active (malicious) server may also deviate from the protocol.",
    ),
    (
        "Confidence interval (95 %)",
        "The range that would contain the true accuracy in 95 % of repetitions of the evaluation.",
    ),
    (
        "Membership inference",
        "An attack that guesses whether a given record was used in training. AUC 0.5 means guessing; "
        "the true-positive rate at a 0.1 % false-positive rate shows whether any record is exposed "
        "with confidence (Carlini et al. 2022).",
    ),
    (
        "Gradient inversion",
        "An attack that tries to reconstruct training images from a site's update (Zhu et al. 2019; "
        "Geiping et al. 2020). PSNR and SSIM measure how close the reconstruction is to the original.",
    ),
    (
        "Empirical ε lower bound",
        "A privacy audit result: with the stated confidence, the true ε is at least this large "
        "(Jagielski et al. 2020; Steinke et al. 2023). If it exceeds the accountant's ε, the guarantee "
        "is refuted.",
    ),
]


def fmt_eps(*, eps: float | None) -> str:
    """ε for display: two decimals, ``∞`` for infinity, ``not recorded`` for ``None``."""
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return "not recorded"
    if math.isinf(eps):
        return "∞"
    return f"{eps:.2f}"


def fmt_pct(*, value: float | None, ci: float | None = None) -> str:
    """A fraction in [0, 1] as a percentage with two decimals (and ``± ci``)."""
    if value is None or math.isnan(value):
        return "not measured"
    text = f"{100 * value:.2f} %"
    if ci is not None and not math.isnan(ci):
        text = f"{100 * value:.2f} ± {100 * ci:.2f} %"
    return text


def fmt_num(*, value: float | int | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (``—`` for ``None``)."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def unit_words(*, unit: str | None) -> str:
    """What one protected unit is, in plain words."""
    return {
        "record": "one individual record (for example one patient's image) held by a site",
        "example": "one individual record (for example one patient's image) held by a site",
        "client": "everything one site contributes (all of its records)",
        "site": "everything one site contributes (all of its records)",
        "user": "everything one site contributes (all of its records)",
    }.get((unit or "").lower(), f"one '{unit}'" if unit else "an unrecorded unit")


def adjacency_words(*, adjacency: str | None) -> str:
    """The neighbouring-dataset relation, in plain words."""
    a = (adjacency or "").strip()
    low = a.lower().replace("_", "-")
    for prefix in ("add/remove", "add-remove", "add-or-remove", "add or remove"):
        if low.startswith(prefix):
            rest = a[len(prefix) :].strip()
            return f"adding or removing {rest}" if rest else "adding or removing one protected unit"
    if low.startswith("zero-out") or low.startswith("zeroout"):
        return "replacing one protected unit's contribution by zeros (zero-out)"
    if low.startswith(("replace", "substitut")):
        return "replacing one protected unit by another"
    return f"the '{adjacency}' relation" if adjacency else "an unrecorded relation"


def strength_words(*, eps: float | None) -> str:
    """A rough plain-language reading of an ε value."""
    if eps is None:
        return "cannot be judged (ε not recorded)"
    if math.isinf(eps):
        return "no formal protection"
    if eps <= 1:
        return "strong protection"
    if eps <= 10:
        return "moderate protection (typical of deployed systems)"
    return "weak formal protection"


def epsilon_explanation(*, eps: float | None, delta: float | None, unit: str | None) -> str:
    """One paragraph explaining what the ε/δ pair means for this run."""
    factor = ""
    if eps is not None and math.isfinite(eps):
        factor = f" For this run e^ε = {math.exp(min(eps, 700)):.3g}."
    d = f"{delta:g}" if delta is not None else "an unrecorded δ"
    return (
        f"ε bounds how much the presence of {unit_words(unit=unit)} can change the probability of "
        "anything an observer sees (the released model, and the updates sent during training): by at "
        f"most a factor of e^ε, except with probability δ = {d}.{factor} Smaller ε means stronger "
        "protection: as a rough guide, ε ≤ 1 is strong, ε up to about 10 is common in deployed systems, "
        "and larger values give little formal protection."
    )


def trust_words(*, mode: str | None, protocol: str | None, trust_assumption: str | None) -> str:
    """Who must be trusted for a run's guarantee to hold, in one sentence.

    Args:
        mode: ``privacy.mode`` (``none``, ``record``, ``client``, ``distributed``).
        protocol: The secure-aggregation protocol's name, ``None`` or ``"plain"`` for none.
        trust_assumption: The run's own statement (``summary.json``; noise sharing writes one).

    Returns:
        The sentence (no final full stop).
    """
    secure = bool(protocol) and str(protocol).lower() not in ("plain", "none", "not recorded")
    hides = (
        f"; {protocol} hides each site's update from an honest-but-curious server (it sees only the sum)"
        if secure
        else "; without secure aggregation the server sees every site's update"
    )
    if mode in (None, "none", "unknown"):
        none = "none claimed: no differential privacy, so nothing bounds what the model or the updates reveal"
        return none + (hides if secure else "")
    if trust_assumption:
        return f"{trust_assumption}{hides}"
    if mode == "record":
        own = "each site adds its own full noise: no trust in the server or the other sites is needed"
        return own + hides
    if mode == "client":
        return (
            "trusted aggregator: the server clips and noises the sum of the sites' updates, so the "
            "guarantee holds only against readers of the released models, not against the server"
        )
    if mode == "distributed":
        return (
            "the sites add noise shares that only sum to the full noise under secure aggregation: "
            "the guarantee assumes the protocol's threshold of honest sites" + hides
        )
    return f"privacy mode {mode}" + hides


def baseline_words(
    *,
    accuracy: float | None,
    ci: float | None,
    base: float | None,
    base_ci: float | None,
    pretrained: bool = False,
) -> tuple[str, bool | None]:
    """The final accuracy against the untrained model on the same test tasks.

    Args:
        accuracy: Final test accuracy in [0, 1].
        ci: Its 95 % half-width.
        base: The untrained model's accuracy on the same tasks (``None``: not recorded).
        base_ci: Its 95 % half-width.
        pretrained: The starting model was pretrained on declared-public data (``model.pretrain_steps``):
            it is named as such, since it is not a random network.

    Returns:
        ``(sentence, beat)``: ``beat`` is True when the 95 % intervals do not overlap and training
        is better, False when training did not beat the untrained model, None when unknown.
    """
    if accuracy is None:
        return "no final evaluation recorded", None
    if base is None:
        return (
            f"{fmt_pct(value=accuracy, ci=ci)}; the untrained model was not scored on the same tasks "
            "(experiment.untrained_baseline), so whether training helped is not shown",
            None,
        )
    half, base_half = (c if c is not None and math.isfinite(c) else 0.0 for c in (ci, base_ci))
    beat = accuracy - half > base + base_half
    text = (
        f"{fmt_pct(value=accuracy, ci=ci)} against {fmt_pct(value=base, ci=base_ci)} for the untrained "
        f"model{' (pretrained on public data only, before any private training)' if pretrained else ''} "
        f"on the same test tasks ({100 * (accuracy - base):+.1f} points)"
    )
    if not beat:
        text += ": training did not beat the untrained model"
    return text, beat
