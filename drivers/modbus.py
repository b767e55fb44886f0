"""Modbus TCP driver (pymodbus): batched reads, typed decoding, single-point writes.

What it does: turns a set of points into merged block reads (``drivers.modbus_plan``), decodes
each point from its block in its own word order (``drivers.regcodec``), and maps Modbus exception
responses to point quality (illegal address -> invalid/badReference, any other -> invalid/failure).

What it leaves to the runtime (``agent.running``): polling schedule, timeouts, reconnect backoff,
availability and logging. pymodbus' own retries and auto-reconnect are switched off so that the
runtime is the only place those policies live.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from agent.errors import DeviceRejected, DeviceUnavailable
from agent.models import BAD_REFERENCE, FAILURE, GOOD, OVERFLOW, Reading, Value
from drivers.base import DeviceConfig, PointSpec
from drivers.modbus_plan import BIT_TABLES, MAX_BITS, MAX_REGISTERS, TABLES, Block, plan_blocks
from drivers.regcodec import decode, encode, register_count

ILLEGAL_DATA_ADDRESS = 2


class ModbusTcpConfig(DeviceConfig):
    """A Modbus TCP device (or one unit id behind a TCP gateway)."""

    host: str
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255)
    max_registers_per_request: int = Field(MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits_per_request: int = Field(MAX_BITS, ge=1, le=MAX_BITS)
    max_gap: int = Field(10, ge=0, le=MAX_REGISTERS, description="registers read through")

    @model_validator(mode="after")
    def _backoff_order(self) -> ModbusTcpConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


def check_point(point: PointSpec) -> None:
    """Raise ValueError if this driver cannot serve ``point`` (called at config load)."""
    if point.table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {point.table!r}")
    if not isinstance(point.address, int) or not 0 <= point.address <= 65535:
        raise ValueError(f"address must be a register number 0..65535, got {point.address!r}")
    if point.table in BIT_TABLES:
        if point.dtype != "bool":
            raise ValueError(f"{point.table} points hold bits: dtype must be 'bool'")
    elif point.dtype == "bool":
        raise ValueError("register points need a numeric dtype (bool is for coils/discrete)")


class ModbusTcpDriver:
    """One Modbus TCP device; see the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = ModbusTcpConfig

    def __init__(self, config: ModbusTcpConfig, points: Sequence[PointSpec]) -> None:
        for point in points:
            check_point(point)
        self._config = config
        self._client: AsyncModbusTcpClient | None = None
        self._plans: dict[tuple[PointSpec, ...], list[Block]] = {}
        self._stats = {"requests": 0, "exceptions": 0}

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def __aenter__(self) -> ModbusTcpDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        cfg = self._config
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,  # the runtime owns reconnects and their backoff
        )
        try:
            connected = await client.connect()
        except (OSError, ModbusException) as err:
            client.close()
            raise DeviceUnavailable(f"{cfg.host}:{cfg.port}: {err}") from err
        if not connected:
            client.close()
            raise DeviceUnavailable(f"{cfg.host}:{cfg.port}: connection refused or timed out")
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _plan(self, points: Sequence[PointSpec]) -> list[Block]:
        key = tuple(points)
        plan = self._plans.get(key)
        if plan is None:
            cfg = self._config
            plan = plan_blocks(
                points,
                max_registers=cfg.max_registers_per_request,
                max_bits=cfg.max_bits_per_request,
                max_gap=cfg.max_gap,
            )
            self._plans[key] = plan
        return plan

    async def _request(self, block: Block) -> Any:
        client = self._client
        if client is None or not client.connected:
            raise DeviceUnavailable("not connected")
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        self._stats["requests"] += 1
        try:
            return await read(block.start, count=block.count, device_id=self._config.unit_id)
        except ModbusException as err:
            raise DeviceUnavailable(f"unit {self._config.unit_id}: {err}") from err

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        readings: list[Reading] = []
        for block in self._plan(points):
            response = await self._request(block)
            now = time.time()
            if response.isError():
                self._stats["exceptions"] += 1
                code = getattr(response, "exception_code", None)
                quality = BAD_REFERENCE if code == ILLEGAL_DATA_ADDRESS else FAILURE
                readings.extend(Reading(p.key, None, quality, now) for p in block.points)
                continue
            if block.table in BIT_TABLES:
                bits = response.bits
                for p in block.points:
                    readings.append(
                        Reading(p.key, bool(bits[int(p.address) - block.start]), GOOD, now)
                    )
                continue
            regs = response.registers
            for p in block.points:
                offset = int(p.address) - block.start
                value = decode(regs[offset : offset + register_count(p.dtype)], p.dtype, p.order)
                if isinstance(value, float) and not math.isfinite(value):
                    readings.append(Reading(p.key, None, OVERFLOW, now))
                else:
                    readings.append(Reading(p.key, value, GOOD, now))
        return readings

    async def write(self, point: PointSpec, value: Value) -> None:
        client = self._client
        if client is None or not client.connected:
            raise DeviceUnavailable("not connected")
        unit = self._config.unit_id
        address = int(point.address)
        try:
            if point.table == "coil":
                response = await client.write_coil(address, bool(value), device_id=unit)
            elif point.table == "holding":
                if value is None or isinstance(value, bool):
                    raise DeviceRejected(f"{point.key}: cannot write {value!r} to a register")
                regs = encode(value, point.dtype, point.order)
                if len(regs) == 1:
                    response = await client.write_register(address, regs[0], device_id=unit)
                else:
                    response = await client.write_registers(address, regs, device_id=unit)
            else:
                raise DeviceRejected(f"{point.key}: {point.table} is read-only")
        except ModbusException as err:
            raise DeviceUnavailable(f"unit {unit}: {err}") from err
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceRejected(f"{point.key}: Modbus exception {code}", code=code)
