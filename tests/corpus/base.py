"""The valid working directory every broken input starts from: a config that uses every part issue 23 added
(declared values and metrics, durations, crons, a contact policy), two playbooks with a template, data that
syncs, and a database that has run once (so outbox actions and tasks exist). Its settings are those the
fixtures in tests/fixtures/invalid/ are written against, and it holds their templates."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from click.testing import CliRunner

CONFIG = """\
timezone: Asia/Tokyo
database: sqlite:///playbook.db
playbooks: playbooks/
templates: templates/
fields:
  accounts: {health_score: number}
  contacts: {locale: string}
segments:
  high_touch: "account.arr >= 100000"
  renewing: "account.lifecycle_stage == 'renewl'"      # as tests/fixtures/invalid/playbooks expect; unused here
  renewal: "account.lifecycle_stage == 'renewal'"
values:
  contacts.role: [champion, decision_maker, admin, user]
  accounts.lifecycle_stage: [onboarding, adoption, expansion, renewal]
metrics: [logins, active_users, api_calls]
sources:
  - {entity: accounts, csv: data/accounts.csv}
  - {entity: contacts, csv: data/contacts.csv}
  - {entity: usage, csv: data/usage.csv, schedule: "30 * * * *"}
defaults:
  schedule: "0 9 * * 1-5"
  sync_schedule: "0 * * * *"
  max_data_age: 100w
delivery:
  max_attempts: 3
  backoff_base: 30s
  backoff_max: 1h
  expire_after: 3d
  lease: 5m
contact_policy:
  timezone_from: [contact.timezone, account.timezone]
  quiet_hours: {start: "20:00", end: "08:00"}
  business_days: {weekdays: [mon, tue, wed, thu, fri], holidays: JP}
  caps:
    - {per: contact, max: 3, within: 7d}
    - {per: account, max: 10, within: 1mo}
  on_cap: defer
"""

PLAYBOOKS = {
    "big-accounts": """\
        id: big-accounts
        name: Big accounts
        activation: fire
        schedule: "0 9 * * 1-5"
        trigger:
          when: account.arr >= 1000
        where:
          - metric('logins', 30, 'sum') >= 0
        repeat: 30d
        cooldown: 1mo
        actions:
          - slack: {channel: "#cs", text: "{{ account.name | upper }} is big"}
          - task: {title: "Call {{ account.name }}", assignee: "{{ account.csm_email }}", due_in: 3d}
          - email: {to: {role: champion}, template: hello}
        """,
    "renewals": """\
        id: renewals
        name: Renewals
        trigger:
          renewal_approaching: {within_days: 90}
        where:
          - segment('renewal')
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }} renews soon"}
        """,
}

TEMPLATES = {
    "hello.subject.j2": "Hello {{ contact.name }}\n",
    "hello.txt.j2": "Dear {{ contact.name }},\n\n{{ account.name }} is doing well.\n",
}

DATA = {
    "accounts.csv": "id,name,arr,csm_email,renewal_date,created_at,health_score,lifecycle_stage,timezone\n"
                    "A1,Acme,5000,csm@example.com,2027-01-15,2025-01-01,70,renewal,Asia/Tokyo\n"
                    "A2,Beta,50,csm@example.com,2027-06-01,2025-02-01,40,adoption,\n",
    "contacts.csv": "id,account_id,email,name,role,created_at,unsubscribed,timezone\n"
                    "C1,A1,ann@acme.example,Ann,champion,2025-01-01,false,America/New_York\n"
                    "C2,A2,bob@beta.example,Bob,user,2025-02-01,false,\n",
    "usage.csv": "account_id,metric,day,value\nA1,logins,2026-11-01,12\nA2,api_calls,2026-11-01,3\n",
}

FIXTURES = Path(__file__).parent.parent / "fixtures" / "invalid"
NOW = "2026-12-01T10:00"        # a Tuesday, outside quiet hours in Tokyo: the base run delivers


def build(root: Path) -> Path:
    """Write the valid working directory at `root`, sync it and run it once; returns `root`."""
    from engine.cli import main

    for folder in ("playbooks", "templates", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(CONFIG, encoding="utf-8")
    for name, text in PLAYBOOKS.items():
        (root / "playbooks" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text, encoding="utf-8")
    for template in (FIXTURES / "templates").iterdir():
        shutil.copy(template, root / "templates" / template.name)
    for name, text in DATA.items():
        (root / "data" / name).write_text(text, encoding="utf-8")
    runner = CliRunner()
    for args in (["validate"], ["sync"], ["run", "--now", NOW]):
        result = runner.invoke(main, ["--config", str(root / "config.yaml"), *args])
        assert result.exit_code == 0, (args, result.output)
    return root


def copy(base: Path, target: Path) -> Path:
    """A fresh copy of the built working directory (database included) to break."""
    shutil.copytree(base, target)
    return target
