"""Pure privacy mathematics: RDP curves, amplification, conversions, numerical accountants, calibration.

Nothing here holds state; the stateful accountants live in :mod:`privacy.accountants`.
"""

from privacy.analysis.calibration import (
    GAUSSIAN_ACCOUNTANTS,
    bisect_noise,
    calibrate_distributed_noise,
    calibrate_gaussian_noise,
    distributed_epsilon,
    gaussian_epsilon,
)
from privacy.analysis.conversion import (
    DEFAULT_RDP_ORDERS,
    OPACUS_RDP_ORDERS,
    rdp_to_delta,
    rdp_to_epsilon,
    rdp_to_epsilon_classic,
)
from privacy.analysis.discrete import (
    DDG_MIN_LOCAL_STDDEV,
    ddg_rdp,
    ddg_tau,
    discrete_gaussian_variance,
    rounded_l1_norm_bound,
    rounded_l2_norm_bound,
    sampled_ddg_rdp,
    sampled_distributed_rdp,
    sampled_skellam_rdp,
    skellam_rdp,
)
from privacy.analysis.gaussian import composed_gaussian_rdp, gaussian_rdp, poisson_subsampled_gaussian_rdp
from privacy.analysis.numerical import pld_epsilon, prv_epsilon
from privacy.analysis.subsampling import poisson_subsampled_rdp, zhu_wang_bound

__all__ = [
    "DDG_MIN_LOCAL_STDDEV",
    "DEFAULT_RDP_ORDERS",
    "GAUSSIAN_ACCOUNTANTS",
    "OPACUS_RDP_ORDERS",
    "bisect_noise",
    "calibrate_distributed_noise",
    "calibrate_gaussian_noise",
    "composed_gaussian_rdp",
    "ddg_rdp",
    "ddg_tau",
    "discrete_gaussian_variance",
    "distributed_epsilon",
    "gaussian_epsilon",
    "gaussian_rdp",
    "pld_epsilon",
    "poisson_subsampled_gaussian_rdp",
    "poisson_subsampled_rdp",
    "prv_epsilon",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "rdp_to_epsilon_classic",
    "rounded_l1_norm_bound",
    "rounded_l2_norm_bound",
    "sampled_ddg_rdp",
    "sampled_distributed_rdp",
    "sampled_skellam_rdp",
    "skellam_rdp",
    "zhu_wang_bound",
]
