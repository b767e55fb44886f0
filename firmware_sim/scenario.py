"""Fault scenarios: one TOML format that starts simulated devices and misbehaves on schedule.

``python -m edgetwin.firmware_sim run SCENARIO`` runs one until its last step (plus ``linger_s``)::

    linger_s = 5
    [[devices]]
    name = "meter1"
    kind = "meter"              # meter | inverter | substation | rtu_line | dnp3 | iec104 | dlms
    port = 5020                 # TCP devices; rtu_line: serial_port = "/dev/pts/7", units = [1, 2]
                                # dnp3: port or serial_port, outstations = [10, 11]
    proxy_port = 5021           # optional: clients connect here, through a fault proxy
    [[steps]]
    at = 10.0                   # seconds after the start
    device = "meter1"
    unit = 2                    # rtu_line only: which unit misbehaves
    fault = "silent"            # none | busy | illegal | silent | garbage | slow | drop | restart
                                # dnp3 / iec104 also: quality | local | overflow | need_time
                                # dlms also: password | invalid | outage | drift
    seconds = 2.0               # slow: answer delay; restart: downtime

``busy`` / ``illegal`` answer Modbus exception 6 / 2, ``silent`` stops answering, ``garbage``
corrupts frames (CRC errors on RTU), ``slow`` delays answers, ``drop`` closes every connection
(the server restarts at once), ``restart`` stops the server for ``seconds`` then starts it (the
OPC UA substation keeps its values), ``none`` clears a fault. A device with ``proxy_port`` is
reached through ``firmware_sim.proxy``: there ``silent``, ``slow`` and ``drop`` act on the wire,
which is how an OPC UA substation is made to stop answering or answer slowly. Times come from
an injectable ``sleep`` so tests run scenarios without waiting.

The SCADA stations (``dnp3``: ``firmware_sim.dnp3_outstation``, ``iec104``:
``firmware_sim.iec104_station``) take ``drop`` (the connection closed), ``restart`` (a DNP3
outstation's cold restart, IIN1.7, of ``outstation``; an IEC 104 station drops every
connection), ``slow`` (answers ``seconds`` late), ``quality`` (``point`` -- ``"ai:0"`` for DNP3,
an IOA for IEC 104 -- gets ``flags``, e.g. ``["comm_lost"]`` or ``["Invalid"]``; no flags: good
again), ``local`` (``breaker`` N refuses commands; ``none`` gives it back), ``overflow`` (DNP3:
more events than the buffer holds, IIN2.3) and ``need_time`` (DNP3: IIN1.4).

A DLMS meter (``dlms``: ``firmware_sim.dlms_meter``, LLS with ``password``, 35 days of
profile) takes ``silent``, ``slow`` (``seconds`` late), ``drop`` (connections closed),
``restart`` (a reboot: dropped, power down / up logged), ``password`` (its password changes:
the agent's is now wrong), ``invalid`` (the current interval flagged data not valid),
``outage`` (the supply fails: no answers, no capture, logged; ``none`` brings it back) and
``drift`` (its clock moves by ``seconds``); ``none`` clears every fault.
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
    kind: Literal["meter", "inverter", "substation", "rtu_line", "dnp3", "iec104", "dlms"]
    port: int | None = Field(None, ge=1, le=65535)
    serial_port: str | None = None
    units: list[int] = Field(default_factory=lambda: [1])
    seed: int = 1
    proxy_port: int | None = Field(None, ge=1, le=65535)
    outstations: list[int] = Field(default_factory=lambda: [10])  # dnp3 link addresses
    breakers: int = Field(2, ge=0, le=256)
    feeders: int = Field(2, ge=0, le=1000)
    password: str = "12345678"  # dlms: the LLS password

    @model_validator(mode="after")
    def _address(self) -> DeviceEntry:
        if self.kind == "rtu_line" and not self.serial_port:
            raise ValueError("an rtu_line needs serial_port")
        if self.kind == "dnp3" and (self.port is None) == (self.serial_port is None):
            raise ValueError("a dnp3 station needs port or serial_port")
        if self.kind not in ("rtu_line", "dnp3") and self.port is None:
            raise ValueError(f"a {self.kind} needs port")
        return self


class Step(_Strict):
    at: float = Field(ge=0)
    device: str
    fault: Literal["none", "busy", "illegal", "silent", "garbage", "slow", "drop", "restart",
                   "quality", "local", "overflow", "need_time", "password", "invalid",
                   "outage", "drift"]  # fmt: skip
    unit: int | None = None
    seconds: float = Field(1.0, ge=0)
    outstation: int | None = None  # dnp3: which outstation (default: the first)
    point: str | None = None  # quality: "ai:0" (dnp3) or an IOA (iec104)
    flags: list[str] = Field(default_factory=list)
    breaker: int = Field(0, ge=0)


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
            scada = step.fault in ("quality", "local", "overflow", "need_time")
            meter = step.fault in ("password", "invalid", "outage", "drift")
            if meter != (device.kind == "dlms") and meter:
                raise ValueError(f"steps[{i}]: {step.fault!r} is for dlms meters")
            if device.kind == "dlms" and not (meter or wire):
                raise ValueError(f"steps[{i}]: a dlms meter cannot be {step.fault!r}")
            if scada != (device.kind in ("dnp3", "iec104")) and scada:
                raise ValueError(f"steps[{i}]: {step.fault!r} is for dnp3 and iec104 stations")
            if device.kind in ("dnp3", "iec104") and not (scada or wire):
                raise ValueError(f"steps[{i}]: a {device.kind} station cannot be {step.fault!r}")
            if step.fault == "quality" and not step.point:
                raise ValueError(f"steps[{i}]: a quality fault needs point")
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
    if entry.kind == "dnp3":
        from edgetwin.firmware_sim.dnp3_outstation import Dnp3Station

        return Dnp3Station(
            entry.port,
            serial=entry.serial_port,
            addresses=tuple(entry.outstations),
            breakers=entry.breakers,
            feeders=entry.feeders,
            seed=entry.seed,
        )
    if entry.kind == "dlms":
        from edgetwin.firmware_sim.dlms_meter import DlmsMeter

        return DlmsMeter(entry.port or 0, password=entry.password.encode())
    if entry.kind == "iec104":
        from edgetwin.firmware_sim.iec104_station import Iec104Station

        return Iec104Station(entry.port or 0, breakers=entry.breakers, feeders=entry.feeders,
                             seed=entry.seed)  # fmt: skip
    return RtuMeterLine(entry.serial_port or "", entry.units, parity="N", seed=entry.seed)


def _apply_scada(station: Any, step: Step) -> None:
    """A fault on a DNP3 or IEC 104 station (``dnp3_outstation``, ``iec104_station``)."""
    dnp3 = hasattr(station, "outstations")
    address = (
        step.outstation
        if step.outstation is not None
        else next(iter(getattr(station, "outstations", [0])))
    )
    target: tuple[Any, ...] = (address,) if dnp3 else ()
    if step.fault == "none":
        station.slow_s = 0.0
        station.local_mode(*target, step.breaker, False)
    elif step.fault == "slow":
        station.slow_s = step.seconds
    elif step.fault == "drop":
        station.drop() if dnp3 else station.restart()
    elif step.fault == "restart":
        station.restart(*target)
    elif step.fault == "local":
        station.local_mode(*target, step.breaker, True)
    elif step.fault == "quality":
        point = str(step.point)
        if dnp3:
            kind, _, index = point.partition(":")
            station.set_quality(address, kind, int(index), *step.flags)
        else:
            station.set_quality(int(point.rpartition(":")[2]), *step.flags)
    elif step.fault == "overflow":
        station.overflow(address)
    elif step.fault == "need_time":
        station.need_time(address)


def _apply_meter(meter: Any, step: Step, password: bytes) -> None:
    """A fault on a simulated DLMS meter (``firmware_sim.dlms_meter``)."""
    st = meter.state
    if step.fault == "none":
        meter.fault, meter.delay_s, meter.password = None, 0.0, password
        meter.power_up()
    elif step.fault in ("silent", "drop"):
        meter.fault = step.fault
        if step.fault == "drop":
            meter.drop_connections()
    elif step.fault == "slow":
        meter.delay_s = step.seconds
    elif step.fault == "restart":
        meter.reboot()
    elif step.fault == "password":
        meter.password = password + b"-changed"
    elif step.fault == "invalid":
        st.invalid.add(int(st.time() // st.period_s + 1) * st.period_s)
    elif step.fault == "outage":
        meter.power_down()
    elif step.fault == "drift":
        st.offset_s += step.seconds


async def _apply(device: Any, step: Step, proxy: Any, entry: DeviceEntry | None = None) -> None:
    if entry is not None and entry.kind == "dlms":
        _apply_meter(device, step, entry.password.encode())
        return
    if hasattr(device, "set_quality"):  # a SCADA station
        await asyncio.to_thread(_apply_scada, device, step)
        return
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
            built = _build(entry)
            if hasattr(built, "__aenter__"):
                devices[entry.name] = await stack.enter_async_context(built)
            else:  # the SCADA stations run in their own threads
                devices[entry.name] = stack.enter_context(built)
            if entry.proxy_port is not None and entry.port is not None:
                proxies[entry.name] = await stack.enter_async_context(
                    FaultProxy(port=entry.proxy_port, target_port=entry.port)
                )
        now = 0.0
        for step in sorted(scenario.steps, key=lambda s: s.at):
            await sleep(step.at - now)
            now = step.at
            log.info("scenario: t=%.1f %s %s", step.at, step.device, step.fault)
            entry = next(d for d in scenario.devices if d.name == step.device)
            await _apply(devices[step.device], step, proxies.get(step.device), entry)
            if on_step is not None:
                await on_step(step, devices)
        await sleep(scenario.linger_s)
