"""The expression language (§5): Jinja2 expression syntax -> typed tree -> SQL or Python.

compile_expression() checks an expression once; to_sql() pushes it down into a query and evaluate()
computes it in Python, with the same answers (three-valued logic, empty = None/NULL).
"""

from __future__ import annotations

from engine.lang.ast import Expr, MetricRef, Scope
from engine.lang.compiler import compile_expression
from engine.lang.python import PyEnv, evaluate, evaluate_traced, python_metric
from engine.lang.render import expr_text, metric_calls
from engine.lang.sql import SqlContext, correlated_metric, to_sql

__all__ = [
    "Expr", "MetricRef", "PyEnv", "Scope", "SqlContext", "compile_expression", "correlated_metric", "evaluate",
    "evaluate_traced", "expr_text", "metric_calls", "python_metric", "to_sql",
]
