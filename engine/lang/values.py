"""Value semantics shared by the Python evaluator and the SQLite helper functions.

Keeping them in one place is what makes the two back ends agree: SQLite calls these very functions,
and PostgreSQL is given SQL chosen to compute the same thing.
"""

from __future__ import annotations

import math
import string
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_DECIMAL = Context(prec=1000)


def ascii_lower(value: str) -> str:
    """Lower-case ASCII letters only (what SQLite's lower() and PostgreSQL's lower() under "C" do)."""
    return value.translate(_LOWER)


def ascii_upper(value: str) -> str:
    """Upper-case ASCII letters only."""
    return value.translate(_UPPER)


def round_half_away(value: float, precision: int) -> float:
    """Round like PostgreSQL's round(x::float8::numeric, n): 15 significant digits, then half away from zero."""
    exact = Decimal(format(float(value), ".15g"))
    step = Decimal(1).scaleb(-precision)
    return float(exact.quantize(step, rounding=ROUND_HALF_UP, context=_DECIMAL))


def floored_mod(left: float, right: float) -> float:
    """Python's `%` sign convention, computed as left - right*floor(left/right) (as the SQL is)."""
    if isinstance(left, int) and isinstance(right, int):
        return left % right
    return left - right * math.floor(left / right)


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo."""
    return ZoneInfo(name)


def local_date(value: datetime, tz: str) -> date:
    """The date, in time zone `tz`, of a naive-UTC (or aware) datetime."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(zone(tz)).date()
