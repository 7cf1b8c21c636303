"""The file sync sources: `csv` (a header row, then one row per record) and `jsonl` (one JSON object per line).

`{entity: accounts, csv: data/accounts.csv}`, or the long form `csv: {path: data/accounts.csv}`; a relative
path is read against the config file's folder. Files are UTF-8 (a leading BOM is dropped)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from engine.plugins import SourceEnv, SourcePlugin
from engine.sync.reader import Reader, Row, Unreadable


class FileSource(BaseModel):
    """A file source's options: its path (a plain string is the path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data


class _FileReader(Reader):
    def __init__(self, path: Path, label: str):
        self.path = path
        self.label = label
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
        """The file's lines as text (UTF-8, a leading BOM dropped); a line that is not UTF-8 fails the source."""
        for number, raw in enumerate(self._fh, 1):
            try:
                text_line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("the file is not UTF-8 text", number, "save or export it as UTF-8") from None
            if number == 1 and text_line.startswith("\ufeff"):
                text_line = text_line[1:]
            yield text_line


class CsvReader(_FileReader):
    """A CSV file with a header row; a row shorter than the header has its last columns empty."""

    def open(self) -> None:
        super().open()
        self._reader = csv.reader(self._lines())
        try:
            header = next(self._reader)
        except StopIteration:
            raise self.fail("the file is empty (a CSV source needs a header row)") from None
        names = [name.strip() for name in header]
        seen: set[str] = set()
        for name in names:
            if name and name in seen:
                raise self.fail(f"column `{name}` appears twice in the header", 1)
            seen.add(name)
        self.columns = tuple(names)

    def __iter__(self) -> Iterator[Row]:
        names = self.columns or ()
        width = len(names)
        previous = self._reader.line_num
        while True:
            try:
                values = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self.fail(f"cannot parse CSV: {exc}", previous + 1) from None
            line, previous = previous + 1, self._reader.line_num
            if not values or (len(values) == 1 and not values[0].strip() and width != 1):
                continue  # blank line
            if len(values) > width:
                if any(v.strip() for v in values[width:]):
                    yield line, Unreadable(f"row has {len(values)} values but the header has {width} columns")
                    continue
                values = values[:width]
            elif len(values) < width:
                values = values + [""] * (width - len(values))
            yield line, dict(zip(names, values))

    def estimate_total(self) -> int | None:
        return max(self._count_lines() - 1, 0)


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
        return self.reader(env.resolve(config.path), env.label)


class CsvSource(FileSourcePlugin):
    name = "csv"
    reader = CsvReader


class JsonlSource(FileSourcePlugin):
    name = "jsonl"
    reader = JsonlReader


csv_source = CsvSource()
jsonl_source = JsonlSource()
