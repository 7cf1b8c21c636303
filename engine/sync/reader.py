"""What a sync source plugin gives the runner: a Reader of `(location, raw row)` pairs.

A reader is a context manager; once open it knows its `columns` (CSV header, SQL result columns;
None for JSON lines, whose keys vary per line) and iterates `(location, raw)` pairs where location
is the file line number (a CSV header is line 1) or the result row number, and raw is a dict of
column -> raw value, or an `Unreadable` when the row cannot be read at all.
A problem with the source as a whole (missing file, failing query) raises `SourceError`.
`batches` gives the same rows in batches of lists (a CSV reader reads them so, without a dict per row).
A reader's `formats` say how its text values are written when not as ISO and Python do (a date format,
a decimal comma, thousands separators); the runner types that reader's rows with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from engine.errors import Diagnostic
from engine.sync.coerce import ISO, ValueFormats

EPOCH = datetime(1970, 1, 1)


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
BATCH = 1000        # rows per batch (a batch typed column by column stays in the CPU caches)


@dataclass(slots=True)
class Batch:
    """Rows in the order the reader read them, at `lines`: lists of raw values in the order of `columns`; or,
    when `columns` is None, rows that could not be read (`Unreadable`). `texts`: every value is a str."""

    columns: tuple[str, ...] | None
    lines: list[int]
    rows: list[Any]
    texts: bool = False


def rows_of(batches: Iterator[Batch]) -> Iterator[Row]:
    """The `(location, raw)` rows of batches."""
    for batch in batches:
        if batch.columns is None:
            yield from zip(batch.lines, batch.rows)
        else:
            names = batch.columns
            for line, values in zip(batch.lines, batch.rows):
                yield line, dict(zip(names, values))


class Reader:
    """Base of the source readers: a context manager that iterates `(location, raw)` rows."""

    label: str
    columns: tuple[str, ...] | None = None
    formats: ValueFormats = ISO

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

    def batches(self, size: int = BATCH) -> Iterator[Batch]:
        """The rows in batches of at most `size`; each batch's rows name the same columns (consecutive rows that
        name other columns start a new batch)."""
        columns: tuple[str, ...] | None = None
        lines: list[int] = []
        rows: list[Any] = []
        for line, raw in self:
            names = None if isinstance(raw, Unreadable) else tuple(raw)
            if names != columns or len(rows) >= size or names is None:
                if rows:
                    yield Batch(columns, lines, rows)
                columns, lines, rows = names, [], []
            lines.append(line)
            rows.append(raw if names is None else list(raw.values()))  # type: ignore[union-attr]
        if rows:
            yield Batch(columns, lines, rows)

    def estimate_total(self) -> int | None:
        """About how many rows the source holds, for a progress bar; None when unknown."""
        return None

    def fail(self, message: str, line: int | None = None, hint: str | None = None) -> SourceError:
        return SourceError(Diagnostic(self.label, line, None, message, hint))
