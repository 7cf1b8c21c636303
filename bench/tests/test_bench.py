"""The benchmark harness keeps working: deterministic data, a valid suite, baselines that agree with the tick."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from bench.baselines import run_baseline_per_row, run_baseline_sql
from bench.data import DataSpec, generate
from bench.suite import playbooks, write_workspace
from engine.app import App


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.csv"))}


def test_data_is_deterministic_and_shaped(tmp_path: Path) -> None:
    counts = generate(tmp_path / "a", DataSpec(400, days=20))
    generate(tmp_path / "b", DataSpec(400, days=20))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert counts["accounts"] == 400
    assert 1.7 < counts["contacts"] / 400 < 2.3
    assert 0.35 < counts["goals"] / 400 < 0.65
    assert 0 < counts["usage"] <= 400 * 3 * 20
    header, *rows = (tmp_path / "a" / "accounts.csv").read_text(encoding="utf-8").splitlines()
    empty = Counter(name for row in rows for name, v in zip(header.split(","), row.split(",")) if v == "")
    assert {"industry", "nps", "health_score", "onboarding_done_at"} <= set(empty)


def test_suite_mixes_triggers_and_subjects() -> None:
    suite = playbooks()
    assert len(suite) == 50 and len({p["id"] for p in suite}) == 50
    assert Counter(p.get("subject", "account") for p in suite) == {"account": 38, "contact": 6, "goal": 6}
    kinds = {next(iter(p["trigger"])) for p in suite}
    assert kinds == {"low_usage", "renewal_approaching", "goal_achieved", "when"}
    thresholds = {k for p in suite if "low_usage" in p["trigger"] for k in p["trigger"]["low_usage"]}
    assert {"below", "below_per_seat", "drop_pct"} <= thresholds


@pytest.fixture
def workspace(tmp_path: Path) -> App:
    from engine.sync.runner import run_sync

    generate(tmp_path / "data", DataSpec(300, days=40))
    app = App(write_workspace(tmp_path))
    assert len(app.playbooks.valid) == 50, app.playbooks.diagnostics
    run_sync(app.settings, app.store)
    yield app
    app.close()


def test_baselines_agree_with_the_tick_and_a_quiet_tick_writes_nothing(workspace: App) -> None:
    from engine.tick import run_tick

    app = workspace
    clock = app.clock("2026-03-02T09:00")
    sql = run_baseline_sql(app.store, app.playbooks, clock, repeats=1)["counts"]
    python = run_baseline_per_row(app.store, app.playbooks, clock, sample=10_000)["counts"]
    run_tick(app.store, app.settings, app.playbooks, clock)
    with app.store.engine.connect() as conn:
        e = app.store.schema.episodes
        from sqlalchemy import func, select

        opened = dict(conn.execute(select(e.c.playbook_id, func.count()).group_by(e.c.playbook_id)).all())
    windows = run_baseline_sql(app.store, app.playbooks, clock, repeats=1, windows=True)   # the tick's windows
    assert sum(python.values()) > 0
    assert windows["metric_windows"] > 0 and "metric_cache_" in windows["sql"]
    for pid, n in python.items():
        assert opened.get(pid, 0) == n, pid
        if pid in sql:
            assert sql[pid] == windows["counts"][pid] == n, pid
    again = run_tick(app.store, app.settings, app.playbooks, app.clock("2026-03-02T11:00"))
    assert again.events == []


def test_steady_rounds_change_different_subjects_and_the_sync_applies_them(workspace: App) -> None:
    """Each steady-state round of the benchmark changes its own ~1% of the accounts (bench.phases.mutate)."""
    import csv

    from sqlalchemy import select

    from bench.phases import mutate

    config = str(workspace.config_path)
    changed = []
    for round_no in (0, 1):
        result = mutate(config, "2026-03-02T10:00", round_no=round_no)
        with (workspace.config_path.parent / "data-delta-config" / "accounts.csv").open(encoding="utf-8") as fh:
            rows = {r["id"]: float(r["arr"]) if r["arr"] else None for r in csv.DictReader(fh)}
        assert result["changed"]["accounts"] == len(rows) == 3            # accounts k % 100 == 50 + round_no
        changed.append(rows)
    assert not set(changed[0]) & set(changed[1])
    a = workspace.store.schema.accounts
    with workspace.store.engine.connect() as conn:
        stored = dict(conn.execute(select(a.c.id, a.c.arr).where(a.c.id.in_([*changed[0], *changed[1]]))).all())
    assert stored == {**changed[0], **changed[1]}


def test_service_rounds_tick_in_one_process_and_report_what_they_wrote(workspace: App) -> None:
    """bench.phases.service: a warm-up tick, then per round a ~1% change and a tick in the same process; each
    round's reported events are the event rows the database holds for that tick."""
    from sqlalchemy import func, select

    from bench.phases import service
    from engine.tick import run_tick

    app = workspace
    run_tick(app.store, app.settings, app.playbooks, app.clock("2026-03-02T09:00"), keep_events=False)
    rounds = [{"now": "2026-03-02T11:15", "round_no": 0}, {"now": "2026-03-02T11:30", "round_no": 1}]
    done = service(str(app.config_path), "2026-03-02T11:05", rounds)["rounds"]
    assert [r["now"] for r in done] == ["2026-03-02T11:15", "2026-03-02T11:30"]
    ev = app.store.schema.events
    with app.store.engine.connect() as conn:
        for r in done:
            at = app.clock(r["now"]).now
            stored = conn.scalar(select(func.count()).select_from(ev).where(ev.c.at == at))
            assert stored == sum(r["events"].values()) > 0
            assert r["seconds"] > 0 and "scan" in r["timings"]
        warm = app.clock("2026-03-02T11:05").now
        assert conn.scalar(select(func.count()).select_from(ev).where(ev.c.at == warm)) == 0


