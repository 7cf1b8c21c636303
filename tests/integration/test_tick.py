"""Evaluation tick guarantees: one transaction per playbook, dedup keys unique in the database,
an invalid playbook never stops the others, rendering never evaluates data twice."""

from __future__ import annotations

import json

import pytest

from conftest import Workspace
from engine.app import App
from engine.store.outbox import Outbox
from engine.tick import run_tick

SMALL = """
id: {id}
name: Small {id}
activation: fire
trigger:
  when: account.arr < 100
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} ({{{{ account.arr }}}})"}}
  - email: {{to: {{role: champion}}, subject: "Hi {{{{ contact.name }}}} at {{{{ account.name }}}}", body: "b"}}
"""


def _setup(ws: Workspace) -> None:
    ws.playbook("a", SMALL.format(id="a"))
    ws.playbook("b", SMALL.format(id="b"))
    ws.data("accounts", [{"id": "A1", "name": "{{ 7*7 }} Labs", "arr": 10},
                         {"id": "A2", "name": "Beta", "arr": 20}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "x@labs.example", "name": "Xu",
                          "role": "champion", "unsubscribed": "false"}])
    ws.sync()


def test_crash_inside_a_playbook_leaves_nothing_of_it(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _setup(ws)
    app = App(ws.config)
    real = Outbox.enqueue
    calls = {"n": 0}

    def crash_on_second(self, rows):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash while writing the outbox")
        return real(self, rows)

    monkeypatch.setattr(Outbox, "enqueue", crash_on_second)
    result = run_tick(app.store, app.settings, app.playbooks, app.clock("2026-03-01T09:00"))
    assert [(o.playbook, type(o.error).__name__) for o in result.playbooks] == [("a", "NoneType"),
                                                                                 ("b", "RuntimeError")]
    with app.store.read() as tx:
        events = tx.episodes.history(limit=100)
        actions = tx.outbox.list(limit=100)
    assert {e["playbook_id"] for e in events} == {"a"}        # playbook a committed, b left nothing
    assert {a["playbook_id"] for a in actions} == {"a"}
    with app.store.read() as tx:
        assert tx.episodes.get("b", "account", "A1") is None
    app.close()
    monkeypatch.setattr(Outbox, "enqueue", real)
    assert [(e[0], e[2]) for e in ws.events("2026-03-01T09:00")] == [("b", "enter"), ("b", "enter")]


def test_dedup_keys_are_unique_in_the_database(ws: Workspace) -> None:
    _setup(ws)
    ws.run("2026-03-01T09:00", "--no-dispatch")
    app = App(ws.config)
    with app.store.write() as tx:
        rows = [dict(r) for r in tx.outbox.list(limit=100)]
        for r in rows:
            r.pop("id")
        assert tx.outbox.enqueue(rows) == 0       # a second scheduler plans nothing new
        assert len(tx.outbox.list(limit=100)) == len(rows)
    app.close()


def test_invalid_playbook_is_skipped_and_reported(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    _setup(ws)
    ws.playbook("broken", "id: broken\nname: B\nactivation: fire\ntrigger: {when: account.arrr < 1}\nactions: []\n")
    result = ws.cli("run", "--now", "2026-03-01T09:00", "--format", "json", expect=1)
    events = json.loads(result.stdout)["events"]
    assert {e["playbook"] for e in events} == {"a", "b"}
    assert "playbooks/broken.yaml:4:17: unknown field `account.arrr` (did you mean `arr`?)" in result.stderr
    assert "playbooks/broken.yaml:5:10: actions: must not be empty (add at least one item under `actions:`)" in result.stderr
    v = ws.cli("validate", expect=1)
    assert "broken.yaml:4:17" in v.stdout


def test_data_is_never_rendered_twice(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    _setup(ws)
    out = ws.run("2026-03-01T09:00", "--playbook", "a")
    ev = [e for e in out["events"] if e["subject"] == "account:A1"][0]
    assert ev["actions"][0]["text"] == "{{ 7*7 }} Labs (10)"        # a whole number prints without .0
    assert ev["actions"][1] == {"kind": "email", "to": ["x@labs.example"], "subject": "Hi Xu at {{ 7*7 }} Labs"}
    beta = [e for e in out["events"] if e["subject"] == "account:A2"][0]
    assert beta["actions"][1] == {"kind": "email", "to": [], "subject": None}   # no champion: suppressed
    listed = json.loads(ws.cli("outbox", "list", "--format", "json").stdout)["actions"]
    beta_email = [a for a in listed if a["dedup_key"] == "a/account:A2/1/1/1"][0]
    assert beta_email["status"] == "suppressed"
    eml = next((ws.root / "outbox" / "email").glob("*.eml")).read_text()
    assert "Subject: Hi Xu at {{ 7*7 }} Labs" in eml


def test_unknown_playbook_is_a_usage_error(ws_sqlite: Workspace) -> None:
    _setup(ws_sqlite)
    r = ws_sqlite.cli("run", "--playbook", "nope", expect=2)
    assert "unknown playbook id `nope`; known: a, b" in r.stderr


def test_bad_now_is_a_clear_error(ws_sqlite: Workspace) -> None:
    _setup(ws_sqlite)
    r = ws_sqlite.cli("run", "--now", "yesterday", expect=1)
    assert "--now: `yesterday` is not an ISO date-time" in r.stderr
    assert "Traceback" not in r.output


@pytest.mark.parametrize("first_has_champion", [True, False])
def test_mixed_planned_and_suppressed_rows_keep_their_reasons(ws_sqlite: Workspace, first_has_champion: bool) -> None:
    """Regression: rows of one batch with and without an error must all be written whole."""
    ws = ws_sqlite
    ws.playbook("a", SMALL.format(id="a"))
    ws.data("accounts", [{"id": "A1", "name": "One", "arr": 10}, {"id": "A2", "name": "Two", "arr": 10}])
    who = "A1" if first_has_champion else "A2"
    ws.data("contacts", [{"id": "C1", "account_id": who, "email": "c@x.example", "name": "C", "role": "champion",
                          "unsubscribed": "false"}])
    ws.sync()
    ws.run("2026-03-01T09:00", "--no-dispatch")
    listed = json.loads(ws.cli("outbox", "list", "--format", "json").stdout)["actions"]
    emails = {a["subject_id"]: a for a in listed if a["kind"] == "email"}
    other = "A2" if first_has_champion else "A1"
    assert emails[who]["status"] == "pending" and emails[who]["last_error"] is None
    assert emails[other]["status"] == "suppressed"
    assert emails[other]["last_error"].startswith("no recipient")
    assert emails[other]["finished_at"] is not None


REPEATING = """
id: rep
name: Repeating
activation: fire
trigger: {{when: account.arr < 100}}
repeat: 1d
max_actions_per_run: {limit}
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}}"}}
  - slack: {{channel: "#cs", text: "again {{{{ account.name }}}}"}}
on_resolve:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} grew"}}
"""


@pytest.mark.parametrize("chunk, rows", [(2, 3), (5000, 10_000)])
def test_chunked_evaluation_plans_what_one_pass_plans(ws_sqlite: Workspace, monkeypatch: pytest.MonkeyPatch,
                                                      chunk: int, rows: int) -> None:
    """Candidates go through decide/plan/write in chunks, with subject rows from a bounded cache; the result
    must not depend on the chunk size or the bound."""
    import engine.tick
    from engine.store import subjects

    monkeypatch.setattr(engine.tick, "CHUNK", chunk)
    monkeypatch.setattr(subjects, "ROW_CACHE_LIMIT", rows)
    ws = ws_sqlite
    ws.playbook("rep", REPEATING.format(limit=100))
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10} for i in range(7)])
    ws.sync()
    assert ws.events("2026-03-02T09:00") == [("rep", f"account:A{i}", "enter", 1) for i in range(7)]
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10 if i % 2 else 500} for i in range(7)])
    ws.sync()
    assert ws.events("2026-03-03T09:00") == sorted(
        [("rep", f"account:A{i}", "resolve", 1) for i in range(0, 7, 2)]
        + [("rep", f"account:A{i}", "repeat", 1) for i in range(1, 7, 2)])
    assert len(ws.outbox_rows()) == 7 * 2 + 4 + 3 * 2
    texts = sorted(r["payload"]["text"] for r in ws.outbox_rows())
    assert texts == sorted([f"N{i}" for i in range(7)] + [f"again N{i}" for i in range(7)]
                           + [f"N{i} grew" for i in range(0, 7, 2)]
                           + [f"N{i}" for i in range(1, 7, 2)] + [f"again N{i}" for i in range(1, 7, 2)])
    ws.playbook("rep", REPEATING.format(limit=5))      # 6 repeat actions due: blocked, all chunks rolled back
    r = ws.cli("run", "--now", "2026-03-04T09:00", "--format", "json")
    assert "rep: blocked: would plan 6 actions, more than max_actions_per_run (5)" in r.stderr
    assert len(ws.outbox_rows()) == 7 * 2 + 4 + 3 * 2


