"""Word/byte order decoding: known vectors from device manuals, and round trips."""

from __future__ import annotations

import math

import pytest

from edgetwin.drivers.regcodec import decode, encode, register_count

# 123456.0 as float32 is 0x47F12000: ABCD words 0x47F1 0x2000
VECTORS = [
    pytest.param([0x47F1, 0x2000], "float32", "ABCD", 123456.0, id="float32-ABCD"),
    pytest.param([0x2000, 0x47F1], "float32", "CDAB", 123456.0, id="float32-CDAB"),
    pytest.param([0xF147, 0x0020], "float32", "BADC", 123456.0, id="float32-BADC"),
    pytest.param([0x0020, 0xF147], "float32", "DCBA", 123456.0, id="float32-DCBA"),
    pytest.param([0xFFFE, 0x1DC0], "int32", "ABCD", -123456, id="int32-ABCD"),
    pytest.param([0x1DC0, 0xFFFE], "int32", "CDAB", -123456, id="int32-CDAB"),
    pytest.param([0xFFD6], "int16", "ABCD", -42, id="int16"),
    pytest.param([0xD6FF], "int16", "BADC", -42, id="int16-byteswap"),
    pytest.param([0xFFFF], "uint16", "ABCD", 65535, id="uint16"),
    pytest.param([0xEE6B, 0x2800], "uint32", "ABCD", 4_000_000_000, id="uint32"),
    pytest.param([0, 0, 0, 1], "uint64", "ABCD", 1, id="uint64"),
    pytest.param([1, 0, 0, 0], "uint64", "CDAB", 1, id="uint64-CDAB"),
    pytest.param([0x0100, 0, 0, 0], "uint64", "DCBA", 1, id="uint64-DCBA"),
    pytest.param([0xFFFF] * 4, "int64", "ABCD", -1, id="int64"),
    pytest.param([0x3FF0, 0, 0, 0], "float64", "ABCD", 1.0, id="float64"),
    pytest.param([0, 0, 0, 0x3FF0], "float64", "CDAB", 1.0, id="float64-CDAB"),
]


@pytest.mark.parametrize(("regs", "dtype", "order", "expected"), VECTORS)
def test_known_vectors(regs: list[int], dtype: str, order: str, expected: float) -> None:
    assert decode(regs, dtype, order) == expected
    assert encode(expected, dtype, order) == regs


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        ("int16", -300),
        ("uint16", 300),
        ("int32", -70000),
        ("uint32", 70000),
        ("int64", -(2**40)),
        ("uint64", 2**40),
        ("float32", -1.5),
        ("float64", math.pi),
    ],
)
def test_round_trip(dtype: str, value: float, order: str) -> None:
    regs = encode(value, dtype, order)
    assert len(regs) == register_count(dtype)
    assert decode(regs, dtype, order) == value


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], "float32")
