"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and a CLI workspace.

The suite has four tiers, one folder each (marked by folder, see `pytest_collection_modifyitems`):
unit (no database, or in-memory SQLite), integration (real SQLite files and PostgreSQL, real SMTP and HTTP
servers), reliability (processes, kill -9) and performance (statements, bytes and pages counted)."""

from __future__ import annotations

import csv
import json
import os
import textwrap
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

PG_URL = os.environ.get("PLAYBOOK_TEST_POSTGRES_URL")
PG_SKIP = ("PostgreSQL tests skipped: set PLAYBOOK_TEST_POSTGRES_URL "
           "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run them")


TIERS = ("unit", "integration", "reliability", "performance", "security")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, from the folder it is in."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@dataclass(frozen=True)
class PgSchema:
    """A fresh PostgreSQL schema: its name, and the test URL whose connections use it (and carry its name as
    their application_name)."""

    name: str
    url: str


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[PgSchema]:
    """A fresh schema in the test PostgreSQL database, dropped afterwards with its connections ended; the test
    is skipped, saying why, when PLAYBOOK_TEST_POSTGRES_URL is unset. The one way tests get a PostgreSQL."""
    if not PG_URL:
        pytest.skip(PG_SKIP)
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield PgSchema(name, f"{PG_URL}{sep}options=-csearch_path%3D{name}&application_name={name}")
    finally:
        with admin.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = :a AND pid <> pg_backend_pid()"), {"a": name})
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_schemas() -> Iterator[Any]:
    """Makes fresh PostgreSQL schemas (`make(prefix)` -> PgSchema), all dropped after the test."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield lambda prefix="t": stack.enter_context(postgres_schema(prefix))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file engine (at tmp_path / "c.db") with an empty table t (x TEXT), disposed afterwards."""
    from sqlalchemy import text

    from engine.store.database import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x TEXT)"))
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with postgres_schema("t") as schema:
        yield schema.url


BASE_CONFIG = """\
timezone: {timezone}
database: "{database}"
playbooks: playbooks/
templates: templates/
fields:
  accounts: {{health_score: number, nps: integer}}
  contacts: {{locale: string}}
segments:
  high_touch: "account.arr >= 100000"
sources:
  - {{entity: accounts, csv: data/accounts.csv}}
  - {{entity: contacts, csv: data/contacts.csv}}
  - {{entity: usage, csv: data/usage.csv}}
  - {{entity: goals, csv: data/goals.csv}}
"""

HEADERS = {
    "accounts": ["id", "name", "arr", "seats", "csm_email", "renewal_date", "created_at", "health_score", "nps",
                 "timezone", "lifecycle_stage"],
    "contacts": ["id", "account_id", "email", "name", "role", "created_at", "unsubscribed", "timezone"],
    "usage": ["account_id", "metric", "day", "value"],
    "goals": ["id", "account_id", "name", "metric", "direction", "baseline", "target", "current", "due_date",
              "status"],
}


class Workspace:
    """A working directory with config, playbooks, templates and CSV data, driven through the real CLI."""

    def __init__(self, root: Path, database: str, timezone: str = "UTC"):
        self.root = root
        self.database, self.timezone = database, timezone
        for d in ("playbooks", "templates", "data"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.configure("")
        for entity in HEADERS:
            self.data(entity, [])
        self.runner = CliRunner()

    def configure(self, extra: str) -> None:
        """(Re)write config.yaml: the base configuration plus `extra` YAML (connectors, delivery, …)."""
        base = BASE_CONFIG.format(database=self.database, timezone=self.timezone)
        (self.root / "config.yaml").write_text(base + textwrap.dedent(extra))

    def spawn(self, *args: str, **kwargs: Any) -> Any:
        """The CLI as a real separate process (for crash and concurrency tests)."""
        import subprocess
        import sys

        return subprocess.Popen([sys.executable, "-m", "engine", "--config", self.config, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)

    @property
    def config(self) -> str:
        return str(self.root / "config.yaml")

    def playbook(self, name: str, text: str) -> Path:
        path = self.root / "playbooks" / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def template(self, name: str, text: str) -> None:
        (self.root / "templates" / name).write_text(text)

    def data(self, entity: str, rows: list[dict[str, Any]]) -> None:
        with open(self.root / "data" / f"{entity}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=HEADERS[entity])
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})

    def cli(self, *args: str, expect: int | None = 0) -> Any:
        from engine.cli import main

        result = self.runner.invoke(main, ["--config", self.config, *args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (result.exit_code, result.output, result.stderr)
        return result

    def outbox_rows(self, limit: int = 100_000) -> list[dict[str, Any]]:
        """Every planned action, newest first, read straight from the database."""
        from engine.app import App

        app = App(self.config)
        try:
            with app.store.read() as tx:
                return tx.outbox.list(limit=limit)
        finally:
            app.close()

    def sync(self) -> Any:
        return self.cli("sync")

    def run(self, now: str, *extra: str) -> dict[str, Any]:
        result = self.cli("run", "--now", now, "--format", "json", *extra)
        return json.loads(result.stdout)

    def events(self, now: str, *extra: str) -> list[tuple[str, str, str, int]]:
        return [(e["playbook"], e["subject"], e["event"], e["episode"]) for e in self.run(now, *extra)["events"]]


@pytest.fixture
def ws(tmp_path: Path, db_url: str) -> Workspace:
    """A workspace on each database."""
    return Workspace(tmp_path / "ws", db_url)


@pytest.fixture
def ws_sqlite(tmp_path: Path) -> Workspace:
    """A workspace on SQLite only (for tests that are not about the database)."""
    return Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}")


class Db:
    """An opened test database with its parts at hand: the store, and beneath it the SQLAlchemy engine and the
    tables (for tests of the store itself, which read and write SQL directly)."""

    def __init__(self, url: str, custom: dict[str, dict[str, str]] | None = None, *, migrate: bool = True):
        from engine.store import Store
        from engine.store.database import open_engine

        self.engine, self.schema = open_engine(url, custom, migrate=migrate)
        self.store = Store(self.engine, self.schema)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()
