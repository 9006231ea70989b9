"""Protocol stages and state-machine states (Bonawitz et al. 2017, rounds 0-4)."""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = ["Stage", "ClientState", "ServerState", "stage_sequence"]


class Stage(IntEnum):
    """The message exchanges of one aggregation, in order. Values are the wire codes."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    COLLECT_MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3  # active-adversary variant only
    UNMASK = 4

    @property
    def wire_name(self) -> str:
        """Stable textual name (used as the runtime's stage label)."""
        return "secagg/" + self.name.lower()

    @classmethod
    def from_wire_name(cls, name: str) -> Stage:
        """Inverse of :attr:`wire_name`.

        Args:
            name: A name produced by :attr:`wire_name`.

        Returns:
            The stage.

        Raises:
            KeyError: If ``name`` is not a stage name.
        """
        prefix = "secagg/"
        if not name.startswith(prefix):
            raise KeyError(name)
        return cls[name[len(prefix) :].upper()]


def stage_sequence(*, active: bool) -> tuple[Stage, ...]:
    """Stages of one round, in order.

    Args:
        active: Whether the consistency-check round (active-adversary variant) is included.

    Returns:
        The stages.
    """
    stages = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_INPUT]
    if active:
        stages.append(Stage.CONSISTENCY_CHECK)
    stages.append(Stage.UNMASK)
    return tuple(stages)


class ClientState(Enum):
    """Where a client session stands; each state accepts exactly one request stage."""

    AWAIT_SETUP = "await_setup"  # accepts ADVERTISE_KEYS
    ADVERTISED = "advertised"  # accepts SHARE_KEYS
    SHARED = "shared"  # accepts COLLECT_MASKED_INPUT
    MASKED = "masked"  # accepts CONSISTENCY_CHECK (active) or UNMASK (passive)
    CHECKED = "checked"  # accepts UNMASK (active)
    DONE = "done"
    ABORTED = "aborted"


class ServerState(Enum):
    """Server session status."""

    RUNNING = "running"
    DONE = "done"
    ABORTED = "aborted"
