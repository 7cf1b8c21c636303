"""The Connector protocol and delivery results every channel returns."""

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
class Delivery:
    """The result of one attempt: outcome, a human detail, an optional Retry-After and receiver data."""

    outcome: Outcome
    detail: str | None = None
    retry_after: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


Ambiguity = Literal["resend", "check", "hold"]


@runtime_checkable
class Connector(Protocol):
    """A delivery channel. `deliver` never raises for a delivery problem: it returns a Delivery."""

    name: str
    on_ambiguous: Ambiguity   # what to do with an action whose earlier attempt may or may not have landed

    def deliver(self, item: Claimed) -> Delivery:
        """Send one claimed action."""
        ...

    def check(self, item: Claimed) -> Delivery | None:
        """For on_ambiguous == 'check': the Delivery if the receiver already has it, else None."""
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

    def check(self, item: Claimed) -> Delivery | None:
        return None

    def close(self) -> None:
        return None
