"""Playbook test files (§18): `playbook-tests/*.test.yaml` parsed into cases, runs and expectations, each with
its line in the file, so that a failure names the line that expected it.

A file is one case (`playbooks`, `data`, `runs` at the top) or several (`cases:`, a list of such mappings, each
with a `name`; the file's own `playbooks` and `data` apply to every case). Usage rows may be written as compact
series: `{account_id: A1, metric: logins, end: 2026-11-30, values: "5x30 0x14"}` (see `expand_series`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.clock import FIRST_YEAR, LAST_YEAR, make_clock
from engine.datamodel import ENTITIES, KEYS
from engine.errors import Diagnostic, UserError, suggest
from engine.spec.yamlfile import Positions, load_yaml
from engine.textfile import read_text

SUFFIX = ".test.yaml"
EVENTS = ("enter", "repeat", "resolve", "baseline", "step")     # step: a journey's steps coming due (§14)
EVENT_KEYS = ("playbook", "subject", "event", "episode", "actions")
CASE_KEYS = ("name", "playbooks", "data", "runs")
RUN_KEYS = ("at", "set", "remove", "expect")
REMOVABLE = ("accounts", "contacts", "goals")
MAX_SERIES_DAYS = 3660        # ten years of daily rows in one series: more is a mistake


@dataclass(frozen=True)
class Row:
    """One synced row as the test file writes it, and the line it is written on."""

    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class Expected:
    """One expected event (or, inside `actions`, one expected action): the fields it lists, at its line."""

    line: int
    fields: dict[str, Any]
    actions: list[Expected] | None = None


@dataclass(frozen=True)
class Run:
    """One evaluation: its instant, the rows upserted and removed before it, the events it must produce
    (None: not checked)."""

    line: int
    at: datetime                                   # aware
    set: dict[str, list[Row]] = field(default_factory=dict)
    remove: dict[str, list[Row]] = field(default_factory=dict)
    expect: list[Expected] | None = None


@dataclass(frozen=True)
class Case:
    """One test: the playbooks it loads (None: all), the data synced before its first run, and its runs."""

    file: str
    name: str
    line: int
    playbooks: list[str] | None
    playbook_lines: dict[str, int]
    data: dict[str, list[Row]]
    runs: list[Run]


def test_files(paths: list[Path], default: Path) -> list[Path]:
    """The test files named (a folder: its `*.test.yaml`, recursively), or those of the default folder."""
    found: list[Path] = []
    for p in paths or [default]:
        if p.is_dir():
            found += sorted(p.rglob("*" + SUFFIX))
        elif p.exists() or paths:
            found.append(p)
    return found


def parse_file(path: Path, shown: str, timezone: str) -> list[Case]:
    """The cases of one test file; a UserError listing every problem with its line otherwise."""
    data, pos = load_yaml(read_text(path, shown), shown)
    return Parser(shown, pos, timezone).cases(data)


class Parser:
    """Reads one test file's YAML (with its positions) into cases; problems are collected, then raised."""

    def __init__(self, file: str, pos: Positions, timezone: str):
        self.file, self.pos, self.tz = file, pos, timezone
        self.problems: list[Diagnostic] = []

    def problem(self, path: tuple[Any, ...], message: str, hint: str | None = None, *, key: bool = False) -> None:
        self.problems.append(self.pos.diagnostic(path, message, hint, key=key))

    def line(self, path: tuple[Any, ...]) -> int:
        return self.pos.at(path)[0] or 1

    def cases(self, data: Any) -> list[Case]:
        if not isinstance(data, dict):
            raise UserError(Diagnostic(self.file, 1, 1, "a test file is a mapping with `runs:` (or `cases:`)",
                                       "see docs/testing.md"))
        if "cases" in data:
            self.keys(data, (), ("playbooks", "data", "cases"))
            cases = data["cases"]
            if not isinstance(cases, list) or not cases:
                self.problem(("cases",), "`cases` must be a non-empty list of cases")
                cases = []
            out = []
            for i, c in enumerate(cases):
                if not isinstance(c, dict):
                    self.problem(("cases", i), "a case is a mapping with `name` and `runs`")
                    continue
                if not isinstance(c.get("name"), str) or not c["name"].strip():
                    self.problem(("cases", i), "each case needs a `name`", key=False)
                out.append(self.case(c, ("cases", i), data, str(c.get("name") or f"case {i + 1}")))
        else:
            out = [self.case(data, (), {}, Path(self.file).name.removesuffix(SUFFIX))]
        if self.problems:
            raise UserError(self.problems)
        return out

    def keys(self, data: dict, path: tuple[Any, ...], allowed: tuple[str, ...]) -> None:
        for k in data:
            if k not in allowed:
                near = suggest(k, allowed)
                self.problem(path + (k,), f"unknown key `{k}`",
                             f"did you mean `{near}`?" if near else f"allowed: {', '.join(allowed)}", key=True)

    def case(self, data: dict, path: tuple[Any, ...], shared: dict, name: str) -> Case:
        self.keys(data, path, CASE_KEYS if path else CASE_KEYS[1:])
        playbooks, lines = None, {}
        if "playbooks" in data:
            chosen, base = data["playbooks"], path + ("playbooks",)
        else:
            chosen, base = shared.get("playbooks"), ("playbooks",)
        if chosen is not None:
            if not isinstance(chosen, list) or not all(isinstance(p, str) for p in chosen):
                self.problem(base, "`playbooks` is a list of playbook ids")
            else:
                playbooks = list(chosen)
                lines = {p: self.line(base + (i,)) for i, p in enumerate(chosen)}
        rows: dict[str, list[Row]] = {}
        if "data" in shared:
            rows = self.rows(shared["data"], ("data",), series=True)
        if "data" in data and path:
            for entity, more in self.rows(data["data"], path + ("data",), series=True).items():
                rows.setdefault(entity, []).extend(more)
        elif "data" in data:
            rows = self.rows(data["data"], ("data",), series=True)
        runs_data = data.get("runs")
        runs: list[Run] = []
        if not isinstance(runs_data, list) or not runs_data:
            self.problem(path + ("runs",) if "runs" in data else path, "a test needs `runs:`, a non-empty list",
                         "e.g. runs: [{at: 2026-12-01T09:00:00+09:00, expect: []}]")
        else:
            for i, r in enumerate(runs_data):
                run = self.run(r, path + ("runs", i))
                if run is None:
                    continue
                if runs and run.at <= runs[-1].at:
                    self.problem(path + ("runs", i, "at"), "runs must be in time order, each after the one before")
                runs.append(run)
        return Case(self.file, name, self.line(path), playbooks, lines, rows, runs)

    def run(self, data: Any, path: tuple[Any, ...]) -> Run | None:
        if not isinstance(data, dict):
            self.problem(path, "a run is a mapping with `at` and optionally `set`, `remove`, `expect`")
            return None
        self.keys(data, path, RUN_KEYS)
        at = self.instant(data.get("at"), path + ("at",))
        if at is None:
            return None
        sets = self.rows(data["set"], path + ("set",), series=True) if "set" in data else {}
        removes = self.removes(data["remove"], path + ("remove",)) if "remove" in data else {}
        expect = None
        if "expect" in data:
            raw = data["expect"]
            if raw is None:
                raw = []
            if not isinstance(raw, list):
                self.problem(path + ("expect",), "`expect` is a list of events (`[]`: nothing at all)")
            else:
                expect = [e for i, item in enumerate(raw) if (e := self.event(item, path + ("expect", i)))]
        return Run(self.line(path), at, sets, removes, expect)

    def instant(self, value: Any, path: tuple[Any, ...]) -> datetime | None:
        if value is None:
            self.problem(path, "each run needs `at`, an ISO date-time", "e.g. at: 2026-12-01T09:00:00+09:00")
            return None
        text = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
        try:
            return make_clock(self.tz, text).local()
        except UserError as exc:
            self.problem(path, exc.diagnostics[0].message.removeprefix("--now: "), "e.g. 2026-12-01T09:00:00+09:00")
            return None

    def rows(self, data: Any, path: tuple[Any, ...], *, series: bool) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        if data is None:
            return out
        if not isinstance(data, dict):
            self.problem(path, "rows are given per entity: accounts, contacts, goals, usage")
            return out
        for entity, items in data.items():
            if entity not in ENTITIES:
                near = suggest(entity, ENTITIES)
                self.problem(path + (entity,), f"`{entity}` is not an entity",
                             f"did you mean `{near}`?" if near else f"use {', '.join(ENTITIES)}", key=True)
                continue
            if not isinstance(items, list):
                self.problem(path + (entity,), f"`{entity}` is a list of rows")
                continue
            for i, item in enumerate(items):
                where = path + (entity, i)
                if not isinstance(item, dict):
                    self.problem(where, "a row is a mapping of field: value")
                    continue
                if entity == "usage" and series and "values" in item:
                    out.setdefault(entity, []).extend(self.series(item, where))
                else:
                    out.setdefault(entity, []).append(Row(self.line(where), _plain(item)))
        return out

    def series(self, item: dict, path: tuple[Any, ...]) -> list[Row]:
        """The usage rows of one compact series."""
        line = self.line(path)
        ends = [k for k in ("start", "end") if k in item]
        if len(ends) != 1:
            self.problem(path, "a usage series needs exactly one of `start` (its first day) or `end` (its last day)")
            return []
        day = item[ends[0]]
        if not isinstance(day, date) or isinstance(day, datetime):
            self.problem(path + (ends[0],), f"`{ends[0]}` must be a date (YYYY-MM-DD)")
            return []
        for k in item:
            if k not in ("account_id", "metric", "values", "start", "end"):
                self.problem(path + (k,), f"unknown key `{k}` in a usage series",
                             "a series has account_id, metric, start or end, and values", key=True)
        try:
            values = expand_series(item["values"])
        except ValueError as exc:
            self.problem(path + ("values",), f"bad series: {exc}", 'e.g. "5x30 0x14" (30 days of 5, then 14 of 0)')
            return []
        try:
            first = day if ends[0] == "start" else day - timedelta(days=len(values) - 1)
            last = first + timedelta(days=max(len(values) - 1, 0))
        except OverflowError:
            first = last = date.min
        if not (FIRST_YEAR <= first.year and last.year <= LAST_YEAR):
            self.problem(path + (ends[0],), f"the series runs outside the years {FIRST_YEAR} to {LAST_YEAR}")
            return []
        return [Row(line, {"account_id": item.get("account_id"), "metric": item.get("metric"),
                           "day": (first + timedelta(days=n)).isoformat(), "value": v})
                for n, v in enumerate(values) if v is not None]

    def removes(self, data: Any, path: tuple[Any, ...]) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        if not isinstance(data, dict):
            self.problem(path, "`remove` lists ids per entity, e.g. {accounts: [A1]}")
            return out
        for entity, ids in data.items():
            if entity not in REMOVABLE:
                self.problem(path + (entity,), f"`remove` takes ids of {', '.join(REMOVABLE)}", key=True)
                continue
            if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
                self.problem(path + (entity,), f"`{entity}` is a list of ids")
                continue
            out[entity] = [Row(self.line(path + (entity, i)), {"id": str(v)}) for i, v in enumerate(ids)]
        return out

    def event(self, data: Any, path: tuple[Any, ...]) -> Expected | None:
        if not isinstance(data, dict):
            self.problem(path, "an expected event is a mapping: {playbook, subject, event, actions}")
            return None
        self.keys(data, path, EVENT_KEYS)
        for k in ("playbook", "subject", "event"):
            if not isinstance(data.get(k), str):
                self.problem(path, f"an expected event needs `{k}`",
                             "e.g. {playbook: renewal-risk, subject: account:A1, event: enter}")
                return None
        if data["event"] not in EVENTS:
            self.problem(path + ("event",), f"`{data['event']}` is not an event", f"use one of {', '.join(EVENTS)}")
        actions = None
        if "actions" in data:
            if not isinstance(data["actions"], list):
                self.problem(path + ("actions",), "`actions` is a list of expected actions (`[]`: none)")
            else:
                actions = []
                for i, a in enumerate(data["actions"]):
                    if not isinstance(a, dict):
                        self.problem(path + ("actions", i), "an expected action is a mapping, e.g. {kind: slack}")
                        continue
                    actions.append(Expected(self.line(path + ("actions", i)), _plain(a)))
        fields = {k: _plain(v) for k, v in data.items() if k != "actions"}
        return Expected(self.line(path), fields, actions)


