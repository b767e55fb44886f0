"""SunSpec over Modbus TCP: discovery, then points addressed by model and name.

On ``connect`` the driver looks for the ``SunS`` marker at 40000, 0 and 50000 (configurable)
and walks the model chain (ID, length L, next model at address + 2 + L) to the end marker
0xFFFF. Points are addressed ``<model>.<point>``: a model id (``103.W``) or a family that
matches whichever of its models the device has (``inverter.W`` for 101-103 / 111-113,
``meter.PhVphA`` for 201-204, ``meter_float`` for 211-214, ``der_ac``, ``common``,
``nameplate``). Point maps thus
describe an asset model once, whatever the device's address layout.

A poll reads the registers of the models its points need -- their merged span, in the minimum
number of requests of at most 125 registers -- and decodes each point with its scale factor.
A point the device does not implement (sentinel value) or whose model it lacks is invalid with
``badReference``. Link sharing, locking and timeouts are the Modbus driver's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.models import BAD_REFERENCE, FAILURE, GOOD, Reading
from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus import ILLEGAL_DATA_ADDRESS, ModbusTcpConfig, ModbusTcpDriver
from edgetwin.drivers.modbus_plan import MAX_REGISTERS
from edgetwin.drivers.sunspec_models import (
    BASE_ADDRESSES,
    END_ID,
    FAMILIES,
    MARKER,
    ModelDef,
    decode_point,
    model_def,
)

ADDRESS = re.compile(r"^(?P<model>[a-z_]+|\d+)\.(?P<point>\w+)$")


class SunSpecConfig(ModbusTcpConfig):
    """A SunSpec device over Modbus TCP."""

    base_addresses: list[int] = Field(default_factory=lambda: list(BASE_ADDRESSES))
    max_models: int = Field(64, ge=1, le=1000)


@dataclass(frozen=True, slots=True)
class FoundModel:
    id: int
    address: int  # of its ID register
    length: int  # L

    @property
    def end(self) -> int:
        return self.address + 2 + self.length


ReadRegisters = Callable[[int, int], Awaitable[list[int] | None]]


async def discover(
    read: ReadRegisters, bases: Sequence[int] = BASE_ADDRESSES, max_models: int = 64
) -> list[FoundModel]:
    """Find the SunSpec marker and walk the model chain. ``read(addr, n)`` returns the
    registers, or None if the device refused the address."""
    for base in bases:
        if await read(base, 2) == MARKER:
            break
    else:
        raise DeviceRejected(f"no SunSpec marker (SunS) at {', '.join(map(str, bases))}")
    models: list[FoundModel] = []
    addr = base + 2
    while len(models) < max_models:
        head = await read(addr, 2)
        if head is None or head[0] == END_ID:
            break
        models.append(FoundModel(head[0], addr, head[1]))
        addr += 2 + head[1]
    return models


def parse_address(address: int | str) -> tuple[str, str]:
    match = ADDRESS.match(str(address))
    if not match:
        raise ValueError(f"SunSpec address must be <model>.<point>, got {address!r}")
    return match["model"], match["point"]


def candidates(model: str) -> tuple[int, ...]:
    """The model ids an address's model part may mean."""
    if model.isdigit():
        return (int(model),)
    if model not in FAMILIES:
        raise ValueError(f"unknown SunSpec model family {model!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[model]


def spans(models: Sequence[FoundModel], max_gap: int) -> list[tuple[int, int]]:
    """Request ranges (start, count) covering ``models``: merged across gaps of at most
    ``max_gap`` registers, each at most 125 registers."""
    merged: list[list[int]] = []
    for m in sorted(models, key=lambda m: m.address):
        if merged and m.address - merged[-1][1] <= max_gap:
            merged[-1][1] = max(merged[-1][1], m.end)
        else:
            merged.append([m.address, m.end])
    out = []
    for start, end in merged:
        for chunk in range(start, end, MAX_REGISTERS):
            out.append((chunk, min(MAX_REGISTERS, end - chunk)))
    return out


class SunSpecDriver(ModbusTcpDriver):
    """``sunspec``: see the module docstring."""

    config_model = SunSpecConfig

    def __init__(self, config: SunSpecConfig, points: Sequence[PointSpec], shared: Any = None):
        super().__init__(config, points, shared)
        self._sunspec = config
        self.models: list[FoundModel] = []

    @classmethod
    def check_point(cls, point: PointSpec) -> None:
        model, name = parse_address(point.address)
        ids = candidates(model)
        defs = [model_def(i) for i in ids]
        if not any(name in d.points for d in defs):
            raise ValueError(f"SunSpec model {model} has no point {name!r}")

    async def read_registers(self, address: int, count: int) -> list[int] | None:
        """The registers, or None where the device says the address does not exist (02);
        other exceptions -- busy (06) while it boots, device failure (04), a gateway's
        (0A, 0B) -- say nothing of the layout: ``DeviceUnavailable``, retried with backoff."""
        response = await self._call("read_holding_registers", address, count=count)
        if not response.isError():
            return list(response.registers)
        code = getattr(response, "exception_code", None)
        if code == ILLEGAL_DATA_ADDRESS:
            return None
        raise DeviceUnavailable(f"Modbus exception {code} reading {count} registers at {address}")

    async def connect(self) -> None:
        await super().connect()
        try:
            # discovery is all or nothing: a half-walked chain would leave points unresolved
            # (badReference) for good while the device looks available
            self.models = await discover(
                self.read_registers, self._sunspec.base_addresses, self._sunspec.max_models
            )
        except BaseException:
            await self.close()
            raise

    def _resolve(self, point: PointSpec) -> tuple[FoundModel, ModelDef, str] | None:
        model, name = parse_address(point.address)
        for wanted in candidates(model):
            for found in self.models:
                if found.id == wanted:
                    return found, model_def(found.id), name
        return None

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        resolved = {p.key: self._resolve(p) for p in points}
        needed = {r[0] for r in resolved.values() if r is not None}
        registers: dict[int, int] = {}
        failed: set[int] = set()
        for start, count in spans(list(needed), self._sunspec.max_gap):
            try:
                regs = await self.read_registers(start, count)
            except DeviceUnavailable:  # answered with an exception: these points fail, once
                regs = None
            if regs is None:
                failed.update(range(start, start + count))
                continue
            registers.update(zip(range(start, start + count), regs, strict=True))
        now = time.time()
        readings = []
        for p in points:
            r = resolved[p.key]
            if r is None:
                readings.append(Reading(p.key, None, BAD_REFERENCE, now))
                continue
            found, defn, name = r
            if found.address in failed:
                readings.append(Reading(p.key, None, FAILURE, now))
                continue
            regs = [registers[a] for a in range(found.address, found.end)]
            value = decode_point(defn, regs, name)
            if value is None or isinstance(value, str):
                readings.append(Reading(p.key, None, BAD_REFERENCE, now))
            else:
                readings.append(Reading(p.key, value, GOOD, now))
        return readings
