"""Modbus drivers (pymodbus): TCP, RTU over a serial line, and RTU framing over TCP.

What they do: turn a set of points into merged block reads (``drivers.modbus_plan``), decode
each point from its block in its own word order (``drivers.regcodec``), and map Modbus exception
responses to point quality (illegal address -> invalid/badReference, any other -> invalid/failure).
The three transports differ only in how their shared link (``drivers.modbus_link``) is opened:
every unit id on one serial port, or behind one TCP address, shares one link and its lock.

What it leaves to the runtime (``agent.runtime.running``): polling schedule, timeouts, reconnect
backoff, availability and logging. pymodbus' own retries and auto-reconnect are switched off so
that the runtime is the only place those policies live.
"""

from __future__ import annotations

import errno
import math
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerType

from edgetwin.core.errors import DeviceRejected
from edgetwin.core.models import BAD_REFERENCE, FAILURE, GOOD, OVERFLOW, Reading, Value
from edgetwin.core.points import PointSpec
from edgetwin.drivers.base import DeviceConfig, Host
from edgetwin.drivers.modbus_link import ModbusLink
from edgetwin.drivers.modbus_plan import (
    BIT_TABLES,
    MAX_BITS,
    MAX_REGISTERS,
    TABLES,
    Block,
    plan_blocks,
)
from edgetwin.drivers.regcodec import decode, encode, register_count

ILLEGAL_DATA_ADDRESS = 2


