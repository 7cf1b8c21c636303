"""Safe YAML loading that keeps where every value came from and rejects duplicate keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.errors import Diagnostic, UserError

Path = tuple[str | int, ...]


@dataclass
class Positions:
    """Line/column (1-based) of every value and every mapping key, by path from the document root."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """Position of the value at `path` (or its key), falling back to the nearest known parent."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))

    def diagnostic(self, path: Path, message: str, hint: str | None = None, *, key: bool = False) -> Diagnostic:
        """A Diagnostic pointing at the value (or key) at `path`."""
        line, col = self.at(path, key=key)
        return Diagnostic(self.file, line, col, message, hint)


def load_yaml(text: str, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document safely; raise UserError with file:line:col on syntax errors or duplicate keys."""
    positions = Positions(file)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        if problem == _TOO_DEEP:
            raise UserError(Diagnostic(file, line, col, f"the YAML is {problem}",
                                       "write it flatter")) from None
        raise UserError(Diagnostic(file, line, col, f"YAML syntax error: {problem}",
                                   "check indentation and quoting on this line")) from None
    except yaml.YAMLError as exc:  # pragma: no cover - defensive
        raise UserError(Diagnostic(file, None, None, f"YAML error: {exc}")) from None
    if node is None:
        return None, positions
    errors: list[Diagnostic] = []
    data = _build(node, (), positions, errors, [0])
    if errors:
        raise UserError(errors)
    return data, positions


_constructor = yaml.SafeLoader(stream="")
MAX_DEPTH = 64          # deeper is no configuration or playbook: an alias inside the value it names, or a mistake
_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")      # a tag asking for anything else is refused
_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"
MAX_VALUES = 100_000    # values one document may expand to through its aliases (a "billion laughs" stops here)


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_DEPTH where it starts (the composer recurses once per
    level: without this a deep document ends in RecursionError, with no line)."""

    def compose_document(self) -> yaml.Node:
        self._depth = 0
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:
                raise yaml.composer.ComposerError(None, None, _TOO_DEEP, self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
# What PyYAML's scalar constructors raise when a scalar does not fit its tag (`!!int abc`, a date such as
# 2026-02-30, `!!bool maybe`), besides ConstructorError for a tag that has no constructor.
_SCALAR_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, OverflowError)
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}")


def _build(node: yaml.Node, path: Path, positions: Positions, errors: list[Diagnostic], count: list[int]) -> Any:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    positions.values[path] = (line, col)
    count[0] += 1
    if count[0] > MAX_VALUES:
        if count[0] == MAX_VALUES + 1:
            errors.append(Diagnostic(positions.file, line, col, f"the YAML expands to more than {MAX_VALUES} "
                                     "values through its aliases", "write the values out instead of aliasing "
                                     "aliases (*name) many times"))
        return None
    if len(path) > MAX_DEPTH:
        errors.append(Diagnostic(positions.file, line, col, f"nested more than {MAX_DEPTH} levels deep",
                                 "does an alias (*name) stand inside the value it names?"))
        return None
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTIONS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        errors.append(Diagnostic(positions.file, line, col, f"unknown YAML tag `{tag}`", "remove the tag"))
        return None
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if count[0] > MAX_VALUES:
                break
            if key_node.tag == "tag:yaml.org,2002:merge":
                errors.append(Diagnostic(positions.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         "YAML merge keys (<<) are not supported", "write the keys out"))
                continue
            key = _build(key_node, path + ("<key>",), positions, errors, count)
            positions.values.pop(path + ("<key>",), None)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                errors.append(Diagnostic(positions.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                                         "a mapping key must be a plain scalar"))
                continue
            key = str(key) if not isinstance(key, str) else key
            kpos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in result:
                first = positions.keys.get(path + (key,))
                where = f" (first defined on line {first[0]})" if first else ""
                errors.append(Diagnostic(positions.file, kpos[0], kpos[1], f"duplicate key `{key}`{where}",
                                         "remove one of them"))
                continue
            positions.keys[path + (key,)] = kpos
            result[key] = _build(value_node, path + (key,), positions, errors, count)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(child, path + (i,), positions, errors, count) for i, child in enumerate(node.value)]
    try:
        return _constructor.construct_object(node, deep=True)
    except _SCALAR_ERRORS:
        errors.append(_scalar_problem(node, positions.file))
        return None


def _scalar_problem(node: yaml.Node, file: str) -> Diagnostic:
    """Why a scalar cannot be read: an unknown tag, a date that does not exist, or text its tag cannot hold."""
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    if node.tag not in _constructor.yaml_constructors:
        return Diagnostic(file, line, col, f"unknown YAML tag `{tag}`", "remove the tag")
    if tag == "!!timestamp" and _DATE.match(node.value):
        return Diagnostic(file, line, col, f"`{node.value}` is not a date that exists",
                          "write a real date as YYYY-MM-DD, or quote it to keep it as text")
    return Diagnostic(file, line, col, f"`{node.value}` is not a valid {tag}",
                      f"remove the tag {tag}, or fix the value")
