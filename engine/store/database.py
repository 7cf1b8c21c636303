"""Opening the database: the SQLAlchemy engine with SQLite's settings, migrations, custom-field columns."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import StaticPool

from engine.errors import ConfigError, Diagnostic
from engine.store import checkpoint
from engine.store.schema import FIELD_TYPES, Schema, build_schema

# SQLite's page cache per connection (its default is 2 MiB). A steady tick dirties more pages than that
# (outbox, episode and match-bit index pages all over their b-trees); with the default, SQLite spills
# them to the WAL mid-transaction and writes many twice. The cache only grows as pages are read.
PAGE_CACHE_KIB = 32 * 1024


SUPPORTED = ("sqlite", "postgresql")     # the dialects dialect.py writes statements for


def url_problem(url: str, supported: tuple[str, ...] | None = SUPPORTED) -> str | None:
    """What keeps the engine from opening a database URL, said without echoing the URL (it may hold a
    password): not a URL, a database other than those `supported` (None: any), or a driver that is not
    installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "not a database URL; write e.g. sqlite:///playbook.db or postgresql+psycopg://user@host/db"
    if "@" in (parsed.host or "") + (parsed.database or "") and parsed.password is not None:
        return ("the user name or password holds an unencoded `@`, so the host cannot be told apart: "
                "percent-encode it in the URL (`@` as %40, `:` as %3A, `/` as %2F)")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        return f"`{parsed.drivername}` is not a database driver SQLAlchemy knows"
    if supported is not None and dialect.name not in supported:
        return f"the engine runs on SQLite or PostgreSQL, not {dialect.name}"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = ("; write postgresql+psycopg://… and pip install 'playbook-engine[postgres]'"
                if dialect.name == "postgresql" else "")
        return f"the driver of `{parsed.drivername}` is not installed ({exc}){hint}"
    return None


