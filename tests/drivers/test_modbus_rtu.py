"""Modbus RTU over a real serial line (a socat pty pair) with several unit ids, and RTU framing
over TCP. The simulated units answer through pymodbus' serial server on the other end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.framer import FramerType

from edgetwin.agent.runtime.running import RunningDevice
from edgetwin.agent.tools.broker import free_port
from edgetwin.core.clock import ManualClock
from edgetwin.core.errors import ConfigError, DeviceUnavailable
from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus import (
    ModbusRtuConfig,
    ModbusRtuDriver,
    ModbusRtuOverTcpConfig,
    ModbusRtuOverTcpDriver,
)
from edgetwin.firmware_sim.meter import MeterSimulator, RtuMeterLine
from tests.agent.test_running import Sink
from tests.helpers import until

HZ = PointSpec("hz", 48, "float32", "holding")
VOLTS = PointSpec("va", 0, "float32", "holding")
UNITS = [1, 2, 3]


@pytest.fixture
async def line(serial_pair: tuple[str, str]) -> AsyncIterator[tuple[RtuMeterLine, str]]:
    device_end, agent_end = serial_pair
    # 8N1: Linux ptys refuse to re-apply parity E (tcsetattr EINVAL) and carry no parity anyway
    sim = RtuMeterLine(device_end, UNITS, baudrate=115200, parity="N")
    async with sim:
        yield sim, agent_end


def rtu(port: str, unit: int, **kw: Any) -> ModbusRtuConfig:
    return ModbusRtuConfig(
        name=f"u{unit}",
        driver="modbus_rtu",
        serial_port=port,
        unit_id=unit,
        baudrate=115200,
        parity="N",
        timeout_s=0.3,
        poll_interval_s=1.0,
        backoff_initial_s=4.0,
        backoff_max_s=8.0,
        **kw,
    )


async def test_several_units_share_one_line(line: tuple[RtuMeterLine, str]) -> None:
    sim, port = line
    shared: dict[str, Any] = {}
    drivers = [ModbusRtuDriver(rtu(port, u), [HZ, VOLTS], shared) for u in UNITS]
    assert len(shared) == 1  # one link, one lock for the whole line
    for d in drivers:
        await d.connect()
    # concurrent polls are serialised by the link's lock, and each unit answers for itself
    results = await asyncio.gather(*(d.read([HZ, VOLTS]) for d in drivers))
    for unit, readings in zip(UNITS, results, strict=True):
        got = {r.point: r.value for r in readings}
        assert got["va"] == pytest.approx(sim.units[unit].model.state.volts["phsA"], rel=1e-6)
    # HZ (48) and VOLTS (0) are 46 registers apart, beyond max_gap: two requests per unit
    assert all(sim.units[u].requests == 2 for u in UNITS)
    assert drivers[0]._link.requests == 6
    for d in drivers:
        await d.close()


async def test_silent_unit_is_backed_off_without_slowing_the_others(
    line: tuple[RtuMeterLine, str],
) -> None:
    sim, port = line
    sim.units[2].fault = "silent"
    clock, sink, shared = ManualClock(), Sink(), {}
    devices = [
        RunningDevice(cfg, ModbusRtuDriver(cfg, [HZ], shared), [HZ], sink, clock)
        for cfg in (rtu(port, u) for u in UNITS)
    ]
    tasks = [asyncio.create_task(d.run()) for d in devices]
    try:
        await until(
            lambda: (
                devices[0].stats.polls == 1
                and devices[2].stats.polls == 1
                and devices[1].stats.failures == 1
            )
        )
        for tick in range(2, 7):  # 5 poll periods: the silent unit is retried only after 4 s
            clock.advance(1.0)
            await until(
                lambda tick=tick: devices[0].stats.polls == tick and devices[2].stats.polls == tick
            )
        assert devices[1].stats.failures <= 2 and not devices[1].stats.available
        # the error says why (our timeout or pymodbus' own, whichever fired first), never ""
        why = (devices[1].stats.last_error or "").split(": ", 2)[-1]
        assert why.strip() and why.strip() != "tcp", devices[1].stats.last_error
        silent_attempts = sim.units[2].requests
        assert silent_attempts <= 2  # the line was not spent on the dead unit every poll
        sim.units[2].fault = None  # it comes back
        clock.advance(8.0)
        await until(lambda: devices[1].stats.available)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_crc_errors_are_bad_frames_not_crashes(line: tuple[RtuMeterLine, str]) -> None:
    sim, port = line
    shared: dict[str, Any] = {}
    d3, d1 = (ModbusRtuDriver(rtu(port, u), [HZ], shared) for u in (3, 1))
    async with d3, d1:
        sim.units[3].fault = "garbage"  # its answers arrive with a broken CRC
        with pytest.raises(DeviceUnavailable):
            await d3.read([HZ])
        (ok,) = await d1.read([HZ])  # the line is still usable for the others
        assert ok.quality.is_good
        sim.units[3].fault = None
        await asyncio.sleep(0.05)
        (again,) = await d3.read([HZ])
        assert again.quality.is_good


async def test_units_on_one_line_must_agree_on_its_settings(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    from edgetwin.agent.runtime.config import load_config

    cfg = tmp_path / "c.toml"
    devices = "".join(
        f'[[devices]]\nname = "u{u}"\ndriver = "modbus_rtu"\nserial_port = "/dev/ttyUSB0"\n'
        f"unit_id = {u}\nbaudrate = {baud}\n"
        for u, baud in ((1, 19200), (2, 9600))
    )
    twins = "".join(
        f'[[twins]]\nmrid = "00000000-0000-4000-8000-00000000000{u}"\nkind = "meter"\n'
        f'device = "u{u}"\npoint_map = "sim_meter"\n'
        for u in (1, 2)
    )
    cfg.write_text(
        f'agent_id = "a"\n[signing]\nkey_file = "{keys["private"]}"\nkey_id = "a"\n'
        + devices
        + twins
    )
    with pytest.raises(ConfigError, match=r"twins\[1\]: devices on rtu:/dev/ttyUSB0 disagree"):
        load_config(cfg)


async def test_rtu_framing_over_tcp() -> None:
    async with MeterSimulator(port=free_port(), framer=FramerType.RTU) as sim:
        cfg = ModbusRtuOverTcpConfig(
            name="conv",
            driver="modbus_rtu_over_tcp",
            host="127.0.0.1",
            port=sim.port,
            unit_id=7,
            timeout_s=0.5,
        )
        async with ModbusRtuOverTcpDriver(cfg, [HZ]) as drv:
            (r,) = await drv.read([HZ])
        assert r.value == pytest.approx(sim.model.state.hz, rel=1e-6)


@pytest.mark.parametrize(
    ("port", "expected"),
    [("/dev/null", "not a serial device"), ("/dev/ttyNOSUCH", "no such device")],
    ids=["not-a-tty", "unplugged"],
)
async def test_a_port_that_will_not_open_says_why(port: str, expected: str) -> None:
    drv = ModbusRtuDriver(rtu(port, 1), [HZ], {})
    with pytest.raises(DeviceUnavailable, match=expected):
        await drv.connect()
    await drv.close()


def test_check_shows_where_rtu_and_opc_ua_devices_are() -> None:
    from edgetwin.agent.tools.cli import _where
    from edgetwin.drivers.opcua import OpcUaConfig

    assert _where(rtu("/dev/ttyUSB0", 7)) == "/dev/ttyUSB0 115200 8N1 unit 7"  # was "?:?"
    opc = OpcUaConfig(name="s", driver="opcua", url="opc.tcp://10.0.0.8:4840")
    assert _where(opc) == "opc.tcp://10.0.0.8:4840"
