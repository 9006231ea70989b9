"""Pluggable aggregation: how the server obtains the (weighted) sum of client updates.

The server never receives a client's update object: it talks to clients through a
:class:`Channel` that carries bytes only. A :class:`ServerAggregator` drives one or more
message exchanges ("stages") and returns the sum; the matching :class:`ClientAggregator` runs
inside the client (its own process on the multi-process backend) and answers each stage from
the update the client keeps to itself. Plain aggregation has one stage in which clients send
``w * update``; secure aggregation (``secfed.federation.secure``) has several in which clients
send only masked vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["Channel", "AggregateResult", "ServerAggregator", "ClientAggregator"]


class Channel(Protocol):
    """Byte transport from the server to the clients of one round.

    Dropouts injected by the simulation are applied here: a client that dropped at or before
    this exchange is absent from the returned mapping.
    """

    def exchange(self, *, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        """Send each client its request for ``stage`` and collect the answers.

        Args:
            stage: Name of the protocol stage (for logging, dropout injection and byte counts).
            requests: Request bytes by client id.

        Returns:
            Response bytes by client id, for the clients that answered.
        """
        ...


@dataclass
class AggregateResult:
    """Outcome of one aggregation.

    Attributes:
        total: ``sum_i w_i * x_i`` over the surviving clients, float64, flat.
        weight_sum: ``sum_i w_i`` over the same clients (weights are public).
        survivors: Ids whose updates are in ``total``.
        dropped: Ids that were asked to take part but are not in ``total``.
        metrics: Per-round protocol metrics (``n``, ``k``, ``t``, ``bytes_sent_per_client``, ...).
    """

    total: np.ndarray
    weight_sum: float
    survivors: list[int]
    dropped: list[int]
    metrics: dict[str, float | int | str] = field(default_factory=dict)


class ServerAggregator(ABC):
    """Server side of an aggregation scheme."""

    name: str = "base"

    @abstractmethod
    def aggregate(
        self,
        *,
        round_idx: int,
        participants: list[int],
        weights: dict[int, float],
        dim: int,
        channel: Channel,
    ) -> AggregateResult:
        """Obtain the weighted sum of the participants' updates through ``channel``.

        Args:
            round_idx: The round number (part of every session identifier).
            participants: Client ids that returned a local update this round.
            weights: Public aggregation weight of each participant.
            dim: Length of the flat update vector.
            channel: Transport to the clients.

        Returns:
            The aggregate.

        Raises:
            secfed.errors.SecfedError subclasses (or protocol errors) when aggregation must abort.
        """


class ClientAggregator(ABC):
    """Client side of an aggregation scheme; lives inside the client process."""

    name: str = "base"

    @abstractmethod
    def handle(
        self, *, stage: str, request: bytes, update: np.ndarray, weight: float, round_idx: int
    ) -> bytes:
        """Answer one stage of the protocol.

        Args:
            stage: Stage name chosen by the server aggregator.
            request: The server's request bytes.
            update: This client's flat float32 update (never leaves the client except as the
                scheme allows).
            weight: This client's public weight.
            round_idx: The round number.

        Returns:
            Response bytes.
        """
