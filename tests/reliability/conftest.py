"""Reliability suite: real PostgreSQL (PLAYBOOK_TEST_POSTGRES_URL) and real processes."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import PG_SKIP, PG_URL, Workspace  # noqa: E402

@pytest.fixture
def pg_factory(tmp_path: Path) -> Any:
    """Makes workspaces, each on a fresh PostgreSQL schema, connections tagged with an application_name."""
    if not PG_URL:
        pytest.skip(PG_SKIP)
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_URL)
    made: list[str] = []

    def make() -> Workspace:
        schema = "rel_" + uuid.uuid4().hex[:10]
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
        ws = Workspace(tmp_path / schema, url)
        ws.schema_name = schema
        ws.admin = admin
        return ws

    try:
        yield make
    finally:
        with admin.begin() as conn:
            for schema in made:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = :a AND pid <> pg_backend_pid()"), {"a": schema})
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def pg_ws(pg_factory: Any) -> Any:
    """One workspace on a fresh PostgreSQL schema."""
    return pg_factory()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
