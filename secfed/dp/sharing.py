"""Record-level DP with the noise split across sites under secure aggregation (noise sharing).

With secure aggregation the server sees only the sum of the sites' updates, so for record-level DP
each site can add a *share* of the noise instead of all of it (Truex et al. 2019, "A hybrid approach
to privacy-preserving federated learning", AISec; Lowy & Razaviyayn 2023, "Private federated
learning without a trusted server", for the rates). Configuration: ``privacy.mode = "record"``,
``privacy.noise_sharing = true``, ``privacy.colluding_sites = c`` (default 0),
``federation.aggregation`` ``secagg`` or ``secagg+``.

The mechanism
-------------
Let ``S`` be the sensitivity of one DP step's clipped sum under add/remove of one record (``2C``
per episode for ProtoNet/MAML/FOMAML, ``C`` per record for FedAvg;
:mod:`privacy.episodic`), ``σ = z·S`` the noise std record mode would add at one site,
``m`` the public number of sites a round can hold (:func:`secfed.config.max_sites_per_round`) and
``c`` the number of sites whose noise the server may know. Each round is **one** DP step
(``learner.local_steps = 1``, plain SGD), so a site's update is the affine function
``Δ_i = −(η/E)·g_i`` of its clipped sum ``g_i`` (``η`` = ``learner.local_lr``, ``E`` the public
normaliser, :func:`secfed.dp.engines.step_normaliser`). The site's DP engine (the same engines as
record mode, :mod:`secfed.dp.engines`) computes ``Δ_i`` with clipping and Poisson sampling and no
noise; the site's SecAgg encoder (:class:`SharedNoiseEncoder`) then

1. projects ``Δ_i`` onto the public L2 ball of radius ``R`` (non-expansive, so it cannot raise the
   sensitivity; ``R = η·C`` bounds every episodic step exactly, ``R = 4·η·C`` bounds per-record
   steps whose batch is up to 4× the public expected batch);
2. snaps it to the lattice ``γℤ^d`` with ``γ = lattice_spacing(σ_Δ, d)`` (a power of two,
   :func:`privacy.noise.lattice_spacing`), ``σ_Δ = (η/E)·σ/√(m − c)`` the share's std in update
   units;
3. adds its share of integer noise ``N_ℤ(0, (σ_Δ/γ)²)`` per coordinate, drawn from the site's
   AES-256-CTR noise source (:func:`privacy.noise.sample_discrete_gaussian`,
   :func:`privacy.noise.noise_source`; Canonne, Kamath & Steinke 2020);
4. reduces mod ``2^bits``.

SecAgg sums the integers exactly, and the server multiplies the centred sum by ``γ``. The server
therefore sees a function of ``Σ_i (n_i + k_i)`` only: the sum of the survivors' lattice points
plus the sum of their integer noise shares. The released sum of ``s`` survivors thus carries noise
of std ``σ_Δ·√s``; the shares of the ``c`` sites assumed to collude with the server are known to it
and do not count, leaving ``σ_Δ·√(s − c)``. Removing one record of site ``j`` moves
``Σ_i n_i`` by at most ``‖Δ_j − Δ'_j‖/γ + √d ≤ (η/E)·S/γ + √d`` (rounding moves each coordinate by
at most 1/2 on each side), and ``γ√d ≤ σ_Δ·2^-20``; the sum of discrete Gaussians of scale
``σ_Δ/γ ≥ 2^20`` is within a negligible distance of a discrete Gaussian (Kairouz, Liu & Steinke
2021, the ``τ`` term, here ``exp(−2^40)``), whose Rényi divergence is the continuous Gaussian's
(Canonne et al. 2020). For a record of site ``j``, the other sites' sampling, data and noise are
independent of it; so each round is the Poisson-subsampled Gaussian mechanism with

    z_eff(s) = σ·√((s − c)/(m − c)) / S = z·√((s − c)/(m − c)),

composed class-aware over the site's steps exactly as record mode does (:mod:`secfed.dp.engines`).
The relative loss from the lattice is below ``z_share·2^-20``, as in :mod:`privacy.noise`, and is
not charged. With ``s = m`` survivors and ``c = 0`` the aggregate carries the noise one site adds
in record mode (``z_eff = z``), i.e. ``√m`` less noise than every site adding full noise and ``m``×
less (in the mean update) than one site alone.

Why not add Gaussian noise in the engine and let SecAgg quantise? The default SecAgg quantiser clips
and stochastically rounds every site's *own* noisy update: the released sum is then a sum of
per-site nonlinear functions, not a function of the noisy sum, and each site's own share carries
only ``σ/√(m − c)`` — so the guarantee would not follow from the sum's noise. Exact integer
arithmetic on a common lattice makes the release a function of the sum.

Floating point: ``Δ_i`` itself is computed in float32 by the learner's SGD step (as is the clipped
sum in every DP-SGD implementation); the rounding of ``θ − η·g/E`` can move ``Δ_i`` by up to
``2^-24·|θ|`` per coordinate beyond the sensitivity bound. This is not charged (nor in the other
modes' clipped sums).

Dropouts, the threshold and collusion
-------------------------------------
An honest site refuses to unmask a sum of fewer than ``t`` survivors (SecAgg's Shamir threshold,
checked client-side: :mod:`protocols.client`), and a round of ``n ≤ m`` participants uses the
threshold ``t(n)`` both sides derive from the configuration. :func:`threshold_floor` is the smallest
``t(n)`` over every ``n ≤ m`` that resolves; the configuration is refused unless
``t_floor > c`` (:func:`check_noise_sharing_config`), so **every decodable sum holds at least one
counted share** and a round with ``s ≤ c`` cannot be released (decided: refuse, never release
without counted noise). The server's ledger (authoritative) is told ``z_eff(s)`` for the round's
actual survivors, so ε rises with dropouts; a round whose sum was not decoded is charged at the
worst case. The site cannot know ``s`` before its update leaves, so its own write-ahead ledger and
its budget use the fewest survivors that can still produce a sum, ``z_min = z_eff(t_floor)``: the
site ledger is never below the server's. The trust assumption — "the noise of up to ``c`` sites is
known to the server; their shares are not counted" — is written in every ledger line
(:func:`ledger_params`), in ``summary.json`` and in the report.

Planning (:func:`planning_survivors`): with fixed-size sampling and no simulated dropouts or
stragglers every round has ``s = m`` survivors, and the planner uses ``z_eff(m)``; otherwise it
plans with the worst case ``t_floor`` survivors, never under-reporting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from privacy.noise import NoiseSource, lattice_spacing, noise_source, sample_discrete_gaussian
from secfed.config import check_noise_sharing_config
from secfed.dp.params import DPParams, NoiseSharingParams
from secfed.errors import ConfigError
from secfed.learners import sharing_learner_names

__all__ = [
    "SHARING_LEARNERS",
    "SharedNoiseEncoder",
    "check_noise_sharing_config",
    "effective_noise_multiplier",
    "ledger_params",
    "make_noise_sharing_encoder_factory",
    "noise_sharing_enabled",
    "planning_survivors",
    "share_stddev",
    "site_noise_multiplier",
    "threshold_floor",
    "trust_assumption",
    "update_radius",
]

#: Learners noise sharing supports (each declares ``noise_sharing``; :mod:`secfed.learners`).
SHARING_LEARNERS = sharing_learner_names()

#: Noise tail (in standard deviations of the summed noise) the modulus leaves room for.
_TAIL_STDS = 20.0
_MAX_BITS = 62


def noise_sharing_enabled(*, params: DPParams) -> bool:
    """Whether the run splits record-level noise across sites (``privacy.noise_sharing``).

    Args:
        params: The run's privacy parameters.

    Returns:
        ``True`` in record mode with noise sharing.
    """
    return params.noise_sharing is not None


def _sharing(params: DPParams) -> NoiseSharingParams:
    if params.noise_sharing is None:
        raise ConfigError("privacy.noise_sharing is off: no noise-sharing parameters")
    return params.noise_sharing


def threshold_floor(*, params: DPParams) -> int:
    """``t_floor``: the fewest survivors whose SecAgg sum can be decoded in any round.

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        ``t_floor`` (:func:`secfed.config.threshold_floor`, resolved once in
        :func:`secfed.dp.params.dp_params`).

    Raises:
        ConfigError: If noise sharing is off.
    """
    return _sharing(params).threshold_floor


def effective_noise_multiplier(*, params: DPParams, survivors: int) -> float:
    """``z_eff = z·√((s − c)/(m − c))``: the counted noise of a sum of ``s`` survivors over ``S``.

    Args:
        params: The run's privacy parameters (noise sharing on).
        survivors: ``s``, the sites whose shares are in the decoded sum.

    Returns:
        The noise multiplier the accountant is told for every record of every site in the sum.

    Raises:
        ConfigError: If ``s <= c`` (no counted noise: such a sum must not be released), ``s`` is
            not an integer in ``[1, m]``, or noise sharing is off.
    """
    ns = _sharing(params)
    m, c = ns.sites_per_round, ns.colluding_sites
    if isinstance(survivors, bool) or not isinstance(survivors, (int, np.integer)) or not 1 <= survivors <= m:
        raise ConfigError(f"survivors must be an integer in [1, {m}], got {survivors!r}")
    if survivors <= c:
        raise ConfigError(
            f"a sum of {survivors} survivors holds no counted noise with colluding_sites = {c}: "
            "not releasable"
        )
    return float(params.noise_multiplier) * math.sqrt((int(survivors) - c) / (m - c))


def site_noise_multiplier(*, params: DPParams) -> float:
    """What a site's own ledger and budget account: ``z_min = z_eff(t_floor)`` (worst case).

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        ``z·√((t_floor − c)/(m − c))``.

    Raises:
        ConfigError: If noise sharing is off.
    """
    return effective_noise_multiplier(params=params, survivors=threshold_floor(params=params))


def planning_survivors(*, params: DPParams) -> int:
    """Survivors the planner and the calibration assume: ``m`` when every round surely has ``m``.

    Fixed-size sampling without simulated dropouts or stragglers: ``m`` (the counted noise is the
    full ``z_eff(m)``). Otherwise the worst case ``t_floor``, so the plan never under-reports.

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        The survivor count.

    Raises:
        ConfigError: If noise sharing is off.
    """
    return _sharing(params).planning_survivors


def share_stddev(*, params: DPParams) -> float:
    """Std of one site's noise share on its clipped sum: ``σ/√(m − c)``, ``σ = z·S``.

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        The std in clipped-sum units (multiply by ``η/E`` for update units).

    Raises:
        ConfigError: If noise sharing is off.
    """
    ns = _sharing(params)
    sigma = float(params.noise_multiplier) * ns.sensitivity_factor * float(params.max_grad_norm)
    return sigma / math.sqrt(ns.sites_per_round - ns.colluding_sites)


def update_radius(*, params: DPParams) -> float:
    """Public L2 bound ``R`` the encoder projects an update onto (see the module docstring).

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        ``η·C`` (episodic: at most ``E`` episodes of norm ``C``, divided by ``E``) or ``4·η·C``.

    Raises:
        ConfigError: If noise sharing is off.
    """
    return _sharing(params).update_radius


def trust_assumption(*, params: DPParams) -> str:
    """The plain-language trust assumption of a noise-sharing run (ledger, summary, report).

    Args:
        params: The run's privacy parameters (noise sharing on).

    Returns:
        One sentence.

    Raises:
        ConfigError: If noise sharing is off.
    """
    ns = _sharing(params)
    c, m = ns.colluding_sites, ns.sites_per_round
    if c == 0:
        who = "no site colludes with the server, so every surviving site's noise share is counted"
    else:
        who = (
            f"up to {c} site(s) may collude with the server, so {c} survivor(s)' noise shares are not counted"
        )
    return f"record-level noise is split across up to {m} sites under secure aggregation; {who}"


def ledger_params(*, params: DPParams, survivors: int | None) -> dict[str, Any]:
    """The noise-sharing facts written into every ledger record (site and server).

    Args:
        params: The run's privacy parameters (noise sharing on).
        survivors: The survivors the record's ``noise_multiplier`` was computed for (``None``: the
            worst case ``t_floor``, as in a site's own ledger or a write-ahead ``begin``).

    Returns:
        JSON-able dict: ``noise_sharing``, ``colluding_sites``, ``sites_per_round``,
        ``threshold_floor``, ``survivors``, ``noise_multiplier_configured`` and ``trust_assumption``.

    Raises:
        ConfigError: If noise sharing is off.
    """
    ns = _sharing(params)
    t = ns.threshold_floor
    return {
        "noise_sharing": True,
        "colluding_sites": int(ns.colluding_sites),
        "sites_per_round": int(ns.sites_per_round),
        "threshold_floor": t,
        "survivors": int(t if survivors is None else survivors),
        "noise_multiplier_configured": float(params.noise_multiplier),
        "trust_assumption": trust_assumption(params=params),
    }


class SharedNoiseEncoder:
    """A site's SecAgg encoder that adds its noise share on a common lattice (module docstring).

    Implements :class:`protocols.IntegerEncoder` (``bits``, ``encode``, ``decode``); every site and
    the server build it with the same public arguments.

    Args:
        sigma: Std of one site's share in update units (``σ_Δ > 0``).
        radius: Public L2 bound ``R`` the update is projected onto.
        dim: Update length ``d``.
        max_sites: Most encodings ever summed (``m``).
        source: Noise source (default: a fresh :func:`privacy.noise.noise_source`).

    Raises:
        ConfigError: On invalid arguments or a modulus above 62 bits.
    """

    def __init__(
        self, *, sigma: float, radius: float, dim: int, max_sites: int, source: NoiseSource | None = None
    ) -> None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"sigma must be finite and > 0, got {sigma!r}")
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ConfigError(f"radius must be finite and > 0, got {radius!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        if isinstance(max_sites, bool) or not isinstance(max_sites, (int, np.integer)) or max_sites < 1:
            raise ConfigError(f"max_sites must be a positive int, got {max_sites!r}")
        self.sigma = float(sigma)
        self.radius = float(radius)
        self.dim = int(dim)
        self.max_sites = int(max_sites)
        self.gamma = lattice_spacing(sigma=self.sigma, dim=self.dim)
        self.integer_sigma = self.sigma / self.gamma
        bound = (
            self.max_sites * (self.radius / self.gamma + 1.0)
            + _TAIL_STDS * math.sqrt(self.max_sites) * self.integer_sigma
        )
        self.bits = int(math.ceil(math.log2(2.0 * bound + 2.0)))
        if self.bits > _MAX_BITS:
            raise ConfigError(
                f"noise sharing needs a {self.bits}-bit modulus (> {_MAX_BITS}): radius/sigma = "
                f"{self.radius / self.sigma:.3g} is too large"
            )
        self._source = source

    def encode(self, *, x: np.ndarray) -> np.ndarray:
        """Project, snap to the lattice, add the integer noise share, reduce mod ``2^bits``.

        Args:
            x: The site's update (1-D, length ``dim``, finite).

        Returns:
            uint64 array in ``[0, 2^bits)``.

        Raises:
            ConfigError: If ``x`` has the wrong shape or is not finite.
        """
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape != (self.dim,) or not np.all(np.isfinite(arr)):
            raise ConfigError(f"update must be a finite vector of length {self.dim}, got shape {arr.shape}")
        norm = float(np.linalg.norm(arr))
        if norm > self.radius:
            arr = arr * (self.radius / norm)
        lattice = np.rint(arr / self.gamma).astype(np.int64)
        source = self._source if self._source is not None else noise_source()
        noise = sample_discrete_gaussian(sigma=self.integer_sigma, size=self.dim, source=source)
        total = lattice + np.asarray(noise, dtype=np.int64)
        mask = np.uint64((1 << self.bits) - 1)
        return total.astype(np.uint64) & mask

    def decode(self, *, total: np.ndarray, n_summed: int) -> np.ndarray:
        """The centred modular sum times ``γ`` (float64).

        Args:
            total: Modular sum of ``n_summed`` encodings (unsigned integers, length ``dim``).
            n_summed: Number of encodings summed (``<= max_sites``).

        Returns:
            The decoded sum of the survivors' noisy updates.

        Raises:
            ConfigError: On a malformed sum or count.
        """
        arr = np.asarray(total)
        if arr.shape != (self.dim,) or not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(
                f"total must be an integer vector of length {self.dim}, got {arr.dtype} {arr.shape}"
            )
        if isinstance(n_summed, bool) or not 0 <= int(n_summed) <= self.max_sites:
            raise ConfigError(f"n_summed must be in [0, {self.max_sites}], got {n_summed!r}")
        v = arr.astype(np.uint64) & np.uint64((1 << self.bits) - 1)
        signed = v.astype(np.int64)
        signed = np.where(signed >= (1 << (self.bits - 1)), signed - (1 << self.bits), signed)
        return signed.astype(np.float64) * self.gamma


def make_noise_sharing_encoder_factory(
    *, params: DPParams, dim: int | Callable[[], int]
) -> Callable[[int], SharedNoiseEncoder]:
    """``round_idx -> encoder`` for the secure aggregators of a noise-sharing run.

    Args:
        params: The run's privacy parameters (noise sharing on).
        dim: Flat update length, or a function that finds it on first use (e.g.
            :func:`secfed.dp.distributed.model_dim` of the run).

    Returns:
        The factory; every call returns a fresh encoder with a fresh noise source.

    Raises:
        ConfigError: If noise sharing is off.
    """
    if params.noise_sharing is None:
        raise ConfigError("privacy.noise_sharing is off: no noise-sharing encoder")
    ns = params.noise_sharing
    sigma = ns.update_scale * share_stddev(params=params)
    radius = ns.update_radius
    m = ns.sites_per_round
    dims: list[int] = [] if callable(dim) else [int(dim)]

    def factory(round_idx: int) -> SharedNoiseEncoder:
        del round_idx
        if not dims:
            assert callable(dim)
            dims.append(int(dim()))
        return SharedNoiseEncoder(sigma=sigma, radius=radius, dim=dims[0], max_sites=m)

    return factory
