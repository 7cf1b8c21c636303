"""Timing and memory: peak RSS of this process, and phases run in their own subprocess.

A phase (bench.phases) runs in a fresh interpreter so that its peak RSS (VmHWM) is its own, not that
of whatever ran before it in the same process. The parent passes parameters as JSON on the command
line and reads the phase's result from a JSON file; the child's stderr (progress) goes straight through.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
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
