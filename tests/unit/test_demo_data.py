"""Self-check of the demo data and the example playbooks, in plain Python (no engine needed).

The trigger conditions of every playbook in `playbooks/` are computed here by hand over the
generated CSVs, following §5 and §7 (missing usage days count as 0; empty values are unknown and
do not match), to show that each one fires for some accounts at the anchor date and not for all.
The playbooks' triggers and audiences are pinned so that a change to either side is noticed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.demo_data import COLUMNS, generate
from engine.store.schema import CORE_FIELDS

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
TEMPLATES = PLAYBOOKS / "templates"
CONFIG = yaml.safe_load((ROOT / "engine" / "scaffold" / "config.yaml").read_text(encoding="utf-8"))
ANCHOR = date(2026, 11, 23)
TZ = ZoneInfo(CONFIG["timezone"])
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)


def _aware(value: datetime) -> datetime:
    """A naive datetime is in the config's time zone (§3, §5)."""
    return value.replace(tzinfo=TZ) if value.tzinfo is None else value.astimezone(TZ)


def _local_date(value: datetime) -> date:
    return _aware(value).date()


def _convert(kind: str, text: str) -> Any:
    if text == "":
        return None
    return {"string": str, "integer": int, "number": float, "date": date.fromisoformat,
            "datetime": datetime.fromisoformat, "boolean": lambda t: {"true": True, "false": False}[t]}[kind](text)


@dataclass
class Data:
    """The generated CSVs, typed as the engine would store them."""

    counts: dict[str, int]
    raw: dict[str, list[dict[str, str]]]
    accounts: dict[str, dict[str, Any]]
    contacts: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    usage: dict[tuple[str, str, date], float]

    def metric(self, account: str, name: str, days: int = 30, agg: str = "avg", shift: int = 0) -> float:
        """§5 metric() over the window ending `shift` days before today (sum, avg, max only)."""
        values = [self.usage.get((account, name, ANCHOR - timedelta(days=shift + i)), 0.0) for i in range(days)]
        return {"sum": sum(values), "avg": sum(values) / days, "max": max(values)}[agg]

    def metric_change(self, account: str, name: str, days: int = 30, agg: str = "sum") -> float | None:
        previous = self.metric(account, name, days, agg, shift=days)
        return None if previous == 0 else (self.metric(account, name, days, agg) - previous) / previous


def _load(directory: Path, counts: dict[str, int]) -> Data:
    raw = {}
    for entity in COLUMNS:
        with (directory / f"{entity}.csv").open(encoding="utf-8", newline="") as fh:
            raw[entity] = list(csv.DictReader(fh))
    types = {e: {**CORE_FIELDS[e], **CONFIG["fields"].get(e, {})} for e in COLUMNS}
    typed = {e: [{k: _convert(types[e][k], v) for k, v in row.items()} for row in rows] for e, rows in raw.items()}
    return Data(counts, raw, {a["id"]: a for a in typed["accounts"]}, typed["contacts"], typed["goals"],
                {(u["account_id"], u["metric"], u["day"]): u["value"] for u in typed["usage"]})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    directory = tmp_path_factory.mktemp("demo")
    return _load(directory, generate(directory, ANCHOR))


def _segment(account: dict[str, Any], name: str) -> bool:
    arr = account["arr"]
    return {"tech_touch": arr < 10000, "low_touch": 10000 <= arr < 100000, "high_touch": arr >= 100000}[name]


def _renewing(account: dict[str, Any], within: int = 90) -> bool:
    return account["renewal_date"] is not None and 0 <= (account["renewal_date"] - ANCHOR).days <= within


def _goal_reached(goal: dict[str, Any]) -> bool:
    current, target = goal["current"], goal["target"]
    if goal["status"] == "achieved":
        return True
    if current is None or target is None:
        return False                      # unknown or false -> unknown: no match
    return current <= target if goal["direction"] == "decrease" else current >= target


