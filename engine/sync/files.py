"""The file sync sources: `csv` (a header row, then one row per record) and `jsonl` (one JSON object per line).

`{entity: accounts, csv: data/accounts.csv}`, or the long form `csv: {path: data/accounts.csv}`; a relative
path is read against the config file's folder. Files are UTF-8 unless the long form names an `encoding` (any
Python codec); a leading BOM is dropped. A CSV file exported from a spreadsheet may also say how it writes
dates and numbers: `csv: {path: …, encoding: cp932, date_format: "%Y/%m/%d", decimal: ",", thousands: "."}`."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from encodings import normalize_encoding
from encodings.aliases import aliases
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from engine.errors import suggest
from engine.plugins import SourceEnv, SourcePlugin
from engine.sync.coerce import ValueFormats, check_date_format, check_separator
from engine.sync.reader import BATCH, Batch, Reader, Row, Unreadable, rows_of

UTF8 = "utf-8"
BLOCK = 1 << 16                   # bytes decoded at a time
_ANY_NEWLINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")    # a line with its ending, or a last line without


class FileSource(BaseModel):
    """A file source's options: its path (a plain string is the path) and its text encoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    encoding: str = UTF8

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        return check_encoding(v)


class CsvFileSource(FileSource):
    """A CSV source's options: those of a file, and how it writes dates and numbers (ISO dates, a decimal
    point and no thousands separator unless it says otherwise)."""

    date_format: str | None = None
    decimal: str = "."
    thousands: str | None = None

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, v: str | None) -> str | None:
        return None if v is None else check_date_format(v)

    @field_validator("decimal")
    @classmethod
    def _decimal(cls, v: str) -> str:
        return check_separator("decimal", v)

    @field_validator("thousands")
    @classmethod
    def _thousands(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else check_separator("thousands", v, info.data.get("decimal", "."))

    def formats(self) -> ValueFormats:
        return ValueFormats(self.date_format, self.decimal, self.thousands)


def check_encoding(name: str) -> str:
    """A Python text codec's name, or ValueError naming the nearest one."""
    usage = "use a Python codec name such as utf-8, cp932, latin-1 or utf-16"
    try:
        codecs.lookup(name)
    except LookupError:
        near = suggest(normalize_encoding(name).lower(), set(aliases) | set(aliases.values()))
        raise ValueError(f"unknown encoding `{name}`" + (f" (did you mean `{near}`?)" if near else "")
                         + f"; {usage}") from None
    try:
        "a".encode(name)
    except LookupError:                        # base64, rot13, zlib: codecs, but not of text
        raise ValueError(f"`{name}` is not a text encoding; {usage}") from None
    return name


class _FileReader(Reader):
    def __init__(self, path: Path, label: str, options: FileSource):
        self.path = path
        self.label = label
        self.encoding = options.encoding
        self._fh: Any = None

    def open(self) -> None:
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise self.fail("file not found", hint=f"looked for {self.path}") from None
        except OSError as exc:
            raise self.fail(f"cannot read file: {exc.strerror}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _count_lines(self) -> int:
        count = 0
        with open(self.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                count += chunk.count(b"\n")
        return count

    def _lines(self) -> Iterator[str]:
        """The file's lines (see `_lf_lines`). A file whose first line ends with a bare CR (classic Mac, some
        spreadsheet exports) has CR line endings: its lines are split at CR, CRLF and LF. Elsewhere a bare CR
        stays in its line, where the CSV reader refuses it outside quotes."""
        lines = self._lf_lines()
        first = next(lines, None)
        if first is None:
            return iter(())
        cr = first.find("\r")
        if cr == -1 or first.startswith("\n", cr + 1):
            return itertools.chain([first], lines)
        return (part for line in itertools.chain([first], lines) for part in _ANY_NEWLINE.findall(line))

    def _lf_lines(self) -> Iterator[str]:
        """The file's lines as text in its encoding, each with its newline (a leading BOM dropped); a line that
        does not decode fails the source, at its number. The bytes are decoded incrementally a block at a time,
        so an encoding whose characters may hold a newline byte (UTF-16) reads right too; each block's lines are
        iterated by io.StringIO, not one by one here."""
        return itertools.chain.from_iterable(self._blocks())

    def _blocks(self) -> Iterator[Iterator[str]]:
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        number, pending = 0, ""
        while block := self._fh.read(BLOCK):
            state = decoder.getstate()
            try:
                text = pending + decoder.decode(block)
            except UnicodeDecodeError:
                decoder.setstate(state)     # this block line by line: the lines before the bad one, then the error
                yield self._decoded_lines(decoder, block, number, pending)
                return
            if not number and text.startswith("\ufeff"):
                text = text[1:]
            cut = text.rfind("\n") + 1
            if not cut:
                pending = text
                continue
            pending = text[cut:]
            number += text.count("\n", 0, cut)
            yield io.StringIO(text[:cut], newline="\n")
        try:
            pending += decoder.decode(b"", True)
        except UnicodeDecodeError:
            raise self._not_decodable(number + 1) from None
        if pending:
            yield iter([pending[1:] if not number and pending.startswith("\ufeff") else pending])

    def _decoded_lines(self, decoder: Any, block: bytes, number: int, pending: str) -> Iterator[str]:
        """The lines of a block that does not decode whole, up to the one that fails (raised at its number)."""
        for raw in io.BytesIO(block):
            try:
                text = pending + decoder.decode(raw)
            except UnicodeDecodeError:
                raise self._not_decodable(number + 1) from None
            *lines, pending = text.split("\n")
            for line in lines:
                number += 1
                yield (line[1:] if number == 1 and line.startswith("\ufeff") else line) + "\n"
        raise self._not_decodable(number + 1)      # (the whole block failed, so one of its lines did)

    def _not_decodable(self, line: int) -> Exception:
        if codecs.lookup(self.encoding).name == UTF8:
            return self.fail("the file is not UTF-8 text", line,
                             "save or export it as UTF-8, or name its encoding in the source, "
                             "e.g. `encoding: cp932`")
        return self.fail(f"the file is not {self.encoding} text", line,
                         f"is `encoding: {self.encoding}` the file's encoding? name the right one, "
                         f"or save the file as {self.encoding}")


class CsvReader(_FileReader):
    """A CSV file with a header row; a row shorter than the header has its last columns empty."""

    def __init__(self, path: Path, label: str, options: CsvFileSource):
        super().__init__(path, label, options)
        self.formats = options.formats()

    def open(self) -> None:
        super().open()
        # strict: a quote that is never closed, or text after a closing quote, is an error, not a value that
        # swallows the rest of the file (in a snapshot, the rows after it would be removed)
        self._reader = csv.reader(self._lines(), strict=True)
        try:
            header = next(self._reader)
        except StopIteration:
            raise self.fail("the file is empty (a CSV source needs a header row)") from None
        except csv.Error as exc:
            raise self._malformed(exc, 1) from None
        names = [name.strip() for name in header]
        seen: set[str] = set()
        for name in names:
            if name and name in seen:
                raise self.fail(f"column `{name}` appears twice in the header", 1)
            seen.add(name)
        self.columns = tuple(names)

    def __iter__(self) -> Iterator[Row]:
        return rows_of(self.batches())

    def batches(self, size: int = BATCH) -> Iterator[Batch]:
        names = self.columns or ()
        width = len(names)
        reader = self._reader
        while True:
            start = reader.line_num
            rows: list[list[str]] = []
            ends: list[int] = []            # the line each row ends on
            add, end = rows.append, ends.append
            even = True
            try:
                for values in itertools.islice(reader, size):
                    if len(values) != width:
                        even = False
                    add(values)
                    end(reader.line_num)
            except csv.Error as exc:
                raise self._malformed(exc, (ends[-1] if ends else start) + 1) from None
            if not rows:
                return
            lines = [start + 1, *map((1).__add__, ends[:-1])]
            if even:
                yield Batch(names, lines, rows, texts=True)
            else:
                yield from self._uneven(names, lines, rows)

    def _uneven(self, names: tuple[str, ...], lines: list[int], rows: list[list[str]]) -> Iterator[Batch]:
        """Rows not all as wide as the header: blank lines skipped, short rows padded with empty values, long
        ones cut when their extra values are empty and unreadable otherwise."""
        width = len(names)
        kept_lines: list[int] = []
        kept: list[list[str]] = []
        for line, values in zip(lines, rows):
            if len(values) != width:
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue  # blank line
                if len(values) > width:
                    if any(v.strip() for v in values[width:]):
                        if kept:
                            yield Batch(names, kept_lines, kept, texts=True)
                            kept_lines, kept = [], []
                        yield Batch(None, [line], [Unreadable(
                            f"row has {len(values)} values but the header has {width} columns")])
                        continue
                    values = values[:width]
                else:
                    values = values + [""] * (width - len(values))
            kept_lines.append(line)
            kept.append(values)
        if kept:
            yield Batch(names, kept_lines, kept, texts=True)

    def estimate_total(self) -> int | None:
        return max(self._count_lines() - 1, 0)

    def _malformed(self, exc: csv.Error, line: int) -> Exception:
        """The problem of a row the csv module cannot split (`line` is where the row starts)."""
        if "unexpected end of data" in str(exc):
            return self.fail("a quoted value that starts in this row is never closed", line,
                             'close the quote ("), and write "" for a quote inside a quoted value')
        if "field larger than field limit" in str(exc):
            return self.fail(f"a value longer than {csv.field_size_limit():,} characters starts in this row "
                             "(is a quote never closed?)", line,
                             'close the quote ("), and write "" for a quote inside a quoted value')
        if "new-line character seen in unquoted field" in str(exc):
            return self.fail("a carriage return (CR) inside a value that is not quoted", line,
                             'quote the value ("…"), or save the file with LF or CRLF line endings')
        return self.fail(f"cannot parse CSV: {exc}", line,
                         'a quoted value is quoted whole, with "" for a quote inside it: "say ""hi"""')


class JsonlReader(_FileReader):
    """One JSON object per line; blank lines are skipped."""

    def __iter__(self) -> Iterator[Row]:
        for line, text_line in enumerate(self._lines(), 1):
            if not text_line.strip():
                continue
            try:
                obj = json.loads(text_line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield line, Unreadable(f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield line, Unreadable("JSON nested too deeply to read")
                continue
            except ValueError:                          # an integer of more than 4,300 digits
                yield line, Unreadable("a number with too many digits to read (more than 4,300)")
                continue
            if not isinstance(obj, dict):
                kind = "a list" if isinstance(obj, list) else f"a {type(obj).__name__}"
                yield line, Unreadable(f"expected a JSON object, got {kind}")
                continue
            yield line, obj

    def estimate_total(self) -> int | None:
        return self._count_lines()


class FileSourcePlugin(SourcePlugin):
    """A source read from one file, named in messages by its path as written."""

    config = FileSource
    reader: ClassVar[type[Reader]]

    def label(self, config: FileSource) -> str:
        return config.path

    def open(self, config: FileSource, env: SourceEnv) -> Reader:
        return self.reader(env.resolve(config.path), env.label, config)  # type: ignore[call-arg]


class CsvSource(FileSourcePlugin):
    name = "csv"
    config = CsvFileSource
    reader = CsvReader


class JsonlSource(FileSourcePlugin):
    name = "jsonl"
    reader = JsonlReader


csv_source = CsvSource()
jsonl_source = JsonlSource()
