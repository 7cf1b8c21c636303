"""An internal error, should one happen (here: a third-party connector plugin that fails where nothing expects it
to): one line on stderr naming a log file, exit code 3; the log holds the command line and the traceback, with
the secrets of the environment and any URL's password masked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import plugins
from engine.cli import main
from engine.cli.internal_error import mask

SECRET = "hunter2-pager-password"
URL = f"https://bot:{SECRET}@pager.example/api"

PACKAGE = '''
"""A third party's connector that fails when it is built (its service is down, say), raising what it likes."""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from engine.actions import ActionKind, Payload
from engine.plugins import ConnectorPlugin


class PageAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str


@dataclass(frozen=True)
class PagePayload(Payload):
    text: str


class PageKind(ActionKind):
    name = "page"
    options = PageAction
    payload = PagePayload

    def summary(self, payload):
        return {"text": payload.text}


class PagerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str


class PagerPlugin(ConnectorPlugin):
    name = "pager"
    kind = PageKind()
    config = PagerConfig

    def connector(self, config, env):
        raise RuntimeError(f"cannot reach {config.url}")


pager = PagerPlugin()
'''

# the URL comes from ${PAGER_URL}: all of it is masked
LINE = re.compile(r"internal error \(RuntimeError\): cannot reach \*\*\* — details in (\S+\.log); please report it")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package `flaky_plugins` installed (on the import path with its entry point), and a working directory
    whose config configures its connector with a URL from the environment."""
    site = tmp_path / "site"
    (site / "flaky_plugins").mkdir(parents=True)
    (site / "flaky_plugins" / "__init__.py").write_text(PACKAGE, encoding="utf-8")
    meta = site / "flaky_plugins-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-plugins\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text("[playbook_engine.connectors]\npager = flaky_plugins:pager\n")
    work = tmp_path / "work"
    (work / "playbooks").mkdir(parents=True)
    (work / "config.yaml").write_text(textwrap.dedent(f"""\
        database: sqlite:///{work / 'playbook.db'}
        connectors:
          pager: {{url: "${{PAGER_URL}}"}}
        """))
    monkeypatch.setenv("PAGER_URL", URL)
    monkeypatch.syspath_prepend(str(site))
    plugins.reload()
    yield site
    monkeypatch.undo()
    plugins.reload()


def test_an_internal_error_is_one_line_naming_a_log_with_the_details(site: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    config = str(tmp_path / "work" / "config.yaml")
    result = CliRunner().invoke(main, ["--config", config, "dispatch"])
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and LINE.fullmatch(lines[0]), result.stderr
    log = Path(LINE.fullmatch(lines[0]).group(1))
    assert log.parent == tmp_path / "tmp" / "playbook-engine"
    assert oct(log.stat().st_mode & 0o777) == "0o600" and oct(log.parent.stat().st_mode & 0o777) == "0o700"
    details = log.read_text(encoding="utf-8")
    assert f"command: playbook --config {config} dispatch" in details
    assert "Traceback (most recent call last):" in details
    assert 'flaky_plugins/__init__.py", line ' in details and "in connector" in details
    assert "RuntimeError: cannot reach ***" in details
    assert SECRET not in details and "pager.example" not in details and SECRET not in result.stderr


def test_a_real_process_prints_the_line_and_no_traceback(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]), "TMPDIR": str(tmp_path),
           "PAGER_URL": URL}
    proc = subprocess.run([sys.executable, "-m", "engine", "--config", str(tmp_path / "work" / "config.yaml"),
                           "dispatch"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr + proc.stdout
    match = LINE.fullmatch(proc.stderr.strip())
    assert match, proc.stderr
    assert Path(match.group(1)).parent == tmp_path / "playbook-engine"
    assert "RuntimeError" in Path(match.group(1)).read_text(encoding="utf-8")


def test_an_error_of_the_user_is_still_a_message(site: Path, tmp_path: Path) -> None:
    """Only what is unexpected is reported as an internal error: a mistake in the config is its message."""
    path = tmp_path / "work" / "config.yaml"
    path.write_text(path.read_text().replace("url:", "ulr:"))
    result = CliRunner().invoke(main, ["--config", str(path), "dispatch"])
    assert result.exit_code == 1 and "internal error" not in result.stderr
    assert "unknown key `ulr` (did you mean `url`?)" in result.stderr


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("postgresql+psycopg://cs:pa55word@db.internal:5432/cs failed; token xoxb-123456 and "
            "https://hooks.example/path?q=1 and sqlite:///x.db")
    assert mask(text, ["xoxb-123456"]) == ("postgresql+psycopg://cs:***@db.internal:5432/cs failed; token *** and "
                                           "https://hooks.example/path?q=1 and sqlite:///x.db")
