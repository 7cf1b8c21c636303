"""The migrations build exactly the tables engine/store/schema.py describes (on SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from conftest import Db

CUSTOM = {"accounts": {"health_score": "number", "nps": "integer"}, "contacts": {"locale": "string"}}


def test_migrated_database_matches_the_schema(db_url: str) -> None:
    db = Db(db_url, CUSTOM)
    try:
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = [d for d in compare_metadata(ctx, db.schema.metadata)
                    if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
            assert diff == []
            # not compared by alembic: the order of primary key columns, and the table layout SQLite was told to use
            assert inspect(conn).get_pk_constraint("match_state")["constrained_columns"] == [
                "subject_type", "word", "subject_id"]
            if db.dialect == "sqlite":
                for table in ("match_state", "episodes", "usage"):
                    ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar_one()
                    assert ddl.rstrip().upper().endswith("WITHOUT ROWID"), table
    finally:
        db.dispose()


def test_episodes_survive_the_move_to_one_btree_and_back(db_url: str) -> None:
    """0007 rebuilds episodes on SQLite (without rowid) and drops the is_open index: rows are kept both ways."""
    from alembic import command

    from engine.store.database import make_engine
    from engine.store.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine)
    row = {"p": "pb", "t": "account", "s": "acc-1", "o": True, "e": 2, "f": 3, "at": "2026-01-02 03:04:05"}
    select_row = "SELECT playbook_id, subject_type, subject_id, is_open, episode, firing FROM episodes"

    def state() -> tuple[list[tuple], bool]:
        """The episode rows, and whether the (playbook_id, is_open) index exists."""
        with engine.connect() as conn:
            return ([tuple(r) for r in conn.execute(text(select_row))],
                    "ix_episodes_open" in {i["name"] for i in inspect(conn).get_indexes("episodes")})
    try:
        command.upgrade(cfg, "0006")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO episodes (playbook_id, subject_type, subject_id, is_open, episode, firing, "
                              "started_at, last_fired_at) VALUES (:p, :t, :s, :o, :e, :f, :at, :at)"), row)
        command.upgrade(cfg, "head")
        assert state() == ([("pb", "account", "acc-1", True, 2, 3)], False)
        command.downgrade(cfg, "0006")
        assert state() == ([("pb", "account", "acc-1", True, 2, 3)], True)
    finally:
        engine.dispose()


def test_usage_survives_the_move_to_one_btree_and_back(db_url: str) -> None:
    """0008 rebuilds usage on SQLite (without rowid) and makes the change indexes carry ids: rows are kept both
    ways, and the usage rows a sync wrote are then read from ix_usage_synced_at alone."""
    from alembic import command

    from engine.store.database import make_engine
    from engine.store.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine)
    rows = [{"a": f"acc-{i % 4}", "m": "logins", "d": f"2026-01-0{i % 5 + 1}", "v": float(i),
             "s": f"2026-01-10 0{i % 10}:00:00"} for i in range(20)]
    select_rows = "SELECT account_id, metric, day, value, synced_at FROM usage ORDER BY account_id, metric, day"

    def state() -> tuple[list[tuple], dict[str, list[str]]]:
        with engine.connect() as conn:
            indexes = {i["name"]: i["column_names"] for t in ("accounts", "contacts", "goals", "usage")
                       for i in inspect(conn).get_indexes(t) if i["name"] != "ix_contacts_email_lower"}
            return [tuple(map(str, r)) for r in conn.execute(text(select_rows))], indexes
    try:
        command.upgrade(cfg, "0007")
        with engine.begin() as conn:
            for r in rows:
                conn.execute(text("INSERT INTO usage (account_id, metric, day, value, synced_at) "
                                  "VALUES (:a, :m, :d, :v, :s)"), r)
        before, old_indexes = state()
        assert len(before) == 20 and old_indexes["ix_accounts_synced_at"] == ["synced_at"]
        command.upgrade(cfg, "head")
        after, new_indexes = state()
        assert after == before
        assert new_indexes["ix_accounts_synced_at"] == ["synced_at", "id"]
        assert new_indexes["ix_contacts_account"] == ["account_id", "id"]
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                plan = " ".join(str(r[-1]) for r in conn.execute(text(
                    "EXPLAIN QUERY PLAN SELECT account_id, metric, day FROM usage WHERE synced_at > '2026-01-10'")))
            assert "COVERING INDEX ix_usage_synced_at" in plan, plan
        command.downgrade(cfg, "0007")
        assert state() == (before, old_indexes)
    finally:
        engine.dispose()


def test_playbooks_already_running_stay_active_across_0010(db_url: str) -> None:
    """0010 adds activation: a playbook evaluated before the upgrade is active, so its next run fires for new
    matches instead of baselining everything (§12); its open episodes are real ones, not baselined."""
    from alembic import command

    from engine.store.database import make_engine
    from engine.store.migrate import alembic_config

    engine = make_engine(db_url)
    cfg = alembic_config(engine)
    try:
        command.upgrade(cfg, "0009")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO playbook_state (playbook_id, last_evaluated_at, status) "
                              "VALUES ('pb', '2026-01-02 03:04:05', 'ok')"))
            conn.execute(text("INSERT INTO episodes (playbook_id, subject_type, subject_id, is_open, episode, firing) "
                              "VALUES ('pb', 'account', 'a1', true, 1, 1)"))
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT active, activated_at FROM playbook_state")).one() in (
                (True, None), (1, None))
            assert conn.execute(text("SELECT baselined FROM episodes")).scalar_one() in (False, 0)
        command.downgrade(cfg, "0009")
        with engine.connect() as conn:
            assert "active" not in {c["name"] for c in inspect(conn).get_columns("playbook_state")}
    finally:
        engine.dispose()
