"""`playbook diff` (§18): what a change to the playbooks does — per added, removed or changed playbook, what
changed (trigger, conditions, actions, schedule, activation, templates…) and its effect on the synced data now.

The base is a git ref (its playbooks and templates read with `git archive`) or a folder laid out like the
working directory. Both versions are loaded with the current configuration. The effect is measured on the
configured database:
- who matches now under each version: one scan statement evaluating both versions' conditions (engine/store/
  scans.py, with a bit word no playbook uses, so it changes no match bit);
- the next run: a dry run of each version (the one `playbook run --dry-run` does, activation applied), so
  the working tree's dry run is what the next `playbook run` does, and the difference with the base's dry run
  is what the change adds or takes away."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from engine.clock import Clock
from engine.errors import Diagnostic, UserError
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine.store import Store

CATEGORY = {"trigger": "trigger", "where": "conditions", "actions": "actions", "on_resolve": "actions",
            "steps": "steps", "exit_when": "steps", "exit_on_unmatch": "steps", "schedule": "schedule",
            "activation": "activation", "enabled": "activation", "max_enters_per_run": "activation",
            "subject": "subject", "repeat": "episodes", "cooldown": "episodes", "max_episodes": "episodes",
            "name": "description", "description": "description"}
PROBE_WORD = -1          # a match-bit word no playbook has: every subject's stored bits read as 0 there
SHOWN_IDS = 20           # subjects listed per line in the table


@dataclass
class Change:
    """One difference between the two versions of a playbook: where, in which category, before and after."""

    path: str
    category: str
    before: Any
    after: Any

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "category": self.category, "before": self.before, "after": self.after}


@dataclass
class PlaybookDiff:
    """One playbook that was added, removed or changed, and the effect of that."""

    id: str
    status: str                                     # added | removed | changed | invalid
    subject: str = ""
    changes: list[Change] = field(default_factory=list)
    matching_before: set[str] = field(default_factory=set)
    matching_after: set[str] = field(default_factory=set)
    next_run: list[dict[str, Any]] = field(default_factory=list)       # the working tree's dry run
    without_change: list[dict[str, Any]] = field(default_factory=list)  # the base's dry run
    problems: list[Diagnostic] = field(default_factory=list)

    @property
    def newly_matching(self) -> list[str]:
        return sorted(self.matching_after - self.matching_before)

    @property
    def no_longer_matching(self) -> list[str]:
        return sorted(self.matching_before - self.matching_after)

    @property
    def added_events(self) -> list[dict[str, Any]]:
        """The next run's events the base would not have had."""
        base = Counter(_identity(e) for e in self.without_change)
        out = []
        for e in self.next_run:
            key = _identity(e)
            if base[key]:
                base[key] -= 1
            else:
                out.append(e)
        return out

    @property
    def removed_events(self) -> list[dict[str, Any]]:
        """The base's next-run events the working tree no longer has."""
        new = Counter(_identity(e) for e in self.next_run)
        out = []
        for e in self.without_change:
            key = _identity(e)
            if new[key]:
                new[key] -= 1
            else:
                out.append(e)
        return out

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "subject": self.subject,
                "changes": [c.as_json() for c in self.changes],
                "matching": {"before": len(self.matching_before), "after": len(self.matching_after)},
                "newly_matching": [f"{self.subject}:{s}" for s in self.newly_matching],
                "no_longer_matching": [f"{self.subject}:{s}" for s in self.no_longer_matching],
                "next_run": {"events": self.next_run, "actions": action_counts(self.next_run)},
                "without_change": {"events": self.without_change, "actions": action_counts(self.without_change)},
                "added_by_change": {"events": self.added_events, "actions": action_counts(self.added_events)},
                "removed_by_change": {"events": self.removed_events,
                                      "actions": action_counts(self.removed_events)},
                "problems": [{"file": d.file, "line": d.line, "col": d.col, "message": d.message, "hint": d.hint}
                             for d in self.problems]}


def _identity(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["playbook"], e["subject"], e["event"],
            tuple((a.get("kind"), tuple(a.get("to") or ()), a.get("subject") or a.get("text") or a.get("title"))
                  for a in e.get("actions") or ()))


def action_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    """Actions by kind."""
    return dict(sorted(Counter(a["kind"] for e in events for a in e.get("actions") or ()).items()))


# -- the base ---------------------------------------------------------------------------------------------------

