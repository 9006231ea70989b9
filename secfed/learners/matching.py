"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching Networks
for One Shot Learning", NeurIPS).

The model is an embedding network (build it with ``num_classes=None``). For a query ``x`` and a
support set ``{(x_i, y_i)}`` the prediction is an attention-weighted sum of the support labels'
one-hot vectors (Vinyals et al., eq. 1-2)::

    P(y | x, S) = sum_i a(x, x_i) onehot(y_i),   a(x, x_i) = softmax_i cos(f(x), g(x_i))

with the cosine similarity of the query embedding ``f(x)`` and the support embeddings ``g(x_i)``.
The meta-loss of an episode is the negative log-likelihood of the query labels under ``P``; the
logits :meth:`MatchingNet.predict` returns are ``log P`` (arg-max = the most probable class).

Without full context embeddings, ``f = g`` = the embedding network. With ``learner.fce = true``
(the paper's *full context embeddings*, appendix A.2):

* ``g(x_i) = h_fwd_i + h_bwd_i + g'(x_i)``: a bidirectional LSTM over the support embeddings
  ``g'(x_i)`` in the episode's order (support records are label-major);
* ``f(x) = h_K`` after ``K = learner.fce_steps`` steps of an attention LSTM whose input is the
  query's embedding ``f'(x)`` and whose recurrent state is ``[h_{k-1}, r_{k-1}]``::

      h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1});   h_k = h^_k + f'(x)
      r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)

The LSTMs are the learner's own trainable module, ``model.fce`` (:class:`FullContextEmbedding`,
added by :meth:`MatchingNet.extend_model`), so they are federated, checkpointed and (under DP)
clipped and noised with the embedding network. They are written with linear layers (no cuDNN
``nn.LSTM``) so that the episode loss composes with ``torch.func.grad``.

Record-level DP: the episode loss couples the records of an episode (the attention normalises
over the support set, the FCE LSTMs read all of it), exactly as a ProtoNet episode does, so the
unit is the episode: :class:`~secfed.learners.episodic.EpisodicLearner`'s loop runs with the
per-episode clipping engine (sensitivity ``2C`` under add/remove one record,
:mod:`privacy.episodic`), unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from secfed.errors import ConfigError
from secfed.learners.base import FunctionalModel, LearnerConfig, SupportSet
from secfed.learners.common import add_embedding_module, training_mode
from secfed.learners.declarations import DECLARATIONS, LearnerDeclaration
from secfed.learners.episodic import EpisodicLearner
from secfed.tasks.base import Task

__all__ = ["FCE_MODULE", "FullContextEmbedding", "LSTMCellLinear", "MatchingNet", "matching_log_probs"]

#: Name of the FCE submodule on the model.
FCE_MODULE = "fce"
#: Floor of the attention probabilities before the logarithm (an exact zero would give -inf).
_PROB_FLOOR = 1e-12


def matching_log_probs(
    *,
    support_emb: torch.Tensor,
    support_y: torch.Tensor,
    n_way: int,
    query_emb: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """``log P(y | x, S)`` of Matching Networks' cosine attention kernel (Vinyals et al., eq. 1-2).

    Written with static shapes only, so it works under ``torch.func.vmap``.

    Args:
        support_emb: ``(S, D)`` support embeddings ``g(x_i)``.
        support_y: ``(S,)`` labels in ``[0, n_way)``.
        n_way: Number of classes.
        query_emb: ``(Q, D)`` query embeddings ``f(x)``.
        scale: ``tau`` multiplying the cosines before the softmax (1: the paper's kernel;
            metric scaling, Oreshkin et al. 2018).

    Returns:
        ``(Q, n_way)`` log-probabilities (a class without support records gets ``log 1e-12``).
    """
    cos = F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).transpose(0, 1)  # (Q, S)
    attention = torch.softmax(scale * cos, dim=-1)
    classes = torch.arange(n_way, device=support_y.device)
    onehot = (support_y.unsqueeze(-1) == classes).to(attention.dtype)  # (S, n_way)
    return torch.log((attention @ onehot).clamp(min=_PROB_FLOOR))


