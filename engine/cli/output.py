"""How results are shown: rich tables for people, stable JSON for machines."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from engine.errors import Diagnostic

out = Console(highlight=False, soft_wrap=False,
              width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)
err = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    """One JSON document on stdout (stable key order as built, UTF-8, ISO dates)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def print_diagnostics(diags: Iterable[Diagnostic], *, stream: Console = err, limit: int | None = None) -> None:
    """file:line:col: message lines, plain and unwrapped so editors and CI can parse them (at most `limit`)."""
    target = stream.file
    diags = list(diags)
    shown = diags if limit is None or len(diags) <= limit else diags[:limit]
    for d in shown:
        target.write(str(d) + "\n")
    if len(shown) < len(diags):
        target.write(f"... and {len(diags) - len(shown)} more\n")
    target.flush()


def table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]], *, caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
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
        for note in (a.get("deferred"), a.get("cap")):
            if note:
                parts.append(f"  ↳ {note}")
    return "\n".join(parts)


def sync_rows(report: Any) -> list[dict[str, Any]]:
    """One row per synced entity, for the table and the JSON of `playbook sync`."""
    return [{"entity": r.entity, "mode": r.mode, "rows": r.read, "inserted": r.inserted, "updated": r.updated,
             "removed": r.removed, "cascaded": r.cascaded, "invalid": r.invalid, "seconds": round(r.seconds, 3)}
            for r in report.entities.values()]


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A database row for --format json: dates and datetimes as ISO strings."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
