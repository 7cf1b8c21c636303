"""The sync runner (§4): load every configured source into the database, one entity at a time.

Entities sync in the order accounts, contacts, goals, usage; all sources of one entity form one
sync in one transaction (a key may appear in several sources: later sources update the columns
they name; within one source a key may appear once). Rows stream from the sources, are validated,
and valid rows are upserted in chunks inside that transaction, each source's rows with its own stamp
(rows equal to the stored ones are left alone; the versions changed rows replace go to the field
history, store/field_history.py); a key seen twice in one source is found by the database, in the table of
the keys the sync named (so memory does not grow with the rows). A usage entity fed by one source whose
rows are grouped by account takes a path without a lookup per row (sync/grouped.py), with the same results.
Rows are read and typed a batch at a time,
column by column (sync/columns.py), with the value formats its reader declares (a date format, decimal and
thousands separators). If any row is invalid (and `skip_invalid` is off) or a source cannot be read, the
transaction is rolled back so nothing of the entity changes; the rows are still written until then, so every
duplicate is found and counted.
Other entities still sync and commit; `run_sync` then raises `SyncFailed` (a DataError) listing the
problems of every failed entity, with the full report attached.

When every source of an entity is a snapshot, rows absent from it are marked removed (usage rows
are deleted), and the contacts and goals of removed accounts are marked removed too. A snapshot that would
remove more than `max_removal` of the entity's live rows (the source's, else `sync.max_removal`), or any row
while one of its sources has no data rows, is refused: a truncated or broken export must not remove
customers (`allow_removal`, i.e. `playbook sync --allow-removal`, lets it through once). Rows that could not
be read (no key known) never count as absent: with `skip_invalid`, their entity removes nothing.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.datamodel import ENTITIES, ENTITY_OF, KEYS
from engine.errors import DataError, Diagnostic, UserError, suggest
from engine.settings import Settings, Source, parse_share
from engine.store import Store, Tx
from engine.sync.progress import ProgressCallback, no_progress
from engine.plugins import SourceEnv
from engine.sync.reader import BATCH, EPOCH, Batch, Reader, SourceError
from engine.sync.columns import BatchChecker
from engine.sync.grouped import GroupedUsage, NotGrouped
from engine.sync.validate import (RowChecker, duplicate_problem, entity_fields, required_fields,
                                  unknown_account_problem)

ORDER = ENTITIES     # accounts first: contacts, goals and usage name an account
CHUNK = 5000
MAX_PROBLEMS = 1000  # problems kept per entity; the count of invalid rows stays exact


@dataclass
class EntityReport:
    """What one entity's sync did. When `failed`, nothing of the entity changed."""

    entity: str
    sources: int
    mode: str = "snapshot"          # snapshot | incremental | mixed (removal only for snapshot)
    read: int = 0                   # rows read from the sources
    loaded: int = 0                 # valid rows (inserted + updated + unchanged)
    written: int = 0                # rows inserted or changed
    inserted: int = 0
    updated: int = 0                # rows whose values changed (their old values kept in the field history)
    unchanged: int = 0              # rows equal to what the store had: not rewritten
    removed: int = 0                # rows marked removed (usage: rows deleted)
    cascaded: dict[str, int] = field(default_factory=dict)  # accounts: contacts/goals marked removed
    invalid: int = 0                # invalid rows (skipped with skip_invalid)
    problems: list[Diagnostic] = field(default_factory=list)
    omitted: int = 0                # problems found beyond MAX_PROBLEMS (counted, not kept)
    warnings: list[Diagnostic] = field(default_factory=list)
    failed: bool = False
    refused: int = 0                # rows a refused removal would have marked removed (the entity failed)
    seconds: float = 0.0

    def errors(self) -> list[Diagnostic]:
        """The problems, plus a closing line when more were found than are kept."""
        if not self.omitted:
            return list(self.problems)
        return self.problems + [Diagnostic("", None, None, f"... and {self.omitted} more problems in {self.entity}")]


