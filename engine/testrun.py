"""`playbook test` (§18): each case of a test file run on a fresh SQLite database of its own, as successive
`playbook run --now` calls would run it, with nothing delivered.

The databases live in a temporary folder — in memory where the system has a RAM file system (/dev/shm) — and are
gone afterwards: one is migrated once, and each case starts from a copy of it. (A `sqlite://` in-memory database
is one connection, while a tick reads through other connections in the middle of its write batch, as it does
on every real database.)

Before each run the rows the case gives so far are synced at the run's instant (the first run: `data`; later
runs: `set` merged into them by key, `remove` taken out) through the sync runner, so rows are checked as a real
sync checks them. The run is one tick with the real episode policy, planner and contact policy, followed by a
dispatch at the run's instant to in-memory sinks (tasks go to the built-in task list of the in-memory database,
so a resolve closes them as it would). Each run's events — baselines included — are compared with its
`expect` (engine/testmatch.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.clock import make_clock
from engine.delivery import BaseConnector, Outcome, Receipt
from engine.errors import Diagnostic, UserError, suggest
from engine.settings import Settings
from engine.spec.compiled import PlaybookSet
from engine.store import Store, open_store
from engine.store.outbox import Claimed
from engine.sync.reader import Reader, Row as SourceRow
from engine.testfile import Case, Row, Run, row_key
from engine.testmatch import Problem, compare


def test_settings(settings: Settings) -> Settings:
    """The configuration a test runs with: no connectors (nothing can be delivered), and no stale-data guard (a
    test's instants are not the wall clock's). Its database is chosen per case (`Databases`)."""
    defaults = settings.defaults.model_copy(update={"max_data_age": None})
    return settings.model_copy(update={"database": "sqlite://", "connectors": None, "defaults": defaults})


class Databases:
    """Fresh databases for test cases, in a temporary folder removed on close: a migrated one made once, copied
    for each case."""

    def __init__(self, settings: Settings):
        import tempfile
        from pathlib import Path

        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.folder = tempfile.TemporaryDirectory(prefix="playbook-test-", dir=where)
        self.custom = settings.custom_fields()
        self.template: Any = None
        self.count = 0

    def fresh(self) -> Store:
        """A new database, migrated, with nothing in it."""
        import shutil
        from pathlib import Path

        folder = Path(self.folder.name)
        if self.template is None:
            self.template = folder / "template.db"
            open_store(f"sqlite:///{self.template}", self.custom).dispose()
        self.count += 1
        path = folder / f"case-{self.count}.db"
        shutil.copyfile(self.template, path)
        return open_store(f"sqlite:///{path}", self.custom, migrate=False)

    def close(self) -> None:
        self.folder.cleanup()


@dataclass
class RunResult:
    """One run of a case: its events (as `run --format json` lists them, baselines included, each action with its
    whole payload) and the problems found."""

    run: Run
    events: list[dict[str, Any]]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # playbooks skipped or blocked in this run

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class CaseResult:
    """A case's runs, or the problems that kept it from running (bad rows, unknown or invalid playbooks)."""

    case: Case
    runs: list[RunResult] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and all(r.passed for r in self.runs)


class _Rows(Reader):
    """The rows of one entity as the test file gives them, each at its line."""

    def __init__(self, label: str, rows: list[Row]):
        self.label, self.rows = label, rows

    def __iter__(self) -> Iterator[SourceRow]:
        for r in self.rows:
            yield r.line, dict(r.values)


class _Recorder(BaseConnector):
    """Takes every action and sends it nowhere."""

    batch_safe = True

    def __init__(self, name: str):
        self.name = name

    def deliver(self, item: Claimed) -> Receipt:
        return Receipt(Outcome.SENT, "recorded by playbook test")


def run_case(case: Case, settings: Settings, playbooks: PlaybookSet, databases: Databases) -> CaseResult:
    """Run one case (`settings` from `test_settings`, `playbooks` loaded with them) on a fresh database."""
    result = CaseResult(case)
    ids = _selected(case, playbooks, result)
    if result.errors:
        return result
    store = databases.fresh()
    try:
        rows: dict[str, dict[tuple[Any, ...], Row]] = {}
        subject_types = {p.id: p.subject for p in playbooks.valid}
        for n, run in enumerate(case.runs):
            changed = _apply(rows, case.data if n == 0 else {}, run)
            try:
                _sync(store, settings, case.file, rows, changed, run.at)
            except UserError as exc:
                result.errors += exc.diagnostics
                return result
            result.runs.append(_run(store, settings, playbooks, ids, run, subject_types))
    finally:
        store.dispose()
    return result


def _selected(case: Case, playbooks: PlaybookSet, result: CaseResult) -> set[str]:
    """The ids of the playbooks the case runs (all valid ones by default); problems go to `result.errors`."""
    valid = {p.id for p in playbooks.valid}
    if case.playbooks is None:
        for inv in playbooks.invalid:
            result.errors.append(Diagnostic(case.file, case.line, None, f"playbook {inv.file} is invalid",
                                            "fix it (`playbook validate`), or list the playbooks this test loads "
                                            "under `playbooks:`"))
        return valid
    invalid = {inv.id: inv for inv in playbooks.invalid if inv.id}
    for pid in case.playbooks:
        line = case.playbook_lines.get(pid, case.line)
        if pid in invalid:
            result.errors.append(Diagnostic(case.file, line, None, f"playbook `{pid}` is invalid "
                                            f"({invalid[pid].file})", "`playbook validate` says why"))
        elif pid not in valid:
            near = suggest(pid, sorted(valid))
            result.errors.append(Diagnostic(case.file, line, None, f"unknown playbook `{pid}`",
                                            f"did you mean `{near}`?" if near else
                                            f"known: {', '.join(sorted(valid)) or 'none'}"))
    return set(case.playbooks)


