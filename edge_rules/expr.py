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
is of a negative number, or arithmetic meets a string, the result is ``None`` and callers treat
the output as invalid. ``ExpressionError`` carries the 1-based character position of the problem.

Cost is bounded when compiling and when evaluating: at most ``MAX_SOURCE`` characters,
``MAX_NODES`` values and operators, and ``MAX_DEPTH`` levels of nesting (so neither the parser
nor an evaluation can exhaust the stack); arithmetic is on floats (``2 ** 2 ** 2 ** 64`` is an
overflow, hence unknown, not a number with billions of digits), and strings take part in
comparisons only. One evaluation is therefore a few hundred constant-time steps at most.
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


MAX_SOURCE = 4000  # characters
MAX_NODES = 256  # values and operators; the evaluation tree is never deeper than this
MAX_DEPTH = 32  # nested parentheses, function calls, unary operators


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


def _arith(op: Callable[[float, float], Any]) -> Callable[[Any, Any], Any]:
    """``op`` on numbers only, as floats: no string repetition or concatenation, and no
    integer arithmetic whose size grows without bound (``**``)."""

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, str) or isinstance(b, str):
            return None
        result = op(float(a), float(b))
        return result if math.isfinite(result) else None

    return apply


_ADD, _SUB, _MUL = _arith(operator.add), _arith(operator.sub), _arith(operator.mul)
_DIV, _MOD, _POW = _arith(operator.truediv), _arith(operator.mod), _arith(math.pow)


def _if(c: Any, a: Any, b: Any) -> Any:
    return None if c is None else (a if c else b)


def _sqrt(x: Any) -> Any:
    return math.sqrt(x) if _num(x) and x >= 0 else None


def _agg(fn: Callable[..., Any]) -> Callable[..., Any]:
    def apply(*xs: Any) -> Any:
        if None in xs or any(isinstance(x, str) for x in xs):
            return None
        return fn(xs)

    return apply


_FUNCS: dict[str, Callable[..., Any]] = {
    "abs": lambda x: abs(x) if isinstance(x, int | float) else None,
    "sqrt": _sqrt,
    "min": _agg(min),
    "max": _agg(max),
    "if": _if,
}


class _Parser:
    def __init__(self, source: str, known: Collection[str] | None) -> None:
        self.toks = _tokens(source)
        if len(self.toks) > MAX_NODES * 2:  # values, operators and parentheses
            raise ExpressionError(f"longer than {MAX_NODES} values and operators", 1)
        self.i = 0
        self.known = known
        self.names: list[str] = []
        self.depth = 0
        self.nodes = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        if tok.kind != "end" and tok.text not in ("(", ")", ","):
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise ExpressionError(f"more than {MAX_NODES} values and operators", tok.pos)
        return tok

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH} levels", pos)

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
            self.nest(self.take().pos)
            inner = self.not_()
            self.depth -= 1
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
        return self._binary({"+": _ADD, "-": _SUB}, self.term)

    def term(self) -> Node:
        return self._binary({"*": _MUL, "/": _DIV, "%": _MOD}, self.unary)

    def unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text == "-":
            self.nest(self.take().pos)
            inner = self.unary()
            self.depth -= 1
            return lambda v: None if not isinstance(x := inner(v), int | float) else -x
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.tok.kind == "op" and self.tok.text == "**":
            self.nest(self.take().pos)
            exponent = self.unary()
            self.depth -= 1
            return _binary(_POW, base, exponent)
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
            self.nest(tok.pos)
            node = self.or_()
            self.expect(")")
            self.depth -= 1
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
        self.nest(self.expect("(").pos)
        args = [self.or_()]
        while self.tok.text == "," and self.tok.kind == "op":
            self.take()
            args.append(self.or_())
        self.expect(")")
        self.depth -= 1
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
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"longer than {MAX_SOURCE} characters", MAX_SOURCE + 1)
    parser = _Parser(source, known)
    node = parser.parse()
    names = tuple(parser.names)
    bare = names[0] if len(names) == 1 and source.strip() == names[0] else None
    return Expression(source, names, node, bare)
