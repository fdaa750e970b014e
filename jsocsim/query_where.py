"""The `[? … ?]` / `[! … !]` keyword conditions: parse to a small tree, evaluate per record.

Grammar: expr := and {OR and}; and := not {AND not}; not := NOT not | '(' expr ')' | cmp | call;
cmp := operand op operand with op in = != <> < <= > >=; operand := KEYWORD | number | 'string';
call := drms.image_exists(KEYWORD). Keyword names are checked against the series.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))"
    r"|(?P<op><=|>=|<>|!=|=|<|>)|(?P<paren>[(),])|(?P<name>[A-Za-z_][A-Za-z0-9_.]*))"
)
OPERATORS = ("=", "!=", "<>", "<", "<=", ">", ">=")


class WhereSyntaxError(ValueError):
    """Raised for an unparseable condition; query.py turns it into a QueryError."""


@dataclass(frozen=True)
class Ref:
    """A keyword reference."""

    name: str


@dataclass(frozen=True)
class Literal:
    value: int | float | str


@dataclass(frozen=True)
class Compare:
    left: Ref | Literal
    op: str
    right: Ref | Literal


@dataclass(frozen=True)
class ImageExists:
    ref: Ref


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR | NOT
    args: tuple[Condition, ...]


Condition = Compare | ImageExists | BoolOp  # a parsed condition tree


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise WhereSyntaxError(f"unexpected character {text[pos:].strip()[:1]!r} in condition")
        kind = m.lastgroup or ""
        tokens.append((kind, m[kind]))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise WhereSyntaxError("condition ends too early")
        self.i += 1
        return tok

    def word(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "name" and tok[1].upper() == word:
            self.i += 1
            return True
        return False

    def expr(self) -> Condition:
        args = [self.conj()]
        while self.word("OR"):
            args.append(self.conj())
        return args[0] if len(args) == 1 else BoolOp("OR", tuple(args))

    def conj(self) -> Condition:
        args = [self.neg()]
        while self.word("AND"):
            args.append(self.neg())
        return args[0] if len(args) == 1 else BoolOp("AND", tuple(args))

    def neg(self) -> Condition:
        if self.word("NOT"):
            return BoolOp("NOT", (self.neg(),))
        tok = self.peek()
        if tok == ("paren", "("):
            self.take()
            inner = self.expr()
            if self.take() != ("paren", ")"):
                raise WhereSyntaxError("missing ')'")
            return inner
        if tok and tok[0] == "name" and tok[1].lower() == "drms.image_exists":
            self.take()
            if self.take() != ("paren", "("):
                raise WhereSyntaxError("drms.image_exists needs '(' KEYWORD ')'")
            ref = self.operand()
            if not isinstance(ref, Ref) or self.take() != ("paren", ")"):
                raise WhereSyntaxError("drms.image_exists takes one keyword name")
            return ImageExists(ref)
        left = self.operand()
        kind, op = self.take()
        if kind != "op":
            raise WhereSyntaxError(
                f"expected a comparison operator ({' '.join(OPERATORS)}), got {op!r}"
            )
        return Compare(left, "!=" if op == "<>" else op, self.operand())

    def operand(self) -> Ref | Literal:
        kind, text = self.take()
        if kind == "str":
            return Literal(text[1:-1].replace("''", "'"))
        if kind == "num":
            if text.lower().lstrip("+-").startswith("0x"):
                return Literal(int(text, 16))
            return Literal(float(text) if any(c in text for c in ".eE") else int(text))
        if kind == "name" and text.upper() not in ("AND", "OR", "NOT"):
            return Ref(text)
        raise WhereSyntaxError(f"expected a keyword, number or 'string', got {text!r}")


def parse_where(text: str, known: Callable[[str], bool]) -> Condition:
    """Parse a condition; `known(name)` says whether a keyword exists in the series."""
    parser = _Parser(text)
    if not parser.tokens:
        raise WhereSyntaxError("empty condition")
    tree = parser.expr()
    extra = parser.peek()
    if extra is not None:
        raise WhereSyntaxError(f"unexpected {extra[1]!r} after the condition")
    for name in referenced_keywords(tree):
        if not known(name):
            raise WhereSyntaxError(f"unknown keyword '{name}'")
    return tree


def referenced_keywords(tree: Condition | Ref | Literal) -> set[str]:
    """Every keyword name used in a condition."""
    if isinstance(tree, Ref):
        return {tree.name}
    if isinstance(tree, Compare):
        return referenced_keywords(tree.left) | referenced_keywords(tree.right)
    if isinstance(tree, ImageExists):
        return {tree.ref.name}
    if isinstance(tree, BoolOp):
        return set().union(*(referenced_keywords(a) for a in tree.args))
    return set()


def _compare(a: Any, op: str, b: Any) -> bool:
    if a is None or b is None:
        return False  # SQL NULL (MISSING) never matches
    if isinstance(a, str) != isinstance(b, str):
        return False
    return bool({
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op])


def evaluate(tree: Condition, value_of: Callable[[str], Any],
             coerce: Callable[[str, Any], Any]) -> bool:
    """Evaluate a condition for one record.

    `value_of(name)` gives a keyword's comparable value (None = MISSING); `coerce(name, literal)`
    converts a literal compared with that keyword into the keyword's domain (e.g. a time string
    to TAI seconds, '0' to 0 for an integer keyword).
    """
    if isinstance(tree, BoolOp):
        if tree.op == "NOT":
            return not evaluate(tree.args[0], value_of, coerce)
        results = (evaluate(a, value_of, coerce) for a in tree.args)
        return all(results) if tree.op == "AND" else any(results)
    if isinstance(tree, ImageExists):
        quality = value_of(tree.ref.name)
        return quality is not None and quality >= 0
    left, right = tree.left, tree.right
    if isinstance(left, Ref):
        lhs = value_of(left.name)
        rhs = value_of(right.name) if isinstance(right, Ref) else coerce(left.name, right.value)
        return _compare(lhs, tree.op, rhs)
    if isinstance(right, Ref):
        return _compare(coerce(right.name, left.value), tree.op, value_of(right.name))
    return _compare(left.value, tree.op, right.value)
