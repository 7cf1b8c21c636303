"""Progress reporting for long syncs: a callback type and a rich progress bar that provides one."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressCallback = Callable[[str, int, "int | None"], None]
"""Called as progress(entity, rows_done, rows_total_or_None) while an entity syncs."""


def no_progress(entity: str, done: int, total: int | None) -> None:
    """A progress callback that shows nothing."""


@contextmanager
def rich_progress(enabled: bool | None = None) -> Iterator[ProgressCallback]:
    """Yield a progress callback drawing a transient rich bar on stderr (only when stderr is a TTY)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield no_progress
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)

    columns = (SpinnerColumn(), TextColumn("sync {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(entity: str, done: int, total: int | None) -> None:
            if total is not None:
                total = max(total, done)
            if entity not in tasks:
                tasks[entity] = bar.add_task(entity, total=total)
            bar.update(tasks[entity], completed=done, total=total)

        yield update
