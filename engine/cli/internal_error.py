"""What the `playbook` command does when something fails that is not a user's mistake (a bug, or a plugin's):
one line on stderr naming a log file, and in that file the command line and the traceback, secrets masked.

The log files go to a `playbook-engine` folder in the system's temporary directory (`/tmp/playbook-engine/` on
Linux): a place every user can write to whatever the working directory, where the configuration may live in a
read-only mount or in a git checkout a stray log file would be committed from; and the problem may be that the
configuration cannot be read, so nothing beside it is known."""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

EXIT_CODE = 3
FOLDER = "playbook-engine"
# user:password@ in any URL (database URLs, webhooks)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*:)[^\s@/]+@")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def report(exc: BaseException, argv: list[str], config: str | None) -> str:
    """Write the details of an unexpected exception to a new log file and return the one line for stderr."""
    secrets = secret_values(config)
    summary = mask(_first_line(exc), secrets)
    try:
        path = _write(_details(exc, argv, secrets))
        where = f"details in {path}"
    except OSError as write_error:
        where = f"no details written ({write_error.strerror or write_error})"
    return f"internal error ({type(exc).__name__}): {summary} — {where}; please report it"


def secret_values(config: str | None) -> list[str]:
    """What must not reach the log: the values of the environment variables the configuration file reads
    (`${NAME}`), and of those whose name says they hold a secret (`SLACK_TOKEN`, `…_PASSWORD`)."""
    names = {n for n in os.environ if _SECRET_NAME.search(n)}
    from engine.settings import find_config

    try:
        names |= set(_ENV_REFERENCE.findall(find_config(config).read_text(encoding="utf-8", errors="replace")))
    except OSError:
        pass
    values = {os.environ[n] for n in names if n in os.environ}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)   # shorter ones are no secret


def mask(text: str, secrets: list[str]) -> str:
    """The text with every secret and every URL's password replaced by ***."""
    from engine.redact import redact

    for value in secrets:
        text = text.replace(value, MASK)
    return redact(_URL_PASSWORD.sub(rf"\g<1>{MASK}@", text))


def _details(exc: BaseException, argv: list[str], secrets: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        engine_version = version("playbook-engine")
    except PackageNotFoundError:
        engine_version = "unknown"
    command = " ".join(["playbook", *argv])
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = (f"playbook-engine {engine_version}, Python {platform.python_version()} on {platform.platform()}\n"
            f"at: {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
            f"working directory: {os.getcwd()}\n"
            f"command: {command}\n\n{trace}")
    return mask(text, secrets)


def _write(text: str) -> Path:
    """A new log file holding `text`, readable by its owner only: in the shared folder, else (when that folder
    belongs to another user, or is a link) directly in the temporary directory."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    prefix = f"error-{stamp}-{os.getpid()}-"
    folder = Path(tempfile.gettempdir()) / FOLDER
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if not _own_folder(folder):
            raise PermissionError(f"{folder} belongs to another user")
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log", dir=folder)
    except OSError:
        fd, name = tempfile.mkstemp(prefix=f"{FOLDER}-{prefix}", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(name)


def _own_folder(folder: Path) -> bool:
    info = folder.lstat()
    getuid = getattr(os, "getuid", None)          # not on Windows, where the temporary directory is per user
    return not folder.is_symlink() and (getuid is None or info.st_uid == getuid())


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else "(no message)"
    return line if len(line) <= 200 else line[:199] + "…"


def write_line(line: str) -> None:
    """The one line, on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
