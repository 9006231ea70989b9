"""The site-side privacy hook: record-level DP-SGD inside local training, or client-level clipping.

The client runtime (:class:`secfed.federation.client.ClientRuntime`) builds one
:class:`SitePrivacy` per site with :func:`build_site_privacy` and keeps it for the whole run. Every
round it calls :meth:`SitePrivacy.local_update` instead of the learner's own ``local_update``,
then :meth:`SitePrivacy.finalize_update` on the flat update, and sends
:meth:`SitePrivacy.round_report` (public facts only) to the server, which keeps the authoritative
privacy ledger.

:func:`build_site_privacy` (:mod:`~secfed.dp.site.build`) reads the configuration the site received
once, into a typed :class:`SiteDPParams` (:mod:`~secfed.dp.site.params`: the run's
:class:`~secfed.dp.params.DPParams` and the public facts of local training), and hands that value,
never the configuration, to the hook: :mod:`~secfed.dp.site.base` (the interface),
:mod:`~secfed.dp.site.client` (client-level clipping), :mod:`~secfed.dp.site.record` (record-level
DP's site ledger, budget and composition), :mod:`~secfed.dp.site.episodic` and
:mod:`~secfed.dp.site.per_sample` (the learners' mechanisms). Every name stays importable from
``secfed.dp.site``.

Record-level DP (``privacy.mode = "record"``)
---------------------------------------------
Privacy unit: **one record of the site's dataset**; adjacency: **add/remove one record**.

DP wraps each learner's own training loop (:mod:`secfed.learners`): the site hands the learner a
DP gradient engine, a private unit source and, for Reptile, a DP inner trainer
(:mod:`secfed.dp.engines`), and calls the learner's ``local_update``. There is no second copy of
any learner's loop, so DP training does what the learner does (e.g. Reptile's zeroed head).

* ProtoNet (Snell et al. 2017), MAML and FOMAML (Finn et al. 2017) have episodic meta-losses that
  couple the records of an episode, so per-record clipping is not record-level DP
  (:mod:`privacy.episodic`). Each local step draws episodes with
  :class:`privacy.sampling.RecordEpisodeSampler` (Poisson rate ``q``; every record joins a public
  slot of ``task.n_way`` classes and a role with its own keyed randomness) and takes one
  :class:`privacy.episodic.EpisodicDPSGD` step: every episode's full meta-gradient (the learner's
  own episode loss, second order for MAML) is clipped to ``C``, the clipped gradients are summed,
  ``N(0, (2zC)^2 I)`` is added (sensitivity ``2C``) and the sum is divided by the public number of
  slots per step, ``privacy.episodes_per_step``. Mechanism name: ``"episodic-gaussian"``.
* Reptile (Nichol et al. 2018) and FedAvg (McMahan et al. 2017) train on ordinary per-record
  losses, so per-sample DP-SGD (Abadi et al. 2016) with :class:`privacy.dpsgd.PerSampleDPSGD` is
  valid (Poisson rate ``q`` over the site's records, per-record clipping to ``C``, noise
  ``N(0, (zC)^2 I)``, sum divided by the public ``privacy.expected_batch``). Reptile's outer step
  and FedAvg's averaging only read the DP-SGD iterates: post-processing. Mechanism name:
  ``"per-sample-gaussian"``.

Every DP step of the site is composed by one accountant (``privacy.accountant``: RDP, PRV or PLD),
**class-aware** for the episodic learners and Reptile (:mod:`secfed.dp.engines`): a record of class
``c`` takes part only in steps whose public plan contains ``c``, the plans are public and
data-independent, so the site's ε is that of ``max_c N_c`` steps, ``N_c`` the steps whose plan
contains ``c``. Each round the site composes, writes to its ledger and reports as ``"steps"`` the
increase of that maximum (known before the round from the public plan); the server's sum over
rounds is therefore the maximum too. FedAvg counts every step. When ``privacy.epsilon_budget > 0``
and the next round's steps would take the site's ε (at ``privacy.delta``) above the budget, the
site takes no step, leaves the model unchanged and says ``"budget_exhausted": true`` in its round
report, whatever the server asks.

Noise sharing (``privacy.noise_sharing``, record mode under SecAgg)
-------------------------------------------------------------------
Each round is one DP step; the engines clip and sample as above but add no noise
(:attr:`SitePrivacy.engine_noise_multiplier` is 0) and the site's SecAgg encoder
(:class:`secfed.dp.sharing.SharedNoiseEncoder`) adds the site's share, std ``σ/√(m − c)``, on a
lattice common to all sites, so the server sees only the noisy *sum*. The site cannot know how many
shares reach the sum before its update leaves, so it accounts, budgets, ledgers and reports the
worst case ``z_min = z·√((t_floor − c)/(m − c))`` (:attr:`SitePrivacy.accounted_noise_multiplier`);
the server's ledger uses the actual survivors (:mod:`secfed.dp.sharing`). Every ledger record and
report carries the collusion assumption (``params["noise_sharing"]``).

The site's own ledger (record mode)
-----------------------------------
The budget is the only guard a site has against an untrusted server, so it must survive restarts.
Built with ``state_dir`` (the runtime passes ``<site state dir>``; in simulation
``RUN_DIR/site_state/site-<id>/``, see :class:`secfed.federation.client.ClientFactory`), the site
keeps a durable, HMAC-authenticated :class:`privacy.ledger.PrivacyLedger` at
``<state_dir>/ledger.jsonl`` (its key under ``$SECFED_KEY_DIR`` / ``~/.config/secfed/keys``, outside
the state and run directories). On start it replays the ledger into its accountant (a ledger that
fails verification or whose key is missing stops the site with
:class:`secfed.errors.IntegrityError`); every round that trains writes a ``begin`` entry with the
planned steps (fsync'ed) *before* the first DP step, and a ``commit`` with the steps taken before
the update can leave the site. A site that dies in between restarts with that round counted at its
planned cost. Without ``state_dir`` (unit tests, ad-hoc use) the accountant lives only as long as
the object. Client/distributed modes keep no site ledger (the site adds no noise in client mode;
the distributed noise is accounted by the server).

Client-level DP (``privacy.mode`` ``"client"`` or ``"distributed"``)
---------------------------------------------------------------------
Privacy unit: **one site's entire dataset** (DP-FedAvg, McMahan, Ramage, Talwar & Zhang 2018,
arXiv 1710.06963). Local training is the learner's own; the site clips its whole flat update to
L2 norm ``privacy.max_grad_norm`` (:func:`privacy.client_dp.clip_update`, scaling, never
truncation). The noise is added by the trusted aggregator (``client``) or by the secure
aggregation clients (``distributed``), not here. Mechanism name: ``"client-clip"``.

Public vs private
-----------------
:meth:`SitePrivacy.describe` and :meth:`SitePrivacy.round_report` contain configuration values
and step counts only (the number of DP steps is fixed by the configuration, not by the data).
Per-step diagnostics that depend on private data (episode counts, clip fractions, norms, batch
sizes) are never reported; the round's step count is a function of the public plans. The
``LocalUpdate`` returned under record-level DP carries a public
``num_tasks`` (planned episodes or tasks) and ``num_examples = 0`` (the true count is private);
its ``train_loss`` is a loss on private data, for the site's own use only (under DP the runtime
releases neither it nor ``num_tasks``).

Public class list
-----------------
Slots (episodic learners) and Reptile tasks are drawn from the site's *public* class list
(:attr:`secfed.site.Site.public_classes`): a function of the configuration and the dataset's
public description (:func:`secfed.data.partition.site_class_lists`), never of the labels the shard
holds. Computed from the shard, removing the only record of a class would re-plan every episode
and void the sensitivity bound. Configuration checks (``task.n_way``, the FedAvg head) read only
this list. The randomness of these choices is public too (derived from the experiment seed); only
the per-record randomness (keyed by the records' stable ids) and the noise are secret.
"""

