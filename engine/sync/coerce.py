"""Turn raw source values (CSV text, JSON values, SQL results) into typed values per field type.

Each field type has a coercer: a function of one raw value that returns the typed value (None for
an empty value) or raises `CoerceError` whose text is the problem as a user reads it, e.g.
`"abc" is not a number`. Datetimes are returned as naive UTC; one without an offset is read in the
configured time zone.

Every value a database column can hold is accepted, and nothing else, quickly: integers fit 64 bits (a long
run of digits or a huge exponent is refused before it is expanded, so `1e999999999` cannot stall a sync),
numbers are finite doubles, date-times stay within years 1–9999 once converted to UTC, and text holds no NUL
character (PostgreSQL cannot store one).

A source may write its text values its own way (`ValueFormats`, from its reader): dates in a strptime
format, a decimal comma, thousands separators. ISO dates are still accepted from such a source.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from typing import Any

Coercer = Callable[[Any], Any]

_INT = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = {"true", "1", "yes"}
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1       # a BIGINT column
_INT_DIGITS = 19                                  # digits of INT_MAX: a longer run of digits cannot fit
_FALSE = {"false", "0", "no"}


class CoerceError(ValueError):
    """A raw value that does not fit its field type; the text is the problem for the user."""


@dataclass(frozen=True, slots=True)
class ValueFormats:
    """How a source writes text values when not as ISO and Python do: `date_format` (strptime) for its dates
    and datetimes, the `decimal` separator, and a `thousands` separator to ignore in numbers."""

    date_format: str | None = None
    decimal: str = "."
    thousands: str | None = None

    def numbers(self) -> str:
        """How this source writes numbers, for a problem message."""
        return f"this source writes decimals with {show(self.decimal)}" + (
            f" and thousands with {show(self.thousands)}" if self.thousands else " and no thousands separator")


ISO = ValueFormats()
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c")


def check_date_format(text: str) -> str:
    """A strptime format naming the year, month and day; ValueError saying what is wrong otherwise."""
    sample = datetime(2026, 12, 31, 23, 59, 58)
    try:
        back = datetime.strptime(sample.strftime(text), text)
    except ValueError as exc:
        raise ValueError(f"`{text}` is not a date format ({exc}); write it with strptime codes, "
                         "e.g. %Y/%m/%d or %d.%m.%Y") from None
    if back.date() != sample.date():
        raise ValueError(f"`{text}` does not name the year, month and day; write e.g. %Y/%m/%d or %d.%m.%Y")
    return text


def check_separator(name: str, sep: str, other: str | None = None) -> str:
    """A decimal or thousands separator: one character, not part of a number, not `other` (the other
    separator); ValueError saying what is wrong otherwise."""
    if len(sep) != 1:
        raise ValueError(f"`{name}` must be one character, not {show(sep)}")
    if sep.isdigit() or sep in "+-eE":
        raise ValueError(f"`{name}` cannot be {show(sep)}, which is part of a number")
    if sep == other:
        raise ValueError(f"`decimal` and `thousands` are both {show(sep)}; they must differ")
    return sep


def show(value: Any) -> str:
    """A raw value as it appears in a problem message: strings quoted, long ones shortened."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, int) and not -10 ** 40 < value < 10 ** 40:
        digits = int(abs(value).bit_length() * 0.30103) + 1     # str() of a huge int is slow, or refused
        return f"{'a negative' if value < 0 else 'an'} integer of about {digits:,} digits"
    return str(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def to_string(value: Any) -> str | None:
    """Text as is; numbers, booleans and dates written out; empty text is None."""
    if type(value) is str:
        if "\x00" in value:
            raise CoerceError(_NUL)
        return value if value and not value.isspace() else None
    if value is None:
        return None
    if isinstance(value, str):
        return to_string(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise CoerceError(f"expected a text value, got {_kind(value)}")


_INT_RANGE = f"integers are from {INT_MIN:,} to {INT_MAX:,}"
_NUL = "contains a NUL character (\\u0000), which cannot be stored; remove it from the source"


def _in_range(number: int, value: Any) -> int:
    if INT_MIN <= number <= INT_MAX:
        return number
    raise CoerceError(f"{show(value)} is out of range ({_INT_RANGE})")


def to_integer(value: Any) -> int | None:
    """A whole number from an int, an integral float/decimal, or text such as `12` or `12.0`, within 64 bits."""
    if type(value) is str:
        text = value.strip()
        if not text:
            return None
        if _INT.match(text):
            if len(text.lstrip("+-").lstrip("0")) > _INT_DIGITS:
                raise CoerceError(f"{show(value)} is out of range ({_INT_RANGE})")
            return _in_range(int(text), value)
        if _NUMBER.match(text):
            return _whole(Decimal(text), value)
        raise CoerceError(f"{show(value)} is not an integer" + _separator_hint(text))
    if value is None:
        return None
    if isinstance(value, bool):
        raise CoerceError(f"{show(value)} is not an integer")
    if isinstance(value, int):
        return _in_range(value, value)
    if isinstance(value, float):
        if math.isinf(value):                   # JSON reads 1e999 as infinity
            raise CoerceError(f"{show(value)} is out of range ({_INT_RANGE})")
        if math.isnan(value):
            raise CoerceError(f"{show(value)} is not a whole number")
        return _whole(Decimal(value), value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise CoerceError(f"{show(value)} is not a whole number")
        return _whole(value, value)
    if isinstance(value, str):
        return to_integer(str(value))
    raise CoerceError(f"expected an integer, got {_kind(value)}")


def _whole(number: Decimal, value: Any) -> int:
    """An integral decimal as an int; its size is checked from its exponent first, so `1e999999999` is
    refused without writing out a billion digits."""
    if number.is_zero():
        return 0
    if number.adjusted() > _INT_DIGITS:
        raise CoerceError(f"{show(value)} is out of range ({_INT_RANGE})")
    if number != number.to_integral_value():
        raise CoerceError(f"{show(value)} is not a whole number")
    return _in_range(int(number), value)


def to_number(value: Any) -> float | None:
    """A finite number from an int, float, decimal or text such as `12.5` or `1e3`."""
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            if not value or value.isspace():
                return None
            raise CoerceError(f"{show(value)} is not a number" + _separator_hint(value)) from None
        if math.isfinite(number) and "_" not in value:
            return number
        if _NUMBER.match(value.strip()):       # digits whose value is beyond a double's range
            raise CoerceError(f"{show(value)} is out of range for a number")
        raise CoerceError(f"{show(value)} is not a number")
    if value is None:
        return None
    if isinstance(value, bool):
        raise CoerceError(f"{show(value)} is not a number")
    if isinstance(value, (int, float, Decimal)):
        try:
            number = float(value)
        except OverflowError:                   # an int beyond a double's range
            raise CoerceError(f"{show(value)} is out of range for a number") from None
        if not math.isfinite(number):
            raise CoerceError(f"{show(value)} is not a finite number")
        return number
    if isinstance(value, str):
        return to_number(str(value))
    raise CoerceError(f"expected a number, got {_kind(value)}")


def _separator_hint(text: str) -> str:
    return " (use a dot for decimals and no thousands separators)" if "," in text else ""


def to_boolean(value: Any) -> bool | None:
    """true/false, yes/no, 1/0 (any case), or a JSON/SQL boolean."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if not text:
            return None
    elif value is None:
        return None
    elif isinstance(value, bool):
        return value
    elif isinstance(value, int) and value in (0, 1):
        return bool(value)
    elif isinstance(value, (dict, list)):
        raise CoerceError(f"expected a boolean, got {_kind(value)}")
    raise CoerceError(f"{show(value)} is not a boolean (use true/false, yes/no or 1/0)")


def _separated(convert: Coercer, what: str, formats: ValueFormats) -> Coercer:
    """`convert` for text written with the source's decimal and thousands separators (groups of three digits);
    values that are not text are converted as they are."""
    decimal, thousands = formats.decimal, formats.thousands

    def coerce(value: Any) -> Any:
        if not isinstance(value, str):
            return convert(value)
        body = value.strip()
        if not body:
            return None
        sign = body[0] if body[0] in "+-" else ""
        whole, point, rest = body[len(sign):].partition(decimal)
        if thousands and thousands in whole:
            groups = whole.split(thousands)
            if 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
                whole = "".join(groups)
        if decimal == "." or "." not in whole + rest:
            try:
                return convert(sign + whole + ("." + rest if point else ""))
            except CoerceError:
                pass
        raise CoerceError(f"{show(value)} is not {what} ({formats.numbers()})")

    return coerce


def to_date(value: Any) -> date | None:
    """A calendar date written YYYY-MM-DD (or a SQL date; a SQL datetime only at midnight)."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10 and _DATE.match(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        if not text:
            return None
        raise CoerceError(f"{show(value)} is not a date (use YYYY-MM-DD)")
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.time() == datetime.min.time() and value.tzinfo is None:
            return value.date()
        raise CoerceError(f"{show(value.isoformat())} is not a date (it has a time of day)")
    if isinstance(value, date):
        return value
    raise CoerceError(f"expected a date, got {_kind(value)}")


def date_coercer(date_format: str) -> Coercer:
    """A coercer of dates written in `date_format` (strptime) or ISO (YYYY-MM-DD)."""

    def coerce(value: Any) -> date | None:
        if not isinstance(value, str):
            return to_date(value)
        text = value.strip()
        if not text:
            return None
        if _DATE.match(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        try:
            moment = datetime.strptime(text, date_format)
        except ValueError:
            raise CoerceError(f"{show(value)} is not a date (use {date_format} or YYYY-MM-DD)") from None
        if moment.time() != datetime.min.time():
            raise CoerceError(f"{show(value)} is not a date (it has a time of day)")
        return moment.date()

    return coerce


def datetime_coercer(tz: tzinfo, date_format: str | None = None) -> Coercer:
    """A coercer of ISO 8601 date-times to naive UTC; one without an offset is read in `tz`. With a
    `date_format` (strptime), text in that format is read too: the format alone (midnight), or followed by a
    time `HH:MM` or `HH:MM:SS` when it has none of its own."""
    formats: tuple[str, ...] = ()
    usage = "use ISO 8601, e.g. 2024-05-01T09:30:00+02:00"
    if date_format:
        timed = any(d in date_format for d in _TIME_DIRECTIVES)
        formats = (date_format,) if timed else (date_format, date_format + " %H:%M", date_format + " %H:%M:%S")
        usage = f"use {date_format}{'' if timed else ' with an optional HH:MM[:SS]'} or ISO 8601"

    def read(value: str) -> datetime:
        text = value.strip()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
        for fmt in formats:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                continue
        raise CoerceError(f"{show(value)} is not a date-time ({usage})")

    def to_datetime(value: Any) -> datetime | None:
        if _empty(value):
            return None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            moment = read(value)
        else:
            raise CoerceError(f"expected a date-time, got {_kind(value)}")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        try:
            return moment.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:                   # e.g. 0001-01-01T00:00:00+09:00 is before year 1 in UTC
            raise CoerceError(f"{show(value if isinstance(value, str) else moment.isoformat())} is out of range "
                              "(a date-time is within the years 1 to 9999 in UTC)") from None

    return to_datetime


def coercer(field_type: str, tz: tzinfo, formats: ValueFormats = ISO) -> Coercer:
    """The coercer of one field type (string, integer, number, boolean, date, datetime), for values written as
    `formats` says."""
    if field_type == "datetime":
        return datetime_coercer(tz, formats.date_format)
    if field_type == "date" and formats.date_format:
        return date_coercer(formats.date_format)
    if field_type in ("integer", "number") and (formats.decimal != "." or formats.thousands):
        convert, what = (to_integer, "an integer") if field_type == "integer" else (to_number, "a number")
        return _separated(convert, what, formats)
    return {"string": to_string, "integer": to_integer, "number": to_number,
            "boolean": to_boolean, "date": to_date}[field_type]
