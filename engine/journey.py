"""A journey (§14): a playbook's `steps:` as a small program, and how one subject moves through it (pure).

The steps are flattened into nodes, each pointing at the node that follows it (an `if` at the first node of
each branch). A subject in a journey rests at a wait node, known by its step id: an explicit `id:`, else
`after-<id of the step before it>` (`start` before any step), numbered `-2`, `-3` when several share one.
At a run, a subject whose wait is due (or whose `wait until` condition holds) moves on: the steps after the
wait run, in order, up to the next wait that is not over at once, or to the end (the journey completes).

Conditions are numbered expressions; their values for a subject come from one statement per run
(engine/store/journeys.py), since the data do not change during a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from engine.actions import CompiledAction
from engine.clock import parse_duration

START = "start"


@dataclass(frozen=True)
class Node:
    """One step: an action, a wait or an if, with the index of the node that follows it (None: the end)."""

    kind: str                                 # action | wait | if
    id: str | None
    next: int | None
    path: tuple[Any, ...]                     # where the step is written (steps, 2, then, 0)
    action: CompiledAction | None = None      # action steps
    cond: int | None = None                   # the expression of an action's `if`, an if's `if`, a wait's `until`
    then: int | None = None                   # if: first node of `then` (or what follows the if when empty)
    orelse: int | None = None                 # if: first node of `else`
    wait: Any = None                          # wait: a duration text or engine.spec.models.WaitOptions
    customer: bool = False                    # wait: the steps it leads to reach a customer (`at` is theirs)

    def describe(self) -> str:
        """The wait as written: `3d`, `2 business days at 10:00`, `until … (timeout 4d)`."""
        w = self.wait
        if isinstance(w, str):
            return w
        if w.until is not None:
            return f"until {w.until} (timeout {w.timeout})"
        parts = [f"{w.business_days} business day{'s' if w.business_days != 1 else ''}"] if w.business_days else []
        return " ".join(parts + ([f"at {w.at}"] if w.at else []))


@dataclass(frozen=True)
class Expression:
    """A journey condition: `exit_when`, an `if` or a `wait until`, compiled."""

    label: str
    text: str
    expr: Any


@dataclass(frozen=True)
class Journey:
    """A playbook's steps, flattened."""

    nodes: tuple[Node, ...]
    start: int | None
    expressions: tuple[Expression, ...]
    exit_expr: int | None                     # index of `exit_when` among the expressions

    @property
    def waits(self) -> dict[str, int]:
        """wait step id -> its node."""
        return {n.id: i for i, n in enumerate(self.nodes) if n.kind == "wait" and n.id is not None}

    @property
    def action_nodes(self) -> dict[str, Node]:
        """action step id -> its node."""
        return {n.id: n for n in self.nodes if n.kind == "action" and n.id is not None}

    def step_ids(self) -> list[str]:
        """Every step id, in document order (waits included)."""
        return [n.id for n in sorted(self.nodes, key=lambda n: _order(n.path)) if n.id is not None]

    def until_waits(self) -> dict[str, int]:
        """wait id -> expression index, for the `wait until` steps."""
        return {n.id: n.cond for n in self.nodes if n.kind == "wait" and n.cond is not None and n.id}