class ModbusConfig(DeviceConfig):
    """Settings shared by every Modbus transport."""

    unit_id: int = Field(1, ge=0, le=255)
    max_registers_per_request: int = Field(MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits_per_request: int = Field(MAX_BITS, ge=1, le=MAX_BITS)
    max_gap: int = Field(10, ge=0, le=MAX_REGISTERS, description="registers read through")
    inter_frame_delay_ms: float | None = Field(
        None, ge=0, le=10_000, description="quiet time between frames on the link"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> ModbusConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


class ModbusTcpConfig(ModbusConfig):
    """A Modbus TCP device, or one unit id behind a Modbus TCP gateway."""

    host: Host
    port: int = Field(502, ge=1, le=65535)


class ModbusRtuOverTcpConfig(ModbusTcpConfig):
    """RTU frames (with CRC) carried over TCP, as many serial-to-Ethernet converters do."""


class ModbusRtuConfig(ModbusConfig):
    """A unit on an RS-485/RS-232 line. Defaults follow the Modbus serial spec: 19200 8E1."""

    serial_port: str = Field(min_length=1, description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


def check_point(point: PointSpec) -> None:
    """Raise ValueError if a Modbus driver cannot serve ``point`` (called at config load)."""
    if point.table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {point.table!r}")
    if not isinstance(point.address, int) or not 0 <= point.address <= 65535:
        raise ValueError(f"address must be a register number 0..65535, got {point.address!r}")
    if point.table in BIT_TABLES:
        if point.dtype != "bool":
            raise ValueError(f"{point.table} points hold bits: dtype must be 'bool'")
    elif point.dtype == "bool":
        raise ValueError("register points need a numeric dtype (bool is for coils/discrete)")


READS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class ModbusDriver:
    """One Modbus unit; subclasses say how its link is opened. See the module docstring."""

    config_model: ClassVar[type[DeviceConfig]] = ModbusConfig

    def __init__(
        self,
        config: ModbusConfig,
        points: Sequence[PointSpec],
        shared: dict[str, Any] | None = None,
    ) -> None:
        for point in points:
            self.check_point(point)
        self._config = config
        key, settings = self.link_identity(config)
        links = shared if shared is not None else {}
        link = links.get(key)
        if link is None:
            link = links[key] = ModbusLink(
                key,
                lambda: self.make_client(config),
                inter_frame_delay=self.inter_frame_delay(config),
                settings=settings,
                explain=lambda: self.explain_open_failure(config),
            )
        elif link.settings != settings:
            raise ValueError(
                f"devices on {key} disagree on the link's settings: {link.settings} vs {settings}"
            )
        self._link: ModbusLink = link
        self._plans: dict[tuple[PointSpec, ...], list[Block]] = {}
        self._stats = {"requests": 0, "exceptions": 0}
        self._acquired = False

    @classmethod
    def explain_open_failure(cls, config: ModbusConfig) -> str | None:
        """Why the link did not open, where pymodbus does not say (serial lines)."""
        return None

    @classmethod
    def check_point(cls, point: PointSpec) -> None:
        """Raise ValueError for a point this driver cannot serve (at config load, no I/O)."""
        check_point(point)

    @classmethod
    def link_identity(cls, config: Any) -> tuple[str, tuple[Any, ...]]:
        """(key of the shared link, settings every device on it must agree on)."""
        raise NotImplementedError

    @classmethod
    def make_client(cls, config: Any) -> ModbusBaseClient:
        raise NotImplementedError

    @classmethod
    def inter_frame_delay(cls, config: ModbusConfig) -> float:
        return (config.inter_frame_delay_ms or 0.0) / 1000

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if not self._acquired:
            self._acquired = True
            try:
                await self._link.acquire()
            except BaseException:
                self._acquired = False
                await self._link.release()
                raise

    async def close(self) -> None:
        if self._acquired:
            self._acquired = False
            await self._link.release()

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

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        unit = self._config.unit_id
        self._stats["requests"] += 1
        return await self._link.request(
            lambda c: getattr(c, method)(*args, device_id=unit, **kwargs),
            within=self._config.timeout_s,
        )

    async def read(self, points: Sequence[PointSpec]) -> list[Reading]:
        readings: list[Reading] = []
        for block in self._plan(points):
            response = await self._call(READS[block.table], block.start, count=block.count)
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
                    bit = bool(bits[int(p.address) - block.start])
                    readings.append(Reading(p.key, bit, GOOD, now))
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
        address = int(point.address)
        if point.table == "coil":
            response = await self._call("write_coil", address, bool(value))
        elif point.table == "holding":
            if value is None or isinstance(value, bool):
                raise DeviceRejected(f"{point.key}: cannot write {value!r} to a register")
            regs = encode(value, point.dtype, point.order)
            if len(regs) == 1:
                response = await self._call("write_register", address, regs[0])
            else:
                response = await self._call("write_registers", address, regs)
        else:
            raise DeviceRejected(f"{point.key}: {point.table} is read-only")
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceRejected(f"{point.key}: Modbus exception {code}", code=code)


class ModbusTcpDriver(ModbusDriver):
    """``modbus_tcp``: every unit id behind one host:port shares one connection."""

    config_model = ModbusTcpConfig

    @classmethod
    def link_identity(cls, config: ModbusTcpConfig) -> tuple[str, tuple[Any, ...]]:
        return f"tcp:{config.host}:{config.port}", ()

    @classmethod
    def make_client(cls, config: ModbusTcpConfig) -> ModbusBaseClient:
        # pymodbus' own retries and reconnects are off: the runtime owns those policies
        return AsyncModbusTcpClient(
            config.host, port=config.port, timeout=config.timeout_s, retries=0, reconnect_delay=0
        )


class ModbusRtuOverTcpDriver(ModbusTcpDriver):
    """``modbus_rtu_over_tcp``: RTU frames through a serial-to-Ethernet converter."""

    config_model = ModbusRtuOverTcpConfig

    @classmethod
    def link_identity(cls, config: ModbusTcpConfig) -> tuple[str, tuple[Any, ...]]:
        return f"rtu-over-tcp:{config.host}:{config.port}", ()

    @classmethod
    def make_client(cls, config: ModbusTcpConfig) -> ModbusBaseClient:
        return AsyncModbusTcpClient(
            config.host,
            port=config.port,
            framer=FramerType.RTU,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
        )


class ModbusRtuDriver(ModbusDriver):
    """``modbus_rtu``: units on one serial line share it, one request at a time."""

    config_model = ModbusRtuConfig

    @classmethod
    def link_identity(cls, config: ModbusRtuConfig) -> tuple[str, tuple[Any, ...]]:
        settings = (config.baudrate, config.parity, config.stopbits, config.bytesize)
        return f"rtu:{config.serial_port}", settings

    @classmethod
    def inter_frame_delay(cls, config: ModbusConfig) -> float:
        """Default: the spec's 3.5 character times, and 1.75 ms above 19200 baud."""
        assert isinstance(config, ModbusRtuConfig)
        if config.inter_frame_delay_ms is not None:
            return config.inter_frame_delay_ms / 1000
        return 1.75e-3 if config.baudrate > 19200 else 3.5 * 11 / config.baudrate

    @classmethod
    def explain_open_failure(cls, config: ModbusConfig) -> str | None:
        """Open the port with pyserial to learn why pymodbus could not (it logs, then says
        only False): a port that refuses the settings, is no serial device, or is not ours."""
        import serial

        assert isinstance(config, ModbusRtuConfig)
        line = f"{config.baudrate} {config.bytesize}{config.parity}{config.stopbits}"
        try:
            port = serial.Serial(
                config.serial_port,
                config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
                timeout=0,
            )
            port.close()
        except (serial.SerialException, OSError, ValueError) as err:
            errno_ = getattr(err, "errno", None) or _errno_in(str(err))
            reasons = {
                errno.EINVAL: f"the port refuses {line} (unsupported baud rate or framing)",
                errno.ENOTTY: "not a serial device",
                errno.ENOENT: "no such device (unplugged? see ls /dev/serial/by-id)",
                errno.EACCES: "permission denied (is the agent's user in the dialout group?)",
                errno.EBUSY: "in use by another program",
            }
            return f"serial port {config.serial_port}: {reasons.get(errno_ or -1, str(err))}"
        return None

    @classmethod
    def make_client(cls, config: ModbusRtuConfig) -> ModbusBaseClient:
        return AsyncModbusSerialClient(
            config.serial_port,
            framer=FramerType.RTU,
            baudrate=config.baudrate,
            parity=config.parity,
            stopbits=config.stopbits,
            bytesize=config.bytesize,
            timeout=config.timeout_s,
            retries=0,
            reconnect_delay=0,
        )


def _errno_in(text: str) -> int | None:
    """pyserial words termios errors as ``(22, 'Invalid argument')``: the number in it."""
    match = re.search(r"\((\d+), ", text)
    return int(match.group(1)) if match else None
