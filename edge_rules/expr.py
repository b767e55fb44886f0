"""A small expression language over a twin's points, for derived points, thresholds and
interlocks. Parsed by hand into a whitelisted tree and compiled to closures: nothing is ever
handed to ``eval``, and nothing outside the grammar below can be expressed.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | power
    power   := atom ("**" unary)?
    atom    := NUMBER | STRING | "true" | "false" | NAME | FUNC "(" expr ("," expr)* ")"
             | "(" expr ")"

``NAME`` is a point of the twin: a profile field (``readingMMXU.PhV.phsA``), a point-map input
(``@Tamper``), a derived field or an earlier rule's output. ``FUNC`` is one of ``abs``, ``min``,
``max``, ``sqrt`` and ``if(condition, then, else)``. Strings (``'closed'``) compare with ``==``
and ``!=`` only.

An unknown value propagates: if a point has no value, or a division is by zero, or ``sqrt``
is of a negative number, the result is ``None`` and callers treat the output as invalid.
``ExpressionError`` carries the 1-based character position of the problem.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

Values = Mapping[str, Any]
Node = Callable[[Values], Any]

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<str>'[^']*'|\"[^\"]*\")"
    r"|(?P<name>[A-Za-z_@][A-Za-z0-9_.@]*)"
    r"|(?P<op>\*\*|<=|>=|==|!=|[-+*/%<>(),])"
    r")"
)
KEYWORDS = {"and", "or", "not", "true", "false"}
FUNCTIONS: dict[str, tuple[int, int]] = {  # name -> (min args, max args)
    "abs": (1, 1),
    "sqrt": (1, 1),
    "min": (1, 16),
    "max": (1, 16),
    "if": (3, 3),
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class ExpressionError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"position {position}: {message}")
        self.message = message
        self.position = position


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # num | str | name | op | end
    text: str
    pos: int  # 1-based


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(source):
        if source[i:].strip() == "":
            break
        m = _TOKEN.match(source, i)
        if m is None or m.end() == i:
            j = i + len(source[i:]) - len(source[i:].lstrip())
            raise ExpressionError(f"unexpected character {source[j]!r}", j + 1)
        kind = m.lastgroup or "op"
        out.append(_Tok(kind, m.group(kind), m.start(kind) + 1))
        i = m.end()
    out.append(_Tok("end", "", len(source) + 1))
    return out


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _binary(op: Callable[[Any, Any], Any], left: Node, right: Node) -> Node:
    """A node applying ``op``: unknown if either side is, or if ``op`` fails (division by
    zero, overflow, a string in arithmetic). One closure per node: evaluation is hot."""

    def node(v: Values) -> Any:
        a = left(v)
        if a is None:
            return None
        b = right(v)
        if b is None:
            return None
        try:
            return op(a, b)
        except (ZeroDivisionError, OverflowError, TypeError, ValueError):
            return None

    return node


def _if(c: Any, a: Any, b: Any) -> Any:
    return None if c is None else (a if c else b)


def _sqrt(x: Any) -> Any:
    return math.sqrt(x) if _num(x) and x >= 0 else None


def _agg(fn: Callable[..., Any]) -> Callable[..., Any]:
    def apply(*xs: Any) -> Any:
        return None if None in xs else fn(xs)

    return apply


_FUNCS: dict[str, Callable[..., Any]] = {
    "abs": lambda x: None if x is None else abs(x),
    "sqrt": _sqrt,
    "min": _agg(min),
    "max": _agg(max),
    "if": _if,
}


class _Parser:
    def __init__(self, source: str, known: Collection[str] | None) -> None:
        self.toks = _tokens(source)
        self.i = 0
        self.known = known
        self.names: list[str] = []

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        if self.tok.text != text or self.tok.kind == "str":
            raise ExpressionError(f"expected {text!r}, found {self._found()}", self.tok.pos)
        return self.take()

    def _found(self) -> str:
        return "the end" if self.tok.kind == "end" else repr(self.tok.text)

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self._found()}", self.tok.pos)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.tok.kind == "name" and self.tok.text == "or":
            self.take()
            left, right = node, self.and_()
            node = _logic(left, right, is_and=False)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.tok.kind == "name" and self.tok.text == "and":
            self.take()
            left, right = node, self.not_()
            node = _logic(left, right, is_and=True)
        return node

    def not_(self) -> Node:
        if self.tok.kind == "name" and self.tok.text == "not":
            self.take()
            inner = self.not_()
            return lambda v: None if (x := inner(v)) is None else not x
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            op = _COMPARE[self.take().text]
            return _binary(op, left, self.sum())
        return left

    def _binary(
        self, ops: Mapping[str, Callable[[Any, Any], Any]], sub: Callable[[], Node]
    ) -> Node:
        node = sub()
        while self.tok.kind == "op" and self.tok.text in ops:
            op = ops[self.take().text]
            node = _binary(op, node, sub())
        return node

    def sum(self) -> Node:
        return self._binary({"+": operator.add, "-": operator.sub}, self.term)

    def term(self) -> Node:
        ops = {"*": operator.mul, "/": operator.truediv, "%": operator.mod}
        return self._binary(ops, self.unary)

    def unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text == "-":
            self.take()
            inner = self.unary()
            return lambda v: None if (x := inner(v)) is None else -x
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.tok.kind == "op" and self.tok.text == "**":
            self.take()
            return _binary(operator.pow, base, self.unary())
        return base

    def atom(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            number = float(tok.text)
            return lambda v: number
        if tok.kind == "str":
            text = tok.text[1:-1]
            return lambda v: text
        if tok.kind == "op" and tok.text == "(":
            node = self.or_()
            self.expect(")")
            return node
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                flag = tok.text == "true"
                return lambda v: flag
            if tok.text in KEYWORDS:
                raise ExpressionError(f"unexpected {tok.text!r}", tok.pos)
            if self.tok.text == "(" and self.tok.kind == "op":
                return self.call(tok)
            return self.name(tok)
        what = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise ExpressionError(f"expected a value, found {what}", tok.pos)

    def name(self, tok: _Tok) -> Node:
        if self.known is not None and tok.text not in self.known:
            raise ExpressionError(f"unknown point {tok.text!r}", tok.pos)
        if tok.text not in self.names:
            self.names.append(tok.text)
        return operator.itemgetter(tok.text)  # callers give a value for every name

    def call(self, tok: _Tok) -> Node:
        if tok.text not in FUNCTIONS:
            known = ", ".join(FUNCTIONS)
            raise ExpressionError(f"unknown function {tok.text!r} (known: {known})", tok.pos)
        self.expect("(")
        args = [self.or_()]
        while self.tok.text == "," and self.tok.kind == "op":
            self.take()
            args.append(self.or_())
        self.expect(")")
        low, high = FUNCTIONS[tok.text]
        if not low <= len(args) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise ExpressionError(f"{tok.text}() takes {want} arguments, got {len(args)}", tok.pos)
        fn = _FUNCS[tok.text]
        if len(args) == 1:
            (a,) = args
            return lambda v: fn(a(v))
        if len(args) == 2:
            a, b = args
            return lambda v: fn(a(v), b(v))
        if len(args) == 3:
            a, b, c = args
            return lambda v: fn(a(v), b(v), c(v))
        return lambda v: fn(*[arg(v) for arg in args])


def _logic(left: Node, right: Node, *, is_and: bool) -> Node:
    """Three-valued and / or: a known deciding side wins over an unknown other side."""

    def apply(v: Values) -> Any:
        a, b = left(v), right(v)
        if is_and:
            if (a is not None and not a) or (b is not None and not b):
                return False
            return None if a is None or b is None else True
        if a or b:
            return True
        return None if a is None or b is None else False

    return apply


@dataclass(frozen=True)
class Expression:
    """A compiled expression: ``names`` are the points it reads, in order of appearance;
    ``evaluate(values)`` (or calling it) computes it."""

    source: str
    names: tuple[str, ...]
    evaluate: Node
    bare: str | None = None  # the expression is just this point's name

    def __call__(self, values: Values) -> Any:
        return self.evaluate(values)


def compile_expression(source: str, known: Collection[str] | None = None) -> Expression:
    """Parse ``source``; with ``known``, any other point name is an error. Raises
    ``ExpressionError``."""
    if not source.strip():
        raise ExpressionError("empty expression", 1)
    parser = _Parser(source, known)
    node = parser.parse()
    names = tuple(parser.names)
    bare = names[0] if len(names) == 1 and source.strip() == names[0] else None
    return Expression(source, names, node, bare)
