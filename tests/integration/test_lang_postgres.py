"""The expression language's SQL back end on PostgreSQL: the value tests of tests/unit/test_lang.py and the
SQL-equals-Python property of tests/unit/test_lang_equivalence.py, run again on a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from conftest import postgres_schema
from unit.test_lang import (tables, test_days_since_datetime_counts_by_local_date_in_tokyo,  # noqa: F401
                            test_days_until_and_since_dates, test_division_and_modulo,
                            test_empty_values_make_comparisons_and_arithmetic_empty,
                            test_iso_strings_compare_with_dates_and_datetimes, test_metric_windows,
                            test_round_is_half_away_from_zero, test_segment_is_the_named_expression,
                            test_strings_order_by_code_point_and_case_maps_ascii_only, test_three_valued_logic,
                            test_today_is_the_local_date_and_now_is_utc)
from unit.test_lang_equivalence import _tables as equivalence_tables
from unit.test_lang_equivalence import test_sql_equals_python  # noqa: F401

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def db() -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    """The accounts and usage tables in a fresh PostgreSQL schema."""
    with postgres_schema("lang") as schema:
        engine = sa.create_engine(schema.url)
        md, accounts, usage = tables()
        md.create_all(engine)
        yield engine, accounts, usage
        engine.dispose()


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    """The equivalence property's tables in a fresh PostgreSQL schema."""
    with postgres_schema("lang_eq") as schema:
        engine = sa.create_engine(schema.url)
        md, accounts, usage = equivalence_tables(None)
        md.create_all(engine)
        yield engine, accounts, usage
        engine.dispose()
