"""`playbook start` keeps the last good version of a playbook whatever its new version's error (issue 24): a plain
YAML error, a recursive alias, an alias bomb, excessive nesting, an unknown tag, a template too large to compute,
an expression too deep — and never exits because of one. A real `start` process, edited under its feet."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from sqlalchemy import select

from conftest import Workspace
from engine.app import App
from security.test_isolation import GOOD
from security.test_yaml import billion_laughs

B = """
id: b
name: B
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} from b"}
"""

BROKEN = {
    "yaml-syntax-error": "id: b\nname: B\ntrigger: [\n",
    "recursive-alias": "id: b\nname: B\ntrigger: &t\n  when: *t\nactions: []\n",
    "billion-laughs": B.strip() + "\n" + billion_laughs(),
    "500-deep": B.strip() + "\nx: " + "[" * 500 + "]" * 500 + "\n",
    "python-tag": "id: !!python/object/apply:os.system [\"touch pwned\"]\nname: B\n",
    "not-a-mapping": "- just\n- a list\n",
    "template-pow": B.replace("{{ account.name }} from b", "{{ 7 ** 99999999 }}"),
    "400-nested-not": B.replace("account.arr < 100", "not " * 400 + "account.arr < 100"),
    "id-changed-and-broken": "id: b2\nname: B\ntrigger: {when: account.arr <}\nactions: []\n",
}


def evaluations(ws: Workspace) -> dict[str, int]:
    """How many scheduled evaluations each playbook had."""
    app = App(ws.config)
    try:
        with app.store.read() as tx:
            details = tx.conn.execute(select(tx.schema.runs.c.detail)
                                      .where(tx.schema.runs.c.kind == "scheduled")).scalars().all()
    finally:
        app.close()
    out: dict[str, int] = {}
    for detail in details:
        for pid in (json.loads(detail) if isinstance(detail, str) else detail or {}):
            out[pid] = out.get(pid, 0) + 1
    return out


def wait_for(ws: Workspace, proc: Any, more_than: dict[str, int], seconds: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        now = evaluations(ws)
        if all(now.get(pid, 0) > n for pid, n in more_than.items()):
            return now
        time.sleep(0.3)
    raise AssertionError(f"no new evaluations of {sorted(more_than)} within {seconds} s")


def test_start_keeps_the_last_good_version_whatever_the_error(ws_sqlite: Workspace) -> None:
    ws_sqlite.playbook("good", GOOD)
    path = ws_sqlite.playbook("b", B)
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws_sqlite.sync()
    proc = ws_sqlite.spawn("start", "--every", "0.5", "--workers", "1", "--lease", "3", "--log-format", "json",
                           cwd=ws_sqlite.root)
    try:
        seen = wait_for(ws_sqlite, proc, {"good": 0, "b": 0})
        for name, text in BROKEN.items():
            path.write_text(text)
            os.utime(path, (time.time() + len(seen), time.time() + len(seen)))   # a new mtime, however fast
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.5)                                   # reloaded by now
            seen = wait_for(ws_sqlite, proc, {"good": seen["good"], "b": seen["b"]})
            assert proc.poll() is None, name
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]     # every line is one JSON object
    kept = [x for x in lines if x["msg"].startswith("kept the last good version of b")]
    assert len(kept) >= len(BROKEN), [x["msg"] for x in lines]
    invalid = " ".join(x["msg"] for x in lines if x["msg"].startswith("invalid playbook"))
    for says in ("YAML syntax error", "nested more than 64 levels deep", "expands to more than 100000 values",
                 "unknown YAML tag", "a playbook must be a YAML mapping", "an integer beyond 64 bits",
                 "nested more than 100 levels deep"):
        assert says in invalid, says
    assert not any(x["level"] == "critical" or "Traceback" in x["msg"] for x in lines)
    assert not (ws_sqlite.root / "pwned").exists()
