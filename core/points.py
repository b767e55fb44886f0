"""Where a point lives on its device and how its raw value is encoded: the address a twin's point
map gives and a driver reads. Shared by drivers (which read points) and twins (which map them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]


@dataclass(frozen=True, slots=True)
class PointSpec:
    """Where a point lives on its device and how its raw value is encoded.

    ``key`` is opaque to the driver and returned in the ``Reading``. ``address`` and ``table``
    are protocol-specific (Modbus: register number and holding/input/coil/discrete).
    """

    key: str
    address: int | str
    dtype: DataType = "float32"
    table: str | None = None
    order: WordOrder = "ABCD"
