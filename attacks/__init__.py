"""Privacy attacks and audits against secfed: gradient inversion, membership inference, epsilon lower bounds.

Every attack takes only what its threat model grants (e.g. :class:`InversionInputs` for an
honest-but-curious server); ground truth enters only the scoring functions
(:func:`score_inversion`, :func:`mia_metrics`). The attack library works on plain torch modules,
tensors and numpy arrays; only the ``secfed_*`` modules and ``replicas`` (attacks against a finished
secfed run) use the runtime, and every error derives from :class:`secfed.errors.SecfedError`
(``attacks.errors``), so the CLI reports attack errors as it reports the runtime's.
"""

from attacks.audit import (
    EpsilonLowerBound,
    clopper_pearson_epsilon,
    clopper_pearson_upper,
    epsilon_lower_bound_from_scores,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)
from attacks.audit_harness import AuditReport, GaussianMechanismAudit, gaussian_epsilon, gaussian_epsilon_pld
from attacks.errors import AttackConfigError, AttackError, AttackInputError, ThreatModelError
from attacks.functional import (
    LossFn,
    classification_loss,
    protonet_episode_labels,
    protonet_episode_loss,
    soft_cross_entropy,
)
from attacks.inversion import (
    GroundTruth,
    InversionConfig,
    InversionInputs,
    InversionResult,
    InversionScore,
    run_inversion,
    save_inversion_grid,
    score_inversion,
)
from attacks.label_recovery import batch_labels_from_last_layer, idlg_label, label_counts_by_simulation
from attacks.mia import (
    ReferenceStats,
    collect_reference_stats,
    confidence_attack,
    cross_entropy_loss,
    lira,
    logit_scaled_confidence,
    loss_attack,
    rmia,
    true_class_probability,
)
from attacks.mia_metrics import MIAMetrics, mia_metrics, roc_curve, save_mia_roc, tpr_at_fpr
from attacks.observation import (
    AggregateObservation,
    GradientObservation,
    MAMLObservation,
    MultiStepObservation,
    ObservationModel,
    sequential_batches,
)

__all__ = [
    "AggregateObservation",
    "AttackConfigError",
    "AttackError",
    "AttackInputError",
    "AuditReport",
    "EpsilonLowerBound",
    "GaussianMechanismAudit",
    "GradientObservation",
    "GroundTruth",
    "InversionConfig",
    "InversionInputs",
    "InversionResult",
    "InversionScore",
    "LossFn",
    "MAMLObservation",
    "MIAMetrics",
    "MultiStepObservation",
    "ObservationModel",
    "ReferenceStats",
    "ThreatModelError",
    "batch_labels_from_last_layer",
    "classification_loss",
    "clopper_pearson_epsilon",
    "clopper_pearson_upper",
    "collect_reference_stats",
    "confidence_attack",
    "cross_entropy_loss",
    "epsilon_lower_bound_from_scores",
    "gaussian_epsilon",
    "gaussian_epsilon_pld",
    "idlg_label",
    "label_counts_by_simulation",
    "lira",
    "logit_scaled_confidence",
    "loss_attack",
    "mia_metrics",
    "one_run_audit",
    "one_run_epsilon",
    "one_run_p_value",
    "protonet_episode_labels",
    "protonet_episode_loss",
    "rmia",
    "roc_curve",
    "run_inversion",
    "save_inversion_grid",
    "save_mia_roc",
    "score_inversion",
    "sequential_batches",
    "soft_cross_entropy",
    "tpr_at_fpr",
    "true_class_probability",
]
