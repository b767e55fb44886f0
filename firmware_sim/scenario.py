"""Fault scenarios: one TOML format that starts simulated devices and misbehaves on schedule.

``python -m edgetwin.firmware_sim run SCENARIO`` runs one until its last step (plus ``linger_s``)::

    linger_s = 5
    [[devices]]
    name = "meter1"
    kind = "meter"              # meter | inverter | substation | rtu_line
    port = 5020                 # TCP devices; rtu_line: serial_port = "/dev/pts/7", units = [1, 2]
    proxy_port = 5021           # optional: clients connect here, through a fault proxy
    [[steps]]
    at = 10.0                   # seconds after the start
    device = "meter1"
    unit = 2                    # rtu_line only: which unit misbehaves
    fault = "silent"            # none | busy | illegal | silent | garbage | slow | drop | restart
    seconds = 2.0               # slow: answer delay; restart: downtime

``busy`` / ``illegal`` answer Modbus exception 6 / 2, ``silent`` stops answering, ``garbage``
corrupts frames (CRC errors on RTU), ``slow`` delays answers, ``drop`` closes every connection
(the server restarts at once), ``restart`` stops the server for ``seconds`` then starts it (the
OPC UA substation keeps its values), ``none`` clears a fault. A device with ``proxy_port`` is
reached through ``firmware_sim.proxy``: there ``silent``, ``slow`` and ``drop`` act on the wire,
which is how an OPC UA substation is made to stop answering or answer slowly. Times come from
an injectable ``sleep`` so tests run scenarios without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceEntry(_Strict):
    name: str
    kind: Literal["meter", "inverter", "substation", "rtu_line"]
    port: int | None = Field(None, ge=1, le=65535)
    serial_port: str | None = None
    units: list[int] = Field(default_factory=lambda: [1])
    seed: int = 1
    proxy_port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _address(self) -> DeviceEntry:
        if self.kind == "rtu_line" and not self.serial_port:
            raise ValueError("an rtu_line needs serial_port")
        if self.kind != "rtu_line" and self.port is None:
            raise ValueError(f"a {self.kind} needs port")
        return self


class Step(_Strict):
    at: float = Field(ge=0)
    device: str
    fault: Literal["none", "busy", "illegal", "silent", "garbage", "slow", "drop", "restart"]
    unit: int | None = None
    seconds: float = Field(1.0, ge=0)


class Scenario(_Strict):
    linger_s: float = Field(0.0, ge=0)
    devices: list[DeviceEntry]
    steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        devices = {d.name: d for d in self.devices}
        for i, step in enumerate(self.steps):
            device = devices.get(step.device)
            if device is None:
                raise ValueError(f"steps[{i}]: unknown device {step.device!r}")
            wire = step.fault in ("silent", "slow", "drop", "restart", "none")
            if device.kind == "substation" and not wire:
                raise ValueError(f"steps[{i}]: an OPC UA substation cannot be {step.fault!r}")
            if (
                device.kind == "substation"
                and step.fault in ("silent", "slow")
                and not (device.proxy_port)
            ):
                raise ValueError(f"steps[{i}]: {step.fault!r} on a substation needs proxy_port")
        return self


def load(path: Path) -> Scenario:
    return Scenario.model_validate(tomllib.loads(path.read_text()))


def _build(entry: DeviceEntry) -> Any:
    from edgetwin.firmware_sim.meter import MeterSimulator, RtuMeterLine, TcpSimulator

    if entry.kind == "meter":
        return MeterSimulator(port=entry.port or 0, seed=entry.seed)
    if entry.kind == "inverter":
        from edgetwin.firmware_sim.sunspec_inverter import InverterUnit

        return TcpSimulator(InverterUnit(seed=entry.seed), port=entry.port or 0)
    if entry.kind == "substation":
        from edgetwin.firmware_sim.opcua_substation import SubstationSimulator

        return SubstationSimulator(port=entry.port or 0, seed=entry.seed)
    return RtuMeterLine(entry.serial_port or "", entry.units, parity="N", seed=entry.seed)


async def _apply(device: Any, step: Step, proxy: Any) -> None:
    fault: Any = None if step.fault == "none" else step.fault
    if step.fault == "slow":
        fault = ("slow", step.seconds)
    if proxy is not None and step.fault in ("silent", "slow", "none", "drop"):
        if step.fault == "drop":
            proxy.drop()
        else:
            proxy.mode = fault or "pass"
        if getattr(device, "units", None) is None and not hasattr(device, "fault"):
            return  # the proxy is all this device has
    if step.fault in ("drop", "restart"):
        down = 0.0 if step.fault == "drop" else step.seconds
        if hasattr(device, "restart"):
            await device.restart(down)
        else:
            await device.stop()
            await asyncio.sleep(down)
            await device.start()
        return
    units = getattr(device, "units", None)
    if units is not None:  # an RTU line: one unit, or all of them
        for uid, unit in units.items():
            if step.unit is None or uid == step.unit:
                unit.fault = fault
    elif hasattr(device, "fault"):
        device.fault = fault


async def run(
    scenario: Scenario,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_step: Callable[[Step, dict[str, Any]], Awaitable[None]] | None = None,
) -> None:
    """Start the devices, play the steps in time order, linger, stop. ``on_step(step,
    devices)`` is awaited after each step is applied (tests probe the devices there)."""
    from edgetwin.firmware_sim.proxy import FaultProxy

    devices: dict[str, Any] = {}
    proxies: dict[str, FaultProxy] = {}
    async with contextlib.AsyncExitStack() as stack:
        for entry in scenario.devices:
            devices[entry.name] = await stack.enter_async_context(_build(entry))
            if entry.proxy_port is not None and entry.port is not None:
                proxies[entry.name] = await stack.enter_async_context(
                    FaultProxy(port=entry.proxy_port, target_port=entry.port)
                )
        now = 0.0
        for step in sorted(scenario.steps, key=lambda s: s.at):
            await sleep(step.at - now)
            now = step.at
            log.info("scenario: t=%.1f %s %s", step.at, step.device, step.fault)
            await _apply(devices[step.device], step, proxies.get(step.device))
            if on_step is not None:
                await on_step(step, devices)
        await sleep(scenario.linger_s)
