"""How results are shown: rich tables for people, stable JSON for machines."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from datetime import date, datetime
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from engine.clock import localize, show_time
from engine.errors import Diagnostic
from engine.redact import redact

out = Console(highlight=False, soft_wrap=False,
              width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """One JSON document on stdout (stable key order as built, UTF-8, ISO dates)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def print_diagnostics(diags: Iterable[Diagnostic], *, stream: Console = err, limit: int | None = None,
                      label: str | None = None) -> None:
    """file:line:col: message lines, plain and unwrapped so editors and CI can parse them (at most `limit`);
    a `label` goes before the message: `file:line:col: warning: message`."""
    target = stream.file
    diags = list(diags)
    shown = diags if limit is None or len(diags) <= limit else diags[:limit]
    for d in shown:
        target.write(redact(str(replace(d, message=f"{label}: {d.message}") if label else d)) + "\n")
    if len(shown) < len(diags):
        target.write(f"... and {len(diags) - len(shown)} more\n")
    target.flush()


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    """A problem or warning for --format json."""
    return {"file": d.file, "line": d.line, "col": d.col, "message": redact(d.message),
            "hint": redact(d.hint) if d.hint else d.hint}


def table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]], *, caption: str | None = None,
          nowrap: Iterable[str] = ()) -> Table:
    """A table for people; the `nowrap` columns (times) are never broken across lines."""
    keep = set(nowrap)
    t = Table(title=title, caption=caption, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold", no_wrap=c in keep)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def action_summary(actions: list[dict[str, Any]]) -> str:
    parts = []
    for a in actions:
        to = ", ".join(str(x) for x in a.get("to") or []) or "—"
        what = a.get("subject") or a.get("text") or a.get("title") or a.get("error") or ""
        what = (what[:60] + "…") if len(what) > 61 else what
        parts.append(f"{a['kind']} → {to}" + (f": {what}" if what else ""))
        digest = f"digest ({a['digest']}) at {a['send_at']}" if a.get("digest") else None
        for note in (a.get("deferred"), a.get("cap"), digest):
            if note:
                parts.append(f"  ↳ {note}")
    return "\n".join(parts)


def sync_rows(report: Any) -> list[dict[str, Any]]:
    """One row per synced entity, for the table and the JSON of `playbook sync`."""
    return [{"entity": r.entity, "mode": r.mode, "rows": r.read, "inserted": r.inserted, "updated": r.updated,
             "unchanged": r.unchanged, "removed": r.removed, "cascaded": r.cascaded, "invalid": r.invalid, "seconds": round(r.seconds, 3)}
            for r in report.entities.values()]


def local_time(value: datetime | str | None, tz: str, *, seconds: bool = False) -> str:
    """An instant for a person, in the config time zone with its offset: `2026-12-07 09:00 +09:00` (naive
    values, and ISO strings without an offset, are UTC as the store keeps them); empty for None."""
    if value is None:
        return ""
    return show_time(datetime.fromisoformat(value) if isinstance(value, str) else value, tz, seconds=seconds)


def iso_time(value: datetime | str | None, tz: str) -> str | None:
    """An instant for --format json: ISO 8601 with the offset of the config time zone (naive = UTC)."""
    if value is None:
        return None
    return localize(datetime.fromisoformat(value) if isinstance(value, str) else value, tz).isoformat()


def jsonable(row: dict[str, Any], tz: str) -> dict[str, Any]:
    """A database row for --format json: instants as ISO 8601 with the offset of time zone `tz` (the store's
    are naive UTC), dates as ISO dates."""
    return {k: iso_time(v, tz) if isinstance(v, datetime) else v.isoformat() if isinstance(v, date) else v
            for k, v in row.items()}