def test_unreachable_postgres_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["--accounts", "10", "--postgres", "postgresql+psycopg://postgres@127.0.0.1:1/none"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "cannot use PostgreSQL at 127.0.0.1:1/none" in err and "--no-postgres" in err
    assert "Traceback" not in err


def test_database_copy_folds_in_the_wal_and_overwrites_the_target(tmp_path: Path) -> None:
    """The profiled replay of the steady tick restores the database with bench.measure.sqlite_copy: the copy
    must hold the rows still in the source's WAL, and nothing of a larger target it was written over."""
    import sqlite3

    from bench.measure import sqlite_copy

    source, target = tmp_path / "source.db", tmp_path / "target.db"
    with sqlite3.connect(target) as old:
        old.execute("CREATE TABLE t (x)")
        old.executemany("INSERT INTO t VALUES (?)", [("old" * 1000,)] * 500)
    old.close()
    src = sqlite3.connect(source, isolation_level=None)
    src.execute("PRAGMA journal_mode=WAL")
    src.execute("PRAGMA wal_autocheckpoint=0")
    src.execute("CREATE TABLE t (x)")
    src.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    assert (tmp_path / "source.db-wal").stat().st_size > 0          # the rows are in the WAL, not the file yet
    sqlite_copy(source, target)
    src.close()
    assert target.stat().st_size == source.stat().st_size
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert [r[0] for r in copy.execute("SELECT x FROM t ORDER BY x")] == list(range(100))
    finally:
        copy.close()


def test_the_tick_phase_counts_its_work_in_figures_that_do_not_depend_on_the_machine(
        workspace: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.phases.tick reports the SQLite instructions a tick ran and the bytes of its system calls: the first
    tick (everything enters) does far more of both than a tick where nothing changed, and the same tick replayed on
    the same data counts the same instructions (to within one progress-handler period per connection)."""
    import shutil
    import sys

    from bench.measure import SqliteSteps
    from bench.phases import tick

    monkeypatch.setattr(SqliteSteps, "STEP", 100)      # finer than the benchmark's: these ticks are small
    config = str(workspace.config_path)
    database = workspace.config_path.parent / "playbook.db"
    workspace.close()
    saved = database.with_suffix(".saved")
    shutil.copyfile(database, saved)
    first = tick(config, "2026-03-02T09:00")["work"]
    shutil.copyfile(saved, database)
    again = tick(config, "2026-03-02T09:00")["work"]
    quiet = tick(config, "2026-03-02T11:00")["work"]
    assert first["sqlite_steps"] > 10 * quiet["sqlite_steps"] > 0
    assert abs(first["sqlite_steps"] - again["sqlite_steps"]) <= 4 * SqliteSteps.STEP
    if sys.platform.startswith("linux"):
        assert first["written_mb"] > quiet["written_mb"] and first["write_calls"] > quiet["write_calls"]


def test_journey_suite_runs_the_due_steps_only(tmp_path: Path) -> None:
    """`python -m bench.journeys` at a small size: both databases run the same due steps; the waiting subjects add
    no SQLite work to a run later the same day."""
    from bench.journeys import main

    out = tmp_path / "journeys.json"
    main(["--subjects", "3000", "--due-every", "100", "--workdir", str(tmp_path / "w"), "--json", str(out)])
    r = json.loads(out.read_text())
    for label in ("same_day", "next_day"):
        assert r[f"all_waiting_{label}"]["events"] == r[f"due_only_{label}"]["events"] == {"step": 30}
    waiting, due = (r[f"{v}_same_day"]["work"]["sqlite_steps"] for v in ("all_waiting", "due_only"))
    assert waiting <= max(2 * due, 10_000)              # counted 10,000 at a time


def test_sync_benchmark_reports_both_ratios_and_the_history_space(tmp_path: Path) -> None:
    from bench import sync as bench_sync

    speed = tmp_path / "speed.json"
    assert bench_sync.main(["--accounts", "20", "--days", "5", "--json", str(speed)]) == 0
    result = json.loads(speed.read_text(encoding="utf-8"))
    assert result["usage_rows"] == 20 * 3 * 5
    assert result["first_vs_upsert"] > 0 and result["unchanged_vs_read"] > 0
    history = tmp_path / "history.json"
    assert bench_sync.main(["--history", "--accounts", "200", "--syncs", "4", "--change", "0.05",
                            "--json", str(history)]) == 0
    figures = json.loads(history.read_text(encoding="utf-8"))
    assert figures["history_rows"] == 3 * 10       # one kept version per changed account per later sync
    assert figures["history_bytes"] > 0 and figures["entity_bytes"] > 0


def test_the_main_benchmark_reports_the_sync_ratios_in_its_table() -> None:
    from bench.phases import PHASES
    from bench.report import _sync_rows

    speed = PHASES["sync_speed"](accounts=10, days=4, seed=3)
    assert speed["usage_rows"] == 10 * 3 * 4
    rows = {name: (value, note) for name, value, note in _sync_rows({"sync_speed": speed})}
    assert rows["ratio first sync / plain upsert"][0].endswith("×")
    assert "target ≤ 2.0" in rows["ratio first sync / plain upsert"][1]
    assert "target ≤ 8.0" in rows["ratio unchanged re-sync / csv read"][1]
    assert _sync_rows({}) == []


def test_sync_benchmark_times_both_syncs_on_postgres_in_a_schema_it_drops(tmp_path: Path) -> None:
    import os

    from sqlalchemy import create_engine, inspect

    from bench import sync as bench_sync

    url = os.environ.get("PLAYBOOK_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set PLAYBOOK_TEST_POSTGRES_URL to run the PostgreSQL part")
    out = tmp_path / "speed.json"
    assert bench_sync.main(["--accounts", "10", "--days", "3", "--postgres", url, "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["pg_sync_first_wall_s"] > 0 and result["pg_sync_unchanged_wall_s"] > 0
    engine = create_engine(url)
    try:
        assert not [s for s in inspect(engine).get_schema_names() if s.startswith("bench_sync_")]
    finally:
        engine.dispose()
