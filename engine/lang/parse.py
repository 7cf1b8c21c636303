"""Parse expression text with Jinja2's own parser, keeping the position of every token.

Jinja2 tokens and nodes only carry line numbers, so we lex the text ourselves (with Jinja2's lexer),
remember each token's offset, and feed the same tokens to Jinja2's parser. A `Locator` then walks
those tokens in source order while the compiler visits the tree, to put a column on each error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.lexer import Token, TokenStream, describe_token
from jinja2.parser import Parser

from engine.errors import ExpressionError

_ENV = Environment()


@dataclass(frozen=True)
class PosToken:
    """A Jinja2 token and its 0-based offset in the expression text."""

    offset: int
    type: str
    value: object


class Locator:
    """Finds tokens left to right, so nodes visited in source order get their columns."""

    def __init__(self, tokens: list[PosToken], text: str):
        self._tokens = tokens
        self._next = 0
        self._end = len(text) + 1

    def find(self, kind: str, *values: object) -> int | None:
        """1-based column of the next token of this kind (and one of these values), or None."""
        for i in range(self._next, len(self._tokens)):
            tok = self._tokens[i]
            if tok.type == kind and (not values or any(_same(tok.value, v) for v in values)):
                self._next = i + 1
                return tok.offset + 1
        return None

    def peek(self) -> int:
        """1-based column of the next token not yet located (the end of the text when none is left)."""
        if self._next < len(self._tokens):
            return self._tokens[self._next].offset + 1
        return self._end


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def parse(text: str) -> tuple[nodes.Expr, list[PosToken]]:
    """The Jinja2 expression tree of `text` and its positioned tokens; ExpressionError on bad syntax."""
    if not text.strip():
        raise ExpressionError("the expression is empty", 1)
    if text.lstrip().startswith("{{"):
        raise ExpressionError("an expression is written without `{{ }}`", text.index("{{") + 1,
                              "e.g. `account.arr > 1000`, not `{{ account.arr > 1000 }}`")
    pairs = _tokenize(text)
    offsets = {id(tok): off for off, tok in pairs}
    parser = Parser(_ENV, text, state="variable")
    parser.stream = TokenStream(iter([tok for _, tok in pairs]), None, None)
    at: Callable[[], int] = lambda: offsets.get(id(parser.stream.current), len(text)) + 1  # noqa: E731
    try:
        node = parser.parse_expression()
        if not parser.stream.eos:
            raise ExpressionError(f"unexpected {_describe(parser.stream.current)} after the expression", at())
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"syntax error: {_message(exc)}", at()) from None
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply", 1) from None
    return node, [PosToken(off, tok.type, tok.value) for off, tok in pairs]


def _tokenize(text: str) -> list[tuple[int, Token]]:
    """Jinja2 tokens (whitespace dropped) with their offsets in `text`."""
    lexer = _ENV.lexer
    out: list[tuple[int, Token]] = []
    pos = 0
    try:
        for lineno, kind, raw in lexer.tokeniter(text, None, None, "variable"):
            found = text.find(raw, pos)
            offset = found if found >= 0 else pos
            pos = offset + len(raw) if found >= 0 else pos
            for token in lexer.wrap(iter([(lineno, kind, raw)])):
                out.append((offset, token))
    except TemplateSyntaxError as exc:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        raise ExpressionError(f"syntax error: {_message(exc)}", pos + 1) from None
    return out


def _describe(token: Token) -> str:
    if token.type in ("name", "integer", "float"):
        return f"`{token.value}`"
    if token.type == "string":
        return f"string {token.value!r}"
    return {"eof": "end of expression", "variable_end": "`}}`"}.get(token.type, f"`{describe_token(token)}`")


def _message(exc: TemplateSyntaxError) -> str:
    message = exc.message or "invalid syntax"
    message = message[:1].lower() + message[1:]
    match = re.fullmatch(r"unexpected char (.+) at \d+", message)
    if match:
        return f"unexpected character {match.group(1)}"
    return (message.replace("'end of template'", "end of expression").replace("end of template", "end of expression")
            .replace("end of print statement", "`}}`").rstrip("."))
