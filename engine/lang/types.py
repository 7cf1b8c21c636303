"""Type names of the expression language and the rules for combining them."""

from __future__ import annotations

from datetime import date, datetime, timezone

INTEGER = "integer"
NUMBER = "number"
STRING = "string"
BOOLEAN = "boolean"
DATE = "date"
DATETIME = "datetime"
NONE = "none"        # the `none` literal, only usable with `is none`
LIST = "list"

FIELD_TYPES = (STRING, INTEGER, NUMBER, BOOLEAN, DATE, DATETIME)
NUMERIC = (INTEGER, NUMBER)
ORDERED = (INTEGER, NUMBER, STRING, DATE, DATETIME)

# How types read in messages.
ARTICLE = {INTEGER: "an integer", NUMBER: "a number", STRING: "a string", BOOLEAN: "a boolean",
           DATE: "a date", DATETIME: "a datetime", NONE: "none", LIST: "a list"}


def describe(type_: str) -> str:
    """`a number`, `a date`, … for error messages."""
    return ARTICLE.get(type_, type_)


def is_numeric(type_: str) -> bool:
    """Integer or number."""
    return type_ in NUMERIC


def arith_result(op: str, left: str, right: str) -> str:
    """Result type of `left op right` for two numeric types."""
    if op == "/":
        return NUMBER
    return INTEGER if left == right == INTEGER else NUMBER


def comparable(left: str, right: str) -> bool:
    """Whether == and != accept the two types."""
    if is_numeric(left) and is_numeric(right):
        return True
    return left == right and left in (STRING, BOOLEAN, DATE, DATETIME)


def parse_iso(text: str, type_: str) -> date | datetime | None:
    """An ISO string as a date or naive-UTC datetime for `type_`, or None when it is not ISO."""
    try:
        if type_ == DATE:
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