_TERM = re.compile(r"^(?P<a>_|-?\d+(?:\.\d+)?)(?:(?P<sign>[+-])(?P<b>\d+(?:\.\d+)?))?(?:x(?P<n>\d+))?$")


def expand_series(text: Any) -> list[float | None]:
    """A compact usage series, one value per day: `5` one day of 5; `5x30` thirty days of 5; `_` a day without
    a row (`_x3` three); `1+2x4` four days counting up from 1 by 2 (1 3 5 7), `10-1x3` counting down (10 9 8).
    A list of numbers (None for no row) is taken as it is. ValueError says what is wrong."""
    if isinstance(text, list):
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in text):
            raise ValueError("a list of values holds numbers (or null for a day without a row)")
        return [None if v is None else _number(v) for v in text]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [_number(text)]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("write values as a string such as \"5x30 0x14\", or a list of numbers")
    out: list[float | None] = []
    for term in text.split():
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"`{term}` is not VALUE, VALUExDAYS, START+STEPxDAYS or _")
        n = int(m["n"]) if m["n"] else 1
        if m["n"] and n == 0:
            raise ValueError(f"`{term}` repeats zero times")
        if len(out) + n > MAX_SERIES_DAYS:
            raise ValueError(f"more than {MAX_SERIES_DAYS} days")
        if m["a"] == "_":
            if m["sign"]:
                raise ValueError(f"`{term}`: a day without a row (`_`) cannot count up or down")
            out += [None] * n
            continue
        start = float(m["a"])
        step = float(m["b"]) * (1 if m["sign"] == "+" else -1) if m["sign"] else 0.0
        out += [_number(start + step * k) for k in range(n)]
    return out


def _number(v: float) -> float:
    return int(v) if float(v).is_integer() else v


def _plain(value: Any) -> Any:
    """YAML values as a sync source gives them: dates and date-times as ISO text, the rest as it is."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def row_key(entity: str, values: dict[str, Any]) -> tuple[Any, ...]:
    """The key of a row as written (its key fields as text), for merging `set:` rows into the rows so far."""
    return tuple(str(values.get(k)) for k in KEYS[entity])
