"""Alembic migrations, applied automatically when the database is opened."""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None) -> Config:
    """An Alembic Config pointing at our migrations; the engine is handed over in attributes."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@cache
def revisions() -> tuple[frozenset[str], frozenset[str]]:
    """Every revision of the migrations, and the newest ones (read once: Alembic compiles each script)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(None))
    return frozenset(s.revision for s in script.walk_revisions()), frozenset(script.get_heads())


def current(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (none for a new database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call on every open: a database already there is left
    alone without running Alembic)."""
    if current(engine) != revisions()[1]:
        command.upgrade(alembic_config(engine), "head")


def upgrade_problem(engine: Engine, tables: Collection[str]) -> str | None:
    """Why the database cannot be brought to the newest revision, or None: it is at a revision these
    migrations do not know (a newer playbook-engine wrote it, or another application using Alembic), or it
    has no revision but holds one of our `tables` (another application's database)."""
    at = current(engine)
    unknown = sorted(at - revisions()[0])
    if unknown:
        return (f"the database is at schema revision `{unknown[0]}`, which this version of playbook-engine "
                "does not know: a newer version (or another application) wrote it")
    if at:
        return None
    with engine.connect() as conn:
        existing = set(inspect(conn).get_table_names())
    clash = sorted(existing & set(tables))
    if clash:
        return (f"the database already has a table `{clash[0]}` that playbook-engine did not create: it belongs "
                "to another application")
    return None