def _apply(rows: dict[str, dict[tuple[Any, ...], Row]], data: dict[str, list[Row]], run: Run) -> set[str]:
    """Merge a run's rows into the case's rows so far (by key; a `set` row updates the fields it names); returns
    the entities that changed."""
    changed = set()
    for source in (data, run.set):
        for entity, items in source.items():
            table = rows.setdefault(entity, {})
            for r in items:
                key = row_key(entity, r.values)
                old = table.get(key)
                table[key] = Row(r.line, {**old.values, **r.values}) if old else r
                changed.add(entity)
    for entity, items in run.remove.items():
        table = rows.setdefault(entity, {})
        for r in items:
            table.pop(row_key(entity, r.values), None)
        changed.add(entity)
    return changed


def _sync(store: Store, settings: Settings, label: str, rows: dict[str, dict[tuple[Any, ...], Row]],
          changed: set[str], at: datetime) -> None:
    """Sync the entities that changed, each as a snapshot of the case's rows, at the run's instant."""
    from engine.sync.runner import sync_readers

    if changed:
        readers: dict[str, Reader] = {e: _Rows(label, list(rows.get(e, {}).values())) for e in changed}
        sync_readers(settings, store, readers, now=at)


def _run(store: Store, settings: Settings, playbooks: PlaybookSet, ids: set[str], run: Run,
         subject_types: dict[str, str]) -> RunResult:
    from engine.dispatch import Dispatcher
    from engine.tick import run_tick

    clock = make_clock(settings.timezone, run.at)
    tick = run_tick(store, settings, playbooks, clock, only=ids, kind="test", keep_payloads=True)
    connectors = test_connectors(settings, store, lambda: clock.now)
    Dispatcher(store, settings, connectors, clock=lambda: clock.now).run_once()
    with store.read() as tx:
        outcome = {r["dedup_key"]: r for r in tx.outbox.list(limit=2**31)}
    events = [_event(e, outcome) for o in tick.playbooks for e in o.events]
    out = RunResult(run, events)
    for o in tick.playbooks:
        if o.skipped:
            out.notes.append(f"{o.playbook}: {o.skipped}")
    if run.expect is not None:
        out.problems = compare(run.expect, events, run.line, subject_types)
    return out


def _event(e: Any, outcome: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An event with each action's summary (what `run` shows) over its whole payload, and where the action
    stands after the run's dispatch: `status` (sent, pending, suppressed, failed, cancelled) and `reason`."""
    actions = []
    for i, a in enumerate(e.actions):
        payload = e.payloads[i] if i < len(e.payloads) else {}
        row = outcome.get(payload.get("dedup_key", ""), {})
        state = {"status": row.get("status")} if row else {}
        if row and row["status"] != "sent":
            state["reason"] = row.get("note") or row.get("last_error")
        actions.append({**payload, **a, **{k: v for k, v in state.items() if v is not None}})
    return {"playbook": e.playbook, "subject": e.subject, "event": e.event, "episode": e.episode,
            "actions": actions}


def test_connectors(settings: Settings, store: Store, clock: Any) -> dict[str, Any]:
    """A connector per plugin that sends nothing: task lists keep their in-store sink (closing a task on resolve
    needs it), everything else is recorded and dropped."""
    from engine.plugins import ConnectorEnv, registry

    env = ConnectorEnv(store, clock, settings.outbox_dir, settings)
    return {name: plugin.local_sink(env) if plugin.sink_in_store else _Recorder(name)
            for name, plugin in registry().connectors.items()}


@dataclass
class FileResult:
    """A test file's cases, or the problems that kept it from being read."""

    file: str
    cases: list[CaseResult] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and all(c.passed for c in self.cases)


def run_files(settings: Settings, files: list[Any]) -> list[FileResult]:
    """Read and run every test file (a file that cannot be read is reported and the others still run)."""
    from pathlib import Path

    from engine.spec.loader import load_playbooks
    from engine.testfile import parse_file

    settings = test_settings(settings)
    playbooks = load_playbooks(settings)
    databases = Databases(settings)
    out = []
    try:
        for path in files:
            path = Path(path)
            shown = _display(path)
            result = FileResult(shown)
            try:
                cases = parse_file(path, shown, settings.timezone)
            except UserError as exc:
                result.errors = exc.diagnostics
            else:
                result.cases = [run_case(c, settings, playbooks, databases) for c in cases]
            out.append(result)
    finally:
        databases.close()
    return out


def _display(path: Any) -> str:
    """A path as the user reads it: relative to the working directory when it is below it."""
    import os

    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def results_json(results: list[FileResult]) -> dict[str, Any]:
    """The stable machine form of a `playbook test` run."""
    def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
        return {"file": d.file, "line": d.line, "col": d.col, "message": d.message, "hint": d.hint}

    files = []
    for f in results:
        cases = []
        for c in f.cases:
            cases.append({"name": c.case.name, "line": c.case.line, "passed": c.passed,
                          "errors": [diagnostic_json(d) for d in c.errors],
                          "runs": [{"line": r.run.line, "at": r.run.at.isoformat(), "checked": r.run.expect is not None,
                                    "passed": r.passed, "notes": r.notes, "problems": [p.as_json() for p in r.problems],
                                    "events": r.events} for r in c.runs]})
        files.append({"file": f.file, "passed": f.passed, "errors": [diagnostic_json(d) for d in f.errors],
                      "cases": cases})
    every = [c for f in results for c in f.cases]
    return {"passed": sum(c.passed for c in every), "failed": sum(not c.passed for c in every)
            + sum(1 for f in results if f.errors), "files": files}
