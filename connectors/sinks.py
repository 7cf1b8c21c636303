"""Local sinks (§3): with no connectors configured, deliveries land in files under outbox/."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from connectors.base import BaseConnector, Delivery, Outcome
from connectors.email_message import build_message
from engine.store.outbox import Claimed

DEFAULT_SENDER = "Customer Success <cs@localhost>"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename, so a reader never sees half a file (made durable by the sink's flush())."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class EmailSink(BaseConnector):
    """Each email as an RFC 5322 file outbox/email/<key>-<n>.eml; rewriting the same file is harmless."""

    name = "email"
    on_ambiguous = "resend"
    batch_safe = True

    def __init__(self, directory: Path, sender: str = DEFAULT_SENDER):
        self.directory, self.sender = directory / "email", sender
        self._unsynced: list[Path] = []

    def flush(self) -> None:
        """fsync the files written since the last flush, then the directory (one batch at a time)."""
        if not self._unsynced:
            return
        for path in self._unsynced:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._unsynced = []

    def deliver(self, item: Claimed) -> Delivery:
        p = item.payload
        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        for n, m in enumerate(p["messages"]):
            msg = build_message(m, sender=self.sender, cc=p.get("cc"), reply_to=p.get("reply_to"))
            name = f"{_slug(item.dedup_key)}-{n}.eml"
            _atomic_write(self.directory / name, bytes(msg))
            self._unsynced.append(self.directory / name)
            written.append(name)
        return Delivery(Outcome.SENT, f"wrote {len(written)} file(s)", result={"files": written})


class JsonlSink(BaseConnector):
    """Appends one JSON line per action; an ambiguous action is looked up by its dedup key first."""

    on_ambiguous = "check"
    batch_safe = True

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self._fh: Any = None

    def deliver(self, item: Claimed) -> Delivery:
        line = json.dumps({"dedup_key": item.dedup_key, "playbook": item.playbook_id,
                           "subject": f"{item.subject_type}:{item.subject_id}", **item.payload},
                          ensure_ascii=False, sort_keys=True, default=str)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(line + "\n")     # one write() per line: O_APPEND keeps concurrent workers' lines whole
        self._fh.flush()
        return Delivery(Outcome.SENT, f"appended to {self.path.name}")

    def flush(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self.flush()
            self._fh.close()
            self._fh = None

    def check(self, item: Claimed) -> Delivery | None:
        if not self.path.exists():
            return None
        needle = f'"dedup_key": {json.dumps(item.dedup_key)}'
        with open(self.path, encoding="utf-8") as fh:
            if any(needle in line for line in fh):
                return Delivery(Outcome.SENT, "already in the sink")
        return None


def _slug(key: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)[:80]
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


