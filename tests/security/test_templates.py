"""Templates only from the templates folder (issue 24): a name with `..`, an absolute path or a link leading out
of the folder is refused by `validate` at its line and never read into a message, at validation or render."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from conftest import Workspace
from engine.templating import CORE_TEMPLATE_FIELDS, TemplateProblem, Templates, context_helpers, render

SECRET_TEXT = "TOP-SECRET-OUTSIDE-THE-FOLDER"


def email_playbook(ws: Workspace, template: str) -> None:
    ws.playbook("mail", f"""
        id: mail
        name: Mail
        activation: fire
        trigger: {{when: account.arr < 100}}
        actions:
          - email: {{to: {{role: champion}}, template: '{template}'}}
        """)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace holding a template-like file that must never be read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for name in ("leak.txt.j2", "leak.subject.j2", "leak.txt", "leak"):
        (folder / name).write_text(SECRET_TEXT)
    return folder


def validate(ws: Workspace) -> str:
    out = ws.cli("validate", expect=1)
    return out.stdout + out.stderr


def no_leak(ws: Workspace) -> None:
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "c@acme.example", "name": "C", "role": "champion",
                          "unsubscribed": "false"}])
    ws.sync()
    ws.cli("run", "--now", "2026-03-02T09:00", expect=None)
    box = ws.root / "outbox"
    sent = [p.read_text(errors="replace") for p in box.rglob("*") if p.is_file()] if box.exists() else []
    assert not any(SECRET_TEXT in text for text in sent)


@pytest.mark.parametrize("name", ["../../../outside/leak", "../outside/leak", "sub/../../outside/leak",
                                  "./leak", "..\\outside\\leak", "C:leak"])
def test_a_template_name_that_is_not_plain_is_refused_at_its_line(ws_sqlite: Workspace, outside: Path,
                                                                   name: str) -> None:
    email_playbook(ws_sqlite, name)
    text = validate(ws_sqlite)
    assert "mail.yaml:6" in text and "is not a plain name" in text, text
    no_leak(ws_sqlite)


def test_an_absolute_template_name_is_refused(ws_sqlite: Workspace, outside: Path) -> None:
    email_playbook(ws_sqlite, str(outside / "leak"))
    text = validate(ws_sqlite)
    assert "mail.yaml:6" in text and "is not a plain name" in text, text
    no_leak(ws_sqlite)


def test_a_link_leading_out_of_the_folder_is_refused(ws_sqlite: Workspace, outside: Path) -> None:
    templates = ws_sqlite.root / "templates"
    os.symlink(outside / "leak.subject.j2", templates / "leak.subject.j2")
    os.symlink("/etc/passwd" if Path("/etc/passwd").exists() else outside / "leak.txt.j2", templates / "leak.txt.j2")
    email_playbook(ws_sqlite, "leak")
    text = validate(ws_sqlite)
    assert "leak.subject.j2" in text and "is a link to a file outside the templates folder" in text, text
    assert SECRET_TEXT not in text and "root:" not in text
    no_leak(ws_sqlite)


def test_a_link_inside_the_folder_is_fine(ws_sqlite: Workspace) -> None:
    templates = ws_sqlite.root / "templates"
    ws_sqlite.template("real.subject.j2", "Hello")
    ws_sqlite.template("real.txt.j2", "Hi {{ contact.name }}")
    os.symlink(templates / "real.subject.j2", templates / "alias.subject.j2")
    os.symlink("real.txt.j2", templates / "alias.txt.j2")
    email_playbook(ws_sqlite, "alias")
    ws_sqlite.cli("validate")


@pytest.mark.parametrize("include, message", [
    ("'../outside/leak.txt'", "leads outside the templates folder"),
    ("'/etc/passwd'", "is an absolute path"),
    ("'sub/../../outside/leak.txt'", "leads outside the templates folder"),
    ("['nope.j2', '../outside/leak.txt']", "leads outside the templates folder"),
    ("'linked.j2'", "is a link to a file outside the templates folder"),
    ("'linkdir/leak.txt'", "is a link to a file outside the templates folder"),
])
def test_an_include_leading_out_of_the_folder_is_refused_at_its_line(ws_sqlite: Workspace, outside: Path,
                                                                     include: str, message: str) -> None:
    templates = ws_sqlite.root / "templates"
    os.symlink(outside / "leak.txt", templates / "linked.j2")
    os.symlink(outside, templates / "linkdir")
    ws_sqlite.template("note.subject.j2", "Hello")
    ws_sqlite.template("note.txt.j2", f"Hi\n{{% include {include} %}}\n")
    email_playbook(ws_sqlite, "note")
    text = validate(ws_sqlite)
    assert "note.txt.j2:2" in text and message in text, text
    assert SECRET_TEXT not in text
    no_leak(ws_sqlite)


def test_a_link_put_in_after_validation_is_refused_at_render(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "footer.j2").write_text("-- the team")
    compiled = Templates(folder, CORE_TEMPLATE_FIELDS).compile_inline("Hi {% include 'footer.j2' %}", "account")
    (folder / "footer.j2").unlink()
    os.symlink(outside / "leak.txt", folder / "footer.j2")
    context = {"account": {}, "playbook": {}, "now": None, "unsubscribe_url": "", **context_helpers(date(2026, 3, 1))}
    with pytest.raises(TemplateProblem) as info:
        render(compiled, context)
    assert SECRET_TEXT not in info.value.message and "footer.j2" in info.value.message


@pytest.mark.parametrize("name, message", [
    ("../outside/leak", "is not a plain name"),
    ("sub/../../outside/leak", "is not a plain name"),
    ("linked", "is a link to a file outside the templates folder"),
])
def test_a_digest_template_from_outside_the_folder_is_refused(ws_sqlite: Workspace, outside: Path, name: str,
                                                              message: str) -> None:
    os.symlink(outside / "leak.txt.j2", ws_sqlite.root / "templates" / "linked.txt.j2")
    ws_sqlite.playbook("digest", f"""
        id: digest
        name: Digest
        activation: fire
        trigger: {{when: account.arr < 100}}
        actions:
          - slack: {{channel: "#cs", text: "{{{{ account.name }}}}", digest: daily, digest_template: '{name}'}}
        """)
    text = validate(ws_sqlite)
    assert message in text and SECRET_TEXT not in text, text
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws_sqlite.sync()
    for day in ("2026-03-02T09:00", "2026-03-03T09:00", "2026-03-04T09:00"):
        ws_sqlite.cli("run", "--now", day, expect=None)
    box = ws_sqlite.root / "outbox"
    assert not any(SECRET_TEXT in p.read_text(errors="replace") for p in box.rglob("*") if p.is_file())
