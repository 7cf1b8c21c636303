"""The mistakes written out: YAML that is no configuration, time zones, encodings, contact policies, templates,
data, databases, and every command's arguments."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

from corpus import Case, Run
from corpus.base import CONFIG, DATA
from corpus.commands import config_runs, data_runs, playbook_runs

Breaks = Callable[[Path], None]
PLAYBOOK = "playbooks/big-accounts.yaml"
TEMPLATE = "templates/hello.txt.j2"          # used by that playbook's email
USAGE = frozenset({2})


def cases() -> list[Case]:
    return (yaml_cases() + zone_cases() + encoding_cases() + contact_policy_cases() + template_cases()
            + data_cases() + file_cases() + database_cases() + argument_cases())


# ---- helpers ------------------------------------------------------------------------------------------------

def replace(file: str, old: str, new: str) -> Breaks:
    """Replace text in a file of the working directory (the text must be there)."""
    def breaks(root: Path) -> None:
        text = (root / file).read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in {file}"
        (root / file).write_text(text.replace(old, new, 1), encoding="utf-8")
    return breaks


def write(file: str, data: str | bytes) -> Breaks:
    def breaks(root: Path) -> None:
        path = root / file
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    return breaks


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` that holds `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def config_line(old: str, new: str) -> int:
    """The line that replacing `old` by `new` in the base configuration puts `new` on."""
    return line_of(CONFIG.replace(old, new, 1), new.splitlines()[0])


def config_case(category: str, name: str, old: str, new: str, *says: str) -> Case:
    """The base configuration with `old` replaced by `new`; every command fails at the line of `new`."""
    return Case(category, name, replace("config.yaml", old, new),
                config_runs(f"config.yaml:{config_line(old, new)}:", *says))


# ---- YAML that cannot be read -------------------------------------------------------------------------------

YAML_MISTAKES = {        # name: (text replacing `timezone: Asia/Tokyo`, its line with the problem, the message)
    "tab-indentation": ("timezone: Asia/Tokyo\n\tdatabase: x", 1, "YAML syntax error"),
    "unclosed-quote": ('timezone: "Asia/Tokyo', None, "YAML syntax error"),
    "duplicate-key": ("timezone: Asia/Tokyo\ntimezone: UTC", 1, "duplicate key `timezone`"),
    "unknown-tag": ("timezone: !zone Asia/Tokyo", 0, "unknown YAML tag `!zone`"),
    "python-tag": ("timezone: !!python/name:os.system ''", 0, "unknown YAML tag `!!python/name:os.system`"),
    "bad-int-tag": ("timezone: Asia/Tokyo\nx: !!int nine", 1, "`nine` is not a valid !!int"),
    "date-that-does-not-exist": ("timezone: 2026-02-30", 0, "`2026-02-30` is not a date that exists"),
    "alias-inside-itself": ("timezone: &z [*z]", 0, "nested more than 64 levels deep"),
    "merge-key": ("timezone: Asia/Tokyo\nx: {<<: {a: 1}}", 1, "YAML merge keys (<<) are not supported"),
}


def yaml_cases() -> list[Case]:
    out = []
    for name, (text, line, says) in YAML_MISTAKES.items():
        at = "config.yaml:" if line is None else f"config.yaml:{line_of(CONFIG, 'timezone:') + line}:"
        out.append(Case("yaml", f"config:{name}", replace("config.yaml", "timezone: Asia/Tokyo", text),
                        config_runs(at, says)))
    out.append(Case("yaml", "config:a-list", write("config.yaml", "- timezone: UTC\n"),
                    config_runs("config.yaml:1:1: the configuration must be a mapping of keys")))
    out.append(Case("yaml", "config:nested-too-deeply", write("config.yaml", "x: " + "[" * 600 + "]" * 600 + "\n"),
                    config_runs("config.yaml:1:68: the YAML is nested more than 64 levels deep")))
    for name, (text, _, says) in YAML_MISTAKES.items():
        playbook_text = text.replace("timezone: Asia/Tokyo", "name: Big accounts").replace("timezone:", "name:")
        out.append(Case("yaml", f"playbook:{name}", replace(PLAYBOOK, "name: Big accounts", playbook_text),
                        playbook_runs(f"{PLAYBOOK}:", says.replace("`timezone`", "`name`"), file=PLAYBOOK)))
    out.append(Case("yaml", "playbook:empty", write("playbooks/empty.yaml", ""),
                    playbook_runs("playbooks/empty.yaml:1:1: a playbook must be a YAML mapping",
                                  file="playbooks/empty.yaml")))
    return out


# ---- time zones ---------------------------------------------------------------------------------------------

def zone_cases() -> list[Case]:
    out = [config_case("time zone", f"config:{zone}", "timezone: Asia/Tokyo", f"timezone: {zone}", says)
           for zone, says in (("JST", "did you mean `Asia/Tokyo`?"), ("日本", "did you mean `Asia/Tokyo`?"),
                              ("Asia/Tokio", "did you mean `Asia/Tokyo`?"), ("+09:00", "unknown time zone"),
                              ("9", "timezone:"))]
    for zone, says in (("JST", 'timezone: "JST" is not an IANA time zone (write "Asia/Tokyo")'),
                       ("日本", 'timezone: "日本" is not an IANA time zone (write "Asia/Tokyo")'),
                       ("GMT+9", 'timezone: "GMT+9" is not an IANA time zone')):
        out.append(Case("time zone", f"data:contacts:{zone}", replace("data/contacts.csv", "America/New_York", zone),
                        data_runs(f"data/contacts.csv:2: {says}")))
    return out


# ---- encodings ----------------------------------------------------------------------------------------------

def encoding_cases() -> list[Case]:
    config_cp932 = CONFIG.replace("timezone: Asia/Tokyo", "timezone: Asia/Tokyo   # 東京").encode("cp932")
    playbook = ("id: tokyo\nname: 東京の大口顧客\ntrigger: {when: account.arr > 1}\n"
                "actions:\n  - slack: {channel: '#cs', text: hi}\n")
    accounts_cp932 = DATA["accounts.csv"].replace("Acme", "アクメ").encode("cp932")
    return [
        Case("encoding", "config:cp932", write("config.yaml", config_cp932),
             config_runs("config.yaml:1:26: the file is not UTF-8 text", every=True)),
        Case("encoding", "config:utf-16", write("config.yaml", CONFIG.encode("utf-16")),
             config_runs("config.yaml:1:1: the file is not UTF-8 text")),
        Case("encoding", "playbook:cp932", write("playbooks/tokyo.yaml", playbook.encode("cp932")),
             playbook_runs("playbooks/tokyo.yaml:2:7: the file is not UTF-8 text", file="playbooks/tokyo.yaml",
                           every=True)),
        Case("encoding", "template:cp932", write(TEMPLATE, "{{ contact.name }} 様\n".encode("cp932")),
             playbook_runs(f"{TEMPLATE}:1: the file is not UTF-8 text", file=PLAYBOOK, every=True)),
        Case("encoding", "data:cp932-read-as-utf-8", write("data/accounts.csv", accounts_cp932),
             data_runs("data/accounts.csv:2: the file is not UTF-8 text")),
        # UTF-8 often decodes as cp932 too (as other text): here the last byte of あ starts a cp932 character
        # that the comma after it cannot end
        Case("encoding", "data:utf-8-read-as-cp932", _source_encoding("accounts", "cp932", "data/accounts.csv",
                                                                      DATA["accounts.csv"].replace("Acme", "Acmeあ")),
             data_runs("data/accounts.csv:2: the file is not cp932 text")),
        config_case("encoding", "config:unknown-codec", "csv: data/accounts.csv}",
                    "csv: {path: data/accounts.csv, encoding: shift-jiss}}", "unknown encoding `shift-jiss`"),
        config_case("encoding", "config:not-a-text-codec", "csv: data/accounts.csv}",
                    "csv: {path: data/accounts.csv, encoding: rot13}}", "`rot13` is not a text encoding"),
    ]


def _source_encoding(entity: str, encoding: str, file: str, text: str) -> Breaks:
    def breaks(root: Path) -> None:
        replace("config.yaml", f"csv: data/{entity}.csv}}",
                f"csv: {{path: data/{entity}.csv, encoding: {encoding}}}}}")(root)
        (root / file).write_text(text, encoding="utf-8")
    return breaks


# ---- the contact policy -------------------------------------------------------------------------------------

def contact_policy_cases() -> list[Case]:
    quiet = 'quiet_hours: {start: "20:00", end: "08:00"}'
    return [
        config_case("contact policy", "quiet-hours-7pm", quiet, 'quiet_hours: {start: "7pm", end: "08:00"}',
                    "`7pm` is not a time of day"),
        config_case("contact policy", "quiet-hours-25h", quiet, 'quiet_hours: {start: "25:00", end: "08:00"}',
                    "`25:00` is not a time of day"),
        config_case("contact policy", "quiet-hours-unquoted", quiet, "quiet_hours: {start: 20:00, end: 08:00}",
                    "is not a time of day"),
        config_case("contact policy", "quiet-hours-empty", quiet, 'quiet_hours: {start: "08:00", end: "08:00"}',
                    "start and end at the same time"),
        config_case("contact policy", "quiet-hours-without-end", quiet, 'quiet_hours: {start: "20:00"}',
                    "missing required key `end`"),
        config_case("contact policy", "holidays-unknown-country", "holidays: JP", "holidays: XX",
                    "`XX` is neither a date (YYYY-MM-DD) nor a country code"),
        config_case("contact policy", "holidays-japan-spelt-out", "holidays: JP", "holidays: Japan",
                    "`Japan` is neither a date"),
        config_case("contact policy", "holidays-unknown-subdivision", "holidays: JP", "holidays: JP-99",
                    "JP has no subdivision `99`"),
        config_case("contact policy", "holidays-date-that-does-not-exist", "holidays: JP",
                    "holidays: [JP, 2026-02-30]", "`2026-02-30` is not a date that exists"),
        config_case("contact policy", "weekday-spelt-out", "weekdays: [mon,", "weekdays: [monday,",
                    "`monday` is not one of"),
        config_case("contact policy", "no-weekdays", "weekdays: [mon, tue, wed, thu, fri]", "weekdays: []",
                    "must not be empty"),
        config_case("contact policy", "timezone-from-unknown-field", "[contact.timezone, account.timezone]",
                    "[contact.tz, account.timezone]", "`contact.tz` is not a string field of contacts"),
        config_case("contact policy", "timezone-from-unknown-entity", "[contact.timezone, account.timezone]",
                    "[user.timezone]", "`user.timezone` is not a contact or account field"),
        config_case("contact policy", "timezone-from-number-field", "[contact.timezone, account.timezone]",
                    "[account.arr]", "`account.arr` is not a string field of accounts"),
        config_case("contact policy", "cap-zero", "max: 3", "max: 0", "greater than or equal to 1"),
        config_case("contact policy", "cap-per-user", "per: contact", "per: user", "`user` is not one of"),
        config_case("contact policy", "cap-without-window", "max: 3, within: 7d", "max: 3",
                    "missing required key `within`"),
        config_case("contact policy", "on-cap-later", "on_cap: defer", "on_cap: later", "`later` is not one of"),
        config_case("contact policy", "not-a-mapping", "contact_policy:\n  timezone_from",
                    "contact_policy: strict\nx:\n  timezone_from", "contact_policy:"),
    ]


# ---- templates ----------------------------------------------------------------------------------------------

def template_cases() -> list[Case]:
    def case(name: str, text: str, says: str) -> Case:
        return Case("template", name, write(TEMPLATE, text),
                    playbook_runs(f"{TEMPLATE}:{says}", file=PLAYBOOK, every=name == "unknown-filter"))
    return [
        case("unknown-filter", "Dear {{ contact.name | upper_case }}\n",
             "1: unknown filter `upper_case` (did you mean `upper`?)"),
        case("misspelt-field", "Dear {{ contact.name }},\n{{ account.healthscore }}\n",
             "2: unknown field `account.healthscore` (did you mean `health_score`?)"),
        case("syntax", "Dear {{ contact.name }\n", "1: template syntax error"),
        case("unknown-function", "{{ days_untill(account.renewal_date) }}\n", "1: unknown function `days_untill`"),
        case("include-missing", "{% include 'footer.txt.j2' %}\n", "1: template `footer.txt.j2` not found"),
        case("escape", "{{ account.__class__ }}\n", "1: access to `__class__` is not allowed"),
        Case("template", "undeclared-value-inline", replace(PLAYBOOK, "to: {role: champion}", "to: {role: champoin}"),
             playbook_runs(f"{PLAYBOOK}:", "'champoin' is not a declared value of contact.role", file=PLAYBOOK)),
        Case("template", "folder-instead-of-file", _folder_instead_of(TEMPLATE),
             playbook_runs(f"{PLAYBOOK}:", "email template `hello` has no body", file=PLAYBOOK)),
    ]


def _folder_instead_of(file: str) -> Breaks:
    def breaks(root: Path) -> None:
        path = root / file
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        path.mkdir()
    return breaks


# ---- data ---------------------------------------------------------------------------------------------------

def data_cases() -> list[Case]:
    accounts, contacts = DATA["accounts.csv"], DATA["contacts.csv"]
    return [
        Case("data", "undeclared-value", write("data/accounts.csv", accounts.replace(",renewal,", ",オンボーディング,")),
             data_runs('data/accounts.csv:2: lifecycle_stage: "オンボーディング" is not one of')),
        Case("data", "undeclared-role", write("data/contacts.csv", contacts.replace(",champion,", ",champoin,")),
             data_runs('data/contacts.csv:2: role: "champoin" is not one of')),
        Case("data", "undeclared-metric", write("data/usage.csv", DATA["usage.csv"].replace(",logins,", ",login,")),
             data_runs('data/usage.csv:2: metric: "login" is not a declared metric (did you mean "logins"?)')),
        Case("data", "spreadsheet-date", write("data/accounts.csv", accounts.replace("2027-01-15", "2027/01/15")),
             data_runs('data/accounts.csv:2: renewal_date: "2027/01/15" is not a date')),
        Case("data", "thousands-separator", write("data/accounts.csv", accounts.replace(",5000,", ',"5,000",')),
             data_runs('data/accounts.csv:2: arr: "5,000" is not a number')),
        Case("data", "folder-instead-of-file", _folder_instead_of("data/accounts.csv"),
             data_runs("data/accounts.csv: cannot read file")),
        Case("data", "missing-file", lambda root: (root / "data/usage.csv").unlink(),
             data_runs("data/usage.csv: file not found")),
        Case("data", "empty-file", write("data/accounts.csv", ""), data_runs("data/accounts.csv: the file is empty")),
        Case("data", "binary-file", write("data/accounts.csv", bytes(range(128, 256)) * 4),
             data_runs("data/accounts.csv:1: the file is not UTF-8 text")),
        Case("data", "unterminated-quote", write("data/accounts.csv", accounts + 'A3,"Gamma,1\n'),
             data_runs("data/accounts.csv:4: a quoted value that starts in this row is never closed")),
        Case("data", "text-after-a-quote", write("data/accounts.csv", accounts + 'A3,"Gamma" Inc,1\n'),
             data_runs("data/accounts.csv:4: cannot parse CSV")),
    ]


# ---- missing files, folders where files belong ----------------------------------------------------------------

def file_cases() -> list[Case]:
    return [
        Case("file", "config-missing", lambda root: (root / "config.yaml").unlink(),
             config_runs("config.yaml: configuration file not found", every=True)),
        Case("file", "config-is-a-folder", _folder_instead_of("config.yaml"),
             config_runs("config.yaml: is a folder, not a file", every=True)),
        Case("file", "config-given-missing", lambda root: None,
             (Run(("--config", "missing.yaml", "validate"), says=("missing.yaml: configuration file not found",)),
              Run(("run", "--config", "missing.yaml"), says=("missing.yaml: configuration file not found",)))),
        Case("file", "config-given-as-folder", lambda root: None,
             (Run(("--config", "templates", "validate"), USAGE, ("is a directory",)),)),
        Case("file", "playbooks-folder-missing", replace("config.yaml", "playbooks: playbooks/", "playbooks: playbok/"),
             (Run(("validate",), frozenset({0}), ("config.yaml:3:1: warning: no playbooks: `playbok` does not exist",)),
              Run(("run", "--dry-run"), frozenset({0}), ("warning: no playbooks",)))),
        # a folder named like a playbook is no playbook file: left alone
        Case("file", "folder-named-like-a-playbook", write("playbooks/x.yaml/inner.yaml", "id: x\n"),
             (Run(("validate",), frozenset({0})),)),
    ]


# ---- databases ----------------------------------------------------------------------------------------------

def database_cases() -> list[Case]:
    at = "config.yaml:2:1:"
    down = "postgresql+psycopg://cs:s3cret-pw@127.0.0.1:1/cs"
    return [
        Case("database", "not-a-database", _database_file(b"this is not a database\n" * 200),
             config_runs(at, "playbook.db: file is not a database", every=True, database=True)),
        Case("database", "damaged", _damaged, config_runs(at, "database disk image is malformed", database=True)),
        Case("database", "folder-instead-of-file", _folder_instead_of("playbook.db"),
             config_runs(at, "unable to open database file", database=True)),
        Case("database", "folder-missing", replace("config.yaml", "sqlite:///playbook.db", "sqlite:///nowhere/x.db"),
             config_runs(at, "does its folder exist", database=True)),
        Case("database", "newer-version", _sql("UPDATE alembic_version SET version_num = '9999_future'"),
             config_runs(at, "schema revision `9999_future`, which this version of playbook-engine does not know",
                         database=True)),
        Case("database", "another-application", _another_application,
             config_runs(at, "already has a table `accounts` that playbook-engine did not create", database=True)),
        Case("database", "custom-field-type-changed",
             replace("config.yaml", "accounts: {health_score: number}", "accounts: {health_score: date}"),
             config_runs("config.yaml:6:", "custom field accounts.health_score is declared `date`", database=True)),
        config_case("database", "unknown-driver", "sqlite:///playbook.db", "nosuch://db/x",
                    "`nosuch` is not a database driver SQLAlchemy knows"),
        config_case("database", "driver-not-installed", "sqlite:///playbook.db", "postgresql+pg8000://u@h/db",
                    "is not installed"),
        config_case("database", "not-a-url", "sqlite:///playbook.db", "playbook.db", "not a database URL"),
        Case("database", "server-down", replace("config.yaml", "sqlite:///playbook.db", down),
             config_runs(at, "cannot open the database postgresql+psycopg://cs:***@127.0.0.1:1/cs", database=True,
                         absent="s3cret-pw")),
    ]


def _database_file(data: bytes) -> Breaks:
    def breaks(root: Path) -> None:
        for p in root.glob("playbook.db*"):
            p.unlink()
        (root / "playbook.db").write_bytes(data)
    return breaks


def _damaged(root: Path) -> None:
    """The SQLite header kept, every page after the first overwritten."""
    path = root / "playbook.db"
    for p in root.glob("playbook.db-*"):
        p.unlink()
    data = bytearray(path.read_bytes())
    data[4096:] = bytes((i * 7) % 256 for i in range(len(data) - 4096))
    path.write_bytes(bytes(data))


def _sql(statement: str) -> Breaks:
    def breaks(root: Path) -> None:
        with sqlite3.connect(root / "playbook.db") as conn:
            conn.execute(statement)
        conn.close()
    return breaks


def _another_application(root: Path) -> None:
    _database_file(b"")(root)
    with sqlite3.connect(root / "playbook.db") as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, login TEXT)")
    conn.close()


# ---- command-line arguments ---------------------------------------------------------------------------------

ARGUMENTS: tuple[tuple[tuple[str, ...], int, str | None], ...] = (
    # (arguments, exit code, what the output says)
    (("run", "--now", "tomorrow"), 1, "--now: `tomorrow` is not an ISO date-time"),
    (("run", "--now", "2026-13-01"), 1, "is not an ISO date-time"),
    (("run", "--now", "0001-01-01"), 1, "--now: `0001-01-01` is not between the years 1900 and 2999"),
    (("run", "--now", "9999-12-31T23:59"), 1, "is not between the years 1900 and 2999"),
    (("run", "--playbook", "nope"), 2, "unknown playbook id `nope`; known: big-accounts, renewals"),
    (("run", "--playbook", "big-acounts"), 2, "did you mean `big-accounts`?"),
    (("run", "--format", "xml"), 2, "'xml' is not one of"),
    (("explain", "NOPE"), 1, "no account, contact or goal with id `NOPE`"),
    (("journeys", "nope"), 2, "unknown playbook id `nope`; known: big-accounts, renewals"),
    (("journeys", "big-accounts"), 2, "`big-accounts` is not a journey (a playbook with `steps:`)"),
    (("journeys", "--format", "xml"), 2, "'xml' is not one of"),
    (("explain", "planet:A1"), 2, "`planet` is not a subject type"),
    (("explain", "account:"), 2, "give the id of an account"),
    (("explain", "A1", "--playbook", "nope"), 2, "unknown playbook id `nope`"),
    (("explain", "A1", "--now", "x"), 1, "--now: `x` is not an ISO date-time"),
    (("history", "--playbook", "nope"), 2, "unknown playbook id `nope`"),
    (("history", "--attempts", "--playbook", "nope"), 2, "unknown playbook id `nope`"),
    (("history", "--limit", "-1"), 2, "--limit"),
    (("history", "--limit", "many"), 2, "'many' is not a valid integer"),
    (("outbox", "list", "--playbook", "nope"), 2, "unknown playbook id `nope`"),
    (("outbox", "list", "--limit", "0"), 2, "--limit"),
    (("outbox", "list", "--status", "done"), 2, "'done' is not one of"),
    (("outbox", "retry", "abc"), 2, "'abc' is not a valid integer"),
    (("outbox", "retry", "999"), 1, "#999 does not exist"),
    (("outbox", "retry", "1"), 1, "#1 is sent: only failed or held actions can be retried, so nothing was changed"),
    (("outbox", "retry", "99999999999999999999"), 2, "IDS"),
    (("outbox", "retry", "--rerender", "999"), 1, "no outbox action #999"),
    (("outbox", "cancel", "999"), 1, "#999 does not exist"),
    (("outbox", "cancel", "1", "-1"), 2, "IDS"),
    (("outbox", "retry"), 2, "Missing argument"),
    (("tasks", "done", "999"), 1, "no task #999"),
    (("tasks", "done", "abc"), 2, "'abc' is not a valid integer"),
    (("tasks", "done", "0"), 2, "TASK_ID"),
    (("tasks", "snooze", "1"), 2, "Missing option '--until'"),
    (("tasks", "snooze", "1", "--until", "someday"), 1, "--until: `someday` is neither a date-time nor a duration"),
    (("tasks", "snooze", "1", "--until", "2020-01-01"), 1, "is in the past"),
    (("tasks", "snooze", "1", "--until", "9999-12-31"), 1, "is not between the years 1900 and 2999"),
    (("tasks", "snooze", "1", "--until", "1000000d"), 1, "longer than a century"),
    (("tasks", "snooze", "999", "--until", "3d"), 1, "no task #999"),
    (("tasks", "--all", "done", "1"), 2, "belong to `tasks list`"),
    (("unsubscribe",), 2, "give one or more email addresses, or --list"),
    (("unsubscribe", "not-an-email"), 2, "`not-an-email` is not an email address"),
    (("dispatch", "--limit", "0"), 2, "--limit"),
    (("worker", "--interval", "0"), 2, "--interval"),
    (("worker", "--max-idle", "-1"), 2, "--max-idle"),
    (("start", "--workers", "0"), 2, "--workers"),
    (("start", "--lease", "0"), 2, "--lease"),
    (("start", "--metrics-port", "99999"), 2, "--metrics-port"),
    (("start", "--unsubscribe-port", "0"), 2, "--unsubscribe-port"),
    (("start", "--log-format", "xml"), 2, "'xml' is not one of"),
    (("validate", "nope.yaml"), 2, "'nope.yaml' does not exist"),
    (("validate", "data"), 2, "data: no playbook files (*.yaml, *.yml) in this folder"),
    (("validate", "data/accounts.csv"), 1, "data/accounts.csv:1:1: a playbook must be a YAML mapping"),
    (("sync", "--entity", "customers"), 2, "'customers' is not one of"),
    (("status", "--format", "xml"), 2, "'xml' is not one of"),
    (("playbooks",), 2, "No such command 'playbooks'"),
    (("--bogus", "validate"), 2, "No such option '--bogus'"),
    (("schema", "-o", "missing/schema.json"), 1, "Could not open file 'missing/schema.json'"),
    (("schema", "-o", "templates"), 2, "is a directory"),
    (("init", "."), 1, "config.yaml already exists"),
    (("init", "config.yaml"), 2, "is a file"),
    (("init", "config.yaml/inside"), 1, "config.yaml/inside: cannot write the working directory"),
    (("init", "new", "--accounts", "-5"), 2, "--accounts"),
    (("demo", "--accounts", "-1"), 2, "--accounts"),
    (("demo", "--keep", "config.yaml"), 2, "is a file"),
    (("test", "nope.test.yaml"), 2, "'nope.test.yaml' does not exist"),
    (("test", "data"), 1, "data: no test files"),
    (("preview", "nope", "A1"), 2, "unknown playbook id `nope`"),
    (("preview", "big-accounts", "NOPE"), 1, "NOPE"),
    (("preview", "big-accounts", "A1", "--send-to", "not-an-address"), 2, "not-an-address"),
    (("backtest", "--from", "x", "--to", "2026-12-01"), 2, "--from: `x` is not an ISO date"),
    (("backtest", "--from", "2026-12-01", "--to", "2026-11-01"), 2, "is before --from"),
    (("backtest", "--from", "2026-11-01", "--to", "2026-12-01", "--playbook", "nope"), 2,
     "unknown playbook id `nope`"),
    (("backtest", "--format", "xml"), 2, "'xml' is not one of"),
    (("diff", "--base", "nope"), 1, "is not in a git repository"),
    (("diff", "--base", "data", "--now", "x"), 1, "--now: `x` is not an ISO date-time"),
    (("diff",), 2, "Missing option '--base'"),
    (("diff", "--base", "data", "--format", "xml"), 2, "'xml' is not one of"),
)


def argument_cases() -> list[Case]:
    return [Case("arguments", " ".join(args), lambda root: None,
                 (Run(args, frozenset({code}), (says,) if says else ()),))
            for args, code, says in ARGUMENTS]
