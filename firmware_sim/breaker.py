"""A simulated breaker over Modbus TCP: coil 0 is the position (true = closed; writing it
operates the breaker), discrete input 1 the protection fault flag (``fault_flag``), holding 0
the operations counter, holding 10 (float32) the phase A current (zero when open).

``writes`` counts position writes, so tests can prove a refused command wrote nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes

from edgetwin.firmware_sim.meter import SimUnit, TcpSimulator
from edgetwin.firmware_sim.registers import to_registers


class BreakerUnit(SimUnit):
    def __init__(self, *, closed: bool = True, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock=clock, refresh_s=0.0)
        self.closed = closed
        self.fault_flag = False
        self.operations = 0
        self.writes = 0

    def build_image(self, now: float) -> dict[int, list[int]]:
        return {
            0: [self.operations & 0xFFFF],
            10: to_registers(412.5 if self.closed else 0.0, "float32"),
        }

    def on_request(self, function_code: int, registers: list[int]) -> ExcCodes | None:
        if function_code == 1:  # read coils: the position
            registers[0] = (registers[0] & ~1) | int(self.closed)
        elif function_code == 2:  # read discrete inputs: the fault flag on bit 1
            registers[0] = (registers[0] & ~2) | (2 if self.fault_flag else 0)
        return None

    def on_write(
        self, function_code: int, address: int, count: int, values: list[Any]
    ) -> ExcCodes | None:
        if function_code in (5, 15) and values:  # write coil(s): operate the breaker
            self.writes += 1
            new = bool(values[0])
            if new != self.closed:
                self.closed = new
                self.operations += 1
            self._refreshed = None
        return None


class BreakerSimulator(TcpSimulator):
    unit: BreakerUnit

    def __init__(self, *, port: int, closed: bool = True) -> None:
        super().__init__(BreakerUnit(closed=closed), port=port)
