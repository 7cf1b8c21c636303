"""Table definitions: the synced data model (§4) with custom fields, and the engine's own state; and the
base of the repositories that read and write them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (JSON, BigInteger, Boolean, Column, Connection, Date, DateTime, Float, Index, Integer,
                        MetaData, PrimaryKeyConstraint, String, Table, Text, UniqueConstraint, false, func, true)

from engine.datamodel import CORE_FIELDS, FIELD_TYPE_NAMES, KEYS

FIELD_TYPES = {
    "string": String,
    "integer": BigInteger,
    "number": Float,
    "boolean": Boolean,
    "date": Date,
    "datetime": DateTime,
}

assert tuple(FIELD_TYPES) == FIELD_TYPE_NAMES


@dataclass(frozen=True, eq=False)      # compared and hashed by identity: one per opened store
class Schema:
    """All tables, built for one configuration's custom fields."""

    metadata: MetaData
    accounts: Table
    contacts: Table
    usage: Table
    goals: Table
    history: dict[str, Table]        # entity -> its superseded versions (engine/store/field_history.py)
    episodes: Table
    events: Table
    runs: Table
    outbox: Table
    attempts: Table
    tasks: Table
    contact_sends: Table
    sync_state: Table
    suppressions: Table
    leases: Table
    playbook_state: Table
    metric_caches: Table
    match_state: Table
    playbook_bits: Table
    journeys: Table

    def entity(self, name: str) -> Table:
        """The table of a synced entity by its name."""
        return getattr(self, name)


def _entity_table(metadata: MetaData, name: str, custom: dict[str, str]) -> Table:
    cols = []
    keys = KEYS[name]
    for field, ftype in {**CORE_FIELDS[name], **custom}.items():
        cols.append(Column(field, FIELD_TYPES[ftype](), primary_key=field in keys,
                           nullable=field not in keys))
    if name != "usage":
        cols.append(Column("removed_at", DateTime, nullable=True))
    cols.append(Column("synced_at", DateTime, nullable=True))
    # usage rows are small and many: on SQLite one B-tree keyed by (account_id, metric, day), whose secondary
    # indexes then hold the key (the usage rows a sync wrote are read from ix_usage_synced_at alone)
    return Table(name, metadata, *cols, sqlite_with_rowid=name != "usage")


def _history_table(metadata: MetaData, entity: Table) -> Table:
    """`<entity>_history`: the versions of the entity's rows that a later sync replaced (§18). The fields (and
    `removed_at`) of the version, `valid_from` (the `synced_at` it had) and `valid_to` (when it was replaced);
    keyed by the entity's key and `valid_from`, one B-tree on SQLite."""
    keys = KEYS[entity.name]
    cols = [Column(c.name, c.type, primary_key=c.name in keys, nullable=c.name not in keys)
            for c in entity.c if c.name != "synced_at"]
    cols.append(Column("valid_from", DateTime, primary_key=True))
    cols.append(Column("valid_to", DateTime, nullable=False))
    return Table(f"{entity.name}_history", metadata, *cols, sqlite_with_rowid=False)


