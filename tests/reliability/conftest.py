"""Reliability suite: real PostgreSQL (PLAYBOOK_TEST_POSTGRES_URL) and real processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace

@pytest.fixture
def pg_factory(tmp_path: Path, pg_schemas: Any) -> Any:
    """Makes workspaces, each on a fresh PostgreSQL schema (its connections named after it), with `admin`: an
    engine outside the schema, to end its connections."""
    from sqlalchemy import create_engine

    from conftest import PG_URL

    admin = create_engine(PG_URL) if PG_URL else None

    def make() -> Workspace:
        schema = pg_schemas("rel")
        ws = Workspace(tmp_path / schema.name, schema.url)
        ws.schema_name, ws.admin = schema.name, admin
        return ws

    yield make
    if admin is not None:
        admin.dispose()


@pytest.fixture
def pg_ws(pg_factory: Any) -> Any:
    """One workspace on a fresh PostgreSQL schema."""
    return pg_factory()


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
