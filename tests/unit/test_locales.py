"""Locale-aware template filters (§16): Babel's CLDR formats for the recipient's locale and zone, whole numbers
without `.0`, literal arguments checked when a template compiles, and metric() / metric_change() in templates."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from engine.locales import locale_candidates, recipient_locale
from engine.templating import TemplateProblem, Templates, context_helpers, metric_helpers, render

VARS = frozenset({"amount", "day", "at", "n", "ratio"})


def rendered(source: str, locale: str, zone: str = "UTC", **values: object) -> str:
    compiled = Templates(None).compile_inline(source, "account", VARS)
    return render(compiled, {"_locale": locale, "_zone": zone, **context_helpers(date(2026, 12, 7)), **values})


@pytest.mark.parametrize(("locale", "expected"), [
    ("ja", "¥1,200,000 | 2026年12月7日 | 12,345.5 | 26% | 56"),
    ("en", "¥1,200,000 | December 7, 2026 | 12,345.5 | 26% | 56"),
    ("de", "1.200.000\u00a0¥ | 7. Dezember 2026 | 12.345,5 | 26\u00a0% | 56"),      # no-break spaces (CLDR)
])
def test_filters_format_as_the_locale_does(locale: str, expected: str) -> None:
    source = ("{{ amount | currency('JPY') }} | {{ day | date }} | {{ 12345.5 | number }} | {{ ratio | percent }} | "
              "{{ n }}")
    assert rendered(source, locale, amount=1200000.0, day=date(2026, 12, 7), ratio=0.256, n=56.0) == expected


def test_whole_numbers_print_without_a_decimal_part_and_empty_values_as_nothing() -> None:
    assert rendered("{{ n }}|{{ n | number }}|{{ amount | currency('USD') }}|{{ ratio }}", "en", n=56.0,
                    amount=150000.0, ratio=None) == "56|56|$150,000|"
    assert rendered("{{ amount | currency('USD') }}|{{ n | number(1) }}|{{ ratio | percent(1) }}", "en",
                    amount=99.5, n=2.25, ratio=0.2561) == "$99.50|2.2|25.6%"


def test_dates_and_times_are_shown_in_the_recipients_zone() -> None:
    at = datetime(2026, 12, 6, 23, 30, tzinfo=timezone.utc)
    assert rendered("{{ at | datetime }} / {{ at | date }}", "ja", "Asia/Tokyo", at=at) == \
        "2026年12月7日 8:30 / 2026年12月7日"
    assert rendered("{{ at | datetime }} / {{ at | date('yyyy-MM-dd') }}", "en", "America/New_York", at=at) == \
        "December 6, 2026, 6:30\u202fPM / 2026-12-06"      # a narrow no-break space before PM (CLDR)


@pytest.mark.parametrize(("source", "message"), [
    ("{{ amount | currency('JPYY') }}", "the `currency` filter: `JPYY` is not an ISO 4217 currency code"),
    ("{{ amount | currency }}", "the `currency` filter needs its `code`"),
    ("{{ day | date('longg') }}", "the `date` filter: `longg` is not a date format"),
    ("{{ at | datetime(format='yyyy-MM-dd HH:mm', tz='x') }}", "the `datetime` filter has no argument `tz`"),
    ("{{ n | number('x') }}", "the `number` filter: digits must be a whole number from 0 to 10"),
    ("{{ n | percent(1, 2) }}", "the `percent` filter takes at most 1 argument"),
    ("{{ metric('logins', 0) }}", "`days` of metric() must be a whole number from 1 to 3660"),
    ("{{ metric(n) }}", "metric() in a template takes literal arguments"),
    ("{{ metric_change('logins', 7, 'median') }}", "`agg` of metric_change() must be one of"),
])
def test_filter_and_metric_arguments_are_checked_when_the_template_compiles(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem) as info:
        Templates(None).compile_inline(source, "account", VARS)
    assert info.value.message.startswith(message), info.value.message


def test_a_data_dependent_argument_is_checked_when_it_renders() -> None:
    compiled = Templates(None).compile_inline("{{ amount | currency(n) }}", "account", VARS)
    with pytest.raises(TemplateProblem, match="not an ISO 4217 currency code"):
        render(compiled, {"_locale": "en", "_zone": "UTC", "amount": 5, "n": "XXX1"})


def test_an_undeclared_metric_in_a_template_is_a_problem_with_did_you_mean() -> None:
    templates = Templates(None, metrics=("logins", "api_calls"))
    with pytest.raises(TemplateProblem, match="'login' is not a declared metric"):
        templates.compile_inline("{{ metric('login', 7, 'sum') }}", "account")


def test_metric_in_a_template_reads_the_windows_the_expression_language_would() -> None:
    templates = Templates(None)
    with templates.collecting() as refs:
        compiled = templates.compile_inline(
            "{{ metric('logins', 7, 'sum') }} {{ metric_change('logins', 7, 'sum') | percent }} "
            "{{ metric('seats', agg='last', days=3) }}", "account")
    assert {(r.name, r.days, r.agg, r.offset_days) for r in refs} == {
        ("logins", 7, "sum", 0), ("logins", 7, "sum", 7), ("seats", 3, "last", 0)}
    today = date(2026, 12, 7)
    usage = {"logins": {date(2026, 12, d): 3.0 for d in range(1, 8)} | {date(2026, 11, 30): 7.0},
             "seats": {date(2026, 12, 5): 12.0}}
    context = {"_locale": "en", "_zone": "UTC", **context_helpers(today), **metric_helpers(usage, today)}
    assert render(compiled, context) == "21 200% 12"
    no_account = {"_locale": "en", "_zone": "UTC", **context_helpers(today), **metric_helpers(None, today)}
    assert render(compiled, no_account) == "  "


def test_the_recipients_locale_is_the_contacts_then_the_accounts_then_the_default() -> None:
    assert recipient_locale({"locale": "ja-JP"}, {"locale": "de"}, "en") == "ja_JP"
    assert recipient_locale({"locale": ""}, {"locale": "de"}, "en") == "de"
    assert recipient_locale({"locale": "klingon"}, {}, "en") == "en"      # not a locale: as if empty
    assert locale_candidates("ja-JP") == ["ja_JP", "ja"]
    assert locale_candidates("nonsense") == []