class LSTMCellLinear(nn.Module):
    """An LSTM cell (Hochreiter & Schmidhuber 1997) as one linear layer over ``[input, state]``.

    Args:
        input_dim: Size of the input.
        state_dim: Size of the recurrent input (``hidden_dim`` for a plain LSTM; ``2 * D`` for the
            attention LSTM, whose recurrent input is ``[h, r]``).
        hidden_dim: Size of the hidden and cell states.
    """

    def __init__(self, *, input_dim: int, state_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.gates = nn.Linear(input_dim + state_dim, 4 * hidden_dim)
        with torch.no_grad():  # forget-gate bias 1 (Gers et al. 2000), a common LSTM initialisation
            self.gates.bias[hidden_dim : 2 * hidden_dim].fill_(1.0)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``(h, c)`` from input ``x``, recurrent input ``state`` and cell ``cell``."""
        i, f, g, o = self.gates(torch.cat([x, state], dim=-1)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class FullContextEmbedding(nn.Module):
    """Matching Networks' full context embeddings ``g`` (support) and ``f`` (queries); see the module.

    Args:
        dim: Embedding size ``D`` of the embedding network.
        steps: Processing steps ``K`` of the attention LSTM.
    """

    def __init__(self, *, dim: int, steps: int) -> None:
        super().__init__()
        self.dim, self.steps = int(dim), int(steps)
        self.forward_lstm = LSTMCellLinear(input_dim=dim, state_dim=dim, hidden_dim=dim)
        self.backward_lstm = LSTMCellLinear(input_dim=dim, state_dim=dim, hidden_dim=dim)
        self.attention_lstm = LSTMCellLinear(input_dim=dim, state_dim=2 * dim, hidden_dim=dim)

    def _run(self, cell: LSTMCellLinear, seq: list[torch.Tensor]) -> list[torch.Tensor]:
        h = seq[0].new_zeros(self.dim)
        c = seq[0].new_zeros(self.dim)
        out = []
        for x in seq:
            h, c = cell(x, h, c)
            out.append(h)
        return out

    def forward(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(support) (S, D), f(query) (Q, D))`` from the embeddings ``g'`` and ``f'``."""
        seq = list(support.unbind(0))
        fwd = self._run(self.forward_lstm, seq)
        bwd = self._run(self.backward_lstm, seq[::-1])[::-1]
        g = torch.stack(fwd) + torch.stack(bwd) + support
        h = torch.zeros_like(query)
        r = torch.zeros_like(query)
        c = torch.zeros_like(query)
        for _ in range(self.steps):
            h_hat, c = self.attention_lstm(query, torch.cat([h, r], dim=-1), c)
            h = h_hat + query
            r = torch.softmax(h @ g.transpose(0, 1), dim=-1) @ g
        return g, h


def _sub_params(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in params.items() if k.startswith(prefix + ".")}


class MatchingNet(EpisodicLearner):
    """Matching Networks learner; see the module docstring.

    Support and query are embedded in one forward pass (in training mode BatchNorm statistics are
    the whole episode's, as for ProtoNet).
    """

    declaration: ClassVar[LearnerDeclaration] = DECLARATIONS["matching"]

    @classmethod
    def extend_model(cls, *, model: nn.Module, config: LearnerConfig) -> nn.Module:
        """Add ``model.fce`` (:class:`FullContextEmbedding`) when ``config.fce``.

        Raises:
            ConfigError: If the model has an ``fce`` attribute already or no ``embedding_dim``.
        """
        if not config.fce:
            return model
        return add_embedding_module(
            model=model,
            name=FCE_MODULE,
            build=lambda dim: FullContextEmbedding(dim=dim, steps=config.fce_steps),
            needs="full context embeddings need",
        )

    def _fce(self, model: nn.Module) -> FullContextEmbedding | None:
        if not self.config.fce:
            return None
        module = getattr(model, FCE_MODULE, None)
        if not isinstance(module, FullContextEmbedding):
            raise ConfigError(
                "learner.fce = true needs a model built with MatchingNet.extend_model (model.fce); "
                "build it with secfed.components.build_model"
            )
        return module

    def _log_probs(self, *, net: FunctionalModel, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        n_support = support.x.shape[0]
        emb = net(torch.cat([support.x, query_x], dim=0))
        emb = emb.reshape(emb.shape[0], -1)
        support_emb, query_emb = emb[:n_support], emb[n_support:]
        fce = self._fce(net.module)
        if fce is not None:
            support_emb, query_emb = functional_call(
                fce, (_sub_params(net.params, FCE_MODULE), {}), (support_emb, query_emb)
            )
        return matching_log_probs(
            support_emb=support_emb,
            support_y=support.y,
            n_way=support.n_way,
            query_emb=query_emb,
            scale=self.config.cosine_scale,
        )

    def episode(self, *, net: FunctionalModel, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Query NLL under the attention kernel; see :meth:`EpisodicLearner.episode`."""
        log_probs = self._log_probs(net=net, support=SupportSet.of(task), query_x=task.query_x)
        return F.nll_loss(log_probs, task.query_y), log_probs

    def _predict(self, *, model: nn.Module, support: SupportSet, query_x: torch.Tensor) -> torch.Tensor:
        """``log P(y | x, S)`` for the queries (model in eval mode, no gradients); see
        :meth:`Learner.predict`.

        Raises:
            ConfigError: If ``fce`` is set and the model has no FCE module.
        """
        net = FunctionalModel.detached(model)
        with training_mode(model, train=False), torch.no_grad():
            return self._log_probs(net=net, support=support, query_x=query_x)
