"""What a sync source plugin gives the runner: a Reader of `(location, raw row)` pairs.

A reader is a context manager; once open it knows its `columns` (CSV header, SQL result columns;
None for JSON lines, whose keys vary per line) and iterates `(location, raw)` pairs where location
is the file line number (a CSV header is line 1) or the result row number, and raw is a dict of
column -> raw value, or an `Unreadable` when the row cannot be read at all.
A problem with the source as a whole (missing file, failing query) raises `SourceError`.
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

    def estimate_total(self) -> int | None:
        """About how many rows the source holds, for a progress bar; None when unknown."""
        return None

    def fail(self, message: str, line: int | None = None, hint: str | None = None) -> SourceError:
        return SourceError(Diagnostic(self.label, line, None, message, hint))
