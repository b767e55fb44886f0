"""A simulated three-phase revenue meter served over Modbus TCP (pymodbus server).

Register map (holding registers; the same image is served as input registers). Unit: any id.

=====  ==================  ========  =====  =====
addr   quantity            type      order  units
=====  ==================  ========  =====  =====
0..4   voltage A, B, C     float32   ABCD   V (line-to-neutral)
6      voltage average     float32   ABCD   V
8..12  current A, B, C     float32   ABCD   A
14     current neutral     float32   ABCD   A
16..22 W A, B, C, total    float32   ABCD   W
24..30 VAr A, B, C, total  float32   ABCD   var
32..38 VA A, B, C, total   float32   ABCD   VA
40..46 PF A, B, C, total   float32   ABCD   -
48     frequency           float32   ABCD   Hz
100    energy imported     uint64    ABCD   Wh (grows only)
104    energy exported     uint64    ABCD   Wh
108    reactive imported   uint64    ABCD   varh (grows only)
112    frequency x 100     uint16    ABCD   0.01 Hz
113    status word         uint16    ABCD   bit 0 = tamper
200    frequency           float32   CDAB   Hz    (word-order test registers)
202    frequency           float32   BADC   Hz
204    frequency           float32   DCBA   Hz
206    constant -123456    int32     ABCD
208    constant -42        int16     ABCD
209    W total             float64   ABCD   W
213    constant -9e9       int64     DCBA
217    constant 4e9        uint32    CDAB
=====  ==================  ========  =====  =====

Addresses outside 0..255 answer "illegal data address". Coil 0 is a writable relay; discrete
input 0 mirrors the tamper bit. ``fault`` injects misbehaviour per unit: ``"busy"`` (exception 6
on every request), ``"illegal"`` (exception 2, illegal data address, on every request),
``"silent"`` (never answers, the link stays free for other units),
``("slow", seconds)`` (answers late), ``"garbage"`` (answers with a corrupted frame: a CRC error
on RTU, a truncated frame on TCP). Measurements are refreshed every ``refresh_s`` (0.1 s), like a
real meter's measurement cycle.

``MeterUnit`` is one meter; ``MeterSimulator`` serves one over Modbus TCP (answering any unit
id), ``RtuMeterLine`` serves several, each with its own unit id, on one serial port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgetwin.firmware_sim.meter_model import PHASES, MeterModel, MeterState
from edgetwin.firmware_sim.registers import to_registers

REGISTERS = 256
Fault = str | tuple[str, float] | None

CONST_INT32 = -123456
CONST_INT16 = -42
CONST_INT64 = -9_000_000_000
CONST_UINT32 = 4_000_000_000


def register_image(st: MeterState, tamper: bool = False) -> dict[int, list[int]]:
    """The registers that encode ``st``, keyed by start address."""
    img: dict[int, list[int]] = {}

    def put(addr: int, value: float, dtype: str = "float32", order: str = "ABCD") -> None:
        img[addr] = to_registers(value, dtype, order)

    for i, ph in enumerate(PHASES):
        put(0 + 2 * i, st.volts[ph])
        put(8 + 2 * i, st.amps[ph])
        put(16 + 2 * i, st.watts[ph])
        put(24 + 2 * i, st.vars[ph])
        put(32 + 2 * i, st.va[ph])
        put(40 + 2 * i, st.pf[ph])
    put(6, st.volts["net"])
    put(14, st.amps["neut"])
    put(22, st.watts["net"])
    put(30, st.vars["net"])
    put(38, st.va["net"])
    put(46, st.pf["net"])
    put(48, st.hz)
    put(100, int(st.import_wh), "uint64")
    put(104, int(st.export_wh), "uint64")
    put(108, int(st.import_varh), "uint64")
    put(112, round(st.hz * 100), "uint16")
    put(113, 1 if tamper else 0, "uint16")
    put(200, st.hz, "float32", "CDAB")
    put(202, st.hz, "float32", "BADC")
    put(204, st.hz, "float32", "DCBA")
    put(206, CONST_INT32, "int32")
    put(208, CONST_INT16, "int16")
    put(209, st.watts["net"], "float64")
    put(213, CONST_INT64, "int64", "DCBA")
    put(217, CONST_UINT32, "uint32", "CDAB")
    return img


class SimUnit:
    """One simulated Modbus unit: a register image refreshed on a measurement cycle, injectable
    faults, and its pymodbus ``SimDevice``. Subclasses say what the image holds."""

    register_base = 0
    register_count = REGISTERS

    def __init__(
        self, *, unit_id: int = 0, clock: Callable[[], float] | None = None, refresh_s: float = 0.1
    ) -> None:
        import time

        self.unit_id = unit_id
        self._clock = clock or time.time
        self.fault: Fault = None
        self.requests = 0
        self.refresh_s = refresh_s
        self._image: dict[int, list[int]] = {}
        self._refreshed: float | None = None

    def build_image(self, now: float) -> dict[int, list[int]]:
        """Registers to serve, keyed by start address (absolute)."""
        raise NotImplementedError

    def device(self) -> SimDevice:
        def bits() -> list[SimData]:
            return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

        def regs() -> list[SimData]:
            return [
                SimData(
                    self.register_base,
                    count=self.register_count,
                    values=0,
                    datatype=DataType.REGISTERS,
                )
            ]

        return SimDevice(
            id=self.unit_id, simdata=(bits(), bits(), regs(), regs()), action=self._action
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: Any,
    ) -> ExcCodes | None:
        self.requests += 1
        fault = self.fault
        if fault == "busy":
            return ExcCodes.DEVICE_BUSY
        if fault == "illegal":
            return ExcCodes.ILLEGAL_ADDRESS
        if fault == "silent":
            raise NoSuchIdException(f"unit {self.unit_id} is silent")  # the server stays mute
        if isinstance(fault, tuple) and fault[0] == "slow":
            await asyncio.sleep(fault[1])
        if set_values is not None and function_code in (5, 6, 15, 16):
            refused = self.on_write(function_code, address, count, list(set_values))
            if refused is not None:
                return refused
        if function_code in (3, 4):
            for addr, words in self.image().items():
                offset = addr - start_address
                registers[offset : offset + len(words)] = words
        return self.on_request(function_code, registers)

    def on_request(self, function_code: int, registers: list[int]) -> ExcCodes | None:
        """Hook for unit-specific behaviour on a request (after the image was served)."""
        return None

    def on_write(
        self, function_code: int, address: int, count: int, values: list[Any]
    ) -> ExcCodes | None:
        """Hook for a write request (FC5/6/15/16), before pymodbus stores the values; return
        an exception code to refuse it. By default a unit stores what is written."""
        return None

    def image(self) -> dict[int, list[int]]:
        """The register image, rebuilt at most every ``refresh_s`` (like a real device's
        measurement cycle), so one poll's blocks see one consistent snapshot."""
        now = self._clock()
        if self._refreshed is None or now - self._refreshed >= self.refresh_s:
            self._refreshed = now
            self._image = self.build_image(now)
        return self._image


