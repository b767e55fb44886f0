"""SunSpec discovery and decoding against the simulated inverter (a real pymodbus server)."""

from __future__ import annotations

import math

import pytest

from edgetwin.agent.tools.broker import free_port
from edgetwin.core.errors import DeviceRejected
from edgetwin.core.models import Validity
from edgetwin.core.points import PointSpec
from edgetwin.drivers.sunspec import SunSpecConfig, SunSpecDriver, spans
from edgetwin.firmware_sim.meter import MeterSimulator, TcpSimulator
from edgetwin.firmware_sim.sunspec_inverter import InverterUnit

NOON = 12 * 3600.0


def cfg(port: int, **kw: object) -> SunSpecConfig:
    return SunSpecConfig(
        name="inv", driver="sunspec", host="127.0.0.1", port=port, timeout_s=0.5, **kw
    )  # type: ignore[arg-type]


def pts(*addresses: str) -> list[PointSpec]:
    return [PointSpec(a, a) for a in addresses]


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_discovery_finds_the_model_chain_at_each_base(base: int) -> None:
    async with TcpSimulator(InverterUnit(base=base), port=free_port()) as sim:
        async with SunSpecDriver(cfg(sim.port), pts("inverter.W")) as drv:
            assert [(m.id, m.length) for m in drv.models] == [(1, 66), (103, 50), (120, 26)]
            assert drv.models[0].address == base + 2


async def test_values_decode_with_scale_factors_and_sentinels() -> None:
    unit = InverterUnit(clock=lambda: NOON, seed=3)
    async with TcpSimulator(unit, port=free_port()) as sim:
        points = pts(
            "inverter.W",
            "inverter.Hz",
            "inverter.A",
            "inverter.PhVphA",
            "inverter.WH",
            "inverter.St",
            "inverter.TmpSnk",
            "nameplate.WRtg",
            "meter.W",
        )
        async with SunSpecDriver(cfg(sim.port), points) as drv:
            got = {r.point: r for r in await drv.read(points)}
    st = unit.model.state
    assert got["inverter.W"].value == round(st.ac_w)
    assert got["inverter.Hz"].value == pytest.approx(st.hz, abs=0.006)  # Hz_SF = -2
    assert got["inverter.A"].value == pytest.approx(sum(st.amps.values()), abs=0.006)
    assert got["inverter.PhVphA"].value == pytest.approx(st.volts["phsA"], abs=0.06)
    assert got["inverter.WH"].value == round(st.wh)
    assert got["inverter.St"].value == 4  # MPPT at noon
    assert got["nameplate.WRtg"].value == 10_000
    for missing in ("inverter.TmpSnk", "meter.W"):  # not implemented / no such model
        assert got[missing].value is None
        assert got[missing].quality.validity is Validity.INVALID
        assert "badReference" in got[missing].quality.detail


async def test_a_poll_takes_the_minimum_number_of_requests() -> None:
    async with TcpSimulator(InverterUnit(), port=free_port()) as sim:
        points = pts("common.DA", "inverter.W", "inverter.Hz", "nameplate.WRtg")
        async with SunSpecDriver(cfg(sim.port), points) as drv:
            span = drv.models[-1].end - drv.models[0].address  # 1, 103 and 120 back to back
            before = sim.requests
            await drv.read(points)
            assert sim.requests - before == math.ceil(span / 125) == 2
            only_103 = pts("inverter.W")
            before = sim.requests
            await drv.read(only_103)
            assert sim.requests - before == 1  # only the model the points need


async def test_a_device_without_sunspec_is_refused_at_connect() -> None:
    async with MeterSimulator(port=free_port()) as sim:
        drv = SunSpecDriver(cfg(sim.port, base_addresses=[0]), pts("inverter.W"))
        with pytest.raises(DeviceRejected, match="no SunSpec marker"):
            await drv.connect()


def test_addresses_are_checked_offline() -> None:
    for bad in ("W", "inverter.Watts", "battery.W", "99999.W"):
        with pytest.raises((ValueError, KeyError)):
            SunSpecDriver(cfg(1), pts(bad))


def test_spans_merge_and_split() -> None:
    from edgetwin.drivers.sunspec import FoundModel

    models = [FoundModel(1, 40002, 66), FoundModel(103, 40070, 50), FoundModel(160, 40500, 10)]
    assert spans(models, max_gap=10) == [(40002, 120), (40500, 12)]  # 1 and 103 back to back
    models.append(FoundModel(120, 40122, 26))  # now 148 registers in a row: two requests
    assert spans(models, max_gap=10) == [(40002, 125), (40127, 23), (40500, 12)]


class BootingInverter(InverterUnit):
    """Answers busy (exception 6) to chosen requests, as inverters do while they boot."""

    def __init__(self, busy_on: set[int], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.busy_on = busy_on

    def on_request(self, function_code: int, registers: list[int]):  # type: ignore[no-untyped-def]
        from pymodbus.constants import ExcCodes

        return ExcCodes.DEVICE_BUSY if self.requests in self.busy_on else None


@pytest.mark.parametrize("busy_on", [{1}, {3}, {4}], ids=["marker", "first-model", "mid-chain"])
async def test_a_busy_reply_during_discovery_is_retried_not_taken_as_the_layout(
    busy_on: set[int],
) -> None:
    """One busy reply used to end discovery: every point stayed badReference for good while
    the device showed available. Now the connect fails (retried by the runtime's backoff)
    and the next one finds the whole chain."""
    from edgetwin.core.errors import DeviceUnavailable

    unit = BootingInverter(busy_on, clock=lambda: NOON)
    async with TcpSimulator(unit, port=free_port()) as sim:
        drv = SunSpecDriver(cfg(sim.port), pts("inverter.W"))
        with pytest.raises((DeviceUnavailable, DeviceRejected)):
            await drv.connect()
        await drv.connect()  # the runtime's retry
        try:
            assert [m.id for m in drv.models] == [1, 103, 120]
            (w,) = await drv.read(pts("inverter.W"))
            assert w.quality.is_good
        finally:
            await drv.close()