@dataclass
class SyncReport:
    """The outcome of `run_sync`, entity by entity."""

    entities: dict[str, EntityReport] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        """Entities whose sync failed (and so did not change)."""
        return [name for name, r in self.entities.items() if r.failed]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [w for r in self.entities.values() for w in r.warnings]

    @property
    def problems(self) -> list[Diagnostic]:
        return [p for r in self.entities.values() for p in r.errors()]


class RemovalRefused(SourceError):
    """A snapshot would remove too many of its entity's rows; nothing of the entity may change."""


class SyncFailed(DataError):
    """At least one entity failed to sync; the others were committed. `report` has the details."""

    def __init__(self, report: SyncReport):
        self.report = report
        super().__init__([d for name in report.failed for d in report.entities[name].errors()])


def run_sync(settings: Settings, store: Store, *, skip_invalid: bool = False,
             entities: Iterable[str] | None = None, progress: ProgressCallback | None = None,
             now: datetime | None = None, allow_removal: bool = False, as_of: bool = False) -> SyncReport:
    """Load every source (or those of `entities`); raise SyncFailed after committing the good entities.

    `now` is the sync time (aware, or naive UTC); it stamps the rows written and removed (the field history
    dates them by it) and becomes the `:since` of the next incremental sync. `allow_removal` lets a snapshot
    remove more than `max_removal` of its rows. With `as_of`, `now` is a past moment a snapshot is recorded at
    (`playbook sync --as-of`): refused, before anything is read, when it is in the future or earlier than the
    latest recorded sync of an entity it would load (the history is recorded in order).
    """
    started = time.perf_counter()
    wall = _naive_utc(datetime.now(timezone.utc))
    moment = _naive_utc(now) if now is not None else wall
    wanted = _wanted(entities)
    labels = source_labels(settings.sources)
    if as_of:
        _check_past_moment(settings, store, moment, wall, wanted)
    report = SyncReport()
    for entity in ORDER:
        if entity not in wanted:
            continue
        picked = [(labels[i], s) for i, s in enumerate(settings.sources) if s.entity == entity]
        if picked:
            job = _EntitySync(settings, store, entity, picked, skip_invalid, progress or no_progress, moment,
                              allow_removal)
            report.entities[entity] = job.run()
    report.seconds = time.perf_counter() - started
    if report.failed:
        raise SyncFailed(report)
    return report


def sync_readers(settings: Settings, store: Store, readers: dict[str, Reader], *, now: datetime,
                 snapshot: bool = True) -> SyncReport:
    """Sync rows a caller already has (one reader per entity, synced in the usual order) instead of the
    configured sources, with the same validation and bookkeeping; raise SyncFailed like `run_sync`. Their
    removals are the caller's own (no mass-removal guard). `playbook test` loads its test file's rows this way."""
    moment = _naive_utc(now)
    report = SyncReport()
    for entity in ORDER:
        if entity in readers:
            given = _Given(readers[entity], not snapshot)
            job = _EntitySync(settings, store, entity, [(readers[entity].label, given)], False, no_progress, moment,
                              allow_removal=True)
            report.entities[entity] = job.run()
    if report.failed:
        raise SyncFailed(report)
    return report


class _Given:
    """A reader the caller made, standing where a configured source would (see `sync_readers`)."""

    config = None
    max_removal = None

    def __init__(self, reader: Reader, incremental: bool):
        self.reader, self.incremental, self.plugin = reader, incremental, self

    def open(self, config: Any, env: SourceEnv) -> Reader:
        return self.reader