def expected_matches(d: Data) -> dict[str, set[str]]:
    """Subject ids each example playbook matches at ANCHOR, computed directly from the data."""
    accounts = d.accounts.values()

    def risky(a: dict[str, Any]) -> bool:
        change = d.metric_change(a["id"], "active_users", 30, "avg")
        low = a["health_score"] is not None and a["health_score"] < 60
        return low or (change is not None and change <= -0.25)

    return {
        "welcome-new-contact": {c["id"] for c in d.contacts
                                if (ANCHOR - _local_date(c["created_at"])).days <= 3 and not c["unsubscribed"]},
        "low-usage-alert": {a["id"] for a in accounts
                            if d.metric(a["id"], "active_users", 30, "avg") / a["seats"] < 0.2
                            and not _segment(a, "tech_touch") and a["lifecycle_stage"] != "onboarding"},
        "usage-drop-risk": {a["id"] for a in accounts
                            if (change := d.metric_change(a["id"], "logins", 30, "sum")) is not None
                            and change <= -0.4 and (_segment(a, "low_touch") or _segment(a, "high_touch"))},
        "renewal-risk": {a["id"] for a in accounts if _renewing(a) and _segment(a, "high_touch") and risky(a)},
        "renewal-checkin": {a["id"] for a in accounts
                            if _renewing(a) and not _segment(a, "high_touch")
                            and a["health_score"] is not None and a["health_score"] >= 60},
        "goal-achieved": {g["id"] for g in d.goals if _goal_reached(g)},
        "expansion-signal": {a["id"] for a in accounts
                             if d.metric(a["id"], "active_users", 7, "max") >= a["seats"] * 0.9},
        "monthly-value-report": {a["id"] for a in accounts if not _segment(a, "high_touch")
                                 and a["lifecycle_stage"] in ("adoption", "expansion", "renewal")},
        "onboarding-tech-touch": {a["id"] for a in accounts if _segment(a, "tech_touch")
                                  and (ANCHOR - _local_date(a["created_at"])).days <= 1},
    }


# What the computation above assumes each playbook says: (subject, trigger, where).
PINNED: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "welcome-new-contact": ("contact", {"when": "days_since(contact.created_at) <= 3"},
                            ["contact.unsubscribed is none or not contact.unsubscribed"]),
    "low-usage-alert": ("account", {"low_usage": {"metric": "active_users", "days": 30, "agg": "avg",
                                                  "below_per_seat": 0.2}},
                        ["not segment('tech_touch')", "account.lifecycle_stage != 'onboarding'"]),
    "usage-drop-risk": ("account", {"low_usage": {"metric": "logins", "days": 30, "agg": "sum", "drop_pct": 40}},
                        ["segment('low_touch') or segment('high_touch')"]),
    "renewal-risk": ("account", {"renewal_approaching": {"within_days": 90}},
                     ["segment('high_touch')",
                      "account.health_score < 60 or metric_change('active_users', 30, 'avg') <= -0.25"]),
    "renewal-checkin": ("account", {"renewal_approaching": {"within_days": 90}},
                        ["not segment('high_touch')", "account.health_score >= 60"]),
    "goal-achieved": ("goal", {"goal_achieved": {}}, []),
    "expansion-signal": ("account", {"when": "metric('active_users', 7, 'max') >= account.seats * 0.9"}, []),
    "monthly-value-report": ("account", {"when": "account.lifecycle_stage in ['adoption', 'expansion', 'renewal']"},
                             ["not segment('high_touch')"]),
    "onboarding-tech-touch": ("account", {"when": "segment('tech_touch') and days_since(account.created_at) <= 1"},
                              []),
}


def _playbooks() -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(PLAYBOOKS.glob("*.yaml"))}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert generate(first, ANCHOR) == generate(second, ANCHOR)
    generate(other, ANCHOR, seed=8)
    for entity in COLUMNS:
        name = f"{entity}.csv"
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "accounts.csv").read_bytes() != (other / "accounts.csv").read_bytes()


def test_small_generation(tmp_path: Path) -> None:
    counts = generate(tmp_path, ANCHOR, accounts=12, seed=1)
    assert counts["accounts"] == 12 and 24 <= counts["contacts"] <= 60


def test_columns_are_core_and_declared_fields(data: Data) -> None:
    for entity, rows in data.raw.items():
        declared = list(CORE_FIELDS[entity]) + list(CONFIG["fields"].get(entity, {}))
        assert list(rows[0]) == declared, entity