def database_exists(url: str) -> bool:
    """Whether the database may already hold data: a SQLite file that exists, or any server database (asked
    when it is opened); never an in-memory one. Lets a command read a database without creating it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    path = parsed.database or ""
    return bool(path) and path != ":memory:" and not path.startswith("file:") and Path(path).is_file()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine with our SQLite pragmas and helper functions installed."""
    if url.startswith("sqlite"):
        # file databases keep a small pool of connections (PRAGMAs run once per connection);
        # an in-memory database must be one shared connection
        in_memory = ":memory:" in url or url in ("sqlite://", "sqlite:///")
        pool = {"poolclass": StaticPool} if in_memory else {}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)
        if not in_memory:
            checkpoint.attach(engine, engine.url.database)

        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_conn, _record):  # noqa: ANN001
            from engine.lang.sqlite_functions import register

            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see below)
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
                # checkpoints run on engine/store/checkpoint.py's thread, not in the commit that fills the WAL
                cur.execute(f"PRAGMA wal_autocheckpoint={checkpoint.BACKSTOP_PAGES}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            cur.close()
            register(dbapi_conn)

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            # conn.info lives with the pooled DBAPI connection: take the flags so they do not stick
            _savepoint_journal(conn, in_memory=conn.info.pop("savepoints", False))
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("immediate", False) else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _savepoint_journal(conn: Connection, *, in_memory: bool) -> None:
    """Where SQLite keeps, for a transaction about to begin, the original of every page changed inside a savepoint
    (to roll back to it): in memory for a transaction of many savepoints (a write batch, whose units each release
    theirs, so it holds one unit's pages at most), else in a temporary file once past 64 KiB. In a file, each page
    a tick changed would be written three times (sub-journal, WAL, database). The setting also keeps temporary
    sort tables in memory, so it is on only for such transactions (a dispatch claim may sort every due action).
    SQLite reads it when the transaction begins."""
    want = "MEMORY" if in_memory else "DEFAULT"
    if conn.info.get("temp_store", "DEFAULT") != want:
        conn.exec_driver_sql(f"PRAGMA temp_store={want}")
        conn.info["temp_store"] = want


class DatabaseUnavailable(ConfigError):
    """The database cannot be opened, or is not one this version can use. `key` is what the configuration
    says that this is about (`database:`, or a custom field), for the caller to point at its line."""

    def __init__(self, message: str, hint: str, key: tuple[str, ...] = ("database",)):
        super().__init__(Diagnostic("", None, None, message, hint))
        self.message, self.hint, self.key = message, hint, key


def open_engine(url: str, custom_fields: dict[str, dict[str, str]] | None = None, *,
                migrate: bool = True) -> tuple[Engine, Schema]:
    """Open (and by default migrate) the database; add columns for newly declared custom fields."""
    engine = make_engine(url)
    schema = build_schema(custom_fields)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means the same thing to a user
        engine.dispose()
        raise _cannot_open(engine, exc) from None
    if migrate:
        from engine.store.migrate import upgrade, upgrade_problem

        problem = upgrade_problem(engine, schema.metadata.tables)
        if problem:
            engine.dispose()
            raise DatabaseUnavailable(f"{_shown(engine)}: {problem}",
                                      "point `database:` at a database of this version of playbook-engine, or "
                                      "a new one")
        upgrade(engine)
        ensure_custom_columns(engine, schema, custom_fields or {})
    return engine, schema


def _shown(engine: Engine) -> str:
    """The database as a person recognises it: a SQLite file's path, or the URL with its password hidden."""
    from engine.redact import redact

    if engine.dialect.name == "sqlite" and engine.url.database:
        return engine.url.database
    return redact(engine.url.render_as_string(hide_password=True))


def _cannot_open(engine: Engine, exc: Exception) -> DatabaseUnavailable:
    """Why a database cannot be opened, said with the driver's own words (never the password)."""
    from engine.redact import redact

    reason = redact(_first_line(getattr(exc, "orig", None) or exc))
    if engine.dialect.name != "sqlite":
        hint = "is the server running, and are the host, port, database, user and password in `database:` right?"
    elif "not a database" in reason or "malformed" in reason:
        hint = "the file is damaged or not a SQLite database: restore it from a backup, or point `database:` at " \
               "a new file"
    else:
        hint = "does its folder exist, and may this user write there?"
    return DatabaseUnavailable(f"cannot open the database {_shown(engine)}: {reason}", hint)


def ensure_custom_columns(engine: Engine, schema: Schema, custom: dict[str, dict[str, str]]) -> None:
    """Add a column for each declared custom field that the table lacks; refuse a changed type."""
    insp = inspect(engine)
    for entity, fields in custom.items():
        existing = {c["name"]: c for c in insp.get_columns(entity)}
        table = schema.entity(entity)
        for name, ftype in fields.items():
            col = table.c[name]
            if name in existing:
                want = FIELD_TYPES[ftype]().compile(dialect=engine.dialect)
                have = existing[name]["type"].compile(dialect=engine.dialect)
                if _norm(want) != _norm(have):
                    raise DatabaseUnavailable(
                        f"custom field {entity}.{name} is declared `{ftype}` but the database holds it as {have}",
                        "keep the old type, or rename the field (a new name gets a new column)",
                        ("fields", entity, name))
                continue
            coltype = col.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {entity} ADD COLUMN "{name}" {coltype}'))
        # the field history keeps every field: its table gets the columns its entity has
        history = schema.history[entity].name
        present = {c["name"] for c in insp.get_columns(history)}
        for name in fields:
            if name not in present:
                coltype = table.c[name].type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {history} ADD COLUMN "{name}" {coltype}'))


def _norm(t: str) -> str:
    t = t.upper()
    return {"DOUBLE PRECISION": "FLOAT", "DOUBLE": "FLOAT", "REAL": "FLOAT", "TIMESTAMP WITHOUT TIME ZONE": "DATETIME",
            "TIMESTAMP": "DATETIME", "INTEGER": "BIGINT", "VARCHAR": "VARCHAR"}.get(t, t)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""
