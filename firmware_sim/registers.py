"""Numbers as a simulated device holds them in 16-bit registers, in the four word / byte orders
real devices use (``ABCD`` big-endian, ``CDAB`` words swapped, ``BADC`` bytes swapped inside each
word, ``DCBA`` little-endian).

Encoded with pymodbus' own converters (``convert_to_registers``), not with the agent's
``drivers.regcodec``: a word-order or sign bug in the agent's decoder then shows up as a wrong
reading in the tests instead of being made the same way on both sides.
"""

from __future__ import annotations

from typing import Literal

from pymodbus.client.mixin import ModbusClientMixin

_T = ModbusClientMixin.DATATYPE
TYPES = {
    "int16": _T.INT16,
    "uint16": _T.UINT16,
    "int32": _T.INT32,
    "uint32": _T.UINT32,
    "int64": _T.INT64,
    "uint64": _T.UINT64,
    "float32": _T.FLOAT32,
    "float64": _T.FLOAT64,
}


def _swap_bytes(registers: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in registers]


def to_registers(value: float, dtype: str = "float32", order: str = "ABCD") -> list[int]:
    """``value`` as the registers a device in word/byte ``order`` holds."""
    number: int | float = value if dtype.startswith("float") else int(value)
    words: Literal["big", "little"] = "little" if order in ("CDAB", "DCBA") else "big"
    registers = ModbusClientMixin.convert_to_registers(number, TYPES[dtype], word_order=words)
    return _swap_bytes(registers) if order in ("BADC", "DCBA") else registers


def from_registers(registers: list[int], dtype: str = "float32") -> float:
    """A big-endian (``ABCD``) value written to a simulated device."""
    value = ModbusClientMixin.convert_from_registers(registers, TYPES[dtype])
    assert isinstance(value, int | float)
    return float(value)