class MeterUnit(SimUnit):
    """The three-phase meter of the register map above."""

    def __init__(
        self,
        *,
        unit_id: int = 0,
        seed: int = 1,
        clock: Callable[[], float] | None = None,
        model: MeterModel | None = None,
        refresh_s: float = 0.1,
    ) -> None:
        super().__init__(unit_id=unit_id, clock=clock, refresh_s=refresh_s)
        self.model = model or MeterModel(seed=seed)
        self.tamper = False

    def build_image(self, now: float) -> dict[int, list[int]]:
        return register_image(self.model.step(now), self.tamper)

    def image(self) -> dict[int, list[int]]:
        image = dict(super().image())
        image[113] = [1 if self.tamper else 0]  # the status word follows the switch at once
        return image

    def on_request(self, function_code: int, registers: list[int]) -> ExcCodes | None:
        if function_code == 2:  # discrete input 0 mirrors the tamper switch
            registers[0] = (registers[0] & ~1) | (1 if self.tamper else 0)
        return None


def _garbler(units: Mapping[int, SimUnit], unit_of: Callable[[bytes], int], *, rtu: bool) -> Any:
    """A pymodbus ``trace_packet`` hook that mangles the answers of units whose fault is
    ``garbage``: a flipped CRC byte on RTU, a truncated frame on TCP."""

    def trace(sending: bool, data: bytes) -> bytes:
        if sending and data:
            unit = units.get(unit_of(data)) or units.get(0)
            if unit is not None and unit.fault == "garbage":
                return data[:-1] + bytes([data[-1] ^ 0xFF]) if rtu else data[: len(data) // 2]
        return data

    return trace


class _Hosted:
    """Start/stop plumbing shared by the TCP and serial simulators."""

    _server: ModbusTcpServer | ModbusSerialServer | None = None

    async def start(self) -> None:
        self._server = self._make_server()
        await self._server.serve_forever(background=True)

    def _make_server(self) -> ModbusTcpServer | ModbusSerialServer:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class TcpSimulator(_Hosted):
    """One simulated unit served over Modbus TCP on ``host:port`` (answering any unit id)."""

    def __init__(
        self,
        unit: SimUnit,
        *,
        host: str = "127.0.0.1",
        port: int = 5020,
        framer: FramerType = FramerType.SOCKET,
    ) -> None:
        self.unit = unit
        self.host = host
        self.port = port
        self.framer = framer  # FramerType.RTU: RTU frames over TCP, like a serial converter

    @property
    def requests(self) -> int:
        return self.unit.requests

    @property
    def fault(self) -> Fault:
        return self.unit.fault

    @fault.setter
    def fault(self, value: Fault) -> None:
        self.unit.fault = value

    def _make_server(self) -> ModbusTcpServer:
        unit_byte = 6 if self.framer == FramerType.SOCKET else 0
        return ModbusTcpServer(
            self.unit.device(),
            framer=self.framer,
            address=(self.host, self.port),
            ignore_missing_devices=True,
            trace_packet=_garbler(
                {0: self.unit}, lambda frame: frame[unit_byte], rtu=self.framer == FramerType.RTU
            ),
        )


class MeterSimulator(TcpSimulator):
    """The simulated meter over Modbus TCP; an async context manager.

    ``clock`` returns the time the model is stepped to (default: wall time), so tests can
    control the physics.
    """

    unit: MeterUnit

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5020,
        seed: int = 1,
        clock: Callable[[], float] | None = None,
        model: MeterModel | None = None,
        refresh_s: float = 0.1,
        framer: FramerType = FramerType.SOCKET,
    ) -> None:
        unit = MeterUnit(unit_id=0, seed=seed, clock=clock, model=model, refresh_s=refresh_s)
        super().__init__(unit, host=host, port=port, framer=framer)

    @property
    def model(self) -> MeterModel:
        return self.unit.model

    @property
    def tamper(self) -> bool:
        return self.unit.tamper

    @tamper.setter
    def tamper(self, value: bool) -> None:
        self.unit.tamper = value


class RtuMeterLine(_Hosted):
    """Several meters on one serial line (RTU framing), e.g. one end of a socat pty pair.

    ``units`` maps unit id -> ``MeterUnit``; an id not on the line gets no answer, like on a
    real RS-485 bus.
    """

    def __init__(
        self,
        serial_port: str,
        unit_ids: list[int],
        *,
        baudrate: int = 19200,
        parity: str = "E",
        seed: int = 1,
    ) -> None:
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.parity = parity
        self.units = {uid: MeterUnit(unit_id=uid, seed=seed + uid) for uid in unit_ids}

    def _make_server(self) -> ModbusSerialServer:
        return ModbusSerialServer(
            [u.device() for u in self.units.values()],
            framer=FramerType.RTU,
            port=self.serial_port,
            baudrate=self.baudrate,
            parity=self.parity,
            ignore_missing_devices=True,
            trace_packet=_garbler(self.units, lambda frame: frame[0], rtu=True),
        )
