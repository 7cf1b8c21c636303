"""Expected events against actual ones (§18), and the readable diff of a mismatch.

A run's `expect` lists exactly its events: every expected event must match one actual event, and no actual event
may be left over. An event matches when its playbook, subject and event agree (and its episode, when given);
when it lists `actions`, they are all of the event's actions, in order, each matching when every field it lists
matches (strings compared without surrounding whitespace; a scalar matches a one-element list; `{contains: …}` and
`{matches: REGEX}` match part of a string). A mismatch is shown as a diff of the expected event and the actual
one cut to the fields the expectation lists."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.testfile import Expected

SHOWN = ("kind", "to", "subject", "text", "title", "error")   # the fields an unexpected action is shown with
_MISSING = "<missing>"


@dataclass
class Problem:
    """One way a run differs from its expectations, at the test file's line, with the diff that shows it."""

    line: int
    message: str
    diff: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message, "diff": self.diff}


def compare(expected: list[Expected], actual: list[dict[str, Any]], run_line: int,
            subject_types: dict[str, str]) -> list[Problem]:
    """The problems of one run: expected events missing or different, actual events nobody expected."""
    left = list(range(len(actual)))
    unmatched: list[Expected] = []
    for e in expected:
        i = next((i for i in left if event_matches(e, actual[i], subject_types)), None)
        if i is None:
            unmatched.append(e)
        else:
            left.remove(i)
    problems = []
    for e in unmatched:
        fields = _normal(e, subject_types)
        near = next((i for i in left if all(actual[i][k] == fields[k] for k in ("playbook", "subject"))), None)
        if near is None:
            problems.append(Problem(e.line, f"expected {_label(fields)}, which did not happen",
                                    ["- " + line for line in _yaml(expected_view(e, fields))]))
            continue
        left.remove(near)
        got = actual[near]
        line, where = _first_difference(e, fields, got)
        problems.append(Problem(line, f"expected {_label(fields)}; {where}",
                                _diff(_yaml(expected_view(e, fields)), _yaml(cut(e, got)))))
    for i in left:
        problems.append(Problem(run_line, f"unexpected {_label(actual[i])}",
                                ["+ " + line for line in _yaml(shown_event(actual[i]))]))
    return problems


def event_matches(e: Expected, a: dict[str, Any], subject_types: dict[str, str]) -> bool:
    """Whether an actual event satisfies an expected one."""
    fields = _normal(e, subject_types)
    if any(a.get(k) != fields[k] for k in ("playbook", "subject", "event")):
        return False
    if "episode" in fields and not value_matches(fields["episode"], a.get("episode")):
        return False
    if e.actions is None:
        return True
    got = a.get("actions") or []
    return len(got) == len(e.actions) and all(value_matches(x.fields, y) for x, y in zip(e.actions, got))


def value_matches(exp: Any, act: Any) -> bool:
    """Whether an actual value satisfies an expected one (partially, for mappings)."""
    if isinstance(exp, dict):
        if isinstance(act, str) and exp and set(exp) <= {"contains", "matches"}:
            return all(_text_matches(k, v, act) for k, v in exp.items())
        return isinstance(act, dict) and all(k in act and value_matches(v, act[k]) for k, v in exp.items())
    if isinstance(exp, list):
        return isinstance(act, list) and len(exp) == len(act) and all(map(value_matches, exp, act))
    if isinstance(act, list):
        return len(act) == 1 and value_matches(exp, act[0])
    if isinstance(exp, str) and isinstance(act, str):
        return exp.strip() == act.strip()
    if isinstance(exp, bool) or isinstance(act, bool):
        return exp is act
    return exp == act


def _text_matches(how: str, pattern: Any, text: str) -> bool:
    if how == "contains":
        return str(pattern) in text
    try:
        return re.search(str(pattern), text) is not None
    except re.error:
        return False