def test_planned_counts_the_rows_inserted(ws: Workspace) -> None:
    """`planned` is what reached the outbox, on every database (a second run of the same plan adds 0)."""
    _setup(ws)
    app = App(ws.config)
    first = run_tick(app.store, app.settings, app.playbooks, app.clock("2026-03-01T09:00"))
    assert sum(o.planned for o in first.playbooks) == len(ws.outbox_rows()) == 8   # 2 playbooks × 2 accounts × 2
    app.close()


LOCAL_TIMES = """
id: {id}
name: Local {id}
activation: fire
trigger:
  when: account.arr < 100
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.created_at.isoformat() }}}}"}}
  - email: {{to: {{role: champion}}, subject: "s", body: "{{{{ contact.created_at.isoformat() }}}}"}}
"""


def test_templates_see_subject_rows_in_local_time_in_every_playbook(tmp_path) -> None:  # noqa: ANN001
    """Rows are converted to the configured time zone once per tick and shared by the playbooks: each playbook's
    actions see the same local times (none converted twice). `removed_at` is not a field a template may read:
    a playbook that does is invalid (it failed at render time before templates were checked field by field)."""
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}", timezone="Asia/Tokyo")
    ws.playbook("removed", LOCAL_TIMES.format(id="removed").replace("account.created_at.isoformat()",
                                                                     "account.removed_at"))
    assert "unknown field `account.removed_at`" in ws.cli("validate", expect=1).stdout
    (ws.root / "playbooks" / "removed.yaml").unlink()
    for pid in ("first", "second"):
        ws.playbook(pid, LOCAL_TIMES.format(id=pid))
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10, "created_at": "2026-01-31T20:30:00Z"}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "c@acme.example", "name": "C", "role": "champion",
                          "created_at": "2026-02-01T00:15:00+00:00", "unsubscribed": "false"}])
    ws.sync()
    ws.run("2026-03-01T09:00")
    rows = {(r["playbook_id"], r["kind"]): r for r in ws.outbox_rows()}
    for pid in ("first", "second"):
        assert rows[(pid, "slack")]["payload"]["text"] == "2026-02-01T05:30:00+09:00"
        assert rows[(pid, "email")]["payload"]["messages"][0]["text"] == "2026-02-01T09:15:00+09:00"


