"""The IEC 60870-5-104 driver against a real controlled station (c104's server, firmware_sim)
on loopback: interrogation, spontaneous reports, quality, commands and their refusals, a
station restart and the redundant server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgetwin.agent.tools.broker import free_port
from edgetwin.core.errors import DeviceRejected
from edgetwin.core.models import Validity
from edgetwin.core.points import PointSpec
from edgetwin.drivers.iec104 import Iec104Config, Iec104Driver, quality_bits
from edgetwin.firmware_sim.iec104_station import Iec104Station
from tests.helpers import eventually, image, reconnected_after_loss, until

POINTS = [PointSpec("pos", "dp:100"), PointSpec("amps", "float:300"), PointSpec("kv", "sva:320"),
          PointSpec("pf", "nva:340"), PointSpec("kwh", "it:400"), PointSpec("local", "sp:200"),
          PointSpec("missing", "float:999"), PointSpec("wrong", "sp:300"),
          PointSpec("cmd", "dc:1100")]  # fmt: skip


def config(port: int, **kw: object) -> Iec104Config:
    return Iec104Config(name="rtu", driver="iec104", host="127.0.0.1", port=port, t1_s=5,
                        t2_s=2, **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("bits", "counter", "validity", "detail", "source", "blocked"),
    [
        (0x00, False, "good", set(), "process", False),
        (0x80, False, "invalid", set(), "process", False),  # IV
        (0x40, False, "questionable", {"oldData"}, "process", False),  # NT
        (0x01, False, "questionable", {"overflow"}, "process", False),  # OV
        (0x08, False, "questionable", {"inaccurate"}, "process", False),  # EI
        (0x20, False, "good", set(), "substituted", False),  # SB
        (0x10, False, "good", set(), "process", True),  # BL
        (0xC1, False, "invalid", {"oldData", "overflow"}, "process", False),  # IV wins
        (0x40, True, "questionable", {"overflow"}, "process", False),  # counter CY
        (0x20, True, "questionable", {"inconsistent"}, "process", False),  # counter CA
        (0x80, True, "invalid", set(), "process", False),  # counter IV
    ],
)
def test_quality_descriptors_map_to_iec_61850(
    bits: int, counter: bool, validity: str, detail: set[str], source: str, blocked: bool
) -> None:
    q = quality_bits(bits, counter=counter)
    assert (q.validity.value, set(q.detail), q.source, q.operator_blocked) == (
        validity, detail, source, blocked)  # fmt: skip


def test_timers_and_addresses_are_checked() -> None:
    with pytest.raises(ValidationError, match="t2_s must be less than t1_s"):
        Iec104Config(name="r", driver="iec104", host="127.0.0.1", t1_s=5, t2_s=5)
    with pytest.raises(ValueError, match="KIND:IOA"):
        Iec104Driver(config(2404), [PointSpec("x", "ai:3")])


async def test_interrogation_spontaneous_quality_and_commands() -> None:
    port = free_port()
    with Iec104Station(port, travel_s=0.3) as station:
        driver = Iec104Driver(config(port), POINTS)
        await driver.connect()  # STARTDT, general interrogation waited for, counters, clock
        try:
            got = await image(driver, POINTS)
            assert got["pos"].value == 2 and got["local"].value is False  # closed, remote
            assert got["amps"].value == pytest.approx(200.0) and got["kv"].value == 1150
            assert got["pf"].value == pytest.approx(0.95, abs=1e-3)
            assert got["kwh"].value >= 1000
            assert all(got[k].quality.is_good for k in ("pos", "amps", "kv", "pf", "kwh"))
            for k in ("missing", "wrong", "cmd"):  # not reported / another kind / a command
                assert got[k].quality.validity is Validity.INVALID
                assert "badReference" in got[k].quality.detail
            await until(lambda: station.clock_syncs >= 1, 10, "clock synchronised")
            # a spontaneous invalid report: value withheld, quality invalid
            station.set_quality(300, "Invalid")

            async def amps_invalid() -> bool:
                r = (await image(driver, POINTS))["amps"]
                return r.quality.validity is Validity.INVALID and r.value is None

            await eventually(amps_invalid)
            # open by select-before-execute: intermediate, then open after the travel time
            await driver.write(POINTS[-1], False)
            assert station.commands == [(0, False)]
            positions: list[object] = []

            async def opened() -> bool:
                r = (await image(driver, POINTS))["pos"]
                positions.append(r.value)
                return r.value == 1

            await eventually(opened)
            assert 0 in positions  # travelled through intermediate (0.3 s), polled every 20 ms
            station.local_mode(0)
            with pytest.raises(DeviceRejected, match="negative confirmation"):
                await driver.write(POINTS[-1], True)
            with pytest.raises(DeviceRejected, match="monitored object"):
                await driver.write(POINTS[0], True)
            assert station.commands == [(0, False)]  # the refused close never executed
        finally:
            await driver.close()


async def test_a_station_restart_is_a_lost_connection_then_a_fresh_interrogation() -> None:
    port = free_port()
    with Iec104Station(port) as station:
        driver = Iec104Driver(config(port), POINTS)
        await driver.connect()
        station.restart()

        await reconnected_after_loss(driver, POINTS)
        assert driver.stats["interrogations"] == 2
        assert {r.point: r.value for r in await driver.read(POINTS)}["pos"] == 2
        await driver.close()


async def test_the_redundant_server_is_used_when_the_first_refuses() -> None:
    dead, port = free_port(), free_port()
    with Iec104Station(port):
        driver = Iec104Driver(
            config(dead, redundant_host="127.0.0.1", redundant_port=port, connect_timeout_s=2),
            POINTS,
        )
        await driver.connect()
        try:
            assert driver.stats["switchovers"] == 1
            assert {r.point: r.value for r in await driver.read(POINTS)}["pos"] == 2
        finally:
            await driver.close()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers()))
def test_any_address_is_parsed_or_refused_with_the_expected_form(address: object) -> None:
    from edgetwin.drivers.iec104 import MAX_IOA, parse_address

    try:
        kind, ioa = parse_address(address)  # type: ignore[arg-type]
    except ValueError as err:
        assert "KIND:IOA" in str(err)
    else:
        assert (0 <= ioa <= MAX_IOA and f"{kind}:{ioa}" == str(address).lstrip()) or ioa >= 0


@given(st.integers(0, 255), st.booleans())
def test_every_quality_byte_a_station_can_send_maps(bits: int, counter: bool) -> None:
    q = quality_bits(bits, counter=counter)  # never raises: all 256 values of the octet
    assert (q.validity is Validity.INVALID) == bool(bits & 0x80)