def _check_past_moment(settings: Settings, store: Store, moment: datetime, wall: datetime, wanted: set[str]) -> None:
    """Refuse a past sync moment that is in the future, or earlier than a recorded sync of an entity to load."""
    from engine.clock import show_time

    tz = settings.timezone
    if moment > wall:
        raise UserError(Diagnostic("", None, None, f"--as-of {show_time(moment, tz)} is in the future",
                                   "give the moment the snapshot was taken; a sync without --as-of is recorded now"))
    loading = {s.entity for s in settings.sources} & wanted
    with store.read() as tx:
        latest = {e: tx.entities.last_synced(e) for e in sorted(loading)}
    later = [(at, e) for e, at in latest.items() if at is not None and at > moment]
    if later:
        at, entity = max(later)
        raise UserError(Diagnostic("", None, None,
                                   f"--as-of {show_time(moment, tz)} is earlier than the latest sync of {entity} "
                                   f"({show_time(at, tz)}): the field history is recorded in order",
                                   "load past snapshots oldest first; a database with later syncs cannot take "
                                   "earlier ones"))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _wanted(entities: Iterable[str] | None) -> set[str]:
    if entities is None:
        return set(ORDER)
    chosen = set(entities)
    for name in sorted(chosen - set(ORDER)):
        hint = suggest(name, ORDER)
        raise UserError(f"unknown entity `{name}`" + (f" (did you mean `{hint}`?)" if hint else
                                                       f" (choose from {', '.join(ORDER)})"))
    return chosen


def source_labels(sources: list[Source]) -> list[str]:
    """How each source is named in messages: its own label (a file path as written), else `<kind>:<entity>`
    (`#n` when several sources of that kind feed the entity)."""
    own = [s.plugin.label(s.config) for s in sources]
    counts: dict[tuple[str, str], int] = {}
    for s, label in zip(sources, own):
        if label is None:
            counts[(s.kind, s.entity)] = counts.get((s.kind, s.entity), 0) + 1
    seen: dict[tuple[str, str], int] = {}
    labels = []
    for s, label in zip(sources, own):
        if label is None:
            key = (s.kind, s.entity)
            seen[key] = seen.get(key, 0) + 1
            label = f"{s.kind}:{s.entity}" + (f"#{seen[key]}" if counts[key] > 1 else "")
        labels.append(label)
    return labels


def open_source(source: Source, settings: Settings, label: str, since: datetime | None) -> Reader:
    """A reader of one configured source (not yet opened: use it in a `with` block)."""
    env = SourceEnv(settings.resolve, label, since or EPOCH, settings.timezone)
    return source.plugin.open(source.config, env)