@contextmanager
def base_settings(settings: Settings, base: str) -> Iterator[tuple[Settings, str]]:
    """The settings whose playbooks and templates are the base's: a folder laid out like the working directory,
    or a git ref (extracted to a temporary folder while in use). Yields them and how the base is named."""
    folder = Path(base)
    if folder.is_dir():
        yield _at(settings, folder.resolve(), settings.base_dir.resolve()), str(folder)
        return
    root = _git(settings.base_dir, "rev-parse", "--show-toplevel").strip()
    commit = _git(settings.base_dir, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", what=base).strip()
    tmp = Path(tempfile.mkdtemp(prefix="playbook-diff-"))
    try:
        wanted = [p for p in (_inside(settings.playbooks, root), _inside(settings.templates, root))
                  if _git(root, "ls-tree", "--name-only", commit, "--", p).strip()]
        if wanted:
            archive = subprocess.run(["git", "-C", root, "archive", "--format=tar", commit, "--", *wanted],
                                     capture_output=True, check=False)
            if archive.returncode != 0:
                raise UserError(f"git archive {base}: {archive.stderr.decode(errors='replace').strip()}")
            with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
                tar.extractall(tmp, filter="data")
        yield _at(settings, tmp, Path(root).resolve()), f"{base} ({commit[:12]})"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _at(settings: Settings, folder: Path, root: Path) -> Settings:
    """The settings with the playbooks and templates folders moved from `root` to `folder`."""
    def moved(p: Path) -> Path:
        try:
            return folder / p.resolve().relative_to(root)
        except ValueError:
            raise UserError(Diagnostic(settings.config_file, None, None, f"{p} is not inside {root}",
                                       "give --base a folder laid out like the one config.yaml is in")) from None
    return settings.model_copy(update={"playbooks": moved(settings.playbooks), "templates": moved(settings.templates)})


def _inside(path: Path, root: str) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix() or "."
    except ValueError:
        raise UserError(f"{path} is not inside the git repository {root}: compare with --base DIR instead") from None


def _git(cwd: Path | str, *args: str, what: str | None = None) -> str:
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("git is not installed: compare with --base DIR instead") from None
    if done.returncode != 0:
        if what is not None:
            raise UserError(f"`{what}` is neither a folder nor a git commit (a branch, tag or commit id)")
        raise UserError(f"{cwd} is not in a git repository ({done.stderr.strip()}); compare with --base DIR")
    return done.stdout


# -- what changed -----------------------------------------------------------------------------------------------

def changes(base: CompiledPlaybook, head: CompiledPlaybook, base_templates: Path, head_templates: Path
            ) -> list[Change]:
    """What differs between two versions of a playbook, leaf by leaf, and the template files it uses."""
    out: list[Change] = []
    a, b = _dump(base), _dump(head)
    for key in dict.fromkeys([*a, *b]):
        for path, before, after in _leaves(a.get(key), b.get(key), key):
            out.append(Change(path, CATEGORY.get(key, key), before, after))
    names = {f for pb in (base, head) for act in (*pb.actions, *pb.steps, *pb.on_resolve)
             for f in [getattr(act.spec, "template", None)] if isinstance(f, str)}
    for name in sorted(names):
        files = {p.name for d in (base_templates, head_templates) if d.is_dir() for p in d.glob(f"{name}.*")}
        for file in sorted(files):
            old, new = _read(base_templates / file), _read(head_templates / file)
            if old != new:
                out.append(Change(f"templates/{file}", "templates", "absent" if old is None else "…",
                                  "absent" if new is None else "changed" if old is not None else "added"))
    return out


def _dump(pb: CompiledPlaybook) -> dict[str, Any]:
    return pb.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _leaves(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in dict.fromkeys([*a, *b]):
            yield from _leaves(a.get(k), b.get(k), f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for n, (x, y) in enumerate(zip(a, b)):
            yield from _leaves(x, y, f"{path}[{n}]")
    else:
        yield path, a, b


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- the effect -------------------------------------------------------------------------------------------------

def diff(store: Store, settings: Settings, base: PlaybookSet, head: PlaybookSet, base_settings: Settings,
         clock: Clock) -> list[PlaybookDiff]:
    """Every added, removed, changed or invalid playbook with what changed and its effect now."""
    olds, news = {p.id: p for p in base.valid}, {p.id: p for p in head.valid}
    broken = {inv.id or inv.file: inv for inv in head.invalid}
    was_broken = {inv.id for inv in base.invalid if inv.id}
    out: list[PlaybookDiff] = []
    for pid in sorted(set(olds) | set(news) | set(broken)):
        old, new = olds.get(pid), news.get(pid)
        if pid in broken and new is None:
            out.append(PlaybookDiff(pid, "invalid", problems=list(broken[pid].diagnostics)))
            continue
        if new is None:
            out.append(PlaybookDiff(pid, "removed", old.subject))          # type: ignore[union-attr]
        elif old is None and pid in was_broken:           # it was invalid at the base: it ran nowhere
            out.append(PlaybookDiff(pid, "changed", new.subject, [Change("file", "validity", "invalid", "valid")]))
        elif old is None:
            out.append(PlaybookDiff(pid, "added", new.subject))
        else:
            found = changes(old, new, base_settings.templates, settings.templates)
            if found:
                out.append(PlaybookDiff(pid, "changed", new.subject, found))
    if not out:
        return out
    _matching(store, clock, [(d, olds.get(d.id), news.get(d.id)) for d in out if d.status != "invalid"])
    ids = {d.id for d in out}
    out_by = {d.id: d for d in out}
    for pset, attr in ((head, "next_run"), (base, "without_change")):
        chosen = ids & {p.id for p in pset.valid if p.spec.enabled}
        for event in _dry_run(store, settings, pset, clock, chosen):
            getattr(out_by[event["playbook"]], attr).append(event)
    return out


def _matching(store: Store, clock: Clock, items: list[tuple[PlaybookDiff, Any, Any]]) -> None:
    """Who matches now under each version: one scan per playbook evaluating both versions' conditions."""
    with store.read() as tx:
        for d, old, new in items:
            for pb, into in ((old, d.matching_before), (new, d.matching_after)):
                if pb is not None:
                    conditions = {0: [c.expr for c in pb.conditions]}
                    into.update(ch.subject_id for ch in tx.scans.scan(pb.subject, PROBE_WORD, conditions, clock,
                                                                      None))


def _dry_run(store: Store, settings: Settings, pset: PlaybookSet, clock: Clock, only: set[str]
             ) -> list[dict[str, Any]]:
    """The events a run of these playbooks would have now, baselines included (what `run --dry-run` shows)."""
    from engine.tick import run_tick

    if not only:
        return []
    result = run_tick(store, settings, pset, clock, dry_run=True, only=only)
    return [e.as_json() for e in result.events]
