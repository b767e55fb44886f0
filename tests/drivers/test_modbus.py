"""The Modbus TCP driver against the simulated meter (a real pymodbus server on loopback)."""

from __future__ import annotations

import pytest

from edgetwin.agent.tools.broker import free_port
from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.models import Validity
from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus import ModbusTcpConfig, ModbusTcpDriver
from edgetwin.firmware_sim import meter as sim_meter
from edgetwin.firmware_sim.meter import MeterSimulator


def cfg(port: int, **kw: object) -> ModbusTcpConfig:
    return ModbusTcpConfig(
        name="m", driver="modbus_tcp", host="127.0.0.1", port=port, timeout_s=0.3, **kw
    )  # type: ignore[arg-type]


def hr(key: str, addr: int, dtype: str = "float32", order: str = "ABCD") -> PointSpec:
    return PointSpec(key, addr, dtype, "holding", order)  # type: ignore[arg-type]


TYPED = [
    hr("hz", 48),
    hr("hz_cdab", 200, order="CDAB"),
    hr("hz_badc", 202, order="BADC"),
    hr("hz_dcba", 204, order="DCBA"),
    hr("i32", 206, "int32"),
    hr("i16", 208, "int16"),
    hr("f64", 209, "float64"),
    hr("i64", 213, "int64", "DCBA"),
    hr("u32", 217, "uint32", "CDAB"),
    hr("energy", 100, "uint64"),
    hr("hz100", 112, "uint16"),
]


async def test_every_type_and_word_order_decodes(meter: MeterSimulator) -> None:
    async with ModbusTcpDriver(cfg(meter.port), TYPED) as drv:
        got = {r.point: r.value for r in await drv.read(TYPED)}
    assert all(
        isinstance(v, float) and 59.9 < v < 60.1 for k, v in got.items() if k.startswith("hz_")
    )
    assert got["i32"] == sim_meter.CONST_INT32
    assert got["i16"] == sim_meter.CONST_INT16
    assert got["i64"] == sim_meter.CONST_INT64
    assert got["u32"] == sim_meter.CONST_UINT32
    assert got["energy"] >= 12_345_678
    assert 5990 <= got["hz100"] <= 6010
    assert got["f64"] > 0


async def test_points_are_merged_into_few_requests(meter: MeterSimulator) -> None:
    points = [hr(f"p{a}", a) for a in range(0, 50, 2)]  # 25 float32 = 50 registers
    async with ModbusTcpDriver(cfg(meter.port), points) as drv:
        before = meter.requests
        readings = await drv.read(points)
    assert len(readings) == 25 and all(r.quality.is_good for r in readings)
    assert meter.requests - before == 1
    assert drv.stats["requests"] == 1


async def test_mutually_consistent_meter_values(meter: MeterSimulator) -> None:
    pts = [
        hr(k, a) for k, a in [("v", 0), ("a", 8), ("w", 16), ("var", 24), ("va", 32), ("pf", 40)]
    ]
    async with ModbusTcpDriver(cfg(meter.port), pts) as drv:
        r = {x.point: x.value for x in await drv.read(pts)}
    assert r["va"] == pytest.approx(r["v"] * r["a"], rel=1e-4)
    assert r["w"] == pytest.approx(r["va"] * r["pf"], rel=1e-4)
    assert r["var"] ** 2 + r["w"] ** 2 == pytest.approx(r["va"] ** 2, rel=1e-4)


async def test_illegal_address_marks_only_that_block_bad_reference(meter: MeterSimulator) -> None:
    pts = [hr("good", 48), hr("missing", 400, "uint16")]
    async with ModbusTcpDriver(cfg(meter.port), pts) as drv:
        r = {x.point: x for x in await drv.read(pts)}
    assert r["good"].quality.is_good
    assert r["missing"].value is None
    assert r["missing"].quality.validity is Validity.INVALID
    assert "badReference" in r["missing"].quality.detail


async def test_busy_device_marks_points_failed(meter: MeterSimulator) -> None:
    meter.fault = "busy"
    async with ModbusTcpDriver(cfg(meter.port), [hr("hz", 48)]) as drv:
        (r,) = await drv.read([hr("hz", 48)])
    assert r.quality.validity is Validity.INVALID and "failure" in r.quality.detail


async def test_silent_device_raises_unavailable(meter: MeterSimulator) -> None:
    meter.fault = "silent"
    async with ModbusTcpDriver(cfg(meter.port), [hr("hz", 48)]) as drv:
        with pytest.raises(DeviceUnavailable):
            await drv.read([hr("hz", 48)])


async def test_nothing_listening_raises_unavailable() -> None:
    drv = ModbusTcpDriver(cfg(free_port()), [hr("hz", 48)])
    with pytest.raises(DeviceUnavailable):
        await drv.connect()


async def test_coils_discrete_inputs_and_writes(meter: MeterSimulator) -> None:
    coil = PointSpec("relay", 0, "bool", "coil")
    tamper = PointSpec("tamper", 0, "bool", "discrete")
    setpoint = hr("setpoint", 250, "int32", "CDAB")
    async with ModbusTcpDriver(cfg(meter.port), [coil, tamper, setpoint]) as drv:
        await drv.write(coil, True)
        await drv.write(setpoint, -77777)
        meter.tamper = True
        r = {x.point: x.value for x in await drv.read([coil, tamper, setpoint])}
        assert r == {"relay": True, "tamper": True, "setpoint": -77777}
        with pytest.raises(DeviceRejected):
            await drv.write(tamper, True)  # discrete inputs are read-only


def test_unservable_points_are_rejected_before_any_io() -> None:
    for bad in (
        PointSpec("x", 70000, "uint16", "holding"),
        PointSpec("x", 1, "float32", "coil"),
        PointSpec("x", 1, "uint16", "eeprom"),
        PointSpec("x", 1, "bool", "holding"),
    ):
        with pytest.raises(ValueError):
            ModbusTcpDriver(cfg(1), [bad])
