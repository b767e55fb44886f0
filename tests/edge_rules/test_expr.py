"""The expression language: what it computes, and the errors it gives (with positions)."""

from __future__ import annotations

import math

import pytest

from edge_rules.expr import ExpressionError, compile_expression

VALUES = {"a": 3.0, "b": 4.0, "v.phsA": 250.0, "@Tamper": 1, "Pos": "closed", "none": None}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("-2 ** 2", -4.0),
        ("2 ** -1", 0.5),
        ("7 % 4", 3.0),
        ("sqrt(a * a + b * b)", 5.0),
        ("abs(a - b)", 1.0),
        ("min(a, b, 2)", 2.0),
        ("max(a, b)", 4.0),
        ("if(a > b, 'a', 'b')", "b"),
        ("v.phsA / 277 < 0.95", True),
        ("@Tamper and not (a >= b)", True),
        ("Pos == 'closed'", True),
        ('Pos != "closed"', False),
        ("a == 3 or none > 1", True),  # a known true side decides an `or`
        ("none > 1 and a > 9", False),  # a known false side decides an `and`
        ("none + 1", None),  # unknown propagates
        ("a / 0", None),  # division by zero: unknown, not an exception
        ("sqrt(-1)", None),
        ("if(none, 1, 2)", None),
        ("1.5e3", 1500.0),
        ("true and false", False),
    ],
)
def test_expressions_evaluate(source: str, expected: object) -> None:
    assert compile_expression(source, VALUES)(VALUES) == expected


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("", 1, "empty expression"),
        ("1 +", 4, "expected a value, found the end of the expression"),
        ("a +* b", 4, "expected a value, found '*'"),
        ("(a + b", 7, "expected ')', found the end"),
        ("a b", 3, "unexpected 'b'"),
        ("foo(a)", 1, "unknown function 'foo'"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("a.__class__", 1, "unknown point 'a.__class__'"),
        ("abs(a, b)", 1, "abs() takes 1 arguments, got 2"),
        ("if(a, b)", 1, "if() takes 3 arguments, got 2"),
        ("a + missing", 5, "unknown point 'missing'"),
        ("a ; b", 3, "unexpected character ';'"),
        ("a[0]", 2, "unexpected character '['"),
        ("lambda: 1", 7, "unexpected character ':'"),
        ("a and", 6, "expected a value"),
    ],
)
def test_bad_expressions_name_the_position(source: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError) as err:
        compile_expression(source, VALUES)
    assert err.value.position == position
    assert message in err.value.message


def test_names_are_the_points_read_in_order() -> None:
    expr = compile_expression("max(b, a) - b + @Tamper", VALUES)
    assert expr.names == ("b", "a", "@Tamper")


def test_nothing_is_evaluated_by_python() -> None:
    # strings are data, never code: a string that looks like Python stays a string
    assert compile_expression("'__import__(\"os\")'", ())({}) == '__import__("os")'
    assert math.isclose(compile_expression("sqrt(2)", ())({}), math.sqrt(2))
