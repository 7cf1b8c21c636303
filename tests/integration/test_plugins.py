"""Plugins from outside the engine: a connector and a sync source written as a separate package, found through
their entry points, validated, synced and delivered through with no change to the engine's code."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Workspace
from engine import plugins

PACKAGE = '''
"""A third party's plugins: Microsoft-Teams-like messages, and tab-separated files."""

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from engine.actions import ActionKind, Payload
from engine.delivery import BaseConnector, Outcome, Receipt
from engine.plugins import ConnectorPlugin, SourcePlugin
from engine.sync.reader import Reader


class TeamsAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    team: str
    text: str


@dataclass(frozen=True)
class TeamsPayload(Payload):
    team: str
    text: str


class TeamsKind(ActionKind):
    name = "teams"
    options = TeamsAction
    payload = TeamsPayload
    literal = frozenset({"team"})

    def summary(self, payload):
        return {"to": [payload.team], "text": payload.text}


class TeamsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    log: str


class TeamsConnector(BaseConnector):
    name = "teams"

    def __init__(self, path):
        self.path = path

    def deliver(self, item):
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": item.dedup_key, "team": item.payload.team, "text": item.payload.text}) + "\\n")
        return Receipt(Outcome.SENT, "posted")


class TeamsPlugin(ConnectorPlugin):
    name = "teams"
    kind = TeamsKind()
    config = TeamsConfig

    def connector(self, config, env):
        return TeamsConnector(env.settings.resolve(config.log))


class TsvConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str


class TsvReader(Reader):
    def __init__(self, path, label):
        self.path, self.label = path, label

    def open(self):
        if not self.path.exists():
            raise self.fail("file not found")
        lines = self.path.read_text(encoding="utf-8").splitlines()
        self.columns = tuple(lines[0].split("\\t"))
        self._rows = [line.split("\\t") for line in lines[1:] if line]

    def __iter__(self):
        for n, values in enumerate(self._rows, 2):
            yield n, dict(zip(self.columns, values))


class TsvPlugin(SourcePlugin):
    name = "tsv"
    config = TsvConfig

    def label(self, config):
        return config.file

    def open(self, config, env):
        return TsvReader(env.resolve(config.file), env.label)


teams = TeamsPlugin()
tsv = TsvPlugin()
'''


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package `acme_plugins` with its distribution metadata on the import path (as `pip install` would
    leave it), the registry read again with it, and without it afterwards."""
    site = tmp_path / "site"
    (site / "acme_plugins").mkdir(parents=True)
    (site / "acme_plugins" / "__init__.py").write_text(PACKAGE, encoding="utf-8")
    meta = site / "acme_plugins-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text(textwrap.dedent("""\
        [playbook_engine.connectors]
        teams = acme_plugins:teams

        [playbook_engine.sources]
        tsv = acme_plugins:tsv
        """))
    monkeypatch.syspath_prepend(str(site))
    plugins.reload()
    yield site
    monkeypatch.undo()
    plugins.reload()


TEAMS = """\
id: big-deal
name: Big deal
activation: fire
trigger: {when: "account.arr >= 1000"}
actions:
  - teams: {team: sales, text: "{{ account.name }} is big"}
"""


def test_a_third_party_connector_and_source_work_without_engine_changes(third_party: Path, tmp_path: Path) -> None:
    assert "teams" in plugins.registry().connectors and "tsv" in plugins.registry().sources
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}")
    (ws.root / "config.yaml").write_text(f'timezone: UTC\ndatabase: "{ws.database}"\nplaybooks: playbooks/\n'
                                         "templates: templates/\nsources:\n"
                                         "  - {entity: accounts, tsv: {file: data/accounts.tsv}}\n"
                                         "connectors:\n  teams: {log: teams.log}\n")
    (ws.root / "data" / "accounts.tsv").write_text("id\tname\tarr\nA1\tAcme\t5000\nA2\tTiny\t10\n")
    ws.playbook("big-deal", TEAMS)
    ws.cli("validate")
    assert "accounts" in ws.cli("sync").stdout
    out = ws.run("2026-03-02T09:00")
    assert [(e["subject"], e["actions"]) for e in out["events"]] == [
        ("account:A1", [{"kind": "teams", "to": ["sales"], "text": "Acme is big"}])]
    lines = [json.loads(line) for line in (ws.root / "teams.log").read_text().splitlines()]
    assert lines == [{"key": "big-deal/account:A1/1/1/0", "team": "sales", "text": "Acme is big"}]
    assert ws.outbox_rows()[0]["status"] == "sent" and ws.outbox_rows()[0]["connector"] == "teams"


def test_a_misspelt_kind_or_connector_is_a_validation_error_with_a_suggestion(third_party: Path,
                                                                              tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}")
    ws.configure("connectors:\n  taems: {log: x.log}\n")
    r = ws.cli("validate", expect=1)
    assert "config.yaml:16:3: unknown key `taems` (did you mean `teams`?)" in r.stderr
    ws.configure("")
    ws.playbook("big-deal", TEAMS.replace("  - teams:", "  - team:"))
    r = ws.cli("validate", expect=1)
    assert "playbooks/big-deal.yaml:6:5: unknown key `team` (did you mean `teams`?)" in r.stdout
    ws.playbook("big-deal", TEAMS.replace("text:", "connector: temas, text:"))
    r = ws.cli("validate", expect=1)
    assert "unknown connector `temas` (did you mean `teams`?)" in r.stdout


def test_without_the_package_its_kind_is_unknown(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}")
    ws.playbook("big-deal", TEAMS)
    r = ws.cli("validate", expect=1)
    assert "unknown key `teams`" in r.stdout