def _normal(e: Expected, subject_types: dict[str, str]) -> dict[str, Any]:
    """The expected event's fields with its subject written `type:id` (a bare id takes the playbook's type)."""
    fields = dict(e.fields)
    subject = str(fields["subject"])
    if ":" not in subject and fields["playbook"] in subject_types:
        fields["subject"] = f"{subject_types[fields['playbook']]}:{subject}"
    return fields


def _label(fields: dict[str, Any]) -> str:
    return f"{fields['event']} of {fields['playbook']} for {fields['subject']}"


def expected_view(e: Expected, fields: dict[str, Any]) -> dict[str, Any]:
    out = {k: fields[k] for k in ("playbook", "subject", "event", "episode") if k in fields}
    if e.actions is not None:
        out["actions"] = [a.fields for a in e.actions]
    return out


def cut(e: Expected, actual: dict[str, Any]) -> dict[str, Any]:
    """The actual event cut to the fields the expectation lists (extra actions shown by their short form)."""
    out = {k: actual.get(k, _MISSING) for k in ("playbook", "subject", "event") }
    if "episode" in e.fields:
        out["episode"] = actual.get("episode")
    if e.actions is not None:
        got = actual.get("actions") or []
        out["actions"] = [_cut(x.fields, y) for x, y in zip(e.actions, got)] + [_short(y) for y in
                                                                                  got[len(e.actions):]]
    return out


def _cut(exp: Any, act: Any) -> Any:
    """The actual value in the expectation's shape: what matches is shown as expected, so that only the
    differences stand out in the diff."""
    if value_matches(exp, act):
        return exp
    if isinstance(exp, dict) and isinstance(act, dict):
        return {k: _cut(v, act[k]) if k in act else _MISSING for k, v in exp.items()}
    if isinstance(exp, dict) and isinstance(act, str) and set(exp) <= {"contains", "matches"}:
        return act
    if isinstance(exp, list) and isinstance(act, list):
        return [_cut(x, y) for x, y in zip(exp, act)] + act[len(exp):]
    return act


def _short(action: dict[str, Any]) -> dict[str, Any]:
    return {k: action[k] for k in SHOWN if k in action}


def shown_event(a: dict[str, Any]) -> dict[str, Any]:
    """An actual event as a failure shows it: its identity and its actions' short form."""
    return {"playbook": a["playbook"], "subject": a["subject"], "event": a["event"], "episode": a["episode"],
            "actions": [_short(x) for x in a.get("actions") or []]}


def _first_difference(e: Expected, fields: dict[str, Any], got: dict[str, Any]) -> tuple[int, str]:
    """The line of the first expectation the actual event misses, and what differs there."""
    for k in ("event", "episode"):
        if k in fields and not value_matches(fields[k], got.get(k)):
            return e.line, f"got {k} {got.get(k)}"
    acts = got.get("actions") or []
    assert e.actions is not None
    for n, (x, y) in enumerate(zip(e.actions, acts)):
        path = _path_difference(x.fields, y)
        if path is not None:
            return x.line, f"actions[{n}]{path} differs"
    return e.line, f"it has {len(acts)} action(s), not {len(e.actions)}"


def _path_difference(exp: Any, act: Any, path: str = "") -> str | None:
    if value_matches(exp, act):
        return None
    if isinstance(exp, dict) and isinstance(act, dict):
        for k, v in exp.items():
            if k not in act:
                return f"{path}.{k} (no such field)"
            found = _path_difference(v, act[k], f"{path}.{k}")
            if found is not None:
                return found
    if isinstance(exp, list) and isinstance(act, list) and len(exp) == len(act):
        for n, (x, y) in enumerate(zip(exp, act)):
            found = _path_difference(x, y, f"{path}[{n}]")
            if found is not None:
                return found
    return path or " "


def _yaml(value: Any) -> list[str]:
    text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return text.rstrip("\n").splitlines()


def _diff(expected: list[str], actual: list[str]) -> list[str]:
    """A line diff: `- ` expected only, `+ ` actual only, two spaces both."""
    return [line for line in difflib.ndiff(expected, actual) if not line.startswith("? ")]
