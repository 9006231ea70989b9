"""The client side of an inversion experiment: what a secfed site would send for a given private batch.

The attack library's observation models (:mod:`attacks.observation`) replay a client's computation
without privacy. Under the run's privacy settings the real message differs, and this module
produces it (the attacker never calls these functions; they simulate the client):

* record-level DP (``privacy.mode = "record"``), per-sample learners (FedAvg, Reptile): every
  local step clips each record's gradient to ``C``, sums, adds ``N(0, (zC)^2 I)`` and divides by
  the public ``privacy.expected_batch`` (Abadi et al. 2016; :class:`privacy.dpsgd.PerSampleDPSGD`);
  a multi-step update replays those noisy steps;
* record-level DP, episodic learners (ProtoNet, MAML, FOMAML): the episode's whole meta-gradient
  is clipped to ``C``, ``N(0, (2zC)^2 I)`` is added and the sum is divided by the public
  ``privacy.episodes_per_step`` (:class:`privacy.episodic.EpisodicDPSGD`);
* client-level DP: the site clips its whole update to ``C``; the noise is added by the trusted
  aggregator (``client``, after the server has seen the update) or by the clients under secure
  aggregation (``distributed``; modelled as Gaussian noise of the same variance, ``(zC)^2``, on
  the aggregate).

A record-level step is computed by :func:`secfed.dp.engines.release_step`, the DP optimiser the
sites' engines use, with the normaliser and noise multiplier the sites use
(:func:`secfed.dp.engines.step_normaliser`, :func:`secfed.dp.engines.step_noise_multiplier`), so
the replay cannot drift from the client's code. Noise is drawn from :mod:`privacy.noise`
(AES-256-CTR keystream, discrete Gaussian on a fine lattice), as the runtime does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from attacks.errors import AttackConfigError
from attacks.observation import ClientBatch, GradientObservation, MultiStepObservation, ObservationModel
from privacy.noise import NoiseSource, add_gaussian_noise_to_tensors, noise_source
from secfed.config import ExperimentConfig
from secfed.learners import learner_class

__all__ = ["ClientPrivacy", "aggregate_noise", "client_privacy", "flat_clip", "private_observe"]


@dataclass(frozen=True)
class ClientPrivacy:
    """The privacy processing of one client message, from the run's configuration.

    Attributes:
        mode: ``privacy.mode``.
        noise_multiplier: z.
        max_grad_norm: C.
        expected_batch: ``privacy.expected_batch``.
        episodic: True for per-episode clipping (ProtoNet, MAML, FOMAML).
        normaliser: The public divisor of a record-level DP step's noisy sum
            (``episodes_per_step`` for episodic learners, ``expected_batch`` otherwise).
        step_noise_multiplier: Noise std of a step's clipped sum divided by ``C`` (``2z`` per
            episode, ``z`` per record).
    """

    mode: str
    noise_multiplier: float
    max_grad_norm: float
    expected_batch: int
    episodic: bool
    normaliser: int
    step_noise_multiplier: float

    @property
    def record_level(self) -> bool:
        """Whether each local step is record-level DP-SGD."""
        return self.mode == "record"

    @property
    def step_noise_std(self) -> float:
        """Std of the noise added to one step's clipped sum (record level)."""
        return self.step_noise_multiplier * self.max_grad_norm

    def describe(self) -> dict[str, object]:
        """JSON-serialisable description."""
        out: dict[str, object] = {"mode": self.mode}
        if self.mode == "none":
            return out
        out.update(
            {
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm,
                "expected_batch": self.expected_batch,
                "normaliser": self.normaliser,
            }
        )
        if self.record_level:
            out["clipping"] = "per episode" if self.episodic else "per record"
            out["step_noise_std"] = self.step_noise_std
        elif self.mode == "client":
            out["server_view"] = "the clipped update, before the trusted aggregator adds its noise"
        else:
            out["server_view"] = (
                "the sum of clipped updates plus noise of std z*C (Gaussian model of the discrete noise)"
            )
        return out


def client_privacy(*, config: ExperimentConfig) -> ClientPrivacy:
    """The client-message privacy of a run's configuration."""
    from secfed.dp.engines import step_noise_multiplier, step_normaliser  # Opacus: only when used

    p = config.privacy
    return ClientPrivacy(
        mode=p.mode,
        noise_multiplier=float(p.noise_multiplier),
        max_grad_norm=float(p.max_grad_norm),
        expected_batch=int(p.expected_batch),
        episodic=learner_class(config.learner.name).episodic,
        normaliser=step_normaliser(config=config),
        step_noise_multiplier=step_noise_multiplier(config=config),
    )


