"""The test-file format's compact usage series and the partial matching of expected actions (§18)."""

from __future__ import annotations

import pytest

from engine.testfile import expand_series
from engine.testmatch import value_matches


@pytest.mark.parametrize("text, values", [
    ("5x3 0x2", [5, 5, 5, 0, 0]),
    ("1 2.5 _ 4", [1, 2.5, None, 4]),
    ("1+2x4", [1, 3, 5, 7]),
    ("10-1x3 _x2", [10, 9, 8, None, None]),
    ([1, None, 3], [1, None, 3]),
    (7, [7]),
])
def test_series(text: object, values: list) -> None:
    assert expand_series(text) == values


@pytest.mark.parametrize("text, message", [
    ("5x0", "repeats zero times"),
    ("ax2", "`ax2` is not"),
    ("_+1x2", "cannot count up"),
    ("1x4000", "more than 3660 days"),
    ("", "write values as a string"),
])
def test_bad_series(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_series(text)


def test_partial_matching() -> None:
    actual = {"kind": "slack", "to": ["c@x.example"], "text": " Acme renews in 45 days\n", "blocks": [{"a": 1, "b": 2}]}
    assert value_matches({"kind": "slack", "to": "c@x.example"}, actual)
    assert value_matches({"text": "Acme renews in 45 days"}, actual)         # surrounding whitespace ignored
    assert value_matches({"text": {"contains": "45 days"}}, actual)
    assert value_matches({"text": {"matches": r"renews in \d+ days"}}, actual)
    assert value_matches({"blocks": [{"a": 1}]}, actual)
    assert not value_matches({"blocks": []}, actual)
    assert not value_matches({"text": "Acme renews in 44 days"}, actual)
    assert not value_matches({"channel": "#x"}, actual)
    assert not value_matches({"to": ["c@x.example", "d@x.example"]}, actual)
    assert not value_matches(1, True) and value_matches(1, 1.0)
