"""Plaintext weighted-sum aggregation (no secure aggregation).

Each participant sends ``w * update`` in one stage; the server sums what arrives. The server
does see every individual update here: choose ``secagg`` or ``secagg+`` when it must not.
"""

from __future__ import annotations

import numpy as np

from secfed.errors import MessageError
from secfed.federation.aggregation import AggregateResult, Channel, ClientAggregator, ServerAggregator
from secfed.federation.messages import decode_message, encode_message

__all__ = ["PlainServerAggregator", "PlainClientAggregator"]

STAGE = "upload"


class PlainServerAggregator(ServerAggregator):
    """Sums ``w_i * x_i`` sent in the clear."""

    name = "plain"
    stages = (STAGE,)

    def aggregate(
        self,
        *,
        round_idx: int,
        participants: list[int],
        weights: dict[int, float],
        dim: int,
        channel: Channel,
    ) -> AggregateResult:
        request = encode_message(kind="agg", meta={"round": round_idx, "stage": STAGE})
        replies = channel.exchange(stage=STAGE, requests={sid: request for sid in participants})
        total = np.zeros(dim, dtype=np.float64)
        survivors: list[int] = []
        for sid in participants:
            if sid not in replies:
                continue
            msg = decode_message(replies[sid], expect="agg_reply")
            vec = msg.tensors.get("weighted_update")
            if vec is None or vec.shape != (dim,):
                raise MessageError(
                    f"site {sid} sent an update of shape {getattr(vec, 'shape', None)}, expected ({dim},)"
                )
            total += vec
            survivors.append(sid)
        wsum = float(sum(weights[s] for s in survivors))
        dropped = [s for s in participants if s not in survivors]
        bytes_up = float(np.mean([len(replies[s]) for s in survivors])) if survivors else 0.0
        return AggregateResult(
            total=total,
            weight_sum=wsum,
            survivors=survivors,
            dropped=dropped,
            metrics={"protocol": "plain", "n": len(participants), "bytes_sent_per_client": bytes_up},
        )


class PlainClientAggregator(ClientAggregator):
    """Sends ``weight * update`` as float64."""

    name = "plain"

    def handle(
        self, *, stage: str, request: bytes, update: np.ndarray, weight: float, round_idx: int
    ) -> bytes:
        msg = decode_message(request, expect="agg")
        if msg.meta.get("stage") != STAGE or msg.meta.get("round") != round_idx:
            raise MessageError(f"unexpected plain-aggregation request {msg.meta}")
        return encode_message(
            kind="agg_reply",
            meta={"round": round_idx, "stage": STAGE},
            tensors={"weighted_update": weight * update.astype(np.float64)},
        )
