"""Each trigger is a shorthand for an expression (§7): this module writes that expression."""

from __future__ import annotations

from engine.spec.models import Trigger


def _lit(value: float | str) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def trigger_expression(trigger: Trigger) -> str:
    """The expression (in the playbook expression language) a trigger stands for."""
    kind, o = trigger.kind, trigger.options
    if kind == "when":
        return o
    if kind == "low_usage":
        call = f"metric({_lit(o.metric)}, {o.days}, {_lit(o.agg)})"
        if o.below is not None:
            return f"{call} < {_lit(o.below)}"
        if o.below_per_seat is not None:
            return f"{call} / account.seats < {_lit(o.below_per_seat)}"
        change = f"metric_change({_lit(o.metric)}, {o.days}, {_lit(o.agg)})"
        return f"{change} <= {_lit(-o.drop_pct / 100)}"
    if kind == "renewal_approaching":
        d = f"days_until(account.{o.field})"
        return f"{d} >= 0 and {d} <= {o.within_days}"
    if kind == "goal_achieved":
        reached = ("(goal.status == 'achieved'"
                   " or (goal.direction == 'decrease' and goal.current <= goal.target)"
                   " or ((goal.direction is none or goal.direction != 'decrease') and goal.current >= goal.target))")
        if o.name is None:
            return reached
        if any(ch in o.name for ch in "*?["):
            return f"{reached} and glob(goal.name, {_lit(o.name)})"
        return f"{reached} and goal.name == {_lit(o.name)}"
    raise AssertionError(f"unknown trigger {kind}")  # pragma: no cover - models forbid it


def option_at(trigger: Trigger, expression: str, col: int) -> str | None:
    """The trigger option whose value the expression it stands for holds at 1-based column `col` (a problem there is
    the option's), or None."""
    options = trigger.options.model_dump() if hasattr(trigger.options, "model_dump") else {}
    for key, value in options.items():
        if isinstance(value, str) and expression.startswith(_lit(value), col - 1):
            return key
    return None
