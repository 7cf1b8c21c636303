"""Turn pydantic validation errors into file:line:col diagnostics with "did you mean" hints."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.errors import Diagnostic, suggest

# Inputs are never echoed into messages (they may be secrets), except a mistyped choice: a short literal.
from engine.spec.yamlfile import Positions


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at `loc`, when it can be found (a tag in `loc`
    picks that member of a tagged union)."""
    current: Any = model
    for part in loc:
        if _is_tag(part):
            current = _tagged(current, part)
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                alias_hit = [f for f in current.model_fields.values() if f.alias == part]
                if not alias_hit:
                    return None
                field = alias_hit[0]
            current = field.annotation
        elif isinstance(part, int) or typing.get_origin(current) in (dict, list):
            args = typing.get_args(current)
            current = args[-1] if args else None
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_tag(part: Any) -> bool:
    """Whether a location part names the member of a tagged union (engine/settings.py tags start with `=`)."""
    return isinstance(part, str) and part.startswith("=")


def _tagged(tp: Any, tag: str) -> Any:
    """The member of a (possibly optional, annotated) tagged union whose Tag is `tag`, or None."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(tp)
        if any(getattr(m, "tag", None) == tag for m in meta):
            return inner
        return _tagged(inner, tag)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            found = _tagged(member, tag)
            if found is not None:
                return found
    return None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(models) == 1:
                tp = models[0]
                continue
            found = [a for a in models if isinstance(a, type) and issubclass(a, BaseModel)]
            return found[0] if len(found) == 1 else tp
        return tp


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts in YAML (aliases where set; not the fields the engine fills in itself, which
    are excluded from the model's output, such as the configuration's own folder)."""
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def validation_diagnostics(exc: ValidationError, model: type[BaseModel], positions: Positions,
                           prefix: tuple[Any, ...] = ()) -> list[Diagnostic]:
    """One Diagnostic per pydantic error, located through the YAML positions; secrets never echoed."""
    out: list[Diagnostic] = []
    seen: set[tuple[Any, ...]] = set()
    for err in exc.errors(include_url=False):
        full = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        at_key = full[-1:] == ("[key]",)            # the problem is a mapping's key, not its value
        full = full[:-1] if at_key else full
        loc = tuple(p for p in full if not _is_tag(p))
        path = prefix + loc
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            name = str(loc[-1])
            parent = _model_at(model, full[:-1])
            options = allowed_keys(parent) if parent else []
            close = suggest(name, options) if options else None
            hint = f"did you mean `{close}`?" if close else (
                f"allowed keys: {', '.join(options)}" if options else None)
            out.append(positions.diagnostic(path, f"unknown key `{name}`", hint, key=True))
        elif kind == "missing":
            name = str(loc[-1])
            out.append(positions.diagnostic(path[:-1], f"missing required key `{name}`", f"add `{name}:`"))
        elif kind == "too_short":
            field = ".".join(str(p) for p in loc)
            out.append(positions.diagnostic(path, f"{field}: must not be empty", f"add at least one item under `{field}:`"))
        elif kind == "literal_error" and isinstance(err.get("input"), str):
            given = err["input"][:60]
            options = [o.strip().strip("'") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
            close = suggest(given, [o for o in options if o])
            field = ".".join(str(p) for p in loc)
            out.append(positions.diagnostic(path, f"{field}: `{given}` is not one of {ctx.get('expected')}",
                                        f"did you mean `{close}`?" if close else None))
        else:
            msg = str(err["msg"])
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            field = ".".join(str(p) for p in loc) or "document"
            out.append(positions.diagnostic(path, f"{field}: {msg}", str(ctx["hint"]) if ctx.get("hint") else None,
                                            key=at_key))
        key = (path, kind)
        if key in seen:
            out.pop()
        seen.add(key)
    return sorted(out, key=lambda d: (d.line or 0, d.col or 0))