def _order(path: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((0, p) if isinstance(p, int) else (1 if p == "then" else 2, 0) for p in path)


def wait_ids(steps: list[Any]) -> dict[tuple[Any, ...], str]:
    """The id of every wait step (by its path): its own `id:`, else `after-<previous step id>` or `start`,
    numbered when several share one. `taken` ids (explicit ones) are never reused."""
    explicit = set()

    def collect(items: list[Any], path: tuple[Any, ...]) -> None:
        for i, s in enumerate(items):
            if getattr(s, "id", None):
                explicit.add(s.id)
            if hasattr(s, "then"):
                collect(s.then, path + (i, "then"))
                collect(s.else_, path + (i, "else"))
    collect(steps, ())
    out: dict[tuple[Any, ...], str] = {}
    used = set(explicit)
    previous = [START]

    def walk(items: list[Any], path: tuple[Any, ...]) -> None:
        for i, s in enumerate(items):
            here = path + (i,)
            if hasattr(s, "wait"):
                if s.id:
                    out[here] = s.id
                else:
                    base = START if previous[0] == START else f"after-{previous[0]}"
                    name, n = base, 1
                    while name in used:
                        n += 1
                        name = f"{base}-{n}"
                    used.add(name)
                    out[here] = name
                previous[0] = out[here] if s.id else previous[0]
                continue
            if s.id:
                previous[0] = s.id
            if hasattr(s, "then"):
                walk(s.then, here + ("then",))
                walk(s.else_, here + ("else",))
    walk(steps, ())
    return out


class Builder:
    """Flattens the steps; `action(step, path)` compiles an action step, `expression(label, text, path)` an
    expression (each returns None after reporting a problem)."""

    def __init__(self, action: Callable[[Any, tuple[Any, ...]], CompiledAction | None],
                 expression: Callable[[str, str, tuple[Any, ...]], Any]):
        self.compile_action, self.compile_expression = action, expression
        self.nodes: list[Node | None] = []
        self.expressions: list[Expression] = []
        self.ids: dict[tuple[Any, ...], str] = {}

    def build(self, steps: list[Any], exit_when: str | None) -> Journey:
        self.ids = wait_ids(steps)
        exit_expr = self._expr("exit_when", exit_when, ("exit_when",)) if exit_when is not None else None
        start = self._sequence(steps, ("steps",), None)
        nodes = tuple(n for n in self.nodes if n is not None)
        assert len(nodes) == len(self.nodes)
        nodes = tuple(_with_customer(nodes, i) if n.kind == "wait" else n for i, n in enumerate(nodes))
        return Journey(nodes, start, tuple(self.expressions), exit_expr)

    def _expr(self, label: str, text: str, path: tuple[Any, ...]) -> int | None:
        compiled = self.compile_expression(label, text, path)
        self.expressions.append(Expression(label, text, compiled))
        return len(self.expressions) - 1

    def _sequence(self, steps: list[Any], path: tuple[Any, ...], follow: int | None) -> int | None:
        nxt = follow
        for i in reversed(range(len(steps))):
            nxt = self._step(steps[i], path + (i,), nxt)
        return nxt

    def _add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def _step(self, step: Any, path: tuple[Any, ...], follow: int | None) -> int:
        if hasattr(step, "wait"):
            wait = step.wait
            cond = None
            if not isinstance(wait, str) and wait.until is not None:
                cond = self._expr(f"{self.ids[path[1:]]}: until", wait.until, path + ("wait", "until"))
            return self._add(Node("wait", self.ids[path[1:]], follow, path, wait=wait, cond=cond))
        if hasattr(step, "then"):
            at = len(self.nodes)
            self.nodes.append(None)          # reserve: the branches point past the if, the if at them
            label = f"{step.id or 'if'}: if"
            cond = self._expr(label, step.if_, path + ("if",))
            then = self._sequence(step.then, path + ("then",), follow)
            orelse = self._sequence(step.else_, path + ("else",), follow)
            self.nodes[at] = Node("if", step.id, follow, path, cond=cond, then=then, orelse=orelse)
            return at
        cond = self._expr(f"{step.id}: if", step.if_, path + ("if",)) if step.if_ is not None else None
        return self._add(Node("action", step.id, follow, path, action=self.compile_action(step, path), cond=cond))


def _with_customer(nodes: tuple[Node, ...], at: int) -> Node:
    """A wait node marked customer-facing when an action step it leads to first reaches a customer."""
    seen: set[int] = set()
    todo = [nodes[at].next]
    customer = False
    while todo:
        i = todo.pop()
        if i is None or i in seen:
            continue
        seen.add(i)
        n = nodes[i]
        if n.kind == "action":
            customer = customer or bool(n.action and n.action.customer_facing)
        elif n.kind == "if":
            todo += [n.then, n.orelse]
        else:
            todo.append(n.next)
    n = nodes[at]
    return Node(n.kind, n.id, n.next, n.path, n.action, n.cond, n.then, n.orelse, n.wait, customer)


# --- moving one subject through its journey -------------------------------------------------------------------

@dataclass
class Calendar:
    """What waits count on: the business days of the contact policy (weekdays and holidays), and the zone of
    the subject (for customer steps) and of the config."""

    is_business_day: Callable[[date], bool]
    config_zone: str


@dataclass
class Progress:
    """What one run does to one subject's journey."""

    ran: list[Node] = field(default_factory=list)          # action steps whose action is planned now
    skipped: list[str] = field(default_factory=list)       # action steps whose `if` did not hold
    at: str | None = None                                  # the wait it now rests at (None: the journey ended)
    due_at: datetime | None = None                         # when that wait is over (naive UTC)
    ended: str | None = None                               # completed | exited
    reason: str | None = None


def due_after(node: Node, now: datetime, zone: str, calendar: Calendar) -> datetime:
    """When a wait that starts at `now` (naive UTC) is over, counted in `zone` (the subject's for customer
    steps, else the config zone)."""
    w = node.wait
    tz = ZoneInfo(zone if node.customer else calendar.config_zone)
    if isinstance(w, str):
        return parse_duration(w).after(now, str(tz.key))
    if w.until is not None:
        return parse_duration(w.timeout).after(now, str(tz.key))
    local = now.replace(tzinfo=timezone.utc).astimezone(tz)
    day, clock = local.date(), local.timetz().replace(tzinfo=None)
    if w.business_days:
        left = w.business_days
        while left:
            day += timedelta(days=1)
            if calendar.is_business_day(day):
                left -= 1
    if w.at is not None:
        h, m = (int(x) for x in w.at.split(":"))
        wanted = time(h, m)
        if not w.business_days and clock > wanted:
            day += timedelta(days=1)
        clock = wanted
    out = datetime.combine(day, clock, tzinfo=tz)
    return out.astimezone(timezone.utc).replace(tzinfo=None)


def advance(journey: Journey, start: int | None, now: datetime, truth: Callable[[int], bool], zone: str,
            calendar: Calendar, progress: Progress | None = None) -> Progress:
    """Run the steps from node `start` at `now` until a wait that is not over at once, or the end."""
    out = progress or Progress()
    i = start
    for _ in range(10_000):
        if i is None:
            out.at, out.due_at, out.ended, out.reason = None, None, "completed", "last step done"
            return out
        n = journey.nodes[i]
        if n.kind == "action":
            if n.cond is None or truth(n.cond):
                out.ran.append(n)
            else:
                out.skipped.append(n.id or "")
            i = n.next
        elif n.kind == "if":
            i = n.then if truth(n.cond) else n.orelse
        else:
            if n.cond is not None and truth(n.cond):
                i = n.next
                continue
            due = due_after(n, now, zone, calendar)
            if due <= now:
                i = n.next
                continue
            out.at, out.due_at = n.id, due
            return out
    raise RuntimeError("journey steps do not end")      # pragma: no cover - the steps are a finite tree


def resume(journey: Journey, at: str, due_at: datetime | None, now: datetime, truth: Callable[[int], bool],
           zone: str, calendar: Calendar) -> Progress | None:
    """A subject resting at wait `at`: None when it keeps waiting, else what moving on does. A wait id the
    definition no longer has ends the journey (exited, "step removed")."""
    i = journey.waits.get(at)
    if i is None:
        return Progress(ended="exited", reason=f"step removed: `{at}` is no longer in the playbook")
    n = journey.nodes[i]
    over = due_at is not None and due_at <= now
    if not over and not (n.cond is not None and truth(n.cond)):
        return None
    return advance(journey, n.next, now, truth, zone, calendar)
