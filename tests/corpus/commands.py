"""Which commands read which input, and the runs a case of each kind of input gets."""

from __future__ import annotations

from corpus import Run
from corpus.base import NOW

# Every command that reads the configuration (and most, the database), with arguments that would be valid.
CONFIG_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("validate",), ("sync",), ("run",), ("run", "--dry-run"), ("explain", "A1"), ("history",),
    ("history", "--attempts"), ("dispatch",), ("worker", "--max-idle", "0"), ("outbox", "list"),
    ("outbox", "retry", "1"), ("outbox", "retry", "--rerender", "1"), ("outbox", "cancel", "1"), ("tasks",),
    ("tasks", "list"), ("tasks", "done", "1"), ("tasks", "snooze", "1", "--until", "3d"),
    ("unsubscribe", "--list"), ("unsubscribe", "someone@example.com"), ("status",), ("start",),
)


# The commands that use what the configuration says (durations, crons, zones, the contact policy) beyond
# loading it: a value `validate` accepts must not fail them.
CONFIG_USERS: tuple[tuple[str, ...], ...] = (
    ("validate",), ("sync",), ("run",), ("run", "--dry-run"), ("explain", "A1"), ("dispatch",),
    ("worker", "--max-idle", "0"), ("status",), ("start",),
)


def config_runs(*says: str, every: bool = False, database: bool = False,
                absent: str | None = None) -> tuple[Run, ...]:
    """A broken configuration, or `database`: the commands that use it fail, saying where; with `every`, all
    commands that read it (each loads it the same way: a few cases show that, the others need not repeat it).
    `validate` does not open the database (it runs in CI, where the production one is out of reach), so it
    passes on a broken database."""
    return tuple(Run(args, frozenset({0}), absent=absent) if database and args == ("validate",) else
                 Run(args, frozenset({1}), says, absent) for args in (CONFIG_COMMANDS if every else CONFIG_USERS))


def playbook_runs(*says: str, file: str, every: bool = False) -> tuple[Run, ...]:
    """A broken playbook or template: `validate` and `run` fail saying where. With `every`, also: a dry run
    fails alike; the other playbooks can still be explained; `status` names the file among the invalid
    playbooks; a re-render of an action is refused (its playbook is invalid, or the action was sent). These
    load the playbooks as `run` does, so a few cases show it."""
    return (
        Run(("validate",), says=says),
        Run(("run", "--now", NOW), says=says),
        *((Run(("run", "--dry-run"), says=says), Run(("explain", "A1"), frozenset({0})),
           Run(("status",), frozenset({0}), (file,)), Run(("outbox", "retry", "--rerender", "1"))) if every else ()),
    )


def data_runs(*says: str) -> tuple[Run, ...]:
    """Broken data: `sync` fails, saying where, and changes nothing."""
    return (Run(("sync",), says=says),)
