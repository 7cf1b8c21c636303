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
                ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'match_state'")).scalar_one()
                assert ddl.rstrip().upper().endswith("WITHOUT ROWID")
    finally:
        db.dispose()
