"""Deterministic benchmark data: accounts, contacts, daily usage and goals, streamed to CSV files.

Rows are written as they are generated (nothing is kept per account once its rows are out), so a
million accounts needs only a few megabytes of memory. The same `DataSpec` always gives
byte-identical files. Choices, documented for readers of the results:

* ids are zero-padded (`A0000001`, `C00000001`, `G0000001`) so text order is numeric order;
* ~2 contacts per account (1-3), the first a champion (92%), the second a decision maker; 1.5% were
  created in the last 3 days (the welcome playbook), 4% are unsubscribed;
* ~0.5 goals per account (0, 1 or 2 with weights 60/30/10);
* usage: 3 metrics (active_users, logins, api_calls) over the last `days` days (anchor-days+1 …
  anchor). `usage_fraction` of the accounts report usage at all (default 1.0); of those, 4% are
  "churned" (no rows), ~40% have no api_calls (no integration), and days without activity have no
  row (a missing day counts as 0 in metric()), so about 75% of the possible rows exist;
* usage profiles: normal 70%, low 10%, dropping (down ~60% over the last 30 days) 10%,
  expansion (near every seat active) 6%, churned 4%;
* custom fields have empty values: industry 5%, nps 30%, health_score 10%, onboarding_done_at for
  accounts still onboarding plus 10% of the others.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Callable, TextIO

from engine.demo_data import COLUMNS as DEMO_COLUMNS

ANCHOR = date(2026, 3, 2)          # a Monday: the benchmark's "today"
METRICS = ("active_users", "logins", "api_calls")
COLUMNS = DEMO_COLUMNS      # the same CSV layout as the demo data
INDUSTRIES = ("software", "logistics", "healthcare", "retail", "manufacturing", "financial services",
              "media", "education", "energy", "consulting")
TIMEZONES = ("Asia/Tokyo", "America/New_York", "Europe/London", "Europe/Berlin", "Australia/Sydney")
LOCALES = ("en-US", "en-US", "en-GB", "de-DE", "fr-FR", "ja-JP")
FIRST = ("alice", "bruno", "camille", "daniel", "elena", "farah", "george", "hannah", "ivan", "julia")
LAST = ("anderson", "becker", "costa", "dubois", "evans", "fischer", "garcia", "hughes", "khan", "lopez")
CSMS = tuple(f"csm{i:02d}@example.com" for i in range(1, 51))
GOALS = (("Grow daily active users to {t}", "active_users", "increase"),
         ("Reach {t} logins a day", "logins", "increase"),
         ("Automate reporting: {t} API calls a day", "api_calls", "increase"),
         ("Cut support tickets to {t} a month", "support_tickets", "decrease"))
PROFILES = ("normal", "low", "drop", "expansion", "churned")
PROFILE_WEIGHTS = (70, 10, 10, 6, 4)
NOISE = 4096                        # size of the precomputed noise tables (cheap, deterministic)


@dataclass(frozen=True)
class DataSpec:
    """What to generate."""

    accounts: int
    days: int = 60
    seed: int = 42
    anchor: date = ANCHOR
    usage_fraction: float = 1.0


def account_id(n: int) -> str:
    """The id of the n-th account (1-based)."""
    return f"A{n:07d}"


def generate(directory: Path, spec: DataSpec,
             progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Write accounts.csv, contacts.csv, usage.csv and goals.csv into `directory`; return row counts."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: (directory / f"{name}.csv").open("w", encoding="utf-8", newline="") for name in COLUMNS}
    try:
        return _Generator(spec, files).run(progress)
    finally:
        for fh in files.values():
            fh.close()


class _Generator:
    def __init__(self, spec: DataSpec, files: dict[str, TextIO]):
        self.spec, self.files = spec, files
        self.rng = random.Random(spec.seed)
        noise_rng = random.Random(spec.seed + 1)
        self.noise = [noise_rng.uniform(0.75, 1.25) for _ in range(NOISE)]
        self.presence = [noise_rng.random() for _ in range(NOISE)]
        self.day_text = [(spec.anchor - timedelta(days=spec.days - 1 - i)).isoformat() for i in range(spec.days)]
        self.writers = {name: csv.writer(fh, lineterminator="\n") for name, fh in files.items() if name != "usage"}
        self.counts = dict.fromkeys(COLUMNS, 0)
        self.contacts = self.goals = 0

    def run(self, progress: Callable[[int, int], None] | None) -> dict[str, int]:
        for name, writer in self.writers.items():
            writer.writerow(COLUMNS[name])
        self.files["usage"].write(",".join(COLUMNS["usage"]) + "\n")
        step = max(1, self.spec.accounts // 20)
        for n in range(1, self.spec.accounts + 1):
            self._account(n)
            if progress and n % step == 0:
                progress(n, self.spec.accounts)
        return dict(self.counts)

    def _account(self, n: int) -> None:
        rng, anchor = self.rng, self.spec.anchor
        aid = account_id(n)
        band = rng.random()
        if band < 0.4:
            arr, tier, plan, price = rng.randrange(12, 99) * 100, "smb", "team", 600
        elif band < 0.8:
            arr, tier, plan, price = rng.randrange(100, 990) * 100, "mid-market", "business", 900
        else:
            arr = rng.randrange(100, 800) * 1000
            tier, plan, price = ("strategic" if arr >= 300_000 else "enterprise"), "enterprise", 1200
        seats = max(3, round(arr / price))
        age_days = rng.randint(1, 60) if rng.random() < 0.1 else rng.randint(61, 1500)
        created_day = anchor - timedelta(days=age_days)
        renewal = anchor + timedelta(days=rng.randint(-20, 364))
        profile = rng.choices(PROFILES, PROFILE_WEIGHTS)[0]
        low, high = {"normal": (50, 95), "low": (20, 60), "drop": (25, 70), "expansion": (70, 99),
                     "churned": (5, 40)}[profile]
        onboarding = age_days <= 45
        stage = ("onboarding" if onboarding else "renewal" if (renewal - anchor).days <= 90 else
                 "expansion" if profile == "expansion" else "adoption")
        done = None if onboarding or rng.random() < 0.1 else created_day + timedelta(days=rng.randint(14, 45))
        self.writers["accounts"].writerow((
            aid, f"Company {n}", f"company{n}.example", tier, stage, arr, seats, plan, rng.choice(CSMS),
            renewal.isoformat(), _moment(created_day, rng),
            rng.choice(TIMEZONES), rng.choice(INDUSTRIES) if rng.random() > 0.05 else "",
            rng.randint(-60, 90) if rng.random() > 0.3 else "",
            round(rng.uniform(low, high), 1) if rng.random() > 0.1 else "",
            done.isoformat() if done else ""))
        self.counts["accounts"] += 1
        self._contacts(n, aid, created_day)
        self._goals(aid, seats)
        if profile != "churned" and rng.random() < self.spec.usage_fraction:
            self._usage(aid, seats, profile)

    def _contacts(self, n: int, aid: str, created_day: date) -> None:
        rng, anchor = self.rng, self.spec.anchor
        count = rng.choices((1, 2, 3), (3, 4, 3))[0]
        for i in range(count):
            role = ("champion" if rng.random() < 0.92 else "admin") if i == 0 else \
                "decision_maker" if i == 1 else rng.choice(("admin", "user"))
            recent = rng.random() < 0.015
            day = anchor - timedelta(days=rng.randint(0, 3)) if recent else \
                min(anchor - timedelta(days=4), created_day + timedelta(days=rng.randint(0, 60)))
            self.contacts += 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            self.writers["contacts"].writerow((
                f"C{self.contacts:08d}", aid, f"{first}.{last}{i}@company{n}.example",
                f"{first.title()} {last.title()}", role, _moment(day, rng), rng.choice(TIMEZONES),
                "true" if not recent and rng.random() < 0.04 else "false",
                rng.choice(LOCALES) if rng.random() > 0.1 else ""))
        self.counts["contacts"] += count

    def _goals(self, aid: str, seats: int) -> None:
        rng, anchor = self.rng, self.spec.anchor
        count = rng.choices((0, 1, 2), (60, 30, 10))[0]
        for pattern, metric, direction in rng.sample(GOALS, count):
            if direction == "increase":
                baseline, target = max(1, round(seats * 0.3)), max(2, round(seats * 0.8))
            else:
                baseline, target = rng.randint(20, 60), rng.randint(3, 15)
            progress = None if rng.random() < 0.08 else rng.uniform(-0.2, 1.2)
            current = "" if progress is None else max(0, round(baseline + (target - baseline) * progress, 1))
            status = ("not_started" if progress is None else rng.choice(("achieved", "on_track")) if progress >= 1
                      else "on_track" if progress > 0.5 else "at_risk")
            self.goals += 1
            self.writers["goals"].writerow((
                f"G{self.goals:07d}", aid, pattern.format(t=target), metric, direction, baseline, target,
                current, (anchor + timedelta(days=rng.randint(-30, 180))).isoformat(), status))
            self.counts["goals"] += 1

    def _usage(self, aid: str, seats: int, profile: str) -> None:
        rng, days = self.rng, self.spec.days
        share = {"normal": (0.35, 0.8), "low": (0.04, 0.18), "drop": (0.4, 0.8), "expansion": (0.85, 1.0)}[profile]
        active = seats * rng.uniform(*share)
        density = 0.97 if profile != "low" else 0.6
        levels = [1.0] * days
        if profile == "drop":           # falls to ~40% over the last 30 days
            for i in range(max(0, days - 30), days):
                levels[i] = 1.0 - 0.6 * (i - (days - 30) + 1) / 30
        bases = {"active_users": active, "logins": active * rng.uniform(1.0, 2.0)}
        if rng.random() < 0.6:
            bases["api_calls"] = active * rng.uniform(1, 20)
        noise, presence, text = self.noise, self.presence, self.day_text
        out = []
        for metric, base in bases.items():
            off = rng.randrange(NOISE)
            prefix = f"{aid},{metric},"
            for i in range(days):
                k = (off + i) % NOISE
                if presence[k] < density:
                    out.append(f"{prefix}{text[i]},{int(base * levels[i] * noise[k])}\n")
        self.files["usage"].write("".join(out))
        self.counts["usage"] += len(out)


def _moment(day: date, rng: random.Random) -> str:
    """A naive ISO date-time during working hours on `day` (read in the config's time zone)."""
    return datetime.combine(day, time(rng.randint(8, 18), rng.randrange(0, 60, 5))).isoformat()
