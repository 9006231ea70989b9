"""Communication graphs: the complete graph (SecAgg) and the Harary graph H(k, n) (SecAgg+).

Bell et al. (CCS 2020) place the clients on a ring after a uniformly random permutation and link
each to its k/2 predecessors and k/2 successors, giving a k-regular, symmetric graph. The
permutation here is derived from the session id (which hashes every advertised public key), so
every client computes the same graph locally without trusting a list sent by the server: the
ring order sorts the clients by 64-bit words of the PRG's AES-128-CTR keystream
(:func:`protocols.prg.keystream`, little-endian), keyed by HKDF(session id, "graph"), with a
stable sort as tie-break.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from protocols.crypto import hkdf_sha256, label
from protocols.errors import DropoutBoundError, ProtocolConfigError
from protocols.prg import keystream

__all__ = ["Graph", "build_graph", "graph_seed", "check_survivor_graph"]


def graph_seed(*, session_id: bytes) -> bytes:
    """Derive the 16-byte permutation key of a session.

    Args:
        session_id: The session id.

    Returns:
        AES-128 key for the permutation keystream.
    """
    return hkdf_sha256(ikm=b"harary-permutation", salt=session_id, info=label("graph"), length=16)


class Graph:
    """An undirected client graph with neighbour lookups.

    Attributes:
        nodes: Sorted client ids.
        k: Degree (``len(nodes) - 1`` for the complete graph).
        ring: Client ids in ring order (the random permutation; sorted for the complete graph).
    """

    def __init__(self, *, nodes: tuple[int, ...], k: int, ring: tuple[int, ...]) -> None:
        self.nodes = nodes
        self.k = k
        self.ring = ring
        self._pos = {u: i for i, u in enumerate(ring)}
        self._cache: dict[int, frozenset[int]] = {}

    @property
    def complete(self) -> bool:
        """Whether this is the complete graph."""
        return self.k >= len(self.nodes) - 1

    def neighbours(self, u: int) -> frozenset[int]:
        """Open neighbourhood N(u).

        Args:
            u: A node.

        Returns:
            The neighbours of ``u`` (without ``u``).

        Raises:
            ProtocolConfigError: If ``u`` is not a node.
        """
        cached = self._cache.get(u)
        if cached is not None:
            return cached
        if u not in self._pos:
            raise ProtocolConfigError(f"client {u} is not in the graph")
        n = len(self.ring)
        if self.complete:
            out = frozenset(self.nodes) - {u}
        else:
            i = self._pos[u]
            half = self.k // 2
            out = frozenset(self.ring[(i + d) % n] for d in range(-half, half + 1) if d != 0)
        self._cache[u] = out
        return out

    def closed_neighbours(self, u: int) -> frozenset[int]:
        """Closed neighbourhood N[u] = N(u) + {u}.

        Args:
            u: A node.

        Returns:
            The closed neighbourhood.
        """
        return self.neighbours(u) | {u}

    def induced_connected(self, members: frozenset[int] | set[int]) -> bool:
        """Whether the subgraph induced by ``members`` is connected.

        In H(k, n) an edge spans at most k/2 ring positions, so the members split exactly when
        two or more maximal cyclic runs of at least k/2 consecutive non-members separate them:
        one O(n) walk around the ring (:meth:`induced_connected_bfs` is the generic check).

        Args:
            members: Nodes of the subgraph (every one must be a node of this graph).

        Returns:
            ``True`` for a connected (or empty) subgraph.
        """
        if self.complete or not members:
            return True
        half = self.k // 2
        inside = [u in members for u in self.ring]
        first = inside.index(True)  # start the walk just after a member: no run wraps around
        gaps = 0
        run = 0
        n = len(inside)
        for i in range(first + 1, first + n + 1):
            if inside[i % n]:
                if run >= half:
                    gaps += 1
                run = 0
            else:
                run += 1
        return gaps <= 1

    def induced_connected_bfs(self, members: frozenset[int] | set[int]) -> bool:
        """:meth:`induced_connected` by breadth-first search over the neighbour sets.

        Args:
            members: Nodes of the subgraph.

        Returns:
            ``True`` for a connected (or empty) subgraph.
        """
        if self.complete or not members:
            return True
        start = next(iter(members))
        seen = {start}
        frontier = [start]
        while frontier:
            nxt = []
            for u in frontier:
                for v in self.neighbours(u):
                    if v in members and v not in seen:
                        seen.add(v)
                        nxt.append(v)
            frontier = nxt
        return len(seen) == len(members)


def check_survivor_graph(*, graph: Graph, survivors: frozenset[int] | set[int], max_dropouts: int) -> None:
    """Refuse to unmask when the SecAgg+ guarantee no longer holds for these survivors.

    The server learns the self-mask of every survivor and the mask key of every client that
    dropped after sharing keys, so for any union S of connected components of the graph induced
    by the survivors (U3) it can remove every mask from ``sum_{u in S} y_u``: a disconnected U3
    leaks partial sums. Bell et al.'s bound on the probability that the *honest* survivors'
    graph splits assumes at most ``n_D`` dropouts, so more dropouts void it even when U3 is
    connected. Both are checked here; the complete graph (SecAgg) is exempt from both, as any
    U3 induces a connected subgraph and its thresholds alone decide.

    Args:
        graph: The session's graph (nodes are the selected clients).
        survivors: U3.
        max_dropouts: ``n_D`` of the resolved parameters.

    Raises:
        DropoutBoundError: If more than ``max_dropouts`` selected clients are not in U3 or U3's
            induced subgraph is disconnected.
    """
    if graph.complete:
        return
    missing = len(graph.nodes) - len(survivors)
    if missing > max_dropouts:
        raise DropoutBoundError(
            f"{missing} of {len(graph.nodes)} selected clients are missing from U3; the parameters "
            f"were designed for at most {max_dropouts} dropouts; refusing to unmask"
        )
    if not graph.induced_connected(survivors):
        raise DropoutBoundError(
            "the survivors' graph is disconnected: the sum of a component would be recoverable; "
            "refusing to unmask"
        )


@lru_cache(maxsize=64)
def _build(nodes: tuple[int, ...], k: int, seed: bytes) -> Graph:
    n = len(nodes)
    if k >= n - 1:
        return Graph(nodes=nodes, k=n - 1, ring=nodes)
    words = np.frombuffer(keystream(key=seed, nbytes=8 * n), dtype="<u8")
    order = np.argsort(words, kind="stable")
    ring = tuple(nodes[int(i)] for i in order)
    return Graph(nodes=nodes, k=k, ring=ring)


def build_graph(*, nodes: Sequence[int], k: int, seed: bytes) -> Graph:
    """Build the complete graph (``k >= n - 1``) or the Harary graph H(k, n) over a permutation.

    Args:
        nodes: Distinct client ids.
        k: Degree; even when below ``n - 1``.
        seed: 16-byte permutation key (:func:`graph_seed`).

    Returns:
        The graph (cached: clients of one session share it).

    Raises:
        ProtocolConfigError: On duplicate nodes, an odd or too small degree, or a bad seed length.
    """
    ordered = tuple(sorted(nodes))
    if len(set(ordered)) != len(ordered):
        raise ProtocolConfigError("graph nodes must be distinct")
    n = len(ordered)
    if n < 2:
        raise ProtocolConfigError(f"a graph needs at least 2 nodes, got {n}")
    if k < n - 1 and (k < 2 or k % 2):
        raise ProtocolConfigError(f"Harary degree must be even and >= 2 (or n-1), got {k}")
    if len(seed) != 16:
        raise ProtocolConfigError(f"graph seed must be 16 bytes, got {len(seed)}")
    return _build(ordered, k, bytes(seed))
