"""Delivery: what a connector is (the `Connector` protocol) and what one delivery attempt comes to (`Receipt`).

The dispatcher (engine/dispatch.py) hands a connector one claimed action at a time, its payload already the
action kind's typed payload, and records what the Receipt says; a connector never raises for a delivery
problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol, runtime_checkable

from engine.store.outbox import Claimed


class Outcome(str, Enum):
    """How one delivery attempt ended."""

    SENT = "sent"              # the receiver has it
    TRANSIENT = "transient"    # try again later (4xx SMTP, HTTP 429/5xx, timeouts)
    PERMANENT = "permanent"    # will never work (5xx SMTP, HTTP 4xx)
    SUPPRESSED = "suppressed"  # must not be sent (unsubscribed, bounced)


@dataclass(frozen=True)
class Receipt:
    """What one delivery attempt came to: its outcome, a detail for people, an optional Retry-After (seconds)
    and what the receiver said (ids, delivered messages, refusals)."""

    outcome: Outcome
    detail: str | None = None
    retry_after: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


Ambiguity = Literal["resend", "check", "hold"]


@runtime_checkable
class Connector(Protocol):
    """A delivery channel. `deliver` never raises for a delivery problem: it returns a Receipt."""

    name: str
    on_ambiguous: Ambiguity   # what to do with an action whose earlier attempt may or may not have landed

    def deliver(self, item: Claimed) -> Receipt:
        """Send one claimed action (its payload is the kind's typed payload)."""
        ...

    def check(self, item: Claimed) -> Receipt | None:
        """For on_ambiguous == 'check': the Receipt if the receiver already has it, else None."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class BaseConnector:
    """Defaults for connectors: resend on ambiguity, nothing to check, nothing to flush or close."""

    name = "base"
    on_ambiguous: Ambiguity = "resend"
    batch_safe = False   # True when delivering an action twice is harmless, so outcomes may be recorded per batch

    def flush(self) -> None:
        """Make every delivery so far durable (called before a batch's outcomes are recorded)."""
        return None

    def check(self, item: Claimed) -> Receipt | None:
        return None

    def close(self) -> None:
        return None
