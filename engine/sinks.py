"""The local sink every connector has unless it brings its own: each action as one JSON line in a file under
outbox/ (Slack in outbox/slack.jsonl, webhooks in outbox/webhook.jsonl), so the demo and tests need no network."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.actions import Payload
from engine.delivery import BaseConnector, Outcome, Receipt
from engine.store.outbox import Claimed


class JsonlSink(BaseConnector):
    """Appends one JSON line per action; an ambiguous action is looked up by its dedup key first."""

    on_ambiguous = "check"
    batch_safe = True

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self._fh: Any = None

    def deliver(self, item: Claimed) -> Receipt:
        payload = item.payload.to_json() if isinstance(item.payload, Payload) else item.payload
        line = json.dumps({"dedup_key": item.dedup_key, "playbook": item.playbook_id,
                           "subject": f"{item.subject_type}:{item.subject_id}", **payload},
                          ensure_ascii=False, sort_keys=True, default=str)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.write(line + "\n")     # one write() per line: O_APPEND keeps concurrent workers' lines whole
        self._fh.flush()
        return Receipt(Outcome.SENT, f"appended to {self.path.name}")

    def flush(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self.flush()
            self._fh.close()
            self._fh = None

    def check(self, item: Claimed) -> Receipt | None:
        if not self.path.exists():
            return None
        needle = f'"dedup_key": {json.dumps(item.dedup_key)}'
        with open(self.path, encoding="utf-8") as fh:
            if any(needle in line for line in fh):
                return Receipt(Outcome.SENT, "already in the sink")
        return None
