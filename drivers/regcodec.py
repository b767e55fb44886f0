"""Decode and encode numbers held in 16-bit registers, in any of the four word/byte orders.

``ABCD`` is big-endian (Modbus' own order); ``CDAB`` swaps 16-bit words; ``BADC`` swaps the two
bytes inside each word; ``DCBA`` is fully little-endian. One function each way, used by the Modbus
driver and by the simulated devices, so both sides agree by construction.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# dtype -> (number of registers, struct format, big-endian)
_FORMATS: dict[str, tuple[int, str]] = {
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "int64": (4, ">q"),
    "uint64": (4, ">Q"),
    "float32": (2, ">f"),
    "float64": (4, ">d"),
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def register_count(dtype: str) -> int:
    """How many 16-bit registers a value of ``dtype`` occupies (``bool`` occupies one bit)."""
    if dtype == "bool":
        return 1
    try:
        return _FORMATS[dtype][0]
    except KeyError:
        raise ValueError(f"unknown data type {dtype!r}") from None


def _reorder(raw: bytes, order: str) -> bytes:
    """Map between ABCD (big-endian) bytes and ``order``; the mapping is its own inverse."""
    if order == "ABCD":
        return raw
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order not in ORDERS:
        raise ValueError(f"unknown word order {order!r}")
    return b"".join(words)


def decode(registers: Sequence[int], dtype: str, order: str = "ABCD") -> int | float:
    """Decode ``registers`` (exactly ``register_count(dtype)`` of them) into a number."""
    count, fmt = _FORMATS[dtype]
    if len(registers) != count:
        raise ValueError(f"{dtype} needs {count} registers, got {len(registers)}")
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    value: int | float = struct.unpack(fmt, _reorder(raw, order))[0]
    return value


def encode(value: int | float, dtype: str, order: str = "ABCD") -> list[int]:
    """Encode a number into registers; the inverse of ``decode``."""
    count, fmt = _FORMATS[dtype]
    if fmt[-1] not in "fd":
        value = int(value)
    raw = _reorder(struct.pack(fmt, value), order)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * count, 2)]
