"""Cases generated so that the corpus stays complete as the engine grows: every fixture in tests/fixtures/invalid/,
and a bad value for every duration and cron key of the configuration and playbook models (found by their types,
engine/clock.py `DurationText` and `CronText`, so a new key is in the corpus the day it is added)."""

from __future__ import annotations

import shutil
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import AfterValidator, BaseModel

from corpus import Case
from corpus.base import CONFIG, FIXTURES, PLAYBOOKS
from corpus.commands import config_runs, data_runs, playbook_runs
from engine.clock import check_cron, check_duration

DURATIONS = ("abc", "30 seconds", "1000000d")        # not a duration; the example; over a century
CRONS = ("hourly", "61 * * * *", "0 9 31 2 *")        # not a cron; out of range; never fires (31 February)
SENTINEL = "zz_broken_value_zz"           # dumped as a plain scalar, then replaced
PLAYBOOK = "big-accounts"                             # the base playbook the playbook keys are broken in


def cases() -> list[Case]:
    return fixture_cases() + key_cases()


# ---- the fixtures -------------------------------------------------------------------------------------------

def fixture_cases() -> list[Case]:
    out = []
    for path in sorted((FIXTURES / "configs").glob("*.yaml")):
        first = _first_line(path.with_suffix(".expected")).replace(f"configs/{path.name}", "config.yaml")
        out.append(Case("config", f"fixture:{path.stem}", _copy_to(path, "config.yaml"),
                        config_runs(first, every=path.stem == "unknown-key")))
    for path in sorted((FIXTURES / "playbooks").glob("*.yaml")):
        first = _first_line(path.with_suffix(".expected"))
        out.append(Case("playbook", f"fixture:{path.stem}", _copy_to(path, f"playbooks/{path.name}"),
                        playbook_runs(first, file=f"playbooks/{path.name}", every=path.stem == "unknown-key")))
    for folder in sorted(p for p in (FIXTURES / "data").iterdir() if p.is_dir()):
        first = _first_line(folder / "expected")
        out.append(Case("data", f"fixture:{folder.name}", _copy_data(folder), data_runs(first)))
    return out


def _first_line(expected: Path) -> str:
    return expected.read_text(encoding="utf-8").splitlines()[0]


def _copy_to(source: Path, target: str) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        shutil.copy(source, root / target)
    return breaks


def _copy_data(folder: Path) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        for csv in folder.glob("*.csv"):
            shutil.copy(csv, root / "data" / csv.name)
    return breaks


# ---- every duration and cron key ----------------------------------------------------------------------------

def key_cases() -> list[Case]:
    from engine.settings import settings_model
    from engine.spec.models import playbook_model

    out = []
    for kind, check, values in (("duration", check_duration, DURATIONS), ("cron", check_cron, CRONS)):
        for path in typed_paths(settings_model(), check):
            for value in values:
                text, line = _with_value(yaml.safe_load(CONFIG), path, value)
                out.append(Case(kind, f"config:{_dotted(path)}={value}", _write("config.yaml", text),
                                config_runs(f"config.yaml:{line}:", f"`{value}`")))
        for path in typed_paths(playbook_model(), check):
            for value in values:
                file = f"playbooks/{PLAYBOOK}.yaml"
                text, line = _with_value(yaml.safe_load(textwrap.dedent(PLAYBOOKS[PLAYBOOK])), path,
                                         value)
                out.append(Case(kind, f"playbook:{_dotted(path)}={value}", _write(file, text),
                                playbook_runs(f"{file}:{line}:", f"`{value}`", file=file)))
    return out


def typed_paths(model: type[BaseModel], check: Callable[..., Any]) -> list[tuple[str | int, ...]]:
    """The paths (keys, and 0 for a list's items) of every value of `model` whose type is checked by `check`
    (engine/clock.py DurationText or CronText), through nested models, lists, optionals and unions."""
    found: list[tuple[str | int, ...]] = []

    def walk(m: type[BaseModel], prefix: tuple[str | int, ...], seen: frozenset[type]) -> None:
        for name, info in m.model_fields.items():
            if info.exclude:
                continue
            path = prefix + (info.alias or name,)
            if _checked(info.metadata, check):
                found.append(path)
            for sub, extra, checked in _parts(info.annotation):
                if checked(check):
                    found.append(path + extra)
                elif sub is not None and sub not in seen:
                    walk(sub, path + extra, seen | {sub})

    walk(model, (), frozenset({model}))
    return sorted(set(found), key=str)


def _parts(annotation: Any, extra: tuple[int, ...] = ()) -> Iterator[tuple[type[BaseModel] | None, tuple[int, ...],
                                                                         Callable[[Callable[..., Any]], bool]]]:
    """(a model to walk into, the list indexes on the way, whether a checker checks it) for the parts of a type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield None, extra, lambda check, meta=args[1:]: _checked(meta, check)
        yield from _parts(args[0], extra)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _parts(arg, extra)
    elif origin is list:
        yield from _parts(args[0], extra + (0,))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, extra, lambda check: False


def _checked(metadata: Any, check: Callable[..., Any]) -> bool:
    return any(isinstance(m, AfterValidator) and m.func is check for m in metadata)


def _with_value(data: dict, path: tuple[str | int, ...], value: str) -> tuple[str, int]:
    """The YAML of `data` with `value` at `path`, and the line it is on."""
    _place(data, path, SENTINEL)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if SENTINEL in t)
    return text.replace(SENTINEL, '"' + value.replace('"', '\\"') + '"'), line


def _place(node: Any, path: tuple[str | int, ...], value: Any) -> None:
    """Set `value` at `path`: in a list, the first item that has the next key (else a new one)."""
    key, rest = path[0], path[1:]
    if not rest:
        node[key] = value
        return
    if isinstance(key, int):
        item = next((x for x in node if isinstance(x, dict) and rest[0] in x), None)
        if item is None:
            item = {}
            node.append(item)
        _place(item, rest, value)
        return
    if node.get(key) is None:
        node[key] = [] if isinstance(rest[0], int) else {}
    _place(node[key], rest, value)


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def _write(target: str, text: str) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        (root / target).write_text(text, encoding="utf-8")
    return breaks
