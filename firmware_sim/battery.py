"""A simulated battery energy storage system (ESS) over Modbus TCP.

Register map (holding registers, float32 ABCD unless said otherwise):

====  =================================================================================
  0   WSet: active-power setpoint, W (positive discharges, negative charges). Writable
      with FC16 (two registers at 0); beyond +-``max_w`` the unit answers exception 3.
  2   W: actual active power -- follows WSet, but 0 when empty (discharging) or full
      (charging), and 0 while off or faulted
  4   Soc: state of charge, % (integrates -W over time against ``capacity_wh``)
  6   St (uint16): 0 off, 1 standby, 2 charging, 3 discharging, 4 fault
  8   PhV phsA, V (277)
 10   Hz (60.0)
====  =================================================================================

Discrete input 0 is the fault flag (``fault_flag``). Writes anywhere but WSet answer exception
2 (illegal address), as a real device protects its measurements. ``setpoint_writes`` records
every accepted setpoint write as (time, value), so tests see when a schedule wrote what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymodbus.constants import ExcCodes

from edgetwin.firmware_sim.meter import SimUnit, TcpSimulator
from edgetwin.firmware_sim.registers import from_registers, to_registers

OFF, STANDBY, CHARGING, DISCHARGING, FAULT = range(5)


class BatteryUnit(SimUnit):
    def __init__(
        self,
        *,
        soc: float = 50.0,
        capacity_wh: float = 200_000.0,
        max_w: float = 100_000.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock, refresh_s=0.05)
        self.soc = soc
        self.capacity_wh = capacity_wh
        self.max_w = max_w
        self.setpoint = 0.0
        self.on = True
        self.fault_flag = False
        self.setpoint_writes: list[tuple[float, float]] = []
        self._last: float | None = None

    def power(self) -> float:
        if not self.on or self.fault_flag:
            return 0.0
        if (self.setpoint > 0 and self.soc <= 0.0) or (self.setpoint < 0 and self.soc >= 100.0):
            return 0.0
        return self.setpoint

    def state(self) -> int:
        if self.fault_flag:
            return FAULT
        if not self.on:
            return OFF
        w = self.power()
        return DISCHARGING if w > 0 else CHARGING if w < 0 else STANDBY

    def build_image(self, now: float) -> dict[int, list[int]]:
        if self._last is not None:
            hours = (now - self._last) / 3600
            self.soc = min(
                100.0, max(0.0, self.soc - self.power() * hours / self.capacity_wh * 100)
            )
        self._last = now
        return {
            0: to_registers(self.setpoint, "float32"),
            2: to_registers(self.power(), "float32"),
            4: to_registers(self.soc, "float32"),
            6: [self.state()],
            8: to_registers(277.0, "float32"),
            10: to_registers(60.0, "float32"),
        }

    def on_request(self, function_code: int, registers: list[int]) -> ExcCodes | None:
        if function_code == 2:  # read discrete inputs: the fault flag on bit 0
            registers[0] = (registers[0] & ~1) | int(self.fault_flag)
        return None

    def on_write(
        self, function_code: int, address: int, count: int, values: list[Any]
    ) -> ExcCodes | None:
        if function_code != 16 or address != 0 or count != 2:
            return ExcCodes.ILLEGAL_ADDRESS
        value = from_registers(values, "float32")
        if not abs(value) <= self.max_w:
            return ExcCodes.ILLEGAL_VALUE
        self.image()  # integrate the state of charge up to now at the old setpoint
        self.setpoint = value
        self.setpoint_writes.append((self._clock(), value))
        self._refreshed = None
        return None


class BatterySimulator(TcpSimulator):
    unit: BatteryUnit

    def __init__(self, *, port: int, clock: Callable[[], float] | None = None, **kw: Any) -> None:
        super().__init__(BatteryUnit(clock=clock, **kw), port=port)
