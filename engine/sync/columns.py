"""Column-wise typing of a batch of rows: the checks of `RowChecker`, compiled once per list of columns.

A reader gives rows in batches (lists of raw values in the order of its columns, see `Reader.batches`). A
`BatchChecker` types a batch column by column: each field's column goes through one converter chosen from the
field's declared type when the batch checker is built (a builtin mapped over the whole column where that gives
exactly what the field's coercer gives, e.g. `float` over text for a number; a dictionary from text to value for
dates, which repeat; the coercer itself otherwise), then the per-row checks that can fail (required values,
declared values, time zones, goal directions) are set checks over the column. A batch in which any check fails
is not typed (`check` returns None): the caller checks its rows one by one with `RowChecker.check`, which says
each problem. The values come out as the database stores them (`processors`: SQLite's date text), as one tuple
per row in the order of `fields`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from math import isfinite
from typing import Any

from engine.sync.coerce import ISO, CoerceError, Coercer, to_integer, to_number, to_string
from engine.sync.validate import DIRECTIONS, RowChecker

Column = Sequence[Any]
Converter = Callable[[Column, bool], Column]    # (values, all text?) -> values; raises _Invalid on a bad value
REMEMBERED = 4096                           # distinct texts a date column's converter keeps


class _Invalid(Exception):
    """A value of the batch fails a check: the batch is checked row by row."""


class BatchChecker:
    """`RowChecker`'s checks of rows whose raw values come in the order of `columns`."""

    def __init__(self, checker: RowChecker, columns: Sequence[str],
                 processors: Mapping[str, Callable[[Any], Any]] | None = None):
        self.checker = checker
        self.columns = tuple(columns)
        first = {}
        for index, name in enumerate(self.columns):
            if name in checker.fields and name not in first:
                first[name] = index
        self.fields: tuple[str, ...] = tuple(first)
        self.index = tuple(first.values())
        self.complete = all(name in first for name in checker.required)     # else no row can be valid
        processors = processors or {}
        self.processors = {n: p for n, p in processors.items() if n in first}
        self.converters = [self._converter(name, processors.get(name)) for name in self.fields]
        self.key = tuple(self.fields.index(k) for k in checker.key) if self.complete else ()

    def check(self, rows: Sequence[Sequence[Any]], lines: Sequence[int],
              texts: bool = False) -> list[tuple[Any, ...]] | None:
        """The typed rows (tuples in the order of `fields`, each row's line last), or None when a row of the
        batch may be invalid. `texts`: every raw value is a str (else each column is looked at)."""
        if not self.complete or not rows:
            return None if rows else []
        try:
            raw = list(zip(*rows))
            if len(raw) != len(self.columns):
                return None
            typed = [convert(raw[i], texts) for convert, i in zip(self.converters, self.index)]
        except _Invalid:
            return None
        return list(zip(*typed, lines))

    def stored(self, values: Mapping[str, Any], line: int) -> tuple[Any, ...]:
        """A row `RowChecker.check` found valid, as `check` gives it (its values in the database's form)."""
        return (*(self._form(name, values.get(name)) for name in self.fields), line)

    def stored_key(self, key: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """A key `RowChecker.check` gave, in the database's form."""
        return None if key is None else tuple(self._form(n, v) for n, v in zip(self.checker.key, key))

    def _form(self, name: str, value: Any) -> Any:
        proc = self.processors.get(name)
        return value if proc is None or value is None else proc(value)

    def _converter(self, name: str, proc: Callable[[Any], Any] | None) -> Converter:
        checker = self.checker
        ftype = checker.fields[name]
        coerce = checker.coercers[name]
        iso = checker.formats == ISO
        required = name in checker.required
        allowed = checker.declared.get(name, (None,))[0]
        zone = name in checker.zones
        direction = checker.entity == "goals" and name == "direction"
        if ftype == "number" and proc is not None and getattr(proc, "__name__", "") == "to_float":
            proc = None                         # (a number is already a float)
        if ftype in ("date", "datetime", "boolean"):
            convert = _remembered(coerce, proc)
            proc = None
        elif ftype == "string":
            convert = _stripped if required else _strings
        elif ftype == "number" and iso:
            convert = _numbers
        elif ftype == "integer" and iso:
            convert = _integers
        else:
            convert = _mapped(coerce)

        def column(values: Column, texts: bool) -> Column:
            values = convert(values, texts)
            if required and None in values:
                raise _Invalid
            if allowed is not None and not _within(values, allowed):
                raise _Invalid
            if zone and not _within(values, checker.zone_names):
                raise _Invalid
            if direction:
                values = [v if v is None else v.strip().lower() for v in values]
                if not _within(values, DIRECTIONS):
                    raise _Invalid
            if proc is not None:
                values = [v if v is None else proc(v) for v in values]
            return values

        return column


def _within(values: Column, allowed: Collection[Any]) -> bool:
    present = set(values)
    present.discard(None)
    return present.issubset(allowed)


def _texts(values: Column) -> bool:
    """Whether every value is a plain str (the converters' builtins are exact for text only)."""
    return set(map(type, values)) == {str}


def _mapped(coerce: Coercer) -> Converter:
    def convert(values: Column, texts: bool = False) -> Column:
        try:
            return list(map(coerce, values))
        except CoerceError:
            raise _Invalid from None
    return convert


def _strings(values: Column, texts: bool) -> Column:
    """`to_string` of each value: text as is (empty or blank: None); none may hold a NUL."""
    if not (texts or _texts(values)):
        return _mapped(to_string)(values)
    if "\x00" in "".join(values):
        raise _Invalid
    if all(map(str.strip, values)):             # (no empty or blank text)
        return values
    return [v if v.strip() else None for v in values]


def _stripped(values: Column, texts: bool) -> Column:
    """`to_string` of each value of a required field, stripped as `RowChecker.check` strips it (None if blank)."""
    if not (texts or _texts(values)):
        return [v if v is None else v.strip() for v in _mapped(to_string)(values)]
    if "\x00" in "".join(values):
        raise _Invalid
    stripped = list(map(str.strip, values))
    return stripped if all(stripped) else [v or None for v in stripped]


def _numbers(values: Column, texts: bool) -> Column:
    """`to_number` of each value: `float` of text, finite, written without `_`."""
    if (texts or _texts(values)) and "_" not in "".join(values):
        try:
            numbers = list(map(float, values))
        except ValueError:
            pass                                # (an empty value, or one that is not a number)
        else:
            if all(map(isfinite, numbers)):
                return numbers
    return _mapped(to_number)(values)


def _integers(values: Column, texts: bool) -> Column:
    """`to_integer` of each value: `int` of text written without `_`, within 64 bits."""
    if (texts or _texts(values)) and "_" not in "".join(values):
        try:
            numbers = list(map(int, values))
        except ValueError:
            pass
        else:
            if numbers and -(2 ** 63) <= min(numbers) and max(numbers) <= 2 ** 63 - 1:
                return numbers
    return _mapped(to_integer)(values)


def _remembered(coerce: Coercer, proc: Callable[[Any], Any] | None) -> Converter:
    """A converter of values that repeat (dates): each distinct text converted (and put in the database's
    form) once, the last REMEMBERED of them kept."""
    seen: dict[Any, Any] = {}

    def one(value: Any) -> Any:
        typed = coerce(value)
        return typed if proc is None or typed is None else proc(typed)

    def convert(values: Column, texts: bool) -> Column:
        if not (texts or _texts(values)):
            try:
                return [one(v) for v in values]
            except CoerceError:
                raise _Invalid from None
        if len(seen) > REMEMBERED:
            seen.clear()
        try:
            return list(map(seen.__getitem__, values))
        except KeyError:
            pass
        try:
            for value in set(values).difference(seen):
                seen[value] = one(value)
        except CoerceError:
            raise _Invalid from None
        return list(map(seen.__getitem__, values))

    return convert
