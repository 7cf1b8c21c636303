"""Deterministic demo data: accounts, contacts, daily usage and goals as CSV files (§4).

`playbook demo` and `playbook init` call `generate()` so the example playbooks in `playbooks/`
have something to fire on. Every date is relative to `anchor`, the demo's "today"; the same
arguments always give byte-identical files. Datetimes are written as ISO 8601, some naive (read
in the config's time zone, Asia/Tokyo in the scaffold), some with a `+09:00` or `+00:00` offset.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": ("id", "name", "domain", "tier", "lifecycle_stage", "arr", "seats", "plan", "csm_email",
                 "renewal_date", "created_at", "timezone", "industry", "nps", "health_score",
                 "onboarding_done_at", "open_goals"),
    "contacts": ("id", "account_id", "email", "name", "role", "created_at", "timezone", "unsubscribed",
                 "locale"),
    "usage": ("account_id", "metric", "day", "value"),
    "goals": ("id", "account_id", "name", "metric", "direction", "baseline", "target", "current",
              "due_date", "status"),
}
METRICS = ("active_users", "logins", "api_calls")
USAGE_DAYS = 90
LOCAL = ZoneInfo("Asia/Tokyo")   # the scaffold config's time zone: naive datetimes are local to it

CSMS = ("aiko.sato@example.com", "ben.carter@example.com", "chloe.martin@example.com",
        "diego.ramos@example.com", "emma.jensen@example.com")
PREFIXES = ("Acme", "Northwind", "Bluebird", "Cobalt", "Granite", "Harbor", "Ironwood", "Juniper",
            "Kestrel", "Lumen", "Maple", "Nimbus", "Orchid", "Pioneer", "Quarry", "Redwood", "Summit",
            "Tidal", "Umber", "Vertex", "Willow", "Zephyr", "Aurora", "Beacon", "Cedar", "Delta",
            "Ember", "Falcon", "Glacier", "Horizon", "Atlas", "Meridian", "Polaris", "Sierra", "Copper")
SUFFIXES = ("Analytics", "Logistics", "Health", "Labs", "Systems", "Foods", "Retail", "Energy",
            "Media", "Robotics", "Finance", "Studios", "Networks", "Bio", "Freight", "Software",
            "Consulting", "Insurance", "Education", "Manufacturing")
INDUSTRIES = ("software", "logistics", "healthcare", "retail", "manufacturing", "financial services",
              "media", "education", "energy", "consulting")
TIMEZONES = ("Asia/Tokyo", "America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
             "Europe/Paris", "Australia/Sydney", "Asia/Singapore")
FIRST = ("Alice", "Bruno", "Camille", "Daniel", "Elena", "Farah", "George", "Hannah", "Ivan", "Julia",
         "Kofi", "Laura", "Marco", "Nina", "Omar", "Priya", "Quentin", "Rosa", "Samuel", "Tara",
         "Umar", "Vera", "William", "Ximena", "Yusuf", "Zoe")
LAST = ("Anderson", "Becker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Ivanova",
        "Jansen", "Khan", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Silva",
        "Tanaka", "Urban", "Varga", "Weber", "Young", "Zimmermann")
JAPANESE = (("佐藤 健", "ken.sato"), ("鈴木 優子", "yuko.suzuki"), ("高橋 大輔", "daisuke.takahashi"),
            ("田中 美咲", "misaki.tanaka"), ("伊藤 翔", "sho.ito"), ("渡辺 彩", "aya.watanabe"),
            ("山本 直樹", "naoki.yamamoto"), ("中村 恵", "megumi.nakamura"))
LOCALES = ("en-US", "en-US", "en-GB", "de-DE", "fr-FR", "es-ES")
# Accounts with a fixed name (by number): two Japanese companies and one whose name is Jinja syntax,
# to show that data is rendered literally, never evaluated as a template.
SPECIAL = {
    7: ("{{ 7*7 }} Labs", "seven-times-seven-labs.example", "software"),
    12: ("さくら技研株式会社", "sakura-giken.example", "manufacturing"),
    31: ("青空ロジスティクス株式会社", "aozora-logistics.example", "logistics"),
}
# (name pattern, metric, direction) of success-plan goals; {t} is replaced by the target.
GOALS = (
    ("Grow daily active users to {t}", "active_users", "increase"),
    ("Reach {t} logins a day", "logins", "increase"),
    ("Automate reporting: {t} API calls a day", "api_calls", "increase"),
    ("Cut support tickets to {t} a month", "support_tickets", "decrease"),
    ("Shorten time to first report to {t} days", "time_to_first_report_days", "decrease"),
    ("Reduce manual data entry to {t} hours a week", "manual_hours", "decrease"),
)


@dataclass
class _Account:
    """What the generator needs to remember about an account while writing the other files."""

    id: str
    domain: str
    seats: int
    created: datetime
    timezone: str
    profile: str          # normal | low | drop | expansion
    japanese: bool
    special: bool


def generate(directory: Path, anchor: date, accounts: int = 300, seed: int = 7) -> dict[str, int]:
    """Write accounts.csv, contacts.csv, usage.csv and goals.csv into `directory`; return row counts."""
    rng = random.Random(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = _company_names(rng, accounts)
    account_rows, infos = [], []
    for n in range(1, accounts + 1):
        row, info = _account(rng, n, names[n - 1], anchor)
        account_rows.append(row)
        infos.append(info)
    contact_rows: list[dict[str, object]] = []
    goal_rows: list[dict[str, object]] = []
    usage_rows: list[tuple[object, ...]] = []
    for info in infos:
        contact_rows += _contacts(rng, info, anchor, len(contact_rows))
        goal_rows += _goals(rng, info, anchor, len(goal_rows))
        usage_rows += _usage(rng, info, anchor)
    open_goals: dict[object, int] = {}
    for g in goal_rows:
        open_goals[g["account_id"]] = open_goals.get(g["account_id"], 0) + (g["status"] != "achieved")
    for row in account_rows:
        row["open_goals"] = open_goals.get(row["id"], 0)
    for entity, rows in (("accounts", account_rows), ("contacts", contact_rows), ("goals", goal_rows)):
        _write(directory / f"{entity}.csv", COLUMNS[entity], [[r[c] for c in COLUMNS[entity]] for r in rows])
    _write(directory / "usage.csv", COLUMNS["usage"], usage_rows)
    return {"accounts": len(account_rows), "contacts": len(contact_rows), "usage": len(usage_rows),
            "goals": len(goal_rows)}


def _write(path: Path, header: tuple[str, ...], rows: list[list[object]] | list[tuple[object, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def _company_names(rng: random.Random, count: int) -> list[str]:
    combos = [f"{p} {s}" for p in PREFIXES for s in SUFFIXES]
    rng.shuffle(combos)
    size = len(combos)   # more accounts than word pairs: number the repeats
    return [combos[i % size] + (f" {i // size + 1}" if i >= size else "") for i in range(count)]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _iso(moment: datetime, rng: random.Random) -> str:
    """An aware datetime written naive (local), with +09:00, or in UTC with +00:00."""
    style = rng.random()
    local = moment.astimezone(LOCAL)
    if style < 0.5:
        return local.replace(tzinfo=None).isoformat(timespec="seconds")
    if style < 0.8:
        return local.isoformat(timespec="seconds")
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _at(day: date, rng: random.Random, earliest: int = 8, latest: int = 19) -> datetime:
    """A moment on `day` (local time) during working hours."""
    return datetime.combine(day, time(rng.randint(earliest, latest), rng.randrange(0, 60, 5)), LOCAL)


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:          # 29 February
        return d.replace(year=d.year + years, day=28)


def _account(rng: random.Random, n: int, word_name: str, anchor: date) -> tuple[dict[str, object], _Account]:
    special = SPECIAL.get(n)
    name, domain, industry = special if special else (
        word_name, _slug(word_name) + ".example", rng.choice(INDUSTRIES))
    band = rng.random()
    if n == 7:
        band = 0.2          # tech touch, so the digital renewal check-in reaches it
    if band < 0.4:      # tech touch: self-serve, small
        arr, tier = rng.randrange(12, 99) * 100, "smb"
        plan, price = rng.choice((("starter", 360), ("team", 600)))          # price: a seat a year
    elif band < 0.75:   # low touch
        arr, tier = rng.randrange(100, 990) * 100, "mid-market"
        plan, price = rng.choice((("team", 600), ("business", 900)))
    else:               # high touch
        arr = rng.randrange(100, 600) * 1000
        tier = "strategic" if arr >= 300_000 else "enterprise"
        plan, price = rng.choice((("business", 900), ("enterprise", 1200)))
    seats = max(3, round(arr / price))

    age = rng.random()
    if n == 7:
        age_days = 0   # fixed below: renews in 45 days
    elif age < 0.02:
        age_days = rng.randint(1, 3)           # brand new: their contacts get the welcome
    elif age < 0.12:
        age_days = rng.randint(4, 60)          # onboarding
    else:
        age_days = rng.randint(61, 1800)
    created_day = anchor - timedelta(days=age_days)
    if n == 7:
        created_day = _add_years(anchor + timedelta(days=45), -2)
        age_days = (anchor - created_day).days
    created = _at(created_day, rng)
    years = 1
    while _add_years(created_day, years) < anchor - timedelta(days=14):   # a few are up to 2 weeks overdue
        years += 1
    renewal = _add_years(created_day, years)

    profile = rng.choices(("normal", "low", "drop", "expansion"), (70, 10, 12, 8))[0]
    if special:
        profile = "normal"
    health = {"normal": (55, 95), "low": (20, 60), "drop": (25, 65), "expansion": (70, 98)}[profile]
    health_score = round(rng.uniform(*health), 1) if rng.random() > 0.1 else None
    if n == 7:
        health_score = 82.5
    nps = rng.randint(-40, 80) if rng.random() > 0.3 else None
    onboarding = age_days < 60
    if onboarding:
        stage, done = "onboarding", None
    else:
        stage = ("renewal" if (renewal - anchor).days <= 90 else
                 "expansion" if profile == "expansion" else "adoption")
        done = created_day + timedelta(days=rng.randint(14, 60)) if rng.random() > 0.1 else None
    tz = "Asia/Tokyo" if special and n != 7 else (rng.choice(TIMEZONES) if rng.random() > 0.05 else None)
    row = {
        "id": f"A{n:04d}", "name": name, "domain": domain, "tier": tier, "lifecycle_stage": stage,
        "arr": arr, "seats": seats, "plan": plan, "csm_email": rng.choice(CSMS),
        "renewal_date": renewal.isoformat(), "created_at": _iso(created, rng), "timezone": tz,
        "industry": industry if rng.random() > 0.05 else None, "nps": nps, "health_score": health_score,
        "onboarding_done_at": done.isoformat() if done else None,
    }
    japanese = bool(special and n != 7)
    return row, _Account(row["id"], domain, seats, created, tz or "", profile, japanese, bool(special))


def _contacts(rng: random.Random, acc: _Account, anchor: date, start: int) -> list[dict[str, object]]:
    count = rng.randint(2, 5)
    roles = ["champion", "decision_maker"] + [rng.choice(("admin", "user", "user")) for _ in range(count - 2)]
    if rng.random() < 0.06:
        roles[1] = "user"        # nobody signs: a gap the CSM should fill
    if rng.random() < 0.04:
        roles[0] = "admin"       # no champion yet
    brand_new = (anchor - acc.created.astimezone(LOCAL).date()).days <= 3
    rows, seen = [], set()
    for i, role in enumerate(roles):
        if acc.japanese or (acc.timezone == "Asia/Tokyo" and rng.random() < 0.5):
            name, local_part = rng.choice(JAPANESE)
            locale = "ja-JP"
        else:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name, local_part, locale = f"{first} {last}", f"{first}.{last}".lower(), rng.choice(LOCALES)
        email = f"{local_part}@{acc.domain}"
        k = 2
        while email in seen:
            email, k = f"{local_part}{k}@{acc.domain}", k + 1
        seen.add(email)
        if brand_new:
            created = acc.created + timedelta(minutes=rng.randint(5, 240))
        elif (i == count - 1 and acc.special) or rng.random() < 0.015:
            created = _at(anchor - timedelta(days=rng.randint(1, 3)), rng)   # joined in the last 3 days
        else:
            first_day = acc.created.astimezone(LOCAL).date()
            span = max(0, (anchor - first_day).days - 4)
            offset = rng.randint(0, min(span, 45)) if rng.random() < 0.8 else rng.randint(0, span)
            created = max(acc.created, _at(first_day + timedelta(days=offset), rng))
        recent = (anchor - created.astimezone(LOCAL).date()).days <= 3
        rows.append({
            "id": f"C{start + len(rows) + 1:05d}", "account_id": acc.id, "email": email, "name": name,
            "role": role, "created_at": _iso(created, rng),
            "timezone": (acc.timezone or None) if rng.random() > 0.05 else None,
            "unsubscribed": "true" if not recent and rng.random() < 0.05 else "false",
            "locale": locale if rng.random() > 0.1 else None,
        })
    return rows


def _goals(rng: random.Random, acc: _Account, anchor: date, start: int) -> list[dict[str, object]]:
    count = 1 if acc.special else rng.choices((0, 1, 2), (35, 40, 25))[0]
    rows = []
    for pattern, metric, direction in rng.sample(GOALS, count):
        if metric == "active_users":
            baseline, target = max(1, round(acc.seats * 0.3)), max(2, round(acc.seats * 0.7))
        elif metric == "logins":
            baseline, target = max(2, round(acc.seats * 0.5)), max(4, round(acc.seats * 1.2))
        elif metric == "api_calls":
            baseline, target = rng.randrange(0, 200, 10), rng.randrange(500, 5000, 100)
        elif metric == "support_tickets":
            baseline, target = rng.randint(20, 60), rng.randint(5, 15)
        elif metric == "time_to_first_report_days":
            baseline, target = rng.randint(10, 30), rng.randint(2, 7)
        else:
            baseline, target = rng.randint(15, 40), rng.randint(2, 10)
        roll = rng.random()
        progress = 1.1 if acc.special else None if roll < 0.08 else rng.uniform(-0.2, 1.25)
        current = None if progress is None else max(0, round(baseline + (target - baseline) * progress, 1))
        if progress is None:
            status = "not_started"
        elif progress >= 1:
            status = rng.choice(("achieved", "on_track"))     # the CSM has not always updated it yet
        elif rng.random() < 0.04:
            status = "achieved"                               # agreed as met although the number lags
        else:
            status = "on_track" if progress > 0.5 else "at_risk"
        rows.append({
            "id": f"G{start + len(rows) + 1:04d}", "account_id": acc.id, "name": pattern.format(t=target),
            "metric": metric, "direction": direction, "baseline": baseline, "target": target,
            "current": current, "due_date": (anchor + timedelta(days=rng.randint(-30, 180))).isoformat(),
            "status": status,
        })
    return rows


def _usage(rng: random.Random, acc: _Account, anchor: date) -> list[tuple[object, ...]]:
    """90 days of active_users, logins and api_calls ending with `anchor`, with gaps and weekends."""
    first = acc.created.astimezone(LOCAL).date()
    level = {"normal": rng.uniform(0.35, 0.75), "low": rng.uniform(0.03, 0.12),
             "drop": rng.uniform(0.4, 0.7), "expansion": rng.uniform(0.92, 1.05)}[acc.profile]
    drop_from = anchor - timedelta(days=rng.randint(22, 35))
    drop_to = rng.uniform(0.15, 0.45)
    logins_per_user = rng.uniform(1.2, 2.5)
    api_per_seat = rng.uniform(20, 200) if rng.random() < 0.55 else 0.0
    flaky = 0.1 if rng.random() < 0.1 else 0.02     # how often a day is missing from the feed
    rows: list[tuple[object, ...]] = []
    for back in range(USAGE_DAYS - 1, -1, -1):
        day = anchor - timedelta(days=back)
        if day < first or rng.random() < flaky:
            continue
        fraction = level
        if acc.profile == "drop" and day >= drop_from:
            fraction *= drop_to
        ramp = (day - first).days
        if ramp < 30:                                   # onboarding: adoption grows over a month
            fraction *= 0.2 + 0.8 * ramp / 30
        if day.weekday() >= 5:
            fraction *= 0.15
        active = min(round(acc.seats * 1.1), round(acc.seats * fraction * rng.uniform(0.88, 1.12)))
        values = {"active_users": active, "logins": round(active * logins_per_user * rng.uniform(0.9, 1.1)),
                  "api_calls": round(acc.seats * api_per_seat * fraction * rng.uniform(0.8, 1.2))}
        for metric in METRICS:
            if metric == "api_calls" and not api_per_seat:
                continue
            if rng.random() < 0.01:
                continue
            rows.append((acc.id, metric, day.isoformat(), values[metric]))
    return rows
