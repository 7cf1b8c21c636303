"""Reading a file a person wrote (the configuration, a playbook, a template): UTF-8 text, or a UserError naming
the file, and for bytes that are not UTF-8 the line and column of the first of them."""

from __future__ import annotations

from pathlib import Path

from engine.errors import Diagnostic, UserError


def read_text(path: Path, shown: str) -> str:
    """The text of `path` (a leading byte-order mark dropped); `shown` is how messages name the file."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UserError(Diagnostic(shown, None, None, "is a folder, not a file", "name the file itself")) from None
    except FileNotFoundError:
        raise UserError(Diagnostic(shown, None, None, "file not found")) from None
    except OSError as exc:
        raise UserError(Diagnostic(shown, None, None, f"cannot read the file: {exc.strerror or exc}")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(not_utf8(shown, data, exc.start)) from None
    return text[1:] if text.startswith("\ufeff") else text


def not_utf8(shown: str, data: bytes, at: int) -> Diagnostic:
    """The problem of a file whose byte `at` is the first that is not UTF-8: its line and column (counted in
    characters of the valid text before it)."""
    before = data[:at].decode("utf-8", errors="replace")
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    return Diagnostic(shown, line, col, f"the file is not UTF-8 text (byte 0x{data[at]:02x})",
                      "save it as UTF-8 (a file from Windows may be Shift-JIS/cp932 or UTF-16)")