def build_schema(custom_fields: dict[str, dict[str, str]] | None = None) -> Schema:
    """Tables for the data model plus the custom fields declared in the configuration."""
    custom_fields = custom_fields or {}
    md = MetaData()
    accounts = _entity_table(md, "accounts", custom_fields.get("accounts", {}))
    contacts = _entity_table(md, "contacts", custom_fields.get("contacts", {}))
    usage = _entity_table(md, "usage", {})
    goals = _entity_table(md, "goals", custom_fields.get("goals", {}))
    # the indexes a tick finds changed subjects through carry their ids: those reads never visit the rows
    Index("ix_contacts_account", contacts.c.account_id, contacts.c.id)
    Index("ix_contacts_email_lower", func.lower(contacts.c.email))
    Index("ix_goals_account", goals.c.account_id, goals.c.id)
    for table in (accounts, contacts, goals):      # a tick reads what changed since its last scan
        Index(f"ix_{table.name}_synced_at", table.c.synced_at, table.c.id)
    Index("ix_usage_metric_account_day", usage.c.metric, usage.c.account_id, usage.c.day, usage.c.value)
    Index("ix_usage_synced_at", usage.c.synced_at)
    history = {t.name: _history_table(md, t) for t in (accounts, contacts, goals, usage)}

    episodes = Table(
        "episodes", md,
        Column("playbook_id", String, primary_key=True),
        Column("subject_type", String, primary_key=True),
        Column("subject_id", String, primary_key=True),
        Column("is_open", Boolean, nullable=False),
        Column("episode", Integer, nullable=False),        # number of the current/last episode
        Column("firing", Integer, nullable=False),         # firings in the current/last episode
        Column("started_at", DateTime, nullable=True),
        Column("last_fired_at", DateTime, nullable=True),
        Column("resolved_at", DateTime, nullable=True),
        # opened at the playbook's activation for a subject that already matched: no actions, no events (§12)
        Column("baselined", Boolean, nullable=False, server_default=false()),
        # one B-tree: a transition rewrites one page, not a row page and a key page; the per-playbook reads
        # (open episodes, repeats due, cooldowns) are ranges of the key, read without a second lookup
        sqlite_with_rowid=False,
    )
    # closed episodes by when they resolved: the subjects whose cooldown ended since the last scan are a range
    # of it (state.cooldown_ended). Only closed ones: opening an episode adds no entry, resolving appends one
    # at the end of its playbook's range.
    closed = episodes.c.is_open.is_(False)
    Index("ix_episodes_resolved", episodes.c.playbook_id, episodes.c.subject_type, episodes.c.resolved_at,
          sqlite_where=closed, postgresql_where=closed)
    events = Table(
        "events", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, nullable=True),
        Column("at", DateTime, nullable=False),
        Column("playbook_id", String, nullable=False),
        Column("subject_type", String, nullable=False),
        Column("subject_id", String, nullable=False),
        Column("event", String, nullable=False),           # enter | repeat | resolve
        Column("episode", Integer, nullable=False),
        Column("firing", Integer, nullable=False),
        Column("detail", JSON, nullable=True),
    )
    Index("ix_events_subject", events.c.subject_type, events.c.subject_id)
    Index("ix_events_playbook", events.c.playbook_id, events.c.at)
    runs = Table(
        "runs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String, nullable=False),            # run | sync | dispatch
        Column("started_at", DateTime, nullable=False),
        Column("finished_at", DateTime, nullable=True),
        Column("now", DateTime, nullable=True),
        Column("playbook_id", String, nullable=True),
        Column("status", String, nullable=False),
        Column("detail", JSON, nullable=True),
    )
    outbox = Table(
        "outbox", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dedup_key", String, nullable=False),
        Column("playbook_id", String, nullable=False),
        Column("subject_type", String, nullable=False),
        Column("subject_id", String, nullable=False),
        Column("episode", Integer, nullable=False),
        Column("firing", String, nullable=False),
        Column("action_index", Integer, nullable=False),
        Column("kind", String, nullable=False),
        Column("connector", String, nullable=False),
        Column("payload", JSON, nullable=False),
        Column("status", String, nullable=False),          # pending | claimed | sent | failed | suppressed | cancelled
                                                           # | digest (waits for its digest) | collected (in one)
        Column("attempts", Integer, nullable=False, default=0),
        Column("not_before", DateTime, nullable=False),
        Column("expires_at", DateTime, nullable=True),
        Column("lease_owner", String, nullable=True),
        Column("lease_until", DateTime, nullable=True),
        Column("lease_token", Integer, nullable=False, default=0),
        Column("ambiguous", Boolean, nullable=False, default=False),
        Column("last_error", Text, nullable=True),
        Column("result", JSON, nullable=True),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Column("finished_at", DateTime, nullable=True),
        # the contact policy (engine/contact_policy.py), set when config.yaml has one:
        Column("policy", String, nullable=True),            # customer | exempt | NULL (internal)
        Column("account_id", String, nullable=True),        # the recipient's account and contact (for the caps)
        Column("contact_id", String, nullable=True),
        Column("zone", String, nullable=True),              # the recipient's time zone
        Column("note", Text, nullable=True),                # why it waits: quiet hours, business days, a cap
        # digests (engine/digests.py): an item's digest (digest/<connector>/<recipient>, then with its time once
        # collected) and what the digest lists of it; on a digest, its recipient and period
        Column("digest_key", String, nullable=True),
        Column("digest", JSON, nullable=True),
        UniqueConstraint("dedup_key", name="uq_outbox_dedup_key"),
    )
    Index("ix_outbox_due", outbox.c.status, outbox.c.not_before)
    in_digest = outbox.c.digest_key.is_not(None)   # only digest items: a digest's outcome reaches its items by it
    Index("ix_outbox_digest_key", outbox.c.digest_key, sqlite_where=in_digest, postgresql_where=in_digest)
    customer = outbox.c.policy == "customer"    # only customer-facing rows: previews count what waits per recipient
    Index("ix_outbox_customer_contact", outbox.c.contact_id, sqlite_where=customer, postgresql_where=customer)
    Index("ix_outbox_customer_account", outbox.c.account_id, sqlite_where=customer, postgresql_where=customer)
    # customer-facing messages sent (or about to be: reserved) per contact and account, for frequency caps
    contact_sends = Table(
        "contact_sends", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("outbox_id", Integer, nullable=False),
        Column("contact_id", String, nullable=True),
        Column("account_id", String, nullable=True),
        Column("at", DateTime, nullable=False),
        Column("state", String, nullable=False),           # reserved | sent
    )
    Index("ix_contact_sends_contact", contact_sends.c.contact_id, contact_sends.c.at)
    Index("ix_contact_sends_account", contact_sends.c.account_id, contact_sends.c.at)
    Index("ix_contact_sends_outbox", contact_sends.c.outbox_id)
    attempts = Table(
        "attempts", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("outbox_id", Integer, nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("at", DateTime, nullable=False),
        Column("outcome", String, nullable=False),         # sent | transient | permanent | suppressed | ambiguous
        Column("detail", Text, nullable=True),
        Column("worker", String, nullable=True),
    )
    Index("ix_attempts_outbox", attempts.c.outbox_id)
    tasks = Table(
        "tasks", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dedup_key", String, nullable=False),
        Column("connector", String, nullable=False),
        Column("external_id", String, nullable=True),
        Column("playbook_id", String, nullable=False),
        Column("subject_type", String, nullable=False),
        Column("subject_id", String, nullable=False),
        Column("episode", Integer, nullable=False),
        Column("title", Text, nullable=False),
        Column("description", Text, nullable=True),
        Column("assignee", String, nullable=True),
        Column("priority", String, nullable=False),
        Column("due_at", DateTime, nullable=True),
        Column("status", String, nullable=False),          # open | closed (by a resolve) | done (by a person)
        Column("close_on_resolve", Boolean, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("closed_at", DateTime, nullable=True),
        Column("note", Text, nullable=True),                # what the person who marked it done said
        Column("snoozed_until", DateTime, nullable=True),
        UniqueConstraint("dedup_key", name="uq_tasks_dedup_key"),
    )
    Index("ix_tasks_episode", tasks.c.playbook_id, tasks.c.subject_type, tasks.c.subject_id, tasks.c.episode)
    sync_state = Table(
        "sync_state", md,
        Column("entity", String, primary_key=True),
        Column("synced_at", DateTime, nullable=False),
        Column("rows", Integer, nullable=False),
        Column("removed", Integer, nullable=False),
        Column("removed_stamp", DateTime, nullable=True),    # stamp of the latest sync that removed rows
    )
    suppressions = Table(
        "suppressions", md,
        Column("email", String, primary_key=True),          # lower-cased address
        Column("reason", String, nullable=False),           # unsubscribed | bounced | manual
        Column("at", DateTime, nullable=False),
        Column("detail", Text, nullable=True),
    )
    leases = Table(
        "leases", md,
        Column("name", String, primary_key=True),
        Column("owner", String, nullable=False),
        Column("token", Integer, nullable=False),
        Column("until", DateTime, nullable=False),
    )
    playbook_state = Table(
        "playbook_state", md,
        Column("playbook_id", String, primary_key=True),
        Column("last_evaluated_at", DateTime, nullable=True),   # wall clock, UTC
        Column("last_now", DateTime, nullable=True),            # the evaluation instant (--now)
        Column("status", String, nullable=False),               # ok | blocked | stale | error
        Column("detail", JSON, nullable=True),
        Column("source_hash", String, nullable=True),
        Column("scan", JSON, nullable=True),                    # engine/scope.py: what the last scan saw
        # False once the playbook is disabled or its file removed: its next evaluation is an activation (§12)
        Column("active", Boolean, nullable=False, server_default=true()),
        Column("activated_at", DateTime, nullable=True),
    )
    metric_caches = Table(
        "metric_caches", md,                                     # tables built by store/metric_cache.py
        Column("name", String, primary_key=True),
        Column("built_at", DateTime, nullable=False),
        Column("used_at", DateTime, nullable=False),
        Column("usage_stamp", DateTime, nullable=True),          # newest usage.synced_at it reflects
    )
    # One bit per (playbook, subject): set while the subject is in an open episode of that playbook.
    # A tick evaluates all playbooks of a subject type in one scan and returns only subjects whose
    # bits change (store/scans.py); episodes stays the full record.
    match_state = Table(
        "match_state", md,
        Column("subject_type", String, nullable=False),
        Column("subject_id", String, nullable=False),
        Column("word", Integer, nullable=False),
        Column("mask", BigInteger, nullable=False),
        # word before subject_id: `subject_id IN (…)` is then part of the index condition (PostgreSQL otherwise
        # filters every subject of the type when its statistics are stale)
        PrimaryKeyConstraint("subject_type", "word", "subject_id", name="pk_match_state"),
        sqlite_with_rowid=False,      # one B-tree: an upsert touches one page, not a row page and an index page
    )
    playbook_bits = Table(
        "playbook_bits", md,
        Column("playbook_id", String, primary_key=True),
        Column("subject_type", String, nullable=False),
        Column("word", Integer, nullable=False),
        Column("bit", Integer, nullable=False),
        UniqueConstraint("subject_type", "word", "bit", name="uq_playbook_bits_slot"),
    )
    # Where each subject is in a journey (§14): the wait it rests at and when that wait is over. A run finds the
    # due ones as a range of ix_journeys_due, which holds only the active journeys (an ended one has no due time):
    # a million subjects waiting cost nothing until their steps are due. A rowid table on purpose: rows lie in
    # the order subjects entered, and subjects that entered together come due together, so a run rewrites a few
    # pages of them, not one page per subject; the subject's unique key never changes, so updates leave it alone.
    journeys = Table(
        "journeys", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("playbook_id", String, nullable=False),
        Column("subject_type", String, nullable=False),
        Column("subject_id", String, nullable=False),
        Column("episode", Integer, nullable=False),
        Column("status", String, nullable=False),           # active | completed | exited
        Column("step", String, nullable=True),              # the wait step id it rests at (active)
        Column("due_at", DateTime, nullable=True),          # when that wait is over (active only)
        Column("since", DateTime, nullable=False),          # when it arrived there (or ended)
        Column("started_at", DateTime, nullable=False),
        Column("reason", Text, nullable=True),              # why it ended
        UniqueConstraint("playbook_id", "subject_type", "subject_id", name="uq_journeys_subject"),
    )
    waiting = journeys.c.due_at.is_not(None)
    Index("ix_journeys_due", journeys.c.playbook_id, journeys.c.subject_type, journeys.c.due_at,
          sqlite_where=waiting, postgresql_where=waiting)
    return Schema(md, accounts, contacts, usage, goals, history,
                  episodes, events, runs, outbox, attempts, tasks, contact_sends,
                  sync_state, suppressions, leases, playbook_state, metric_caches, match_state, playbook_bits,
                  journeys)


class Repository:
    """The statements of one part of the schema, run on one connection (bound by `engine.store.Tx`)."""

    def __init__(self, conn: Connection, schema: Schema):
        self.conn, self.schema = conn, schema
        self.dialect: str = conn.dialect.name