def flat_clip(obs: Mapping[str, Tensor], clip: float) -> dict[str, Tensor]:
    """Scale a whole observation to L2 norm at most ``clip`` (client-level clipping)."""
    norm = torch.sqrt(
        sum(((v.double() ** 2).sum() for v in obs.values()), torch.zeros((), dtype=torch.float64))
    )
    factor = float(min(1.0, clip / (float(norm) + 1e-12)))
    return {k: v * factor for k, v in obs.items()}


def _noise_like(obs: Mapping[str, Tensor], std: float, gen: NoiseSource) -> dict[str, Tensor]:
    if std == 0:
        return {k: torch.zeros_like(v) for k, v in obs.items()}
    zeros = [torch.zeros_like(v) for v in obs.values()]
    return dict(zip(obs, add_gaussian_noise_to_tensors(tensors=zeros, sigma=std, source=gen), strict=True))


def _dp_step(
    *, loss_obs: ObservationModel, batch: ClientBatch, priv: ClientPrivacy, gen: NoiseSource, per_record: bool
) -> dict[str, Tensor]:
    if per_record:
        units = [loss_obs.observe_batch(batch.rows(slice(i, i + 1))) for i in range(batch.num_records)]
    else:
        units = [loss_obs.observe_batch(batch)]
    from secfed.dp.engines import release_step  # the sites' DP optimiser (imports Opacus)

    return release_step(
        unit_grads=units,
        max_grad_norm=priv.max_grad_norm,
        noise_multiplier=priv.step_noise_multiplier,
        normaliser=priv.normaliser,
        source=gen,
    )


def private_observe(
    *, observation: ObservationModel, batch: ClientBatch, privacy: ClientPrivacy
) -> dict[str, Tensor]:
    """What one client sends for its private batch under the run's privacy settings.

    Args:
        observation: The public observation model (a :class:`GradientObservation`, a
            :class:`MultiStepObservation`, or an episodic model for episodic learners).
        batch: The client's private batch at the global parameters and buffers.
        privacy: The run's client privacy.

    Returns:
        The message (detached), a tensor per parameter name.

    Raises:
        AttackConfigError: If record-level DP meets an observation it cannot privatise.
    """
    if privacy.mode == "none":
        return observation.observe_batch(batch)
    if privacy.mode in ("client", "distributed"):
        return flat_clip(observation.observe_batch(batch), privacy.max_grad_norm)
    gen = noise_source()
    if privacy.episodic or isinstance(observation, GradientObservation):
        # one DP step: the whole episode is one clipping unit, a gradient's records are one each
        return _dp_step(
            loss_obs=observation, batch=batch, priv=privacy, gen=gen, per_record=not privacy.episodic
        )
    if isinstance(observation, MultiStepObservation):
        step_obs = GradientObservation(loss_fn=observation.loss_fn)
        theta0 = {k: v.detach().clone() for k, v in batch.params.items()}
        theta = dict(theta0)
        for step in observation.batches:
            rows = batch.at(theta).rows(torch.tensor(step, dtype=torch.long))
            g = _dp_step(loss_obs=step_obs, batch=rows, priv=privacy, gen=gen, per_record=True)
            theta = {k: theta[k] - observation.lr * g[k] for k in theta}
        return {k: (observation.scale * (theta[k] - theta0[k])).detach() for k in theta}
    raise AttackConfigError(
        f"record-level DP cannot be applied to a {type(observation).__name__} of a per-sample learner"
    )


def aggregate_noise(*, total: Mapping[str, Tensor], privacy: ClientPrivacy) -> dict[str, Tensor]:
    """Noise the aggregate carries when the server sees it (``distributed`` mode only).

    Args:
        total: The sum of the clients' messages.
        privacy: The run's client privacy.

    Returns:
        The aggregate as the server sees it.
    """
    if privacy.mode != "distributed":
        return dict(total)
    gen = noise_source()
    std = privacy.noise_multiplier * privacy.max_grad_norm
    noise = _noise_like(total, std, gen)
    return {k: total[k] + noise[k] for k in total}
