"""The migrations build exactly the tables engine/store/schema.py describes (on SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from engine.store.db import open_database

CUSTOM = {"accounts": {"health_score": "number", "nps": "integer"}, "contacts": {"locale": "string"}}


def test_migrated_database_matches_the_schema(db_url: str) -> None:
    db = open_database(db_url, CUSTOM)
    try:
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.schema.metadata)
                    if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
            assert diff == []
            # not compared by alembic: the order of primary key columns, and the table layout SQLite was told to use
            assert inspect(conn).get_pk_constraint("match_state")["constrained_columns"] == [
                "subject_type", "word", "subject_id"]
            if db.dialect == "sqlite":
                for table in ("match_state", "episodes"):
                    ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
                    assert ddl.rstrip().upper().endswith("WITHOUT ROWID"), table
    finally:
        db.dispose()


def test_episodes_survive_the_move_to_one_btree_and_back(db_url: str) -> None:
    """0007 rebuilds episodes on SQLite (without rowid) and drops the is_open index: rows are kept both ways."""
    from alembic import command

    from engine.store.db import make_engine
    from engine.store.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine)
    row = {"p": "pb", "t": "account", "s": "acc-1", "o": True, "e": 2, "f": 3, "at": "2026-01-02 03:04:05"}
    select_row = "SELECT playbook_id, subject_type, subject_id, is_open, episode, firing FROM episodes"

    def state() -> tuple[list[tuple], bool]:
        """The episode rows, and whether the (playbook_id, is_open) index exists."""
        with engine.connect() as conn:
            return ([tuple(r) for r in conn.execute(text(select_row))],
                    "ix_episodes_open" in {i["name"] for i in inspect(conn).get_indexes("episodes")})
    try:
        command.upgrade(cfg, "0006")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO episodes (playbook_id, subject_type, subject_id, is_open, episode, firing, "
                              "started_at, last_fired_at) VALUES (:p, :t, :s, :o, :e, :f, :at, :at)"), row)
        command.upgrade(cfg, "head")
        assert state() == ([("pb", "account", "acc-1", True, 2, 3)], False)
        command.downgrade(cfg, "0006")
        assert state() == ([("pb", "account", "acc-1", True, 2, 3)], True)
    finally:
        engine.dispose()
