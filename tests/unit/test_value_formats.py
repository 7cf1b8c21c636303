"""How a source writes its values (`ValueFormats`): a strptime date format, a decimal separator, a thousands
separator; the coercers of such a source, and the checks of its options."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.sync.coerce import ISO, CoerceError, ValueFormats, check_date_format, check_separator, coercer

TOKYO = ZoneInfo("Asia/Tokyo")
EUROPE = ValueFormats("%d.%m.%Y", decimal=",", thousands=".")
US = ValueFormats("%m/%d/%Y", thousands=",")


@pytest.mark.parametrize(("formats", "ftype", "raw", "expected"), [
    (EUROPE, "number", "1.234,5", 1234.5), (EUROPE, "number", "-0,25", -0.25), (EUROPE, "number", "12", 12.0),
    (EUROPE, "number", "1.234.567", 1234567.0), (EUROPE, "number", " 1,5e3 ", 1500.0),
    (EUROPE, "integer", "12.000", 12000), (EUROPE, "integer", "12,0", 12), (EUROPE, "number", 2.5, 2.5),
    (EUROPE, "number", "", None), (EUROPE, "integer", 7, 7),
    (US, "number", "12,000", 12000.0), (US, "number", "12,000.50", 12000.5), (US, "integer", "+1,000", 1000),
    (ValueFormats(thousands=" "), "integer", "12 000", 12000),
    (EUROPE, "date", "31.12.2025", date(2025, 12, 31)), (EUROPE, "date", "1.2.2026", date(2026, 2, 1)),
    (EUROPE, "date", "2026-02-01", date(2026, 2, 1)), (US, "date", "12/31/2025", date(2025, 12, 31)),
    (EUROPE, "date", date(2026, 2, 1), date(2026, 2, 1)),
    (EUROPE, "datetime", "01.02.2026", datetime(2026, 1, 31, 15, 0)),
    (EUROPE, "datetime", "01.02.2026 09:30", datetime(2026, 2, 1, 0, 30)),
    (EUROPE, "datetime", "01.02.2026 9:30:15", datetime(2026, 2, 1, 0, 30, 15)),
    (EUROPE, "datetime", "2026-02-01T09:30:00+01:00", datetime(2026, 2, 1, 8, 30)),
    (ValueFormats("%Y/%m/%d %I:%M %p"), "datetime", "2026/02/01 09:30 PM", datetime(2026, 2, 1, 12, 30)),
    (EUROPE, "string", "1.234,5", "1.234,5"), (EUROPE, "boolean", "yes", True),
])
def test_a_source_s_values_are_read_as_it_writes_them(formats: ValueFormats, ftype: str, raw: Any,
                                                     expected: Any) -> None:
    assert coercer(ftype, TOKYO, formats)(raw) == expected


@pytest.mark.parametrize(("formats", "ftype", "raw", "message"), [
    (EUROPE, "number", "1.5", '"1.5" is not a number (this source writes decimals with "," and thousands '
                              'with ".")'),
    (EUROPE, "number", "1,2,3", '"1,2,3" is not a number (this source writes decimals with "," and thousands '
                                'with ".")'),
    (ValueFormats(decimal=","), "number", "1.000", '"1.000" is not a number (this source writes decimals with '
                                                   '"," and no thousands separator)'),
    (US, "number", "1,5", '"1,5" is not a number (this source writes decimals with "." and thousands with ",")'),
    (US, "integer", "12,000.5", '"12,000.5" is not an integer (this source writes decimals with "." and '
                                'thousands with ",")'),
    (US, "number", "nan", '"nan" is not a number (this source writes decimals with "." and thousands with ",")'),
    (EUROPE, "date", "2026-02-30", '"2026-02-30" is not a date (use %d.%m.%Y or YYYY-MM-DD)'),
    (EUROPE, "date", "32.01.2026", '"32.01.2026" is not a date (use %d.%m.%Y or YYYY-MM-DD)'),
    (ValueFormats("%d.%m.%Y %H:%M"), "date", "01.02.2026 09:30",
     '"01.02.2026 09:30" is not a date (it has a time of day)'),
    (EUROPE, "datetime", "soon", '"soon" is not a date-time (use %d.%m.%Y with an optional HH:MM[:SS] or '
                                 'ISO 8601)'),
])
def test_values_that_do_not_fit_say_how_the_source_writes_them(formats: ValueFormats, ftype: str, raw: Any,
                                                                message: str) -> None:
    with pytest.raises(CoerceError) as info:
        coercer(ftype, TOKYO, formats)(raw)
    assert str(info.value) == message


def test_without_formats_a_source_is_iso() -> None:
    assert coercer("number", TOKYO) is coercer("number", TOKYO, ISO)
    with pytest.raises(CoerceError, match=r'"1,5" is not a number \(use a dot for decimals'):
        coercer("number", TOKYO)("1,5")
    with pytest.raises(CoerceError, match=r"is not a date \(use YYYY-MM-DD\)"):
        coercer("date", TOKYO)("2026/02/01")


@pytest.mark.parametrize(("text", "problem"), [
    ("%Y/%m/%d", None), ("%d.%m.%y", None), ("%Y%m%d", None), ("%d/%m/%Y %H:%M", None), ("%j/%Y", None),
    ("%Q", "`%Q` is not a date format ('Q' is a bad directive in format '%Q'); write it with strptime codes, "
           "e.g. %Y/%m/%d or %d.%m.%Y"),
    ("%Y/%m/%", "`%Y/%m/%` is not a date format (stray % in format '%Y/%m/%'); write it with strptime codes, "
                "e.g. %Y/%m/%d or %d.%m.%Y"),
    ("%m/%d", "`%m/%d` does not name the year, month and day; write e.g. %Y/%m/%d or %d.%m.%Y"),
    ("%H:%M", "`%H:%M` does not name the year, month and day; write e.g. %Y/%m/%d or %d.%m.%Y"),
])
def test_a_date_format_is_a_strptime_format_of_a_whole_date(text: str, problem: str | None) -> None:
    if problem is None:
        assert check_date_format(text) == text
    else:
        with pytest.raises(ValueError) as info:
            check_date_format(text)
        assert str(info.value) == problem


@pytest.mark.parametrize(("name", "sep", "other", "problem"), [
    ("decimal", ",", None, None), ("thousands", " ", ",", None), ("thousands", "'", ".", None),
    ("decimal", ",,", None, '`decimal` must be one character, not ",,"'),
    ("thousands", "", ".", '`thousands` must be one character, not ""'),
    ("decimal", "5", None, '`decimal` cannot be "5", which is part of a number'),
    ("thousands", "e", ".", '`thousands` cannot be "e", which is part of a number'),
    ("thousands", ".", ".", '`decimal` and `thousands` are both "."; they must differ'),
])
def test_separators(name: str, sep: str, other: str | None, problem: str | None) -> None:
    if problem is None:
        assert check_separator(name, sep, other) == sep
    else:
        with pytest.raises(ValueError) as info:
            check_separator(name, sep, other)
        assert str(info.value) == problem
