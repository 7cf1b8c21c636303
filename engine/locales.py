"""Locales in templates (§16): the recipient's locale and zone, and the locale-aware filters `number`, `percent`,
`currency`, `date` and `datetime`, formatted by Babel from the CLDR data (no format is written here).

A template renders for one recipient: the planner puts the recipient's locale and time zone into the render
context under `_locale` and `_zone` (names a template cannot spell), and the filters read them from there. The
filters' literal arguments are checked when templates compile (`check_filter`), so a misspelt currency code or
date format is a validation error, not a failed email."""

from __future__ import annotations

import copy
import unicodedata
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import PATTERN_CHARS, format_date, format_datetime, format_time, get_datetime_format
from babel.numbers import get_currency_precision, get_currency_symbol, is_currency, parse_pattern
from jinja2 import pass_context
from jinja2.runtime import Context

DEFAULT_LOCALE = "en"
NAMED_FORMATS = ("short", "medium", "long", "full")
MAX_DIGITS = 10


class FilterArgumentError(ValueError):
    """A filter's argument that can never work (an unknown currency code, a date format that is none)."""


@lru_cache(maxsize=256)
def parse_locale(text: str | None) -> Locale | None:
    """The Babel locale a value names (`ja`, `ja-JP`, `ja_JP`, `pt_BR`), or None when it names none."""
    if not text or not isinstance(text, str):
        return None
    try:
        return Locale.parse(text.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def locale_candidates(text: str | None) -> list[str]:
    """The locale names to look for, most specific first: `ja_JP` -> [ja_JP, ja]; [] for no known locale."""
    loc = parse_locale(text)
    if loc is None:
        return []
    out = [str(loc)]
    if loc.language not in out:
        out.append(loc.language)
    return out


def recipient_locale(contact: dict | None, account: dict | None, default: str) -> str:
    """The first known locale of `contact.locale`, `account.locale` and the config's `default_locale` (§16)."""
    for row in (contact, account):
        loc = parse_locale((row or {}).get("locale"))
        if loc is not None:
            return str(loc)
    return default


def whole(value: Any) -> Any:
    """A number as it should print: a whole float (56.0) as the integer it is."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def finalize(value: Any) -> Any:
    """What `{{ x }}` prints: whole numbers without `.0`, None as nothing."""
    if value is None:
        return ""
    return whole(value) if isinstance(value, (float, Decimal)) else value


# -- the filters ------------------------------------------------------------------------------------------------

def _locale(ctx: Context) -> Locale:
    return parse_locale(ctx.get("_locale")) or Locale.parse(DEFAULT_LOCALE)


def _zone(ctx: Context) -> ZoneInfo:
    return ZoneInfo(ctx.get("_zone") or "UTC")


def _number(value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"the `{what}` filter needs a number, got {type(value).__name__} {value!r}")
    return value


def _pattern(text: str, frac: tuple[int, int]) -> Any:
    pattern = copy.copy(parse_pattern(text))
    pattern.frac_prec = frac
    return pattern


@pass_context
def number_filter(ctx: Context, value: Any, digits: int = 3) -> str:
    """`12,345` (grouped as the locale groups), at most `digits` decimals; whole numbers have none."""
    if value is None:
        return ""
    loc = _locale(ctx)
    return _pattern(loc.decimal_formats[None].pattern, (0, digits)).apply(_number(value, "number"), loc)


@pass_context
def percent_filter(ctx: Context, value: Any, digits: int = 0) -> str:
    """A ratio as a percentage in the locale's form: 0.256 -> `26%` (`percent(1)`: `25.6%`)."""
    if value is None:
        return ""
    loc = _locale(ctx)
    return _pattern(loc.percent_formats[None].pattern, (0, digits)).apply(_number(value, "percent"), loc)


@pass_context
def currency_filter(ctx: Context, value: Any, code: str) -> str:
    """An amount in a currency, in the locale's form (`$150,000`, `¥1,200,000`, `150.000 €`): whole amounts
    without decimals, others with the currency's usual number of them. A symbol CLDR gives as a full-width
    compatibility character (the `ja` locale's `￥`) is printed in its standard form (`¥`), as Japanese invoices
    and plain-text mail write it."""
    if value is None:
        return ""
    _currency_code(code)
    loc = _locale(ctx)
    amount = whole(_number(value, "currency"))
    digits = 0 if isinstance(amount, int) else get_currency_precision(code)
    text = _pattern(loc.currency_formats["standard"].pattern, (digits, digits)).apply(
        amount, loc, currency=code, currency_digits=False)
    symbol = get_currency_symbol(code, loc)
    return text.replace(symbol, unicodedata.normalize("NFKC", symbol))


@pass_context
def date_filter(ctx: Context, value: Any, format: str = "long") -> str:
    """A date (or the date of a datetime, in the recipient's zone): `long` (default) `December 7, 2026`,
    `2026年12月7日`; `short`, `medium`, `full` or a CLDR pattern such as `yyyy-MM-dd`."""
    if value is None:
        return ""
    _date_format(format)
    if isinstance(value, datetime):
        value = _local(value, _zone(ctx)).date()
    elif not isinstance(value, date):
        raise TypeError(f"the `date` filter needs a date, got {type(value).__name__} {value!r}")
    return format_date(value, format, locale=_locale(ctx))


@pass_context
def datetime_filter(ctx: Context, value: Any, format: str = "long") -> str:
    """A moment in the recipient's zone: the date in `format` (as `date`) with the time of day, `December 7,
    2026, 9:00 AM`, `2026年12月7日 9:00`; or a CLDR pattern."""
    if value is None:
        return ""
    _date_format(format)
    if not isinstance(value, datetime):
        raise TypeError(f"the `datetime` filter needs a date and time, got {type(value).__name__} {value!r}")
    loc, local = _locale(ctx), _local(value, _zone(ctx))
    if format not in NAMED_FORMATS:
        return format_datetime(local, format, tzinfo=local.tzinfo, locale=loc)
    day = format_date(local.date(), format, locale=loc)
    clock = format_time(local, "short", tzinfo=local.tzinfo, locale=loc)
    return get_datetime_format(format, locale=loc).replace("{1}", day).replace("{0}", clock)


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    """A datetime in `zone` (a naive one is UTC, as the store keeps them)."""
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(zone)


FILTERS: dict[str, Callable[..., str]] = {
    "number": number_filter, "percent": percent_filter, "currency": currency_filter, "date": date_filter,
    "datetime": datetime_filter}


# -- checks of literal arguments (when templates compile) ------------------------------------------------------

def _currency_code(code: Any) -> None:
    if not isinstance(code, str) or not is_currency(code):
        raise FilterArgumentError(f"`{code}` is not an ISO 4217 currency code (e.g. 'JPY', 'USD', 'EUR')")


def _date_format(fmt: Any) -> None:
    if not isinstance(fmt, str) or not fmt.strip():
        raise FilterArgumentError("a date format is short, medium, long, full or a CLDR pattern such as 'yyyy-MM-dd'")
    if fmt in NAMED_FORMATS:
        return
    letters = {c for c in _outside_quotes(fmt) if c.isascii() and c.isalpha()}
    if not letters or letters - set(PATTERN_CHARS):
        raise FilterArgumentError(f"`{fmt}` is not a date format: use short, medium, long, full or a CLDR "
                                  "pattern such as 'yyyy-MM-dd'")


def _outside_quotes(pattern: str) -> str:
    """The characters of a CLDR pattern that are not quoted literal text."""
    return "".join(part for i, part in enumerate(pattern.split("'")) if i % 2 == 0)


def _digits(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DIGITS:
        raise FilterArgumentError(f"digits must be a whole number from 0 to {MAX_DIGITS}, got {value!r}")


# filter -> (parameter names, the check of each, how many are required)
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[Callable[[Any], None], ...], int]] = {
    "number": (("digits",), (_digits,), 0),
    "percent": (("digits",), (_digits,), 0),
    "currency": (("code",), (_currency_code,), 1),
    "date": (("format",), (_date_format,), 0),
    "datetime": (("format",), (_date_format,), 0),
}


def check_filter(name: str, args: list[tuple[bool, Any]], kwargs: dict[str, tuple[bool, Any]]) -> None:
    """Check a call of one of these filters: its arguments' number and names, and the value of each literal one
    ((is literal, value) pairs). Raises FilterArgumentError with what is wrong."""
    params, checks, required = SIGNATURES[name]
    if len(args) > len(params):
        raise FilterArgumentError(f"the `{name}` filter takes at most {len(params)} argument"
                                  f"{'s' if len(params) != 1 else ''} ({', '.join(params)})")
    bound = dict(zip(params, args))
    for key, value in kwargs.items():
        if key not in params:
            raise FilterArgumentError(f"the `{name}` filter has no argument `{key}` (it takes {', '.join(params)})")
        bound[key] = value
    for param in params[:required]:
        if param not in bound:
            raise FilterArgumentError(f"the `{name}` filter needs its `{param}`, e.g. {EXAMPLES[name]}")
    for param, check in zip(params, checks):
        literal, value = bound.get(param, (False, None))
        if literal:
            try:
                check(value)
            except FilterArgumentError as exc:
                raise FilterArgumentError(f"the `{name}` filter: {exc}") from None


EXAMPLES = {"currency": "`{{ account.arr | currency('JPY') }}`"}
