"""execute_many: the driver-speed many-row path writes what SQLAlchemy's own executemany would."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (Column, Float, Integer, MetaData, Table, bindparam, create_engine, event, insert, select,
                        update)
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.bulk import execute_many
from engine.store.schema import build_schema

NOW = datetime(2026, 3, 2, 9, 30, 15, 123456)


def outbox_row(i: int) -> dict:
    return dict(dedup_key=f"pb/account:A{i}/1/1/0", playbook_id="pb", subject_type="account", subject_id=f"A{i}",
                episode=1, firing="1", action_index=0, kind="webhook", connector="webhook", status="pending",
                attempts=0, not_before=NOW, expires_at=None, lease_token=0, ambiguous=False, created_at=NOW,
                updated_at=NOW, last_error=None, finished_at=None,
                payload={"url": "http://x/%s?a=1&b=%(c)s", "n": i, "text": "100% ü \\u2028 'q'"})


def outbox_insert(conn, schema):
    """Create the tables; the outbox's INSERT … ON CONFLICT DO NOTHING for this connection's dialect."""
    schema.metadata.create_all(conn)
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(schema.outbox)
    return ins.on_conflict_do_nothing(index_elements=["dedup_key"])


def test_same_rows_and_counts_as_sqlalchemy(db_url: str) -> None:
    engine = create_engine(db_url)
    schema = build_schema()
    with engine.begin() as conn:
        ins = outbox_insert(conn, schema)
        assert execute_many(conn, ins, [outbox_row(i) for i in range(3)]) == 3
        # conflicts are not counted: 2 of these 5 are new
        assert execute_many(conn, ins, [outbox_row(i) for i in range(5)]) == 2
        assert execute_many(conn, ins, []) == 0
        o = schema.outbox
        got = [dict(r) for r in conn.execute(select(o).order_by(o.c.id)).mappings()]
        # the reference: SQLAlchemy's executemany of the same rows into a second table of the same shape
        conn.execute(o.delete())
        conn.execute(insert(o), [outbox_row(i) for i in range(5)])
        want = [dict(r) for r in conn.execute(select(o).order_by(o.c.id)).mappings()]
        strip = lambda rows: [{k: v for k, v in r.items() if k != "id"} for r in rows]  # noqa: E731
        assert strip(got) == strip(want)
        assert got[0]["payload"]["text"] == "100% ü \\u2028 'q'" and got[0]["not_before"] == NOW
        # an UPDATE with per-row parameters and values bound by the statement itself
        e = schema.episodes
        execute_many(conn, insert(e), [dict(playbook_id="p", subject_type="account", subject_id=f"A{i}", is_open=True,
                                           episode=1, firing=1, started_at=NOW, last_fired_at=NOW, resolved_at=None)
                                      for i in range(3)])
        stmt = (update(e).where(e.c.playbook_id == "p", e.c.subject_id == bindparam("sid"))
                .values(episode=bindparam("ep"), is_open=False, resolved_at=NOW))
        assert execute_many(conn, stmt, [{"sid": "A1", "ep": 5}, {"sid": "A2", "ep": 6}, {"sid": "nope", "ep": 1}]) == 2
        rows = conn.execute(select(e.c.subject_id, e.c.episode, e.c.is_open, e.c.resolved_at)
                            .order_by(e.c.subject_id)).all()
        assert rows == [("A0", 1, True, None), ("A1", 5, False, NOW), ("A2", 6, False, NOW)]
    engine.dispose()


def test_statements_sqlalchemy_will_not_cache_are_compiled_once_per_object(db_url: str, monkeypatch) -> None:
    # INSERT … ON CONFLICT has no SQLAlchemy cache key: every execution used to compile it again
    from sqlalchemy.sql import compiler

    compiles: list[str] = []
    original = compiler.SQLCompiler.__init__

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        compiles.append(self.string)

    engine = create_engine(db_url)
    schema = build_schema()
    with engine.begin() as conn:
        ins = outbox_insert(conn, schema)
        monkeypatch.setattr(compiler.SQLCompiler, "__init__", counting)
        for i in range(3):
            assert execute_many(conn, ins, [outbox_row(i)]) == 1
        assert len(compiles) == 1
        # another statement object (other values bound in it) is not served the first one's compiled form
        other = ins.values(status="cancelled")
        assert execute_many(conn, other, [{k: v for k, v in outbox_row(9).items() if k != "status"}]) == 1
        assert len(compiles) == 2
        o = schema.outbox
        assert dict(conn.execute(select(o.c.subject_id, o.c.status)).all()) == {
            "A0": "pending", "A1": "pending", "A2": "pending", "A9": "cancelled"}
    engine.dispose()


def test_upserts_apply_every_row_even_when_rows_repeat_a_key(db_url: str) -> None:
    """The match-bit upsert (mask |= bit): rows with distinct keys go as one statement on PostgreSQL; rows that
    repeat a key (one statement may not update a row twice there) still apply one after the other."""
    from engine.store.scans import _set_bits

    engine = create_engine(db_url)
    schema = build_schema()
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with engine.begin() as conn:
        schema.metadata.create_all(conn)
        upsert = _set_bits(schema, conn.dialect.name)
        row = lambda sid, mask: dict(subject_type="account", subject_id=sid, word=0, mask=mask)  # noqa: E731
        statements.clear()
        execute_many(conn, upsert, [row("A0", 1), row("A1", 2), row("A2", 2)])
        distinct_keys = len(statements)
        execute_many(conn, upsert, [row("A0", 4), row("A1", 1), row("A0", 8)])
        ms = schema.match_state
        assert dict(conn.execute(select(ms.c.subject_id, ms.c.mask)).all()) == {"A0": 13, "A1": 3, "A2": 2}
    assert distinct_keys == 1                 # one statement for the three rows (executemany or unnest)
    if engine.dialect.name == "postgresql":
        assert "unnest" in statements[0] and "unnest" not in statements[-1]
    engine.dispose()


def test_a_column_mixing_python_types_is_written(db_url: str) -> None:
    """A float column given ints and floats (PostgreSQL's binary arrays take one Python type per array)."""
    engine = create_engine(db_url)
    table = Table("mixed", MetaData(), Column("id", Integer, primary_key=True), Column("value", Float))
    with engine.begin() as conn:
        table.create(conn)
        assert execute_many(conn, insert(table), [{"id": 1, "value": 2}, {"id": 2, "value": 2.5},
                                                   {"id": 3, "value": None}]) == 3
        assert conn.execute(select(table.c.value).order_by(table.c.id)).scalars().all() == [2.0, 2.5, None]
    engine.dispose()
