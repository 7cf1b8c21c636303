"""The materialised metric windows agree with the reference (python_metric), after builds and refreshes."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import event, select

from conftest import Workspace
from engine.app import App
from engine.lang import MetricRef, python_metric
from engine.store import metric_cache
from engine.sync.runner import run_sync

TODAY = date(2026, 3, 10)
REFS = {MetricRef(m, d, a, off) for m in ("logins", "seats_used") for d in (1, 7, 30)
        for a in ("sum", "avg", "min", "max", "count", "last") for off in (0, d)}


def usage_rows(rng: random.Random, accounts: list[str]) -> list[dict]:
    rows = []
    for a in accounts:
        for m in ("logins", "seats_used"):
            for back in range(70):
                if rng.random() < 0.6:
                    rows.append({"account_id": a, "metric": m, "day": (TODAY - timedelta(days=back)).isoformat(),
                                 "value": rng.choice([-3, 0, 1, 2, 5, 10, 40])})
    return rows


def check(ws: Workspace, when: datetime) -> None:
    app = App(ws.config)
    with app.store.engine.begin() as conn:
        cache = metric_cache.ensure(conn, app.store.schema, REFS, TODAY, when)
    with app.store.engine.connect() as conn:
        u = app.store.schema.usage
        data: dict[tuple[str, str], dict] = {}
        for a, m, d, v in conn.execute(select(u.c.account_id, u.c.metric, u.c.day, u.c.value)):
            data.setdefault((a, m), {})[d] = v
        accounts = conn.execute(select(app.store.schema.accounts.c.id)).scalars().all()
        for ref in sorted(REFS, key=str):
            q = select(app.store.schema.accounts.c.id, cache.value(ref)).select_from(
                cache.join(app.store.schema.accounts, app.store.schema.accounts.c.id))
            got = dict(conn.execute(q).all())
            for a in accounts:
                want = python_metric(data.get((a, ref.name), {}), ref, TODAY)
                assert got[a] == want, (a, ref, got[a], want)
    app.close()


def incremental_usage(ws: Workspace, csv_text: str, at: datetime) -> None:
    extra = ws.root / "data" / "usage-delta.csv"
    extra.write_text("account_id,metric,day,value\n" + csv_text)
    app = App(ws.config)
    settings = app.settings.model_copy(update={"sources": [
        app.settings.sources[2].model_copy(update={
            "csv": app.settings.sources[2].csv.model_copy(update={"path": "data/usage-delta.csv"}),
            "mode": "incremental"})]})
    run_sync(settings, app.store, now=at)
    app.close()


@pytest.mark.parametrize("merge_at", [1, metric_cache.MERGE_OVERLAY_AT])
def test_build_refresh_and_rebuild_agree_with_the_reference(ws: Workspace, merge_at: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Refreshed windows live in the overlay; with merge_at=1 every refresh first merges it into the base."""
    monkeypatch.setattr(metric_cache, "MERGE_OVERLAY_AT", merge_at)
    rng = random.Random(3)
    accounts = [f"A{i}" for i in range(12)]
    ws.data("accounts", [{"id": a, "name": a} for a in accounts + ["A12"]])
    ws.data("usage", usage_rows(rng, accounts))
    ws.sync()
    check(ws, datetime(2026, 3, 10, 9))
    # an incremental usage sync changes a few accounts: only they, and only the windows holding a written
    # day, are recomputed, and must be right: a new value today, one 6 days ago (the 7@7 windows stay), a
    # negative one (min windows), and the first usage of an account (A12)
    incremental_usage(ws, "A1,logins,2026-03-10,99\nA2,seats_used,2026-03-04,7\nA4,logins,2026-03-09,-8\n"
                          "A12,seats_used,2026-03-08,3\n", datetime(2026, 3, 10, 10))
    check(ws, datetime(2026, 3, 10, 11))
    # a second one: accounts already refreshed (A1 again, another window of A12) and new ones
    incremental_usage(ws, "A1,logins,2026-03-01,-50\nA12,logins,2026-03-10,4\nA5,seats_used,2026-02-20,11\n",
                      datetime(2026, 3, 10, 11, 30))
    check(ws, datetime(2026, 3, 10, 11, 45))
    # a snapshot that drops every row of one account: the cache is rebuilt, A3 has no usage at all
    ws.data("usage", [r for r in usage_rows(random.Random(3), accounts) if r["account_id"] != "A3"])
    ws.sync()
    check(ws, datetime(2026, 3, 10, 12))


def test_a_refresh_runs_the_same_statements_for_3_accounts_as_for_1500(ws: Workspace) -> None:
    """The accounts a sync wrote are bound as one list (engine.store.bulk.in_list): the refresh is the same few
    statements however many accounts it recomputes (it ran one chunk of 500 after another, each statement
    compiled anew), and its windows stay right."""
    accounts = [f"A{i:04d}" for i in range(1600)]
    ws.data("accounts", [{"id": a, "name": a} for a in accounts])
    ws.data("usage", [{"account_id": a, "metric": m, "day": (TODAY - timedelta(days=back)).isoformat(), "value": back}
                      for a in accounts for m in ("logins", "seats_used") for back in (0, 3)])
    ws.sync()
    check(ws, datetime(2026, 3, 10, 9))

    def refresh_statements(touched: list[str], at: datetime) -> int:
        incremental_usage(ws, "".join(f"{a},logins,2026-03-10,{i % 7}\n" for i, a in enumerate(touched)), at)
        app = App(ws.config)
        seen: list[str] = []
        event.listen(app.store.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
        with app.store.engine.begin() as conn:
            metric_cache.ensure(conn, app.store.schema, REFS, TODAY, at)
        app.close()
        return len(seen)

    few = refresh_statements(accounts[:3], datetime(2026, 3, 10, 10))
    check(ws, datetime(2026, 3, 10, 10, 30))
    many = refresh_statements(accounts[100:1600], datetime(2026, 3, 10, 11))
    check(ws, datetime(2026, 3, 10, 11, 30))
    assert many == few


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)      # SQLite has no JIT
def test_a_refresh_on_postgresql_leaves_jit_off_and_a_build_leaves_it_alone(ws: Workspace) -> None:
    """PostgreSQL overestimates a refresh's fills (the listed accounts' rows), past jit_above_cost: compiling them to
    machine code cost more than their work, so a refresh turns JIT off for its transaction; a full build keeps the
    server's setting."""
    from sqlalchemy import text

    ws.data("accounts", [{"id": "A1", "name": "A1"}, {"id": "A2", "name": "A2"}])
    ws.data("usage", [{"account_id": a, "metric": "logins", "day": TODAY.isoformat(), "value": 1} for a in ("A1", "A2")])
    ws.sync()

    def jit_after_ensure(at: datetime) -> str:
        app = App(ws.config)
        with app.store.engine.begin() as conn:
            server = conn.execute(text("SELECT reset_val FROM pg_settings WHERE name = 'jit'")).scalar()
            metric_cache.ensure(conn, app.store.schema, REFS, TODAY, at)
            now = conn.execute(text("SELECT current_setting('jit')")).scalar()
        app.close()
        return f"{server}->{now}"

    server = jit_after_ensure(datetime(2026, 3, 10, 9)).split("->")[0]
    assert jit_after_ensure(datetime(2026, 3, 10, 9, 5)) == f"{server}->{server}"     # reused: nothing recomputed
    incremental_usage(ws, "A1,logins,2026-03-10,5\n", datetime(2026, 3, 10, 10))
    assert jit_after_ensure(datetime(2026, 3, 10, 10, 5)) == f"{server}->off"
    check(ws, datetime(2026, 3, 10, 10, 30))
