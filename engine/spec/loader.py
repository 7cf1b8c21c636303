"""Load the playbooks directory: YAML with positions -> models -> compiled expressions and templates."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.actions import ActionKind, CompileContext, CompiledAction
from engine.datamodel import ENTITY_OF, SUBJECT_TYPES, fields_of
from engine.errors import Diagnostic, ExpressionError, UserError, declared_hint
from engine.lang import Scope, compile_expression
from engine.lang.ast import Metric, MetricChange, walk
from engine.journey import Builder, Journey
from engine.plugins import Unroutable, registry, route
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook, Condition, InvalidPlaybook, PlaybookSet
from engine.spec.diagnostics import validation_diagnostics
from engine.spec.models import Playbook, playbook_model
from engine.spec.triggers import option_at, trigger_expression
from engine.spec.yamlfile import Positions, load_yaml
from engine.templating import PLAYBOOK_FIELDS, Templates, TemplateProblem, plain_name_problem
from engine.textfile import read_text

log = logging.getLogger("playbook.loader")


def scope_for(settings: Settings, subject: str) -> Scope:
    """The names an expression of a playbook about `subject` may use, and the declared values and metrics."""
    custom = settings.custom_fields()
    fields = {stype: fields_of(entity, custom) for stype, entity in ENTITY_OF.items()}
    values = {stype: declared for stype, entity in ENTITY_OF.items() if (declared := settings.declared_values(entity))}
    return Scope(subject=subject, fields=fields, segments=dict(settings.segments), values=values,
                 metrics=tuple(settings.metrics) if settings.metrics is not None else None)


def template_fields(settings: Settings) -> dict[str, tuple[str, ...]]:
    """What a template may read of each object of its context: the fields of account, contact and goal (core and
    declared), and the playbook's id, name and description."""
    custom = settings.custom_fields()
    return {**{stype: tuple(fields_of(entity, custom)) for stype, entity in ENTITY_OF.items()},
            "playbook": PLAYBOOK_FIELDS}


def playbook_files(directory: Path) -> list[Path]:
    """The playbook files of a directory, in a stable order."""
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_playbooks(settings: Settings, paths: list[Path] | None = None, *,
                   synced_metrics: Collection[str] | None = None) -> PlaybookSet:
    """Load and compile every playbook; invalid ones are kept apart with their diagnostics. With `synced_metrics`
    (the metrics of the synced usage rows), a metric a valid playbook reads that none of them has is a warning."""
    templates = Templates(settings.templates if settings.templates.is_dir() else None, template_fields(settings),
                          tuple(settings.metrics) if settings.metrics is not None else None)
    files = paths if paths is not None else (
        playbook_files(settings.playbooks) if settings.playbooks.is_dir() else [])
    warnings: list[Diagnostic] = [] if paths is not None else _folder_warnings(settings)
    valid: list[CompiledPlaybook] = []
    invalid: list[InvalidPlaybook] = []
    seen: dict[str, str] = {}
    for path in files:
        shown = _display(path, settings.base_dir)
        result = _load_isolated(path, shown, settings, templates)
        if isinstance(result, CompiledPlaybook) and result.id in seen:
            result = InvalidPlaybook(shown, result.id, (Diagnostic(
                shown, *_id_pos(path), f"playbook id `{result.id}` is already used by {seen[result.id]}",
                "give each playbook its own id"),))
        if isinstance(result, CompiledPlaybook):
            seen[result.id] = shown
            valid.append(result)
            if synced_metrics is not None:
                warnings += _unsynced_metrics(result, path, synced_metrics)
        else:
            invalid.append(result)
    return PlaybookSet(tuple(valid), tuple(invalid), tuple(warnings))


def _folder_warnings(settings: Settings) -> list[Diagnostic]:
    """A warning when the configured playbooks folder is missing or not a folder: a typo in `playbooks:` would
    otherwise run nothing, silently."""
    folder = settings.playbooks
    if folder.is_dir():
        return []
    what = "is a file, not a folder" if folder.exists() else "does not exist"
    return [settings.diagnostic(("playbooks",), f"no playbooks: `{_display(folder, settings.base_dir)}` {what}",
                                "correct `playbooks:`, or create the folder")]