def test_counts_and_shape(data: Data) -> None:
    assert data.counts == {e: len(rows) for e, rows in data.raw.items()}
    assert data.counts["accounts"] == 300
    per_account = {a: 0 for a in data.accounts}
    for c in data.contacts:
        per_account[c["account_id"]] += 1
    assert set(per_account.values()) <= {2, 3, 4, 5}
    goals = {a: 0 for a in data.accounts}
    for g in data.goals:
        goals[g["account_id"]] += 1
    assert set(goals.values()) == {0, 1, 2}
    assert {c["role"] for c in data.contacts} == {"champion", "decision_maker", "admin", "user"}
    assert any(c["unsubscribed"] for c in data.contacts)
    assert {g["direction"] for g in data.goals} == {"increase", "decrease"}
    assert {m for (_, m, _) in data.usage} == {"active_users", "logins", "api_calls"}
    days = {d for (_, _, d) in data.usage}
    assert min(days) == ANCHOR - timedelta(days=89) and max(days) == ANCHOR
    assert len({a["csm_email"] for a in data.accounts.values()}) == 5


def test_variety_and_empty_values(data: Data) -> None:
    accounts = list(data.accounts.values())
    for field in ("nps", "health_score", "onboarding_done_at", "industry", "timezone"):
        assert any(a[field] is None for a in accounts), field
        assert any(a[field] is not None for a in accounts), field
    assert any(c["locale"] is None for c in data.contacts)
    assert "{{ 7*7 }} Labs" in {a["name"] for a in accounts}
    assert sum(any("\u3040" <= ch <= "\u9fff" for ch in a["name"]) for a in accounts) >= 2
    stamps = [r["created_at"] for r in data.raw["accounts"] + data.raw["contacts"]]
    assert any("+" not in s for s in stamps) and any(s.endswith("+09:00") for s in stamps)
    assert any(s.endswith("+00:00") for s in stamps)
    full = 3 * 90 * len(accounts)
    assert len(data.usage) < full            # missing days and accounts without API use


def test_referential_integrity(data: Data) -> None:
    ids = set(data.accounts)
    assert len(ids) == len(data.raw["accounts"])
    assert all(c["account_id"] in ids for c in data.contacts)
    assert all(g["account_id"] in ids for g in data.goals)
    assert all(a in ids for (a, _, _) in data.usage)
    assert len({c["id"] for c in data.contacts}) == len(data.contacts)
    assert len({g["id"] for g in data.goals}) == len(data.goals)
    assert len({c["email"] for c in data.contacts}) == len(data.contacts)
    assert len(data.usage) == len(data.raw["usage"])          # (account, metric, day) is unique
    for c in data.contacts:
        created = data.accounts[c["account_id"]]["created_at"]
        assert _aware(created) <= _aware(c["created_at"]) < NOW, c["id"]


def test_playbooks_follow_the_format() -> None:
    playbooks = _playbooks()
    assert set(playbooks) == set(PINNED)
    for stem, pb in playbooks.items():
        text = (PLAYBOOKS / f"{stem}.yaml").read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=../playbook.schema.json\n# ")
        assert pb["id"] == stem and pb["name"] and (pb.get("actions") or pb.get("steps"))
        subject, trigger, where = PINNED[stem]
        assert (pb.get("subject", "account"), pb["trigger"], pb.get("where", [])) == (subject, trigger, where)


def test_every_playbook_fires_for_some_but_not_all(data: Data) -> None:
    totals = {"account": len(data.accounts), "contact": len(data.contacts), "goal": len(data.goals)}
    for playbook, ids in expected_matches(data).items():
        total = totals[PINNED[playbook][0]]
        least = 1 if playbook == "onboarding-tech-touch" else 3     # one tech-touch account signs up that day
        assert least <= len(ids) < total, (playbook, len(ids))


def _environment() -> ImmutableSandboxedEnvironment:
    """The engine's template environment (its filters, whole numbers without .0), escaping by file name."""
    from engine.templating import make_environment

    env = make_environment(TEMPLATES)
    env.autoescape = lambda name: bool(name and name.endswith(".html.j2"))
    env.globals.update(days_until=lambda d: (d - ANCHOR).days, days_since=lambda d: (ANCHOR - d).days)
    return env


