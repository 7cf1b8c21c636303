"""The `sql` sync source: the rows of a query against any SQLAlchemy URL (a user's warehouse).

`{entity: usage, sql: {url: "${WAREHOUSE_URL}", query: "select … where day >= :since"}}`: a query that uses
`:since` is bound to the entity's last sync time and is incremental by default (it only upserts)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from engine.plugins import SourceEnv, SourcePlugin
from engine.sync.reader import Reader, Row

_SINCE = re.compile(r"(?<!:):since\b")


class SqlSource(BaseModel):
    """A `sql` source's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    query: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from engine.store.database import url_problem

        problem = url_problem(v, supported=None)      # any database SQLAlchemy can read, with its driver
        if problem:
            raise ValueError(problem)
        return v


class SqlReader(Reader):
    """The rows of a SQL query; `:since` (when the query uses it) is bound to the last sync time."""

    def __init__(self, url: str, query: str, label: str, since: datetime):
        self.url = url
        self.query = query
        self.label = label
        self.since = since
        self._engine: Any = None
        self._conn: Any = None
        self._result: Any = None

    def open(self) -> None:
        params = {"since": self.since} if _SINCE.search(self.query) else {}
        try:
            self._engine = create_engine(self.url, poolclass=NullPool)
            self._conn = self._engine.connect()
            self._result = self._conn.execution_options(stream_results=True, yield_per=5000).execute(
                text(self.query), params)
            self.columns = tuple(str(k) for k in self._result.keys())
        except Exception as exc:  # noqa: BLE001 - any driver error is reported the same way
            self.close()
            raise self.fail(f"the query failed: {self._describe(exc)}",
                            hint="check the source's `sql.url` and `sql.query` in config.yaml") from None

    def __iter__(self) -> Iterator[Row]:
        names = self.columns or ()
        try:
            for number, row in enumerate(self._result, 1):
                yield number, dict(zip(names, row))
        except Exception as exc:  # noqa: BLE001
            raise self.fail(f"reading the query results failed: {self._describe(exc)}") from None

    def close(self) -> None:
        for closer in (self._result, self._conn):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - closing after a failure must not hide it
                    pass
        if self._engine is not None:
            self._engine.dispose()
        self._result = self._conn = self._engine = None

    def _describe(self, exc: BaseException) -> str:
        """The error's first line, with any password of the URL blanked out (secrets never print)."""
        from engine.redact import redact, remember_url

        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        message = f"{type(orig).__name__}: {lines[0] if lines else ''}"
        try:
            password = make_url(self.url).password
        except Exception:  # noqa: BLE001
            password = None
        if password:
            message = message.replace(str(password), "***")
        remember_url(self.url)
        return redact(message)


class SqlPlugin(SourcePlugin):
    name = "sql"
    config = SqlSource

    def incremental(self, config: SqlSource) -> bool:
        return bool(_SINCE.search(config.query))

    def open(self, config: SqlSource, env: SourceEnv) -> Reader:
        return SqlReader(_resolve_url(env, config.url), config.query, env.label, env.since)


def _resolve_url(env: SourceEnv, url: str) -> str:
    """A relative SQLite path in a source URL is read against the config file's folder."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        rel = url[len("sqlite:///"):]
        if rel:
            return "sqlite:///" + str(env.resolve(rel))
    return url


plugin = SqlPlugin()
