"""The ledger of customer-facing messages, per contact and account, that the frequency caps count (§13).

A dispatcher reserves a message's place in the ledger before it hands the message to a connector, in a short
transaction of its own that first takes a lock per account and per contact (PostgreSQL advisory locks;
SQLite's single writer serialises these transactions anyway): two workers counting the same contact's window
never both find room for the last message. The reservation becomes `sent` with the outcome, or is removed
when the message did not go out; a reservation whose outcome was never recorded (a crash) keeps counting,
since the message may have gone."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from sqlalchemy import delete, insert, or_, select, update

from engine.store import dialect as sql_dialect
from engine.store.schema import Repository

COUNTED = ("reserved", "sent")


class ContactSends(Repository):
    """Customer-facing messages sent or about to be, with when."""

    def sent(self, per: str, who: str, since: datetime) -> list[datetime]:
        """When the messages counted against this contact or account (`per`) since `since` went out, ascending."""
        s = self.schema.contact_sends
        column = s.c.contact_id if per == "contact" else s.c.account_id
        return [r[0] for r in self.conn.execute(
            select(s.c.at).where(column == who, s.c.at > since, s.c.state.in_(COUNTED)).order_by(s.c.at))]

    def reserve(self, outbox_id: int, contact_id: str | None, account_id: str | None, now: datetime,
                check: Callable[[], Any]) -> Any:
        """Reserve a place for one message unless a cap holds it back. `check()` is called under the locks (it
        reads `sent`) and returns what stops the message, or None; what stops it is returned and nothing is
        reserved. A message reserved before (an attempt that may have gone out) keeps its place."""
        s = self.schema.contact_sends
        for per, who in (("account", account_id), ("contact", contact_id)):     # always in this order
            if who is not None:
                sql_dialect.lock(self.conn, f"contact-sends:{per}:{who}")
        if self.conn.execute(select(s.c.id).where(s.c.outbox_id == outbox_id, s.c.state.in_(COUNTED))).first():
            return None
        stop = check()
        if stop is None:
            self.conn.execute(insert(s).values(outbox_id=outbox_id, contact_id=contact_id, account_id=account_id,
                                               at=now, state="reserved"))
        return stop

    def settle(self, sent: list[int], unsent: list[int]) -> None:
        """Outcomes: the reservations of messages that went out become `sent`; those that did not are removed."""
        s = self.schema.contact_sends
        if sent:
            self.conn.execute(update(s).where(s.c.outbox_id.in_(sent)).values(state="sent"))
        if unsent:
            self.conn.execute(delete(s).where(s.c.outbox_id.in_(unsent), s.c.state == "reserved"))

    def waiting(self, per: str, who: str) -> list[datetime]:
        """When the customer-facing messages planned for this contact or account and not yet sent are due."""
        o = self.schema.outbox
        column = o.c.contact_id if per == "contact" else o.c.account_id
        return [r[0] for r in self.conn.execute(
            select(o.c.not_before).where(column == who, o.c.policy == "customer",
                                         or_(o.c.status == "pending", o.c.status == "claimed")))]

    def history(self, per: str, who: str, since: datetime) -> list[datetime]:
        """Sent, reserved and waiting messages of this contact or account (what a preview counts)."""
        return sorted(self.sent(per, who, since) + self.waiting(per, who))