class _EntitySync:
    """One entity's sync: read, validate and write all its sources in one transaction."""

    def __init__(self, settings: Settings, store: Store, entity: str, sources: list[tuple[str, Source]],
                 skip_invalid: bool, progress: ProgressCallback, now: datetime, allow_removal: bool = False):
        self.settings, self.store, self.entity = settings, store, entity
        self.sources, self.skip_invalid, self.progress, self.now = sources, skip_invalid, progress, now
        self.allow_removal = allow_removal
        self.max_removal = max_removal(settings, [s for _, s in sources])
        self.fields = entity_fields(entity, settings.custom_fields())
        kinds = {s.incremental for _, s in sources}
        self._start_reading("mixed" if len(kinds) > 1 else ("incremental" if True in kinds else "snapshot"))
        self.grouped: GroupedUsage | None = None

    def _start_reading(self, mode: str) -> None:
        """What reading the sources gathers, empty (again, when a grouped read falls back to the general path)."""
        self.report = EntityReport(self.entity, len(self.sources), mode)
        self.empty: list[str] = []          # sources that had no data rows
        self.keyless = 0                    # invalid rows whose key is not known (they cannot be kept)
        # the rows read since the last flush, which judges them (see _flush): valid ones by the fields they name
        # (tuples of stored values, the line last), and (line, key, values, problems) of invalid ones
        self.pending: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        self.pending_rows = 0
        self.pending_invalid: list[tuple[int, tuple[Any, ...] | None, dict[str, Any] | None, list[str]]] = []
        self.invalid_keys: list[tuple[Any, ...]] = []

    def run(self) -> EntityReport:
        started = time.perf_counter()
        with self.store.write() as tx, collector_paused():
            try:
                self._load(tx)
                if not (self.report.invalid and not self.skip_invalid):
                    self._finish(tx)
            except SourceError as exc:
                self.report.problems.insert(0, exc.diagnostic)
                self.report.failed = True
            if self.report.invalid and not self.skip_invalid:
                self.report.failed = True
            if self.report.failed:
                tx.rollback()
                self.report.loaded = self.report.written = self.report.inserted = self.report.updated = 0
                self.report.unchanged = 0
                self.report.removed, self.report.cascaded = 0, {}
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _load(self, tx: Tx) -> None:
        tx.entities.lock(self.entity)
        tx.entities.begin_load(self.entity)
        self.first_stamp = self.stamp = tx.entities.next_stamp(self.entity, self.now)
        self.before = tx.entities.count(self.entity)
        self.live = tx.entities.count_live(self.entity, self.before) if self.report.mode == "snapshot" else 0
        since = tx.entities.last_synced(self.entity) or EPOCH
        if self.entity == "usage" and len(self.sources) == 1 and not isinstance(self.sources[0][1], _Given):
            # a grouped source is compared with the stored rows account by account (sync/grouped.py); one that
            # turns out not to be is rolled back and synced again by the general path
            self.grouped = GroupedUsage(self.before > 0, self.report.mode == "snapshot")
            savepoint = tx.conn.begin_nested()
            try:
                self.grouped.start(tx)
                self._read_sources(tx, since)
                self.grouped.finish(tx)
                savepoint.commit()
                return
            except NotGrouped:
                savepoint.rollback()
                self._start_reading(self.report.mode)
        self.grouped = None
        self._read_sources(tx, since)

    def _read_sources(self, tx: Tx, since: datetime) -> None:
        readers = [open_source(s, self.settings, label, since) for label, s in self.sources]
        totals: list[int | None] = []
        done = 0
        for index, reader in enumerate(readers):
            self.source = index
            self.stamp = self.first_stamp + timedelta(microseconds=index)
            checker = RowChecker(self.entity, self.fields, self.settings.tz, reader.formats,
                                 self.settings.declared_values(self.entity))
            with reader:
                totals.append(reader.estimate_total() if self.progress is not no_progress else None)
                total = None if None in totals else sum(t or 0 for t in totals)
                self.progress(self.entity, done, total)
                done = self._read(tx, reader, checker, done, total)
        self.progress(self.entity, done, done)

    def _read(self, tx: Tx, reader: Reader, checker: RowChecker,
              done: int, total: int | None) -> int:
        known = set(self.fields)
        warned: set[str] = set()
        if reader.columns is not None:
            self._check_columns(reader, known, warned)
        report = self.report
        first_problem = len(report.problems)
        first_row = report.read
        forms = self.forms = tx.entities.stored_forms(self.entity)
        typers: dict[tuple[str, ...], BatchChecker] = {}
        for batch in reader.batches(min(BATCH, CHUNK)):
            count = len(batch.rows)
            if (done + count) // CHUNK != done // CHUNK:
                self.progress(self.entity, done + count, total)
            done += count
            report.read += count
            if batch.columns is None:
                self.pending_invalid.extend((line, None, None, [raw.message])
                                            for line, raw in zip(batch.lines, batch.rows))
                continue
            typer = typers.get(batch.columns)
            if typer is None:
                if reader.columns is None and not known.issuperset(batch.columns):
                    self._warn_unknown(reader.label, [c for c in batch.columns if c not in known], warned)
                typer = typers[batch.columns] = BatchChecker(checker, batch.columns, forms)
            rows = typer.check(batch.rows, batch.lines, batch.texts)
            if rows is None:
                rows = self._check_rows(checker, typer, batch)
            if rows:
                self.pending.setdefault(typer.fields, []).extend(rows)
                self.pending_rows += len(rows)
            if self.pending_rows + len(self.pending_invalid) >= CHUNK:
                self._flush(tx, reader.label, final=False)
        self._flush(tx, reader.label)  # a chunk never mixes sources (or stamps)
        if report.read == first_row:
            self.empty.append(reader.label)
        # duplicates found at a flush were reported after later lines: back in line order
        report.problems[first_problem:] = sorted(report.problems[first_problem:], key=lambda d: d.line or 0)
        return done

    def _check_rows(self, checker: RowChecker, typer: BatchChecker, batch: Batch) -> list[tuple[Any, ...]]:
        """The rows of a batch checked one by one: the valid ones as `typer` gives them; the invalid ones (with
        their problems) kept for the flush."""
        valid = []
        names = batch.columns or ()
        for line, values in zip(batch.lines, batch.rows):
            typed, problems, key = checker.check(dict(zip(names, values)))
            if problems:
                self.pending_invalid.append((line, typer.stored_key(key), typed, problems))
            else:
                valid.append(typer.stored(typed, line))
        return valid

    def _check_columns(self, reader: Reader, known: set[str], warned: set[str]) -> None:
        columns = [c for c in reader.columns or () if c]
        for name in required_fields(self.entity):
            if name not in columns:
                article = "an" if name[0] in "aeiou" else "a"
                raise reader.fail(f"no `{name}` column (every {self.entity} row needs {article} {name})",
                                  hint=f"the columns are: {', '.join(columns) or 'none'}")
        self._warn_unknown(reader.label, [c for c in columns if c not in known], warned)

    def _warn_unknown(self, label: str, columns: list[str], warned: set[str]) -> None:
        for column in columns:
            if column in warned or not column:
                continue
            warned.add(column)
            near = suggest(column, list(self.fields))
            if self.entity == "usage":
                what, hint = "a field of usage", "usage rows have account_id, metric, day and value"
            else:
                what = f"a declared field of {self.entity}"
                hint = f"declare it under fields.{self.entity} in config.yaml"
            if near:
                hint = f"did you mean `{near}`? or {hint}"
            self.report.warnings.append(Diagnostic(label, None, None,
                                                   f"column `{column}` is not {what}; ignored", hint))

    def _invalid(self, label: str, line: int, problems: list[str], key: tuple[Any, ...] | None) -> None:
        """Report an invalid row (one row, however many problems it has; problems beyond MAX_PROBLEMS counted)."""
        for problem in problems:
            if len(self.report.problems) < MAX_PROBLEMS:
                self.report.problems.append(Diagnostic(label, line, None, problem))
            else:
                self.report.omitted += 1
        self.report.invalid += 1
        if key is None:
            self.keyless += 1
        elif self.skip_invalid:
            self.invalid_keys.append(key)

    def _flush(self, tx: Tx, label: str, final: bool = True) -> None:
        """Judge and write the rows read since the last flush. In line order, a row is invalid when it has
        problems of its own or the store has no such account (a removed account it still has: its rows load
        and stay removed with it) — both said — or when its key is an earlier valid row's of the source (found
        by the store; across the fields' groups of a chunk by `_repeated`). The
        accounts are looked up once per chunk, so memory does not grow with the number of accounts. A grouped
        source's chunk (`final` aside) ends before its last account's rows, which wait for the next one."""
        groups, invalid = self.pending, self.pending_invalid
        self.pending, self.pending_invalid, self.pending_rows = {}, [], 0
        if self.grouped is not None:
            if len(groups) > 1:
                raise NotGrouped
            if not final:
                split = self.grouped.hold_back(groups, invalid)
                if split is None:
                    self.pending, self.pending_invalid = groups, invalid
                    self.pending_rows = sum(map(len, groups.values()))
                    return
                (groups, invalid), (self.pending, self.pending_invalid) = split
                self.pending_rows = sum(map(len, self.pending.values()))
        if not groups and not invalid:
            return
        keys_of = {fields: _key_getter(fields, self.entity) for fields in groups}
        account_of = {fields: _account_getter(fields) for fields in groups}
        named: set[Any] = set()
        if self.entity != "accounts":
            for fields, rows in groups.items():
                if account_of[fields] is not None:
                    named.update(map(account_of[fields], rows))
            named.update(v.get("account_id") for _, _, v, _ in invalid if v)
            named.discard(None)
        known = tx.entities.existing_accounts(named)
        unknown = named.difference(known)
        problems: list[tuple[int, tuple[Any, ...] | None, list[str]]] = []
        for line, key, values, own in invalid:
            account = values.get("account_id") if values else None
            problems.append((line, key, [*own, unknown_account_problem(account)] if account in unknown else own))
        if unknown:
            for fields, rows in groups.items():
                account = account_of[fields]
                if account is None:
                    continue
                keep = [row for row in rows if account(row) not in unknown]
                if len(keep) < len(rows):
                    for row in rows:
                        if account(row) in unknown:
                            problems.append((row[-1], keys_of[fields](row), [unknown_account_problem(account(row))]))
                    groups[fields] = keep
        if len(groups) > 1:
            problems.extend(self._repeated(groups, keys_of))
        for line, key, found in sorted(problems, key=lambda p: p[0]):
            self._invalid(label, line, found, key)
        if self.entity in ("contacts", "goals"):
            groups = self._with_removal(groups, known)
        written = loaded = 0
        if self.grouped is not None:
            fields, rows = next(iter(groups.items()), (KEYS[self.entity], []))
            kept = [key for _, key, _ in problems if key is not None]
            written, loaded, duplicates = self.grouped.write(tx, fields, rows, kept, self.first_stamp, self.stamp)
            for line, key, earlier in duplicates:
                self._invalid(label, line, [duplicate_problem(self.entity, key, earlier)], key)
            groups = {}
        for fields, rows in groups.items():
            if not rows:
                continue
            n, duplicates = tx.entities.write_rows(self.entity, fields, rows, self.source, self.first_stamp,
                                                   self.stamp, compare=self.before > 0)
            written += n
            loaded += len(rows) - len(duplicates)
            for line, key, earlier in sorted(duplicates):
                self._invalid(label, line, [duplicate_problem(self.entity, key, earlier)], key)
        self.report.loaded += loaded
        self.report.written += written

    def _repeated(self, groups: dict[tuple[str, ...], list[tuple[Any, ...]]],
                  keys_of: dict[tuple[str, ...], Any]) -> list[tuple[int, tuple[Any, ...], list[str]]]:
        """The problems of the rows whose key an earlier valid row of the chunk has, when the chunk's rows name
        different fields (one statement per set of fields: the store sees one set at a time); those rows are
        taken out of `groups`. (The store finds the repeated keys of one set of fields itself.)"""
        first: dict[Any, int] = {}
        found = []
        order = sorted(((row[-1], fields, row) for fields, rows in groups.items() for row in rows),
                       key=lambda r: r[0])
        kept: dict[tuple[str, ...], list[tuple[Any, ...]]] = {fields: [] for fields in groups}
        for line, fields, row in order:
            key = keys_of[fields](row)
            if key in first:
                found.append((line, key, [duplicate_problem(self.entity, key, first[key])]))
            else:
                first[key] = line
                kept[fields].append(row)
        groups.update(kept)
        return found

    def _with_removal(self, groups: dict[tuple[str, ...], list[tuple[Any, ...]]],
                      known: dict[str, Any]) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
        """Contacts and goals name `removed_at`: their account's removal (None for a live account), so the
        rows of a removed account load and stay removed with it."""
        form = self.forms.get("removed_at")
        removal = {a: (r if r is None or form is None else form(r)) for a, r in known.items()}
        out = {}
        for fields, rows in groups.items():
            if not rows:
                continue
            at = fields.index("account_id")
            out[fields + ("removed_at",)] = [(*row[:-1], removal.get(row[at]), row[-1]) for row in rows]
        return out

    def _finish(self, tx: Tx) -> None:
        """Counts, removal of absent rows, cascade, and the sync_state record (committed by `run`)."""
        entities, report = tx.entities, self.report
        rows = self.before + self.grouped.inserted if self.grouped is not None else entities.count(self.entity)
        report.inserted = rows - self.before
        report.updated = max(report.written - report.inserted, 0)
        report.unchanged = max(report.loaded - report.written, 0)
        if report.mode == "snapshot" and self.keyless:
            report.warnings.append(Diagnostic(", ".join(label for label, _ in self.sources), None, None,
                                              f"{self.keyless} rows could not be read, so no {self.entity} "
                                              "were marked removed by this sync",
                                              "fix those rows: the next sync removes what is really absent"))
        elif report.mode == "snapshot" and self.grouped is not None:
            unnamed = self.grouped.stored < self.before       # stored rows of accounts the source did not name
            if self.grouped.gone or unnamed:
                report.removed = entities.delete_gone_usage(self.stamp, unnamed)
            self._check_removal(report.removed)
        elif report.mode == "snapshot":
            if self.invalid_keys:
                entities.keep(self.entity, self.invalid_keys)
            if self.invalid_keys or not entities.all_named(self.entity, rows):    # (else no row can be absent)
                if self.entity == "usage":
                    report.removed = entities.delete_absent_usage(self.stamp)
                else:
                    report.removed = entities.mark_absent_removed(self.entity, self.stamp, self.now)
            self._check_removal(report.removed)
        entities.end_load(self.entity)
        if self.entity in ENTITY_OF.values():
            # rows of removed accounts are removed too (a contacts snapshot may still list them)
            cascaded = entities.cascade_removed_accounts(self.now)
            report.cascaded = cascaded if self.entity == "accounts" else {}
        entities.record_sync(self.entity, self.now, report.loaded, report.removed, self.stamp)
        entities.analyze(self.entity)

    def _check_removal(self, removed: int) -> None:
        """Raise RemovalRefused when this snapshot removed more than `max_removal` of the live rows, or any
        row while a source had no data rows (unless `allow_removal`); the caller rolls the entity back."""
        if not removed or self.allow_removal:
            return
        share = removed / self.live if self.live else 1.0
        limit, source = self.max_removal
        labels = self.empty or [label for label, _ in self.sources]
        rows = "usage rows" if self.entity == "usage" else self.entity
        what = f"{removed} of {self.live} {rows} ({percent(share)})"
        act = "delete" if self.entity == "usage" else "mark"
        done = "" if self.entity == "usage" else " removed"
        allow = "if the data is right, run `playbook sync --allow-removal` once"
        if self.empty:
            message = f"no data rows: refusing to {act} {what}{done}; nothing of {self.entity} changed"
            hint = "is the export complete? " + allow
        elif share > limit:
            message = f"refusing to {act} {what}{done}, more than {source}; nothing of {self.entity} changed"
            hint = (f"is the export complete? {allow}, or raise `max_removal` on the source (or `sync.max_removal`)"
                    " in the config")
        else:
            return
        self.report.refused = removed
        raise RemovalRefused(Diagnostic(", ".join(labels), None, None, message, hint))


