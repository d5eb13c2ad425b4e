"""The ECS cluster query language subset used by `memberOf` placement constraints.

    expr    := term (("or" | "||") term)*
    term    := factor (("and" | "&&") factor)*
    factor  := "(" expr ")" | subject op [value | "[" value ("," value)* "]"]
    subject := attribute:NAME | instanceId
    op      := == | equals | != | not_equals | in | !in | not_in | exists | !exists | not_exists

Parsing happens at apply time (errors point into the expression); evaluation is pure.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Words stop at "=" and "!" (except a leading "!" as in "!in"), so "attribute:zone==a" reads as three tokens.
_TOKEN = re.compile(r"\s*(\(|\)|\[|\]|,|==|!=|&&|\|\||!?[^\s()\[\],=!]+|[=!~<>]+)")
_PUNCT = ("(", ")", "[", "]", ",")
_OPS = {
    "==": "==", "equals": "==", "!=": "!=", "not_equals": "!=",
    "in": "in", "!in": "!in", "not_in": "!in",
    "exists": "exists", "!exists": "!exists", "not_exists": "!exists",
}


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Cmp:
    subject: str  # "attribute:NAME" or "instanceId"
    op: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    left: Expr
    right: Expr


Expr = Cmp | BoolOp


def _tokenize(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise QueryError(f"cannot read the expression at position {pos}: {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse(text: str) -> Expr:
    """Parse a memberOf expression; raises QueryError naming what is wrong."""
    tokens = _tokenize(text)
    if not tokens:
        raise QueryError("the expression is empty; e.g. attribute:zone == a")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(expected: str = "more") -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise QueryError(f"the expression ends too early: expected {expected}")
        pos += 1
        return tokens[pos - 1]

    def value(after: str) -> str:
        v = take(f"a value after {after!r}")
        if v in _PUNCT or v.lower() in ("and", "or", "&&", "||"):
            raise QueryError(f"expected a value after {after!r}, found {v!r}")
        return v

    def expr() -> Expr:
        left = term()
        while (peek() or "").lower() in ("or", "||"):
            take()
            left = BoolOp("or", left, term())
        return left

    def term() -> Expr:
        left = factor()
        while (peek() or "").lower() in ("and", "&&"):
            take()
            left = BoolOp("and", left, factor())
        return left

    def factor() -> Expr:
        tok = take("attribute:NAME, instanceId or '('")
        if tok == "(":
            e = expr()
            if take("')'") != ")":
                raise QueryError("missing ')'")
            return e
        if not (tok.startswith("attribute:") and len(tok) > len("attribute:")) and tok != "instanceId":
            raise QueryError(f"expected attribute:NAME or instanceId, found {tok!r}")
        op_tok = take(f"an operator after {tok!r} (==, !=, in, !in, exists, !exists)")
        op = _OPS.get(op_tok.lower())
        if op is None:
            raise QueryError(f"unknown operator {op_tok!r}; use ==, !=, in, !in, exists or !exists")
        if op in ("exists", "!exists"):
            return Cmp(tok, op)
        if op in ("in", "!in"):
            if take(f"a list like [a, b] after {op_tok!r}") != "[":
                raise QueryError(f"'{op_tok}' needs a list like [a, b]")
            vals = [value("[")]
            while peek() == ",":
                take()
                vals.append(value(","))
            if take("']'") != "]":
                raise QueryError("missing ']'")
            return Cmp(tok, op, tuple(vals))
        return Cmp(tok, op, (value(op_tok),))

    e = expr()
    if pos != len(tokens):
        raise QueryError(f"unexpected {tokens[pos]!r}; join conditions with 'and' or 'or'")
    return e


def evaluate(e: Expr, node_id: str, attributes: dict[str, str]) -> bool:
    if isinstance(e, BoolOp):
        if e.op == "and":
            return evaluate(e.left, node_id, attributes) and evaluate(e.right, node_id, attributes)
        return evaluate(e.left, node_id, attributes) or evaluate(e.right, node_id, attributes)
    value = node_id if e.subject == "instanceId" else attributes.get(e.subject[len("attribute:"):])
    ops: dict[str, Callable[[], bool]] = {
        "exists": lambda: value is not None,
        "!exists": lambda: value is None,
        "==": lambda: value == e.values[0],
        "!=": lambda: value != e.values[0],
        "in": lambda: value in e.values,
        "!in": lambda: value not in e.values,
    }
    return ops[e.op]()