from __future__ import annotations

from secfed.dp.engines.episodes import episode_task
from secfed.dp.site.base import (
    ADJACENCY_CLIENT,
    ADJACENCY_RECORD,
    MECHANISM_CLIENT_CLIP,
    MECHANISM_EPISODIC,
    MECHANISM_PER_SAMPLE,
    SitePrivacy,
    SitePrivacyStateError,
)
from secfed.dp.site.build import build_site_privacy
from secfed.dp.site.client import ClientLevelSitePrivacy
from secfed.dp.site.episodic import EpisodicSitePrivacy
from secfed.dp.site.params import SiteDPParams, site_dp_params
from secfed.dp.site.per_sample import PerSampleSitePrivacy
from secfed.dp.site.record import SITE_LEDGER_FILE, RecordSitePrivacy

__all__ = [
    "ADJACENCY_CLIENT",
    "ADJACENCY_RECORD",
    "MECHANISM_CLIENT_CLIP",
    "MECHANISM_EPISODIC",
    "MECHANISM_PER_SAMPLE",
    "ClientLevelSitePrivacy",
    "EpisodicSitePrivacy",
    "PerSampleSitePrivacy",
    "SITE_LEDGER_FILE",
    "SiteDPParams",
    "RecordSitePrivacy",
    "SitePrivacy",
    "SitePrivacyStateError",
    "build_site_privacy",
    "episode_task",
    "site_dp_params",
]
