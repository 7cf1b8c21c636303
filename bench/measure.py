"""Timing and memory: peak RSS of this process, and phases run in their own subprocess.

A phase (bench.phases) runs in a fresh interpreter so that its peak RSS (VmHWM) is its own, not that
of whatever ran before it in the same process. The parent passes parameters as JSON on the command
line and reads the phase's result from a JSON file; the child's stderr (progress) goes straight through.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM from /proc, else getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def io_counters() -> dict[str, int] | None:
    """This process's read and write system calls so far, all threads (Linux /proc/self/io: the bytes passed to
    them, whether or not they reached the disk, and how many there were); None elsewhere."""
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            raw = dict(line.split(": ") for line in fh.read().splitlines())
    except OSError:
        return None
    return {"read_bytes": int(raw["rchar"]), "write_bytes": int(raw["wchar"]),
            "read_calls": int(raw["syscr"]), "write_calls": int(raw["syscw"])}


class SqliteSteps:
    """Counts the virtual-machine instructions SQLite runs on an engine's pooled connections: its progress
    handler, called every STEP instructions on each connection as it is checked out. Unlike seconds, the count
    depends on the work (statements, plans, rows), not on how fast or busy the machine is: two runs on
    different machines compare by it. (A background thread's own connection, such as the WAL checkpointer's,
    is not counted.)"""

    STEP = 10_000

    def __init__(self, engine: Any):
        from sqlalchemy import event

        self.calls = 0
        self._on = engine.dialect.name == "sqlite"
        if self._on:
            event.listen(engine, "checkout", self._install)

    @property
    def steps(self) -> int | None:
        """Instructions run so far (to within STEP per connection), or None on another database."""
        return self.calls * self.STEP if self._on else None

    def _install(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.set_progress_handler(self._count, self.STEP)

    def _count(self) -> int:
        self.calls += 1
        return 0                # 0: go on (non-zero would interrupt the statement)


def work_done(before: dict[str, int] | None, after: dict[str, int] | None, steps: int | None) -> dict[str, Any]:
    """The machine-independent figures of a span of work: SQLite instructions, and the system calls' bytes in MB."""
    out: dict[str, Any] = {"sqlite_steps": steps}
    if before is not None and after is not None:
        out.update(read_mb=round((after["read_bytes"] - before["read_bytes"]) / 1e6, 1),
                   written_mb=round((after["write_bytes"] - before["write_bytes"]) / 1e6, 1),
                   read_calls=after["read_calls"] - before["read_calls"],
                   write_calls=after["write_calls"] - before["write_calls"])
    return out


class PhaseFailed(RuntimeError):
    """A phase subprocess exited with an error."""


def run_phase(phase: str, params: dict[str, Any], *, profile: Path | None = None) -> dict[str, Any]:
    """Run bench.phases PHASE in a subprocess; its result dict, with `process_s` (the child's whole life).

    With `profile`, the child runs under pyinstrument and its text report is written there (timings in
    the result are then inflated by the profiler)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        result_path = Path(tmp.name)
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "pyinstrument", "--renderer", "text", "--outfile", str(profile)]
    cmd += ["-m", "bench.phases", phase, json.dumps(params), str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise PhaseFailed(f"phase `{phase}` failed (exit {proc.returncode}); see the output above")
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    finally:
        result_path.unlink(missing_ok=True)
    result["process_s"] = round(time.perf_counter() - started, 3)
    return result


def sqlite_copy(source: Path, target: Path) -> None:
    """Copy a SQLite database no process has open: its WAL folded into the file, then the bytes written over
    the target file in place. (The backup API writes every page through the target's WAL and then again into
    the file: at 1M accounts, 20 GB of writes per restore that also push the data out of the page cache; and a
    newly created file makes the next tick pay for the file system allocating its pages.) The copy is on disk
    when this returns: the next tick would otherwise run while the kernel writes gigabytes back, and stall on
    its first reads and writes (a profiled 100k replay spent 1.1-1.25 s in one statement that way)."""
    with closing(sqlite3.connect(source)) as src:
        busy, logged, moved = src.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy or logged != moved:
        raise RuntimeError(f"{source} is in use: its WAL could not be folded into it")
    for stale in (Path(f"{target}-wal"), Path(f"{target}-shm")):
        stale.unlink(missing_ok=True)   # a WAL left beside the target would be replayed onto the copied pages
    with source.open("rb") as src_fh, target.open("r+b" if target.exists() else "wb") as dst_fh:
        shutil.copyfileobj(src_fh, dst_fh, COPY_CHUNK)
        dst_fh.truncate()
        dst_fh.flush()
        os.fsync(dst_fh.fileno())


COPY_CHUNK = 16 * 1024 * 1024