def _metrics(d: Data, account: str) -> dict[str, Any]:
    """metric() and metric_change() over one account's sample usage, as planning binds them."""
    from engine.templating import metric_helpers

    usage: dict[str, dict[date, float]] = {}
    for (a, name, day), value in d.usage.items():
        if a == account:
            usage.setdefault(name, {})[day] = value
    return metric_helpers(usage, ANCHOR)


def _contexts(d: Data, playbook: str, ids: set[str]) -> list[dict[str, Any]]:
    """Template contexts for each matched subject: contact only in contact playbooks, goal only in goal ones."""
    base = {"playbook": {"id": playbook}, "now": NOW}
    subject = PINNED[playbook][0]
    if subject == "contact":
        return [{**base, "contact": c, "account": d.accounts[c["account_id"]]} for c in d.contacts if c["id"] in ids]
    if subject == "goal":
        return [{**base, "goal": g, "account": d.accounts[g["account_id"]], **({"contact": c} if c else {})}
                for g in d.goals if g["id"] in ids
                for c in [c for c in d.contacts if c["account_id"] == g["account_id"]] or [None]]
    # an email to a role is rendered once per recipient, with `contact` bound to them
    return [{**base, "account": d.accounts[a], **_metrics(d, a), **({"contact": c} if c else {})} for a in sorted(ids)
            for c in [c for c in d.contacts if c["account_id"] == a] or [None]]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _step_actions(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions of a journey's steps, branches included (without their `id` and `if`)."""
    out = []
    for step in steps:
        if "then" in step or "else" in step:
            out += _step_actions(step.get("then", []) + step.get("else", []))
        elif "wait" not in step:
            out.append({k: v for k, v in step.items() if k not in ("id", "if")})
    return out


def test_templates_and_action_texts_render_for_every_match(data: Data) -> None:
    env = _environment()
    matches = expected_matches(data)
    for playbook, pb in _playbooks().items():
        actions = pb.get("actions", []) + _step_actions(pb.get("steps", [])) + pb.get("on_resolve", [])
        inline = [env.from_string(s) for s in _strings(actions) if "{{" in s or "{%" in s]
        names = [a["email"]["template"] for a in actions if "email" in a]
        files = [env.get_template(f"{n}{locale}.{part}.j2") for n in names for locale in ("", ".ja")
                 for part in ("subject", "html", "txt") if (TEMPLATES / f"{n}{locale}.{part}.j2").exists()]
        assert all(any(f.name == f"{n}.subject.j2" for f in files) for n in names), playbook
        for context in _contexts(data, playbook, matches[playbook]):
            for url in ("", "https://cs.example.com/unsubscribe?t=abc"):
                for template in inline + files:
                    out = template.render(**context, unsubscribe_url=url)
                    assert "None" not in out and out.strip(), (playbook, template.name)
                    if template in files and ".subject." not in str(template.name):
                        assert ("unsubscribe" in out.lower()) == bool(url), (playbook, template.name)


def test_data_is_rendered_literally(data: Data) -> None:
    env = _environment()
    labs = next(a for a in data.accounts.values() if a["name"] == "{{ 7*7 }} Labs")
    matches = expected_matches(data)
    assert labs["id"] in matches["renewal-checkin"]
    assert any(g["account_id"] == labs["id"] for g in data.goals if g["id"] in matches["goal-achieved"])
    contact = next(c for c in data.contacts
                   if c["account_id"] == labs["id"] and c["id"] in matches["welcome-new-contact"])
    for part in ("subject", "html", "txt"):
        out = env.get_template(f"welcome.{part}.j2").render(
            account=labs, contact=contact, playbook={"id": "welcome-new-contact"}, now=NOW, unsubscribe_url="")
        assert "{{ 7*7 }} Labs" in out and "49" not in out


def report() -> dict[str, int]:
    """Number of subjects each playbook should fire for at ANCHOR (for humans: python -m tests.test_demo_data)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        d = _load(Path(tmp), generate(Path(tmp), ANCHOR))
        return {k: len(v) for k, v in expected_matches(d).items()}


if __name__ == "__main__":
    print(report())
