"""Column-wise typing of a batch (engine/sync/columns.py) gives exactly what `RowChecker.check` gives row by row:
the same values for a batch of valid rows, and no values (the caller checks row by row) when any row is
invalid."""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from engine.datamodel import fields_of
from engine.store.entities import stored_forms
from engine.store.schema import build_schema
from engine.sync.coerce import ValueFormats
from engine.sync.columns import BatchChecker
from engine.sync.validate import RowChecker

CUSTOM = {"accounts": {"score": "number", "seats_paid": "integer", "vip": "boolean", "signed": "date",
                       "seen_at": "datetime"}}
DECLARED = {"plan": ("Team", "Business")}


def checkers(entity: str, columns: tuple[str, ...], formats: ValueFormats = ValueFormats(), dialect=sqlite.dialect(),
             declared: dict | None = None) -> tuple[RowChecker, BatchChecker]:
    custom = CUSTOM if entity == "accounts" else {}
    fields = fields_of(entity, custom)
    rows = RowChecker(entity, fields, ZoneInfo("Asia/Tokyo"), formats, declared)
    forms = stored_forms(build_schema(custom).entity(entity), dialect)
    return rows, BatchChecker(rows, columns, forms)


ACCOUNT_COLUMNS = ("id", "name", "plan", "score", "seats_paid", "vip", "signed", "seen_at", "timezone", "note")
VALID = [
    ["A1", "Acme", "Team", "12.5", "3", "yes", "2026-01-31", "2026-01-31T09:00", "Asia/Tokyo", "x"],
    [" A2 ", "", "Business", " 1e3 ", "+7", "FALSE", "", "2026-02-01T00:00:00+00:00", "", "ignored"],
    ["A3", "  ", "", "", "", "", "2026-01-31", "", "Europe/Paris", ""],
    ["A4", "Zeta", "Team", "-0", "9223372036854775807", "1", "2024-02-29", "2026-03-01 10:30", "UTC", ""],
]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_a_batch_of_valid_rows_types_as_row_by_row(dialect) -> None:
    rows, batch = checkers("accounts", ACCOUNT_COLUMNS, dialect=dialect, declared=DECLARED)
    lines = [2, 3, 4, 5]
    typed = batch.check([list(r) for r in VALID], lines)
    assert typed is not None
    expected = []
    for raw, line in zip(VALID, lines):
        values, problems, _ = rows.check(dict(zip(ACCOUNT_COLUMNS, raw)))
        assert problems == []
        expected.append(batch.stored(values, line))
    assert typed == expected
    assert batch.fields == ACCOUNT_COLUMNS[:-1]                  # `note` is not a field
    assert typed[1][0] == "A2" and typed[2][1] is None           # a key stripped; a blank name is None
    if dialect.name == "sqlite":
        assert typed[0][6] == "2026-01-31" and typed[0][7] == "2026-01-31 00:00:00.000000"   # (09:00 Tokyo in UTC)
    else:
        assert typed[0][6] == date(2026, 1, 31) and typed[0][7] == datetime(2026, 1, 31)


@pytest.mark.parametrize("column, bad", [
    ("id", " "), ("id", ""), ("name", "a\x00b"), ("plan", "Enterprise"), ("plan", "team"), ("score", "nan"),
    ("score", "inf"), ("score", "1_000"), ("score", "1,5"), ("score", "abc"), ("seats_paid", "9223372036854775808"),
    ("seats_paid", "1_0"), ("seats_paid", "1.5"), ("vip", "maybe"), ("signed", "2026-02-30"), ("signed", "31/01/2026"),
    ("seen_at", "yesterday"), ("timezone", "Mars/Olympus"),
])
def test_a_batch_with_an_invalid_row_is_left_to_the_row_checks(column: str, bad: str) -> None:
    rows, batch = checkers("accounts", ACCOUNT_COLUMNS, declared=DECLARED)
    raw = [list(r) for r in VALID]
    raw[2][ACCOUNT_COLUMNS.index(column)] = bad
    assert rows.check(dict(zip(ACCOUNT_COLUMNS, raw[2])))[1] != []
    assert batch.check(raw, [2, 3, 4, 5]) is None


def test_values_the_coercer_accepts_in_another_spelling_still_type_alike() -> None:
    """Texts the fast converters do not take (an integer written 12.0, an empty number) go through the field's
    coercer for their column: same values as row by row."""
    rows, batch = checkers("accounts", ("id", "score", "seats_paid"))
    raw = [["A1", "", "12.0"], ["A2", "3", ""], ["A3", " 4 ", "1e2"]]
    typed = batch.check(raw, [2, 3, 4])
    assert typed == [batch.stored(rows.check(dict(zip(("id", "score", "seats_paid"), r)))[0], n)
                     for r, n in zip(raw, [2, 3, 4])]
    assert [t[1:3] for t in typed] == [(None, 12), (3.0, None), (4.0, 100)]


def test_a_source_with_its_own_number_and_date_formats() -> None:
    formats = ValueFormats("%d/%m/%Y", ",", ".")
    columns = ("id", "score", "signed", "seen_at")
    rows, batch = checkers("accounts", columns, formats)
    raw = [["A1", "1.234,5", "31/01/2026", "31/01/2026 10:00"], ["A2", "7", "2026-02-01", ""]]
    typed = batch.check(raw, [2, 3])
    assert typed == [batch.stored(rows.check(dict(zip(columns, r)))[0], n) for r, n in zip(raw, [2, 3])]
    assert typed[0][1] == 1234.5
    assert batch.check([["A1", "1,234.5", "31/01/2026", ""]], [2]) is None


def test_usage_metrics_days_and_goal_directions() -> None:
    rows, batch = checkers("usage", ("account_id", "metric", "day", "value"), declared={"metric": ("logins",)})
    good = [["A1", " logins", "2026-01-01", "3"], ["A1", "logins", "2026-01-02", "4.5"]]
    assert batch.check(good, [2, 3]) == [("A1", "logins", "2026-01-01", 3.0, 2), ("A1", "logins", "2026-01-02", 4.5, 3)]
    assert batch.check([*good, ["A1", "api_calls", "2026-01-03", "1"]], [2, 3, 4]) is None
    assert batch.check([*good, ["A1", "logins", "2026-01-03", ""]], [2, 3, 4]) is None     # value is required
    assert checkers("usage", ("account_id", "day", "value"))[1].check([["A1", "2026-01-01", "1"]], [2]) is None
    rows, batch = checkers("goals", ("id", "account_id", "direction"))
    assert batch.check([["G1", "A1", " Increase "], ["G2", "A1", ""]], [2, 3]) == [
        ("G1", "A1", "increase", 2), ("G2", "A1", None, 3)]
    assert batch.check([["G1", "A1", "up"]], [2]) is None


def test_values_that_are_not_text_go_through_the_coercers() -> None:
    """Rows of a SQL or JSON source hold numbers, booleans and dates: each column is typed by its coercer."""
    columns = ("id", "score", "seats_paid", "vip", "signed", "seen_at")
    rows, batch = checkers("accounts", columns, dialect=postgresql.dialect())
    raw = [["A1", 3, 4.0, True, date(2026, 1, 1), datetime(2026, 1, 1, 9, tzinfo=timezone.utc)],
           ["A2", None, None, None, None, None]]
    typed = batch.check(raw, [1, 2])
    assert typed == [batch.stored(rows.check(dict(zip(columns, r)))[0], n) for r, n in zip(raw, [1, 2])]
    assert batch.check([["A1", True, 1, True, None, None]], [1]) is None        # a boolean is not a number
