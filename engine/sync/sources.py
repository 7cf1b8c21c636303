"""Readers of sync sources (§4): CSV files, JSON-lines files and SQL queries.

A reader is a context manager; once open it knows its `columns` (CSV header, SQL result columns;
None for JSON lines, whose keys vary per line) and iterates `(location, raw)` pairs where location
is the CSV/JSONL file line number (the CSV header is line 1) or the SQL result row number, and raw
is a dict of column -> raw value, or an `Unreadable` when the row cannot be read at all.
A problem with the source as a whole (missing file, failing query) raises `SourceError`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from engine.errors import Diagnostic
from engine.settings import Settings, Source

EPOCH = datetime(1970, 1, 1)
_SINCE = re.compile(r"(?<!:):since\b")


class SourceError(Exception):
    """The source cannot be read at all; nothing of its entity may change."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic
        super().__init__(str(diagnostic))


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A row that could not be parsed (bad JSON, too many CSV values); `message` says why."""

    message: str


Row = tuple[int, "dict[str, Any] | Unreadable"]


class Reader:
    """Base of the source readers: a context manager that iterates `(location, raw)` rows."""

    label: str
    columns: tuple[str, ...] | None = None

    def __enter__(self) -> Reader:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open the source; raise SourceError when it cannot be read."""

    def close(self) -> None:
        """Release the file or connection."""

    def __iter__(self) -> Iterator[Row]:
        raise NotImplementedError

    def estimate_total(self) -> int | None:
        """About how many rows the source holds, for a progress bar; None when unknown."""
        return None

    def fail(self, message: str, line: int | None = None, hint: str | None = None) -> SourceError:
        return SourceError(Diagnostic(self.label, line, None, message, hint))


class _FileReader(Reader):
    def __init__(self, path: Path, label: str):
        self.path = path
        self.label = label
        self._fh: Any = None

    def open(self) -> None:
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise self.fail("file not found", hint=f"looked for {self.path}") from None
        except OSError as exc:
            raise self.fail(f"cannot read file: {exc.strerror}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _count_lines(self) -> int:
        count = 0
        with open(self.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                count += chunk.count(b"\n")
        return count

    def _lines(self) -> Iterator[str]:
        """The file's lines as text (UTF-8, a leading BOM dropped); a line that is not UTF-8 fails the source."""
        for number, raw in enumerate(self._fh, 1):
            try:
                text_line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("the file is not UTF-8 text", number, "save or export it as UTF-8") from None
            if number == 1 and text_line.startswith("\ufeff"):
                text_line = text_line[1:]
            yield text_line


class CsvReader(_FileReader):
    """A CSV file with a header row; a row shorter than the header has its last columns empty."""

    def open(self) -> None:
        super().open()
        self._reader = csv.reader(self._lines())
        try:
            header = next(self._reader)
        except StopIteration:
            raise self.fail("the file is empty (a CSV source needs a header row)") from None
        names = [name.strip() for name in header]
        seen: set[str] = set()
        for name in names:
            if name and name in seen:
                raise self.fail(f"column `{name}` appears twice in the header", 1)
            seen.add(name)
        self.columns = tuple(names)

    def __iter__(self) -> Iterator[Row]:
        names = self.columns or ()
        width = len(names)
        previous = self._reader.line_num
        while True:
            try:
                values = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self.fail(f"cannot parse CSV: {exc}", previous + 1) from None
            line, previous = previous + 1, self._reader.line_num
            if not values or (len(values) == 1 and not values[0].strip() and width != 1):
                continue  # blank line
            if len(values) > width:
                if any(v.strip() for v in values[width:]):
                    yield line, Unreadable(f"row has {len(values)} values but the header has {width} columns")
                    continue
                values = values[:width]
            elif len(values) < width:
                values = values + [""] * (width - len(values))
            yield line, dict(zip(names, values))

    def estimate_total(self) -> int | None:
        return max(self._count_lines() - 1, 0)


class JsonlReader(_FileReader):
    """One JSON object per line; blank lines are skipped."""

    def __iter__(self) -> Iterator[Row]:
        for line, text_line in enumerate(self._lines(), 1):
            if not text_line.strip():
                continue
            try:
                obj = json.loads(text_line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield line, Unreadable(f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                kind = "a list" if isinstance(obj, list) else f"a {type(obj).__name__}"
                yield line, Unreadable(f"expected a JSON object, got {kind}")
                continue
            yield line, obj

    def estimate_total(self) -> int | None:
        return self._count_lines()


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
        orig = getattr(exc, "orig", None) or exc
        lines = str(orig).strip().splitlines()
        message = f"{type(orig).__name__}: {lines[0] if lines else ''}"
        try:
            password = make_url(self.url).password
        except Exception:  # noqa: BLE001
            password = None
        if password:
            message = message.replace(str(password), "***")
        return message


def source_labels(sources: list[Source]) -> list[str]:
    """How each source is named in messages: its file path as written, or `sql:<entity>` (`#n` if several)."""
    sql_count: dict[str, int] = {}
    for source in sources:
        if source.kind == "sql":
            sql_count[source.entity] = sql_count.get(source.entity, 0) + 1
    labels, seen = [], dict.fromkeys(sql_count, 0)
    for source in sources:
        if source.kind == "sql":
            seen[source.entity] += 1
            labels.append(f"sql:{source.entity}" if sql_count[source.entity] == 1
                          else f"sql:{source.entity}#{seen[source.entity]}")
        else:
            labels.append(str(source.csv or source.jsonl))
    return labels


def open_source(source: Source, settings: Settings, label: str, since: datetime | None) -> Reader:
    """A reader of one configured source (not yet opened: use it in a `with` block)."""
    if source.csv is not None:
        return CsvReader(settings.resolve(source.csv), label)
    if source.jsonl is not None:
        return JsonlReader(settings.resolve(source.jsonl), label)
    assert source.sql is not None
    return SqlReader(_resolve_url(settings, source.sql.url), source.sql.query, label, since or EPOCH)


def _resolve_url(settings: Settings, url: str) -> str:
    """A relative SQLite path in a source URL is read against the config file's folder."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        rel = url[len("sqlite:///"):]
        if rel:
            return "sqlite:///" + str(settings.resolve(rel))
    return url
