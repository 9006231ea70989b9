"""Differential privacy for secfed: accountants, calibration, client-level and distributed DP, ledger.

Layering: this package imports nothing else of the project (not ``secfed``, not ``protocols``).
Pure mathematics lives in :mod:`privacy.analysis`; stateful objects (accountants, encoders, the
ledger) live in the modules below.
"""

# --- accounting, calibration, client-level and distributed DP, ledger ------------------------------
from privacy.accountants import (
    DistributedDPAccountant,
    DistributedEvent,
    GaussianAccountant,
    PLDAccountant,
    PRVAccountant,
    RDPAccountant,
    accountant_from_json,
    accountant_from_state,
    create_accountant,
)
from privacy.calibration import (
    calibrate_distributed_noise,
    calibrate_noise,
    distributed_epsilon_for,
    epsilon_for,
)
from privacy.client_dp import DPFedAvgAggregator, DPFedAvgConfig, clip_update, sample_clients
from privacy.distributed import (
    DistributedDPConfig,
    DistributedDPEncoder,
    calibrate_distributed_dp,
    plan_distributed_dp,
)

# --- record-level DP-SGD mechanics (privacy.dpsgd, privacy.episodic, privacy.sampling) -------------
from privacy.dpsgd import (
    PerSampleDPSGD,
    RecordCouplingModelError,
    SecurePoissonSampler,
    StepAccountant,
    UnsupportedModelError,
    check_record_independent_model,
    make_poisson_loader,
)
from privacy.episodic import (
    EpisodeGradients,
    EpisodicDPSGD,
    MaskedEpisode,
    clip_and_sum,
    gather_episodes,
    per_episode_gradients,
)
from privacy.errors import (
    AccountantStateError,
    BudgetExceededError,
    CalibrationError,
    EncodingError,
    InvalidInputError,
    InvalidPrivacyConfigError,
    LedgerCorruptedError,
    LedgerError,
    PrivacyError,
)
from privacy.ledger import (
    BudgetCheck,
    LedgerEntry,
    MechanismRecord,
    PlannedSteps,
    PrivacyBudget,
    PrivacyLedger,
    check_budget,
)
from privacy.per_sample_grads import FastGradSampler, unsupported_modules
from privacy.sampling import EpisodeIndices, RecordEpisodeSampler, StepAssignment

__all__ = [
    # accounting, calibration, client-level and distributed DP, ledger
    "AccountantStateError",
    "BudgetCheck",
    "BudgetExceededError",
    "CalibrationError",
    "DPFedAvgAggregator",
    "DPFedAvgConfig",
    "DistributedDPAccountant",
    "DistributedDPConfig",
    "DistributedDPEncoder",
    "DistributedEvent",
    "EncodingError",
    "GaussianAccountant",
    "InvalidInputError",
    "InvalidPrivacyConfigError",
    "LedgerCorruptedError",
    "LedgerEntry",
    "LedgerError",
    "MechanismRecord",
    "PLDAccountant",
    "PRVAccountant",
    "PlannedSteps",
    "PrivacyBudget",
    "PrivacyError",
    "PrivacyLedger",
    "RDPAccountant",
    "accountant_from_json",
    "accountant_from_state",
    "calibrate_distributed_dp",
    "calibrate_distributed_noise",
    "calibrate_noise",
    "unsupported_modules",
    "check_budget",
    "clip_update",
    "create_accountant",
    "distributed_epsilon_for",
    "epsilon_for",
    "plan_distributed_dp",
    "sample_clients",
    # record-level DP-SGD mechanics
    "FastGradSampler",
    "PerSampleDPSGD",
    "RecordCouplingModelError",
    "SecurePoissonSampler",
    "StepAccountant",
    "UnsupportedModelError",
    "check_record_independent_model",
    "make_poisson_loader",
    "EpisodeGradients",
    "EpisodicDPSGD",
    "MaskedEpisode",
    "clip_and_sum",
    "gather_episodes",
    "per_episode_gradients",
    "EpisodeIndices",
    "RecordEpisodeSampler",
    "StepAssignment",
]