def _unsynced_metrics(pb: CompiledPlaybook, path: Path, synced: Collection[str]) -> list[Diagnostic]:
    """A warning for each metric a playbook's conditions read (its segments' included) that no synced usage row
    has, at the metric's name where the playbook spells it out, else at the condition."""
    text = read_text(path, pb.file)
    _, positions = load_yaml(text, pb.file)
    out: list[Diagnostic] = []
    for condition, where in zip(pb.conditions, _condition_paths(pb)):
        names = dict.fromkeys(n.name for n in walk(condition.expr) if isinstance(n, (Metric, MetricChange)))
        for name in names:
            if name in synced:
                continue
            line, col = positions.at(where)
            at = _quoted(condition.text, name)
            if at is not None and where[0] == "trigger" and pb.spec.trigger.kind != "when":
                option = option_at(pb.spec.trigger, condition.text, at + 1)     # the trigger's option names it
                if option is not None:
                    line, col = positions.at(where + (option,))
            elif at is not None and line is not None and col is not None:
                col += at + _quote_offset(text, line, col)
            out.append(Diagnostic(pb.file, line, col, f"no synced usage row has the metric '{name}'",
                                  declared_hint(name, sorted(synced), "synced metrics")))
    return out


def _condition_paths(pb: CompiledPlaybook) -> list[tuple[Any, ...]]:
    """Where each of a playbook's conditions is written: the trigger, then each `where` item."""
    return [("trigger", pb.spec.trigger.kind)] + [("where", i) for i in range(len(pb.spec.where))]


def _quoted(expression: str, name: str) -> int | None:
    """The 0-based offset of `name` written as a quoted string in an expression, or None."""
    for quote in "'\"":
        at = expression.find(quote + name + quote)
        if at >= 0:
            return at
    return None


