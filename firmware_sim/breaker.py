"""A simulated breaker over Modbus TCP: coil 0 is the position (true = closed; writing it
operates the breaker), discrete input 1 the protection fault flag (``fault_flag``), holding 0
the operations counter, holding 10 (float32) the phase A current (zero when open).

As a real breaker controller also presents it: holding 20 is the position as a double point
(0 intermediate, 1 open, 2 closed) and holding 21 the command register (write 1 = close,
0 = open); a command moves the breaker after ``travel_s`` (intermediate meanwhile), so the
point map ``sim_breaker_dp`` confirms a command by the position, not by the register.

``writes`` counts position writes, so tests can prove a refused command wrote nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes

from edgetwin.firmware_sim.meter import SimUnit, TcpSimulator
from edgetwin.firmware_sim.registers import to_registers


class BreakerUnit(SimUnit):
    def __init__(
        self,
        *,
        closed: bool = True,
        clock: Callable[[], float] | None = None,
        travel_s: float = 0.3,
    ) -> None:
        super().__init__(clock=clock, refresh_s=0.0)
        self.closed = closed
        self.travel_s = travel_s
        self._arrives: tuple[float, bool] | None = None  # (when, closed) of a command moving
        self.fault_flag = False
        self.operations = 0
        self.writes = 0

    def build_image(self, now: float) -> dict[int, list[int]]:
        if self._arrives is not None and now >= self._arrives[0]:
            self._operate(self._arrives[1])
            self._arrives = None
        moving = self._arrives is not None
        return {
            0: [self.operations & 0xFFFF],
            10: to_registers(412.5 if self.closed else 0.0, "float32"),
            20: [0 if moving else 2 if self.closed else 1, int(self.closed)],
        }

    def _operate(self, close: bool) -> None:
        if close != self.closed:
            self.closed = close
            self.operations += 1

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
            self._operate(bool(values[0]))
            self._refreshed = None
        elif function_code in (6, 16) and address == 21 and values:  # the command register
            if values[0] not in (0, 1):
                return ExcCodes.ILLEGAL_VALUE
            self.writes += 1
            self._arrives = (self._clock() + self.travel_s, bool(values[0]))
            self._refreshed = None
        return None


class BreakerSimulator(TcpSimulator):
    unit: BreakerUnit

    def __init__(self, *, port: int, closed: bool = True, travel_s: float = 0.3) -> None:
        super().__init__(BreakerUnit(closed=closed, travel_s=travel_s), port=port)
