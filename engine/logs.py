"""Logging setup: readable lines by default, one JSON object per line with --log-format json.

Context such as run_id, playbook or dedup_key travels in `extra=` and is printed as fields. Secrets
never reach a log: settings hold them as SecretStr, connectors never put them in messages, and every line is
passed through engine/redact.py (values from `${ENV}`, URL passwords) before it is written."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from engine.redact import redact

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg and every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "msg": redact(record.getMessage())}
        data.update({k: _clean(v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`time level logger: message key=value …`"""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _clean(value: object) -> object:
    """An `extra` field without secrets (text redacted; numbers and flags as they are)."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(value if isinstance(value, str) else str(value))


def setup_logging(fmt: str = "human", level: str = "INFO") -> None:
    """Configure the root logger once for a long-running command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "urllib3", "slack_sdk", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