def _display(path: Path, base: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    for root in (Path.cwd(), base):
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return str(path)


def _id_pos(path: Path) -> tuple[int | None, int | None]:
    try:
        _, positions = load_yaml(read_text(path, str(path)), str(path))
        return positions.at(("id",))
    except UserError:
        return (None, None)


def _load_isolated(path: Path, shown: str, settings: Settings, templates: Templates) -> CompiledPlaybook | InvalidPlaybook:
    """load_one, with whatever else goes wrong loading this file (a bug a hostile input finds) reported as this
    playbook's problem: one file never stops the others from loading."""
    try:
        return load_one(path, shown, settings, templates)
    except Exception as exc:  # noqa: BLE001 - (RecursionError and MemoryError included)
        log.debug("could not load %s", shown, exc_info=True)
        return InvalidPlaybook(shown, None, (Diagnostic(
            shown, None, None, f"this playbook could not be loaded ({type(exc).__name__})",
            "simplify it; if it looks right, please report it"),))


def load_one(path: Path, shown: str, settings: Settings, templates: Templates) -> CompiledPlaybook | InvalidPlaybook:
    """Load one playbook file; never raises for a user's mistake."""
    try:
        text = read_text(path, shown)
        data, positions = load_yaml(text, shown)
    except UserError as exc:
        return InvalidPlaybook(shown, None, tuple(exc.diagnostics))
    if not isinstance(data, dict):
        return InvalidPlaybook(shown, None, (Diagnostic(shown, 1, 1, "a playbook must be a YAML mapping",
                                                        "start with `id:`, `name:`, `trigger:` and `actions:`"),))
    pid = data.get("id") if isinstance(data.get("id"), str) else None
    model = playbook_model()
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems = validation_diagnostics(exc, model, positions)
        problems += _raw_expression_problems(data, settings, positions, text)
        return InvalidPlaybook(shown, pid, tuple(sorted(problems, key=lambda d: (d.line or 0, d.col or 0))))
    problems: list[Diagnostic] = []
    if spec.trigger.kind == "goal_achieved" and spec.subject != "goal":
        problems.append(positions.diagnostic(("trigger", "goal_achieved"), "the goal_achieved trigger is about goals",
                                         "add `subject: goal` to this playbook", key=True))
    if spec.steps and spec.repeat is not None:
        problems.append(positions.diagnostic(("repeat",), "`repeat` does not apply to journeys (a playbook with "
                                             "`steps:`)", "remove it; put waits between the steps", key=True))
    for key in ("exit_when", "exit_on_unmatch"):
        if not spec.steps and key in spec.model_fields_set:
            problems.append(positions.diagnostic((key,), f"`{key}` applies to journeys only (a playbook with "
                                                 "`steps:`)", "remove it, or write the actions as `steps:`", key=True))
    conditions = [] if problems else _compile_conditions(spec, settings, positions, text, problems)
    actions = tuple(_compile_actions(spec.actions or [], "actions", spec, settings, templates, positions, problems))
    on_resolve = tuple(_compile_actions(spec.on_resolve, "on_resolve", spec, settings, templates, positions, problems))
    journey = _compile_journey(spec, settings, templates, positions, text, problems) if spec.steps else None
    if problems:
        return InvalidPlaybook(shown, spec.id, tuple(problems))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return CompiledPlaybook(spec, shown, tuple(conditions), actions, on_resolve, digest, journey)


def _compile_journey(spec: Playbook, settings: Settings, templates: Templates, positions: Positions, text: str,
                     problems: list[Diagnostic]) -> Journey:
    """The steps as a journey (engine/journey.py): step ids unique, actions and conditions compiled."""
    scope = scope_for(settings, spec.subject)
    seen: dict[str, tuple[Any, ...]] = {}

    def ids(items: list[Any], path: tuple[Any, ...]) -> None:
        for i, step in enumerate(items):
            here = path + (i,)
            if step.id:
                if step.id in seen:
                    problems.append(positions.diagnostic(here + ("id",), f"step id `{step.id}` is used twice in "
                                                         "this playbook", "give each step its own id"))
                seen[step.id] = here
            if hasattr(step, "then"):
                ids(step.then, here + ("then",))
                ids(step.else_, here + ("else",))
    ids(spec.steps, ("steps",))
    builder = Builder(
        action=lambda step, path: _compile_action(step, 0, path + (step.kind,), spec, settings, templates,
                                                  positions, problems),
        expression=lambda label, expr_text, path: _compile_one(expr_text, path, True, "", scope, positions, text,
                                                               problems))
    return builder.build(spec.steps, spec.exit_when)


def _raw_expression_problems(data: dict, settings: Settings, positions: Positions, text: str) -> list[Diagnostic]:
    """Check the expressions of a playbook that failed validation elsewhere, so all problems show at once."""
    subject = data.get("subject", "account")
    if subject not in SUBJECT_TYPES:
        return []
    items: list[tuple[str, tuple[Any, ...]]] = []
    trigger = data.get("trigger")
    if isinstance(trigger, dict) and isinstance(trigger.get("when"), str):
        items.append((trigger["when"], ("trigger", "when")))
    where = data.get("where")
    if isinstance(where, list):
        items += [(w, ("where", i)) for i, w in enumerate(where) if isinstance(w, str)]
    problems: list[Diagnostic] = []
    scope = scope_for(settings, subject)
    for expr_text, path in items:
        _compile_one(expr_text, path, True, "", scope, positions, text, problems)
    return problems


def _compile_one(expr_text: str, path: tuple[Any, ...], literal: bool, kind: str, scope: Scope, positions: Positions,
                 text: str, problems: list[Diagnostic], trigger: Any = None) -> Any:
    try:
        return compile_expression(expr_text, scope)
    except ExpressionError as exc:
        option = option_at(trigger, expr_text, exc.col) if trigger is not None and exc.col else None
        if option is not None:              # the problem is a value the trigger's option gave: say it there
            problems.append(positions.diagnostic(path + (option,), exc.message, exc.hint))
            return None
        line, col = positions.at(path)
        if literal and exc.col and line is not None and col is not None:
            col += exc.col - 1 + _quote_offset(text, line, col)
        where = "" if literal else f" (in `{expr_text}`, which {kind} expands to)"
        problems.append(Diagnostic(positions.file, line, col, f"{exc.message}{where}", exc.hint))
        return None


def _compile_conditions(spec: Playbook, settings: Settings, positions: Positions, text: str,
                        problems: list[Diagnostic]) -> list[Condition]:
    scope = scope_for(settings, spec.subject)
    out: list[Condition] = []
    kind = spec.trigger.kind
    items: list[tuple[str, str, tuple[Any, ...], bool]] = [
        (f"trigger ({kind})", trigger_expression(spec.trigger), ("trigger", kind), kind == "when")]
    items += [(f"where[{i}]", w, ("where", i), True) for i, w in enumerate(spec.where)]
    for label, expr_text, path, literal in items:
        trigger = spec.trigger if path[0] == "trigger" and not literal else None
        expr = _compile_one(expr_text, path, literal, kind, scope, positions, text, problems, trigger)
        if expr is not None:
            out.append(Condition(label, expr_text, expr))
    return out


def _quote_offset(text: str, line: int, col: int) -> int:
    lines = text.splitlines()
    if 0 < line <= len(lines) and 0 < col <= len(lines[line - 1]):
        return 1 if lines[line - 1][col - 1] in "'\"" else 0
    return 0


def _compile_actions(actions: list[Any], key: str, spec: Playbook, settings: Settings, templates: Templates,
                     positions: Positions, problems: list[Diagnostic]) -> list[CompiledAction]:
    """Each action compiled by its kind (engine/actions.py), with the connector that will deliver it."""
    return [_compile_action(action, index, (key, index, action.kind), spec, settings, templates, positions, problems)
            for index, action in enumerate(actions)]


def _compile_action(action: Any, index: int, path: tuple[Any, ...], spec: Playbook, settings: Settings,
                    templates: Templates, positions: Positions, problems: list[Diagnostic]) -> CompiledAction:
    """One action compiled by its kind, with the connector that will deliver it (`path`: where it is written,
    ending with its kind's key)."""
    kind = registry().kinds[action.kind]
    try:
        connector = route(action.kind, action.connector, settings)
    except Unroutable as exc:
        connector = ""
        problems.append(positions.diagnostic(path + (("connector",) if action.connector else ()), exc.message,
                                         exc.hint, key=not action.connector))
    ctx = CompileContext(
        subject=spec.subject, templates=templates,
        templates_shown=_display(settings.templates, settings.base_dir), settings=settings,
        problem=lambda sub, message, hint=None, path=path: problems.append(
            positions.diagnostic(path + tuple(sub), message, hint)),
        template_problem=lambda name, exc, path=path: problems.append(Diagnostic(
            _display(settings.templates / name, settings.base_dir), exc.line, None, exc.message,
            f"used by {positions.file} line {positions.at(path + ('template',))[0] or positions.at(path)[0]}")))
    with templates.collecting() as metrics:
        fields, files = kind.compile(action.options, ctx)
    _check_roles(kind.contact_roles(action.options), kind.dump(action.options), path, settings, positions,
                 problems)
    facing = kind.customer_facing(action.options) if action.customer_facing is None else action.customer_facing
    digest = _check_digest(action, facing, path, ctx, positions, problems)
    return CompiledAction(index, action.kind, action.options, fields, files, connector, facing, frozenset(metrics),
                          digest, action.digest_template if digest else None)


def _check_digest(action: Any, facing: bool, path: tuple[Any, ...], ctx: CompileContext, positions: Positions,
                  problems: list[Diagnostic]) -> Any:
    """The digest schedule an action collects into (§15), or None: only internal messages of a kind that has
    digests may, and a `digest_template` needs `digest:` and its files (checked as a digest renders them)."""
    from engine.digests import schedule_of

    if action.digest is None:
        if action.digest_template:
            problems.append(positions.diagnostic(path + ("digest_template",), "`digest_template` needs `digest:`",
                                                 "add `digest: daily` (or weekly), or remove `digest_template`"))
        return None
    kinds = registry().kinds
    kind = kinds[action.kind]
    if kind.digest_parts.__func__ is ActionKind.digest_parts:    # type: ignore[attr-defined]
        able = [name for name, k in kinds.items() if k.digest_parts.__func__ is not ActionKind.digest_parts]
        problems.append(positions.diagnostic(path + ("digest",), f"`{action.kind}` actions cannot collect into a "
                                             "digest", f"digests are for {' and '.join(able)} messages"))
        return None
    if facing:
        problems.append(positions.diagnostic(path + ("digest",), "a digest collects internal messages; this "
                                             "action reaches customers",
                                             "address it to your team — a Slack user or channel, an email "
                                             "address — or send it on its own"))
        return None
    name = action.digest_template
    if name:
        _check_digest_template(name, kind.digest_markup, action.kind, path, ctx, positions, problems)
    return schedule_of(action.digest)


def _check_digest_template(name: str, markup: str, kind: str, path: tuple[Any, ...], ctx: CompileContext,
                           positions: Positions, problems: list[Diagnostic]) -> None:
    """NAME.txt.j2 (and for emails NAME.subject.j2, or NAME.html.j2 instead of the text) must exist and compile
    with a digest's context."""
    templates = ctx.templates
    not_plain = plain_name_problem(name, "digest template")
    if not_plain:
        problems.append(positions.diagnostic(path + ("digest_template",), f"{not_plain} ({ctx.templates_shown}/)",
                                             "write the NAME of NAME.txt.j2"))
        return
    parts = [".subject.j2", ".txt.j2", ".html.j2"] if kind == "email" else [".txt.j2"]
    found = [p for p in parts if templates.exists(name + p)]
    body = {".txt.j2", ".html.j2"} & set(found)
    if not body:
        problems.append(positions.diagnostic(path + ("digest_template",), f"digest template `{name}` not found in "
                                             f"{ctx.templates_shown}/", f"create {name}.txt.j2"))
        return
    for part in found:
        try:
            templates.compile_file(name + part, "digest", markup="slack" if markup == "slack" else None)
        except TemplateProblem as exc:
            ctx.template_problem(name + part, exc)


def _check_roles(roles: list[str], options: dict[str, Any], path: tuple[Any, ...], settings: Settings,
                 positions: Positions, problems: list[Diagnostic]) -> None:
    """The contact roles an action addresses must be declared values of contacts.role, when it has them (§17)."""
    declared = settings.declared_values("contacts").get("role")
    if declared is None:
        return
    for role in dict.fromkeys(roles):
        if role not in declared:
            problems.append(positions.diagnostic(path + _where(options, role), f"'{role}' is not a declared value of "
                                                 "contact.role", declared_hint(role, declared, "declared values")))


def _where(value: Any, wanted: str, at: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The path of the first string `wanted` inside a nested structure of options (() when it holds none)."""
    if value == wanted:
        return at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _where(item, wanted, at + (key,))
        if found:
            return found
    return ()
