"""Every broken input in tests/fixtures/invalid/ must produce exactly the message in its .expected file.

Set PLAYBOOK_REGEN_EXPECTED=1 to rewrite the .expected files after a deliberate wording change
(then read the diff: each message must still say file, line, column, what is wrong and what to do)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.settings import Settings, load_settings
from engine.spec.loader import load_playbooks
from engine.sync.runner import SyncFailed, run_sync
from conftest import Db

FIX = Path(__file__).parent.parent / "fixtures" / "invalid"
REGEN = os.environ.get("PLAYBOOK_REGEN_EXPECTED") == "1"


def check(expected_file: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if REGEN:
        expected_file.write_text(text, encoding="utf-8")
    assert lines, "a broken input must produce at least one message"
    assert text == expected_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted((FIX / "playbooks").glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_playbook(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIX)
    settings = Settings(playbooks=FIX / "playbooks", templates=FIX / "templates", base_dir=FIX,
                        segments={"high_touch": "account.arr >= 100000",
                                  "renewing": "account.lifecycle_stage == 'renewl'"},
                        values={"contacts.role": ["champion", "decision_maker", "admin", "user"],
                                "accounts.lifecycle_stage": ["onboarding", "adoption", "expansion", "renewal"]},
                        metrics=["logins", "active_users", "api_calls"],
                        fields={"accounts": {"health_score": "number"}})
    pset = load_playbooks(settings, [Path("playbooks") / path.name])
    assert not pset.valid
    check(path.with_suffix(".expected"), [str(d) for d in pset.diagnostics])


@pytest.mark.parametrize("path", sorted((FIX / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_invalid_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIX)
    monkeypatch.delenv("PLAYBOOK_FIXTURE_UNSET_TOKEN", raising=False)
    with pytest.raises(UserError) as info:
        load_settings(Path("configs") / path.name)
    check(path.with_suffix(".expected"), [str(d) for d in info.value.diagnostics])


@pytest.mark.parametrize("case", sorted(p for p in (FIX / "data").iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_invalid_data(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(case, tmp_path / "data", ignore=shutil.ignore_patterns("expected", "config.yaml"))
    entities = [e for e in ("accounts", "contacts", "usage", "goals") if (case / f"{e}.csv").exists()]
    sources = "\n".join(f"  - {{entity: {e}, csv: data/{e}.csv}}" for e in entities)
    extra = (case / "config.yaml").read_text(encoding="utf-8") if (case / "config.yaml").exists() else ""
    (tmp_path / "config.yaml").write_text(f"database: sqlite:///db.sqlite\n{extra}sources:\n{sources}\n",
                                          encoding="utf-8")
    settings = load_settings("config.yaml")
    db = Db(settings.database_url(), settings.custom_fields())
    try:
        with pytest.raises(SyncFailed) as info:
            run_sync(settings, db.store)
    finally:
        db.dispose()
    check(case / "expected", [str(d) for d in info.value.diagnostics])


def test_there_are_enough_fixtures() -> None:
    count = (len(list((FIX / "playbooks").glob("*.yaml"))) + len(list((FIX / "configs").glob("*.yaml")))
             + len([p for p in (FIX / "data").iterdir() if p.is_dir()]))
    assert count >= 15
