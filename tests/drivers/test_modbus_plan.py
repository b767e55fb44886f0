"""Merging the points of a poll into as few requests as the protocol allows."""

from __future__ import annotations

import pytest

from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus_plan import plan_blocks


def hr(key: str, addr: int, dtype: str = "float32") -> PointSpec:
    return PointSpec(key, addr, dtype, "holding")  # type: ignore[arg-type]


def test_contiguous_points_are_one_request() -> None:
    blocks = plan_blocks([hr(f"p{i}", 2 * i) for i in range(30)])
    assert [(b.start, b.count) for b in blocks] == [(0, 60)]


def test_small_gap_is_read_through_large_gap_splits() -> None:
    pts = [hr("a", 0), hr("b", 10), hr("c", 40)]
    blocks = plan_blocks(pts, max_gap=8)
    assert [(b.start, b.count) for b in blocks] == [(0, 12), (40, 2)]
    assert [(b.start, b.count) for b in plan_blocks(pts, max_gap=0)] == [(0, 2), (10, 2), (40, 2)]


@pytest.mark.parametrize("span", [125, 126, 250, 251, 1000])
def test_requests_never_exceed_125_registers_and_are_minimal(span: int) -> None:
    pts = [hr(f"p{i}", i, "uint16") for i in range(span)]
    blocks = plan_blocks(pts)
    assert all(b.count <= 125 for b in blocks)
    assert len(blocks) == -(-span // 125)
    assert sum(len(b.points) for b in blocks) == span


def test_multi_register_value_is_never_split() -> None:
    pts = [hr(f"p{i}", 2 * i) for i in range(63)]  # 126 registers of float32
    blocks = plan_blocks(pts)
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 2)]


def test_tables_are_planned_separately() -> None:
    pts = [hr("a", 0), PointSpec("c", 0, "bool", "coil"), PointSpec("i", 0, "float32", "input")]
    assert sorted(b.table for b in plan_blocks(pts)) == ["coil", "holding", "input"]


def test_bits_are_limited_to_2000() -> None:
    pts = [PointSpec(f"c{i}", i, "bool", "coil") for i in range(2500)]
    assert [b.count for b in plan_blocks(pts)] == [2000, 500]
