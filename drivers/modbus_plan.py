"""Merge the points of one poll into as few Modbus requests as the protocol allows.

Points are grouped by table, sorted by address and packed greedily into blocks of at most
``max_registers`` registers (``max_bits`` for coils and discrete inputs). A gap of up to
``max_gap`` unused registers is read through rather than starting a new request; a larger gap,
or a block that would exceed the limit, starts the next request. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgetwin.core.points import PointSpec
from edgetwin.drivers.regcodec import register_count

TABLES = ("holding", "input", "coil", "discrete")
BIT_TABLES = ("coil", "discrete")
MAX_REGISTERS = 125  # Modbus: a read holds at most 125 registers ...
MAX_BITS = 2000  # ... or 2000 coils / discrete inputs


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: str
    start: int
    count: int
    points: tuple[PointSpec, ...]


def point_width(point: PointSpec) -> int:
    return 1 if point.table in BIT_TABLES else register_count(point.dtype)


def plan_blocks(
    points: Sequence[PointSpec],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 10,
) -> list[Block]:
    """Return the read requests that cover ``points``, in table then address order."""
    blocks: list[Block] = []
    for table in TABLES:
        members = sorted(
            (p for p in points if p.table == table), key=lambda p: (int(p.address), p.key)
        )
        limit = max_bits if table in BIT_TABLES else max_registers
        current: list[PointSpec] = []
        start = end = 0
        for point in members:
            address = int(point.address)
            width = point_width(point)
            if current and (address - end > max_gap or address + width - start > limit):
                blocks.append(Block(table, start, end - start, tuple(current)))
                current = []
            if not current:
                start = address
                end = address
            current.append(point)
            end = max(end, address + width)
        if current:
            blocks.append(Block(table, start, end - start, tuple(current)))
    return blocks
