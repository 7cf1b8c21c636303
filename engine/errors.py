"""Error hierarchy and the Diagnostic every user-facing problem is reported as."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a user's file: where it is, what is wrong, what to do."""

    file: str
    line: int | None
    col: int | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        """`file:line:col: message (hint)`; a problem with no file (a command's argument) is its message alone."""
        where = self.file
        if where and self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class PlaybookEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class UserError(PlaybookEngineError):
    """A mistake in the user's input (config, playbook, template, data): printed, never a traceback."""

    exit_code = 1

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("", None, None, diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ConfigError(UserError):
    """The configuration file or the environment it reads is wrong."""


class DataError(UserError):
    """Synced data rows are invalid."""


class ExpressionError(PlaybookEngineError):
    """An expression fails to parse or type-check; `col` is 1-based inside the expression text."""

    def __init__(self, message: str, col: int | None = None, hint: str | None = None):
        self.message = message
        self.col = col
        self.hint = hint
        super().__init__(message)


def suggest(name: str, candidates: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """The nearest known name to a misspelt one, or None when nothing is close."""
    import difflib

    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def declared_hint(value: str, known: tuple[str, ...] | list[str], listing: str) -> str:
    """The hint for a value that is not among the `known` ones (declared values or metrics, §17, or the synced
    metrics): the nearest of them, else all of them after `listing` ("declared values", …)."""
    near = suggest(value, known)
    return f"did you mean '{near}'?" if near else f"{listing}: " + ", ".join(known)