def _key_getter(fields: tuple[str, ...], entity: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The key of a row of these fields (a tuple, as `RowChecker.check` gives it)."""
    at = [fields.index(k) for k in KEYS[entity]]
    if len(at) > 1:
        return itemgetter(*at)
    first = at[0]
    return lambda row: (row[first],)


def _account_getter(fields: tuple[str, ...]) -> Callable[[tuple[Any, ...]], Any] | None:
    return itemgetter(fields.index("account_id")) if "account_id" in fields else None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for an entity's sync: reading and typing rows allocates many
    short-lived lists and tuples (no cycles among them), and each full collection they set off would walk
    every long-lived object of the process again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def max_removal(settings: Settings, sources: list[Source]) -> tuple[float, str]:
    """(share, where it is set) of an entity's rows one snapshot of these sources may remove: the largest a
    source sets, else `sync.max_removal`."""
    own = [s.max_removal for s in sources if s.max_removal is not None]
    if own:
        text = max(own, key=parse_share)
        return parse_share(text), f"the source's max_removal ({text})"
    return parse_share(settings.sync.max_removal), f"sync.max_removal ({settings.sync.max_removal})"


def percent(share: float) -> str:
    """A share as a percentage: whole when it is, else with one decimal (10%, 12.5%, 0.3%)."""
    value = share * 100
    return f"{value:.0f}%" if abs(value - round(value)) < 0.05 and (value >= 1 or value == 0) else f"{value:.1f}%"