WINDOWED = """
id: {id}
name: Windowed {id}
activation: fire
trigger:
  when: metric('logins', 7, 'sum') < {limit} and account.arr < 100
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}}"}}
"""


def test_ticks_in_one_process_do_not_grow_the_statement_caches(ws_sqlite: Workspace) -> None:
    """A long-running service ticks for months in one process: a tick must reuse the statements compiled by
    the tick before (the metric windows' tables are the same objects all day), or every tick adds compiled
    statements to SQLAlchemy's cache and to execute_many's."""
    from engine.store import bulk
    from engine.sync.runner import run_sync

    ws = ws_sqlite
    for i, limit in enumerate((5, 50)):
        ws.playbook(f"w{i}", WINDOWED.format(id=f"w{i}", limit=limit))
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10} for i in range(6)])
    ws.data("usage", [{"account_id": f"A{i}", "metric": "logins", "day": f"2026-03-0{d}", "value": i * d}
                      for i in range(6) for d in range(1, 6)])
    ws.sync()
    app = App(ws.config)
    sizes = []
    for hour in range(9, 17):       # the same two data states in turn: every tick goes down the same paths
        ws.data("usage", [{"account_id": f"A{i}", "metric": "logins", "day": "2026-03-05", "value": 40 * (hour % 2)}
                          for i in range(6)])
        app.settings.sources[:] = [s.model_copy(update={"mode": "incremental"}) for s in app.settings.sources]
        run_sync(app.settings, app.store)
        run_tick(app.store, app.settings, app.playbooks, app.clock(f"2026-03-05T{hour:02d}:00"), keep_events=False)
        sizes.append((len(app.store.engine._compiled_cache), len(bulk._UNCACHEABLE) + len(bulk._COMPILED)))
    app.close()
    assert len(set(sizes[3:])) == 1, sizes
