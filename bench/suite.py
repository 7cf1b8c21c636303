"""The benchmark workspace: config.yaml, 50 playbooks, email templates (data comes from bench.data).

The playbooks mix every trigger kind (low_usage with below / below_per_seat / drop_pct,
renewal_approaching, goal_achieved, when), `where` filters, segments, metric windows of 7/14/30 days
with sum/avg/min/max/count/last, and the three subjects: 38 about accounts, 6 about contacts, 6 about
goals. Actions (slack, task, email, webhook) all go to local sinks: the config has no `connectors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SEGMENTS = {
    "tech_touch": "account.arr < 10000",
    "low_touch": "account.arr >= 10000 and account.arr < 100000",
    "high_touch": "account.arr >= 100000",
    "enterprise": "account.tier in ['enterprise', 'strategic']",
    "promoters": "account.nps >= 50",
    "onboarding": "account.lifecycle_stage == 'onboarding'",
}
FIELDS = {"accounts": {"industry": "string", "nps": "integer", "health_score": "number",
                       "onboarding_done_at": "date"},
          "contacts": {"locale": "string"}}
TEMPLATES = {
    "checkin.subject.j2": "Checking in on {{ account.name }}",
    "checkin.html.j2": "<p>Hello {{ contact.name }},</p><p>{{ account.name }} renews on {{ account.renewal_date }}. "
                       "Shall we review the year?</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
    "checkin.txt.j2": "Hello {{ contact.name }},\n\n{{ account.name }} renews on {{ account.renewal_date }}.\n",
    "welcome.subject.j2": "Welcome to the product, {{ contact.name }}",
    "welcome.txt.j2": "Welcome aboard! Here are your first three steps.\n{{ unsubscribe_url }}\n",
    "congrats.subject.j2": "{{ account.name }} reached a goal",
    "congrats.txt.j2": "Congratulations: \"{{ goal.name }}\" is achieved ({{ goal.current }} / {{ goal.target }}).\n",
}


# -- action shorthands -----------------------------------------------------------------------------
def slack_csm(text: str) -> dict[str, Any]:
    return {"slack": {"to": "{{ account.csm_email }}", "text": text}}


def slack_channel(channel: str, text: str) -> dict[str, Any]:
    return {"slack": {"channel": channel, "text": text}}


def task(title: str, due: str = "3d", priority: str = "normal") -> dict[str, Any]:
    return {"task": {"title": title, "assignee": "{{ account.csm_email }}", "due_in": due, "priority": priority,
                     "description": "Account {{ account.id }} ({{ account.tier }}, ARR {{ account.arr }})."}}


def email_role(role: str, template: str) -> dict[str, Any]:
    return {"email": {"to": {"role": role}, "template": template}}


def email_inline(to: Any, subject: str, body: str) -> dict[str, Any]:
    return {"email": {"to": to, "subject": subject, "body": body}}


def webhook(event: str) -> dict[str, Any]:
    return {"webhook": {"url": "https://hooks.example.com/cs", "headers": {"X-Event": event},
                        "body": {"event": event, "account": "{{ account.id }}", "arr": "{{ account.arr }}"}}}


NAME = "{{ account.name }}"


def _pb(id_: str, trigger: Any, actions: list[Any], *, subject: str = "account", where: list[str] | None = None,
        **extra: Any) -> dict[str, Any]:
    # the first tick measures everything entering: a backfill, not the baselining a real switch-on does
    out: dict[str, Any] = {"id": id_, "name": id_.replace("-", " ").capitalize(), "activation": "fire"}
    if subject != "account":
        out["subject"] = subject
    out["trigger"] = trigger
    if where:
        out["where"] = where
    out.update(extra)
    out["actions"] = actions
    return out


def playbooks() -> list[dict[str, Any]]:
    """The 50 benchmark playbooks, as YAML-ready mappings."""
    low = lambda **o: {"low_usage": o}                    # noqa: E731
    renewal = lambda d: {"renewal_approaching": {"within_days": d}}  # noqa: E731
    account = [
        _pb("logins-7d-low", low(metric="logins", days=7, agg="sum", below=3), [slack_csm(f"Few logins at {NAME}")],
            where=["not segment('onboarding')"], repeat="7d"),
        _pb("active-users-30d-per-seat", low(metric="active_users", days=30, agg="avg", below_per_seat=0.2),
            [slack_csm(f"Low adoption at {NAME}"), task(f"Adoption review: {NAME}")],
            where=["not segment('tech_touch')", "account.lifecycle_stage != 'onboarding'"], repeat="14d"),
        _pb("active-users-14d-per-seat-ht", low(metric="active_users", days=14, agg="avg", below_per_seat=0.3),
            [task(f"Seat usage low: {NAME}", priority="high")], where=["segment('high_touch')"],
            on_resolve=[slack_csm(f"Seat usage recovered at {NAME}")]),
        _pb("api-calls-30d-low", low(metric="api_calls", days=30, agg="sum", below=100), [webhook("api-low")],
            where=["account.plan == 'enterprise'"]),
        _pb("logins-14d-max-low", low(metric="logins", days=14, agg="max", below=2),
            [email_inline({"role": "champion"}, "We miss you at {{ account.name }}", "Log in to see what's new.")],
            where=["segment('low_touch')"]),
        _pb("active-users-7d-min-zero", low(metric="active_users", days=7, agg="min", below=1),
            [slack_channel("#cs-alerts", f"{NAME} had a day without any active user")],
            where=["segment('high_touch') or segment('enterprise')"], cooldown="7d"),
        _pb("logins-drop-30d", low(metric="logins", days=30, agg="sum", drop_pct=25),
            [task(f"Usage drop at {NAME}", "2d", "high")], where=["segment('low_touch') or segment('high_touch')"],
            cooldown="14d", on_resolve=[slack_csm(f"Logins recovered at {NAME}")]),
        _pb("active-users-drop-14d", low(metric="active_users", days=14, agg="avg", drop_pct=30),
            [slack_channel("#cs-risk", f"Active users down at {NAME}"), task(f"Drop at {NAME}"),
             webhook("usage-drop")], where=["segment('high_touch')"]),
        _pb("api-calls-drop-7d", low(metric="api_calls", days=7, agg="sum", drop_pct=50), [webhook("api-drop")]),
        _pb("logins-drop-7d-tech", low(metric="logins", days=7, agg="avg", drop_pct=50),
            [email_inline({"role": "champion"}, "Need a hand?", "We noticed fewer logins this week.")],
            where=["segment('tech_touch')"], cooldown="30d"),
        _pb("renewal-30-high-touch", renewal(30),
            [slack_channel("#cs-renewals", f"{NAME} renews in {{{{ days_until(account.renewal_date) }}}} days"),
             task(f"Renewal call: {NAME}", "1w")], where=["segment('high_touch')"]),
        _pb("renewal-60-risk", renewal(60),
            [slack_channel("#cs-renewals", f"Renewal risk: {NAME}"), task(f"Save plan: {NAME}", "3d", "high")],
            where=["segment('high_touch')",
                   "account.health_score < 60 or metric_change('active_users', 30, 'avg') <= -0.25"],
            repeat="30d", cooldown="60d", on_resolve=[slack_channel("#cs-renewals", f"{NAME} no longer at risk")]),
        _pb("renewal-90-checkin", renewal(90), [email_role("decision_maker", "checkin")],
            where=["not segment('high_touch')", "account.health_score >= 60"]),
        _pb("renewal-120-enterprise-no-nps", renewal(120), [task(f"Collect NPS before renewal: {NAME}")],
            where=["segment('enterprise')", "account.nps is none"]),
        _pb("renewal-45-low-logins", renewal(45), [slack_csm(f"{NAME} renews soon with few logins")],
            where=["metric('logins', 30, 'avg') < account.seats * 0.5"]),
        _pb("renewal-14-any", renewal(14),
            [email_inline({"role": "champion"}, "Your renewal", "{{ account.name }} renews on "
                          "{{ account.renewal_date }}."), slack_csm(f"{NAME} renews within 2 weeks")]),
        _pb("renewal-90-detractor", renewal(90), [task(f"Detractor renewing: {NAME}", "2d", "high")],
            where=["account.nps < 0"]),
        _pb("nps-detractor", {"when": "account.nps is not none and account.nps < -50"},
            [task(f"Follow up on NPS: {NAME}")], max_episodes=1),
        _pb("health-missing-high-touch", {"when": "account.health_score is none"},
            [slack_csm(f"No health score for {NAME}")], where=["segment('high_touch')"]),
        _pb("onboarding-stalled",
            {"when": "days_since(account.created_at) > 30 and account.onboarding_done_at is none"},
            [email_role("champion", "welcome"), task(f"Onboarding stalled: {NAME}")], where=["segment('onboarding')"]),
        _pb("expansion-signal", {"when": "metric('active_users', 7, 'max') >= account.seats * 0.9"},
            [slack_csm(f"Expansion signal at {NAME}"), task(f"Expansion talk: {NAME}", "1w")], cooldown="30d"),
        _pb("api-power-users", {"when": "metric('api_calls', 30, 'count') >= 28 and "
                                         "metric('api_calls', 30, 'avg') > account.seats * 12"},
            [webhook("api-power")]),
        _pb("health-risk-regulated",
            {"when": "account.industry in ['healthcare', 'financial services'] and account.health_score < 40"},
            [task(f"Regulated account at risk: {NAME}", "2d", "high")]),
        _pb("promoter-advocacy", {"when": "segment('promoters') and account.health_score >= 80"},
            [email_inline({"role": "champion"}, "Would you share your story?", "You are one of our best customers.")],
            where=["days_since(account.onboarding_done_at) > 180"], max_episodes=1),
        _pb("arr-per-seat-outlier", {"when": "account.arr / account.seats < 500"},
            [slack_channel("#cs-pricing", f"{NAME} pays under 500 a seat")]),
        _pb("new-account", {"when": "days_since(account.created_at) <= 7"}, [email_role("champion", "welcome")],
            max_episodes=1),
        _pb("renewal-stage-unhealthy", {"when": "account.lifecycle_stage == 'renewal' and account.health_score < 50"},
            [slack_channel("#cs-renewals", f"{NAME} in renewal with health {{{{ account.health_score }}}}")]),
        _pb("no-recent-logins", {"when": "metric('logins', 14, 'last') is none"}, [task(f"No logins: {NAME}")],
            where=["not segment('onboarding')"]),
        _pb("logins-per-user-low", {"when": "metric('active_users', 30, 'sum') > 0 and "
                                             "metric('logins', 30, 'sum') / metric('active_users', 30, 'sum') < 1.1"},
            [slack_csm(f"Users at {NAME} rarely come back")]),
        _pb("nps-missing-engaged", {"when": "account.nps is none and "
                                             "metric('active_users', 14, 'avg') >= account.seats * 0.7"},
            [email_inline({"role": "champion"}, "Two questions for you", "How likely are you to recommend us?")]),
        _pb("high-value-low-health", {"when": "account.arr >= 300000 and account.health_score < 70"},
            [slack_channel("#cs-exec", f"{NAME} (ARR {{{{ account.arr }}}}) health below 70"),
             task(f"Exec sponsor call: {NAME}", "1w", "high"), webhook("exec-risk")], repeat="7d"),
        _pb("apac-renewal-low-touch", renewal(60), [email_role("decision_maker", "checkin")],
            where=["account.timezone in ['Asia/Tokyo', 'Australia/Sydney']", "segment('low_touch')"]),
        _pb("smb-low-usage-digital", low(metric="active_users", days=30, agg="avg", below_per_seat=0.25),
            [email_role("champion", "welcome")], where=["segment('tech_touch')"], cooldown="30d"),
        _pb("mid-market-api-drop", low(metric="api_calls", days=14, agg="sum", drop_pct=30),
            [task(f"Integration broken? {NAME}")], where=["segment('low_touch')"]),
        _pb("logins-change-unhealthy", {"when": "metric_change('logins', 14, 'sum') <= -0.3 and "
                                                 "account.health_score < 60"},
            [slack_csm(f"Logins falling at unhealthy {NAME}")], cooldown="7d"),
        _pb("seats-underused-enterprise", {"when": "metric('active_users', 30, 'max') < account.seats * 0.5"},
            [task(f"Right-size seats: {NAME}")], where=["segment('enterprise')"]),
        _pb("renewal-overdue", {"when": "days_until(account.renewal_date) < 0"},
            [slack_channel("#cs-renewals", f"{NAME} renewal is overdue")], repeat="7d"),
        _pb("plan-upgrade", {"when": "account.plan == 'team' and "
                                      "metric('active_users', 14, 'avg') > account.seats * 0.85"},
            [email_inline({"role": "decision_maker"}, "Time for the business plan?", "Your team is growing.")]),
    ]
    contact = [
        _pb("welcome-new-contact", {"when": "days_since(contact.created_at) <= 3"},
            [email_inline("contact", "Welcome, {{ contact.name }}", "Here is how to get started.")],
            subject="contact", where=["not contact.unsubscribed"], max_episodes=1),
        _pb("champion-unsubscribed", {"when": "contact.role == 'champion' and contact.unsubscribed"},
            [slack_csm("Champion {{ contact.email }} at " + NAME + " unsubscribed")], subject="contact"),
        _pb("admin-onboarding", {"when": "contact.role == 'admin'"},
            [email_inline("contact", "Admin guide", "Set up SSO and invite your team.")], subject="contact",
            where=["account.lifecycle_stage == 'onboarding'"]),
        _pb("decision-maker-renewal", {"when": "contact.role == 'decision_maker' and "
                                                "days_until(account.renewal_date) >= 0 and "
                                                "days_until(account.renewal_date) <= 30"},
            [email_inline("contact", "Your renewal", "Let's talk about next year.")], subject="contact",
            where=["not contact.unsubscribed"]),
        _pb("german-contacts-low-usage", {"when": "contact.locale == 'de-DE'"},
            [email_inline("contact", "Brauchen Sie Hilfe?", "Wir helfen gern.")], subject="contact",
            where=["metric('logins', 7, 'sum') < 5"]),
        _pb("contact-locale-missing-ht", {"when": "contact.locale is none and segment('high_touch')"},
            [task("Set the locale of {{ contact.email }}")], subject="contact"),
    ]
    goal = [
        _pb("goal-achieved", {"goal_achieved": {}}, [email_role("champion", "congrats"),
                                                     task(f"Propose the next goal to {NAME}", "1w")],
            subject="goal", max_episodes=1),
        _pb("goal-achieved-adoption", {"goal_achieved": {"name": "Grow*"}},
            [slack_csm("Adoption goal reached at " + NAME + ": {{ goal.name }}")], subject="goal"),
        _pb("goal-at-risk-due-soon", {"when": "days_until(goal.due_date) >= 0 and days_until(goal.due_date) <= 30 "
                                               "and goal.current < goal.target * 0.5"},
            [task("Goal at risk: {{ goal.name }}", "2d", "high")], subject="goal",
            where=["goal.direction == 'increase'"]),
        _pb("goal-overdue", {"when": "days_until(goal.due_date) < 0 and goal.status != 'achieved'"},
            [slack_csm("Goal overdue at " + NAME + ": {{ goal.name }}")], subject="goal", repeat="14d"),
        _pb("goal-not-started", {"when": "goal.status == 'not_started'"}, [task("Kick off {{ goal.name }}")],
            subject="goal", where=["days_since(account.created_at) > 90"]),
        _pb("goal-logins-met", {"when": "goal.metric == 'logins' and metric('logins', 30, 'avg') >= goal.target"},
            [webhook("goal-met")], subject="goal"),
    ]
    return account + contact + goal


def config_text(database: str, sources: list[dict[str, Any]] | None = None) -> str:
    """config.yaml of the benchmark workspace (with other `sources`: the delta re-sync's config)."""
    if sources is None:
        sources = [{"entity": e, "csv": f"data/{e}.csv"} for e in ("accounts", "contacts", "usage", "goals")]
    config = {
        "timezone": "Asia/Tokyo",
        "database": database,
        "playbooks": "playbooks/",
        "templates": "templates/",
        "fields": FIELDS,
        "segments": SEGMENTS,
        "sources": sources,
        "defaults": {"schedule": "0 9 * * 1-5"},
    }
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=120)


def write_workspace(root: Path, count: int = 50) -> Path:
    """Write playbooks/, templates/ and config.yaml (SQLite in `root`); returns the config path."""
    (root / "playbooks").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(exist_ok=True)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text + "\n", encoding="utf-8")
    chosen = playbooks()
    if count > len(chosen):
        raise ValueError(f"the suite has {len(chosen)} playbooks; --playbooks {count} is too many")
    for i, pb in enumerate(select(chosen, count), 1):
        text = yaml.safe_dump(pb, sort_keys=False, allow_unicode=True, width=120)
        (root / "playbooks" / f"{i:02d}-{pb['id']}.yaml").write_text(text, encoding="utf-8")
    return write_config(root, "config.yaml", "sqlite:///playbook.db")


def write_config(root: Path, name: str, database: str) -> Path:
    """A config file in `root` using the workspace's playbooks and data with another database."""
    path = root / name
    path.write_text(config_text(database), encoding="utf-8")
    return path


def select(chosen: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` playbooks spread over the suite, so a smaller suite still has every subject and trigger."""
    if count >= len(chosen):
        return chosen
    step = len(chosen) / count
    return [chosen[int(i * step)] for i in range(count)]
