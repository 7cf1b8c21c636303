"""Build the connectors a configuration asks for; local sinks when it names none (§3)."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from connectors.base import Connector
from connectors.sinks import DEFAULT_SENDER, EmailSink, JsonlSink
from connectors.tasks_builtin import BuiltinTasks
from engine.settings import Settings
from engine.store.db import Database


def build_connectors(settings: Settings, db: Database, clock: Callable[[], datetime]) -> dict[str, Connector]:
    """Connector name -> instance. Names: email, slack, webhook, builtin, hubspot, salesforce."""
    out: dict[str, Connector] = {"builtin": BuiltinTasks(db, clock)}
    if settings.local_sinks:
        out["email"] = EmailSink(settings.outbox_dir, DEFAULT_SENDER)
        out["slack"] = JsonlSink("slack", settings.outbox_dir / "slack.jsonl")
        out["webhook"] = JsonlSink("webhook", settings.outbox_dir / "webhook.jsonl")
        return out
    c = settings.connectors
    assert c is not None
    if c.email:
        from connectors.email_smtp import SmtpEmail

        out["email"] = SmtpEmail(c.email)
    if c.slack:
        from connectors.slack import SlackConnector

        out["slack"] = SlackConnector(c.slack)
    if c.tasks and c.tasks.hubspot:
        from connectors.tasks_hubspot import HubspotTasks

        out["hubspot"] = HubspotTasks(c.tasks.hubspot, db, clock)
    if c.tasks and c.tasks.salesforce:
        from connectors.tasks_salesforce import SalesforceTasks

        out["salesforce"] = SalesforceTasks(c.tasks.salesforce, db, clock)
    from connectors.webhook import WebhookConnector

    out["webhook"] = WebhookConnector(c.webhook)
    return out
