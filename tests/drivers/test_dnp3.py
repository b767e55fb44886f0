"""The DNP3 master against real simulated outstations (dnp3py's outstation, firmware_sim) over
loopback TCP and a socat serial pty: start-up, unsolicited events in order, flags, commands and
their refusals, restart, overflow, a dropped link, slow answers, several outstations on one line,
and hostile bytes from a peer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgetwin.agent.tools.broker import free_port
from edgetwin.core.errors import DeviceRejected, DeviceUnavailable
from edgetwin.core.points import PointSpec
from edgetwin.drivers.dnp3 import (
    Dnp3Config,
    Dnp3Driver,
    command_statuses,
    parse_address,
    quality_bits,
)
from edgetwin.firmware_sim.dnp3_outstation import Dnp3Station
from tests.helpers import eventually, image, reconnected_after_loss, until

POINTS = [PointSpec(k, k) for k in ("dbi:0", "dbi:1", "bi:0", "bo:0", "bo:1", "ai:0", "ai:1",
                                    "ai:2", "c:0", "ao:0", "ai:6", "ai:99")]  # fmt: skip
OUTSTATION = 10


def config(port: int | None = None, **kw: Any) -> Dnp3Config:
    where: dict[str, Any] = {"host": "127.0.0.1", "port": port} if port else {}
    return Dnp3Config(name=f"rtu{kw.get('outstation', OUTSTATION)}", driver="dnp3",
                      **{"outstation": OUTSTATION, "timeout_s": 3.0, **where, **kw})  # fmt: skip


@contextlib.asynccontextmanager
async def connected(driver: Dnp3Driver) -> Any:
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.close()


@pytest.mark.parametrize(
    ("flags", "family", "validity", "detail", "source", "blocked"),
    [
        (0x01, "analog", "good", set(), "process", False),  # ONLINE
        (0x00, "analog", "invalid", set(), "process", False),  # offline
        (0x03, "analog", "invalid", {"oldData"}, "process", False),  # RESTART
        (0x05, "binary", "invalid", {"oldData"}, "process", False),  # COMM_LOST
        (0x09, "analog", "good", set(), "substituted", False),  # REMOTE_FORCED
        (0x11, "binary", "good", set(), "substituted", True),  # LOCAL_FORCED
        (0x21, "binary", "questionable", {"oscillatory"}, "process", False),  # CHATTER_FILTER
        (0x21, "analog", "questionable", {"overflow"}, "process", False),  # OVER_RANGE
        (0x41, "analog", "questionable", {"badReference"}, "process", False),  # REFERENCE_ERR
        (0x21, "counter", "questionable", {"overflow"}, "process", False),  # ROLLOVER
        (0x41, "counter", "questionable", {"inconsistent"}, "process", False),  # DISCONTINUITY
        (0x25, "analog", "invalid", {"oldData", "overflow"}, "process", False),  # invalid wins
    ],
)
def test_flags_map_to_iec_61850(
    flags: int, family: str, validity: str, detail: set[str], source: str, blocked: bool
) -> None:
    q = quality_bits(flags, family)
    assert (q.validity.value, set(q.detail), q.source, q.operator_blocked) == (
        validity, detail, source, blocked)  # fmt: skip


@given(st.integers(0, 255), st.sampled_from(["binary", "analog", "counter"]))
def test_every_flag_octet_maps(flags: int, family: str) -> None:
    q = quality_bits(flags, family)
    offline = not flags & 0x01 or flags & 0x06
    assert (q.validity.value == "invalid") == bool(offline)


@given(st.text(max_size=40) | st.integers())
def test_hostile_addresses_are_refused_with_the_expected_form(address: object) -> None:
    try:
        kind, index = parse_address(address)  # type: ignore[arg-type]
    except ValueError as err:
        assert "KIND:INDEX" in str(err)
    else:
        assert parse_address(f"{kind}:{index}") == (kind, index) and 0 <= index <= 65_535


@given(st.binary(max_size=300))
def test_command_status_of_any_bytes_never_raises(data: bytes) -> None:
    assert isinstance(command_statuses(data), list)


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match=r"host \(TCP\) or serial"):
        Dnp3Config(name="r", driver="dnp3", outstation=10)
    with pytest.raises(ValidationError, match="different link addresses"):
        Dnp3Config(name="r", driver="dnp3", host="127.0.0.1", outstation=1, master=1)
    with pytest.raises(ValueError, match="KIND:INDEX"):
        Dnp3Driver(config(20000), [PointSpec("x", "float:3")])
    shared: dict[str, Any] = {}
    Dnp3Driver(config(20000), POINTS, shared)
    with pytest.raises(ValueError, match="disagree on the master address"):
        Dnp3Driver(config(20000, outstation=11, master=2), POINTS, shared)


async def test_start_up_integrity_restart_time_and_values() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        assert station.iin(OUTSTATION) & 0x90 == 0x90  # DEVICE_RESTART and NEED_TIME at power-up
        async with connected(Dnp3Driver(config(port), POINTS)) as driver:
            r = await image(driver, POINTS)
            assert r["dbi:0"].value == 2 and r["dbi:1"].value == 2  # closed
            assert r["bo:0"].value is True and r["bi:0"].value is False
            assert 100 < r["ai:0"].value < 400 and 10_000 < r["ai:1"].value < 12_000
            assert r["c:0"].value >= 1000 and r["c:0"].quality.is_good
            assert r["ai:99"].value is None and r["ai:99"].quality.detail == {"badReference"}
            # the restart indication was cleared and the clock set (LAN procedure)
            assert station.iin(OUTSTATION) & 0x90 == 0
            assert station.outstations[OUTSTATION].time_syncs == 1
            stats = driver.stats
            assert stats["restarts"] == 1 and stats["integrity_polls"] == 1
            assert stats["time_syncs"] == 1


async def test_a_read_returns_what_changed_and_a_point_asked_alone_always() -> None:
    port = free_port()
    with Dnp3Station(port, refresh_s=0.1):
        driver = Dnp3Driver(config(port, event_poll_interval_s=0), POINTS)
        async with connected(driver):
            assert {r.point for r in await driver.read(POINTS)} == {p.key for p in POINTS}
            await until(lambda: driver.stats["unsolicited"] >= 2, 20, "events")
            changed = {r.point for r in await driver.read(POINTS)}
            assert "ai:1" in changed and "dbi:0" not in changed  # the breaker stood still
            assert [r.point for r in await driver.read([POINTS[0]])] == ["dbi:0"]


async def test_unsolicited_events_arrive_with_their_own_times() -> None:
    port = free_port()
    with Dnp3Station(port, refresh_s=0.1) as station:
        driver = Dnp3Driver(config(port, event_poll_interval_s=0), POINTS)
        async with connected(driver):
            first = (await image(driver, POINTS))["ai:0"]

            async def moved() -> bool:
                r = (await image(driver, POINTS))["ai:0"]
                return driver.stats["unsolicited"] >= 3 and r.value != first.value

            await eventually(moved)
            now = time.time()
            r = (await image(driver, POINTS))["ai:0"]
            assert r.quality.is_good and now - 10 < r.ts <= now + 1 and r.ts != first.ts
            assert driver.stats["event_polls"] == 0  # unsolicited only
            assert station.requests > 0


async def test_select_before_operate_opens_through_intermediate_in_order() -> None:
    port = free_port()
    with Dnp3Station(port, travel_s=0.3) as station:
        async with connected(Dnp3Driver(config(port), POINTS)) as driver:
            await driver.read(POINTS)
            await driver.write(PointSpec("bo:0", "bo:0"), False)  # trip
            assert station.outstations[OUTSTATION].commands == [("crob", 0, False)]
            seen: list[int] = []

            async def opened() -> bool:
                seen.extend(r.value for r in await driver.read([PointSpec("dbi:0", "dbi:0")]))
                return seen[-1] == 1

            await eventually(opened)
            # every change kept in order: closed, intermediate (travelling), open
            changes = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
            assert changes[-2:] == [0, 1]


async def test_refusals_carry_the_outstations_command_status() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        async with connected(Dnp3Driver(config(port), POINTS)) as driver:
            station.local_mode(OUTSTATION, 1)
            with pytest.raises(DeviceRejected) as refused:
                await driver.write(PointSpec("bo:1", "bo:1"), False)
            assert refused.value.answer == "LOCAL" and refused.value.code == 7
            with pytest.raises(DeviceRejected, match="is an input"):
                await driver.write(PointSpec("ai:0", "ai:0"), 1.0)
            assert station.outstations[OUTSTATION].commands == []
            # the session goes on after a refusal
            await driver.write(PointSpec("bo:0", "bo:0"), False)
            assert station.outstations[OUTSTATION].commands == [("crob", 0, False)]


async def test_direct_operate_latch_and_analog_setpoint() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        cfg = config(port, command_mode="direct_operate", crob="latch")
        async with connected(Dnp3Driver(cfg, POINTS)) as driver:
            await driver.write(PointSpec("bo:1", "bo:1"), False)  # LATCH_OFF
            await driver.write(PointSpec("ao:0", "ao:0"), 42)
            model = station.outstations[OUTSTATION]
            assert model.commands == [("crob", 1, False), ("ao", 0, 42)]

            async def echoed() -> bool:  # the set-point is echoed to ai:6 (3 x 2 feeders)
                return (await image(driver, POINTS))["ai:6"].value == 42

            await eventually(echoed)


async def test_point_flags_from_the_outstation_become_quality() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        async with connected(Dnp3Driver(config(port), POINTS)) as driver:
            station.set_quality(OUTSTATION, "ai", 0, "comm_lost")
            station.set_quality(OUTSTATION, "ai", 1, "over_range")
            station.set_quality(OUTSTATION, "dbi", 1, "local_forced")

            async def flagged() -> bool:
                r = await image(driver, POINTS)
                return (r["ai:0"].quality.detail == {"oldData"}
                        and r["ai:1"].quality.detail == {"overflow"}
                        and r["dbi:1"].quality.operator_blocked)  # fmt: skip

            await eventually(flagged)
            r = await image(driver, POINTS)
            assert r["ai:0"].value is None and r["ai:0"].quality.validity.value == "invalid"
            assert (
                r["ai:1"].value is not None and r["ai:1"].quality.validity.value == "questionable"
            )
            assert r["dbi:1"].quality.source == "substituted" and r["dbi:1"].value == 2


async def test_restart_is_detected_and_answered_with_integrity() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        driver = Dnp3Driver(config(port), POINTS)
        await driver.connect()
        try:
            await driver.write(PointSpec("bo:0", "bo:0"), False)
            station.restart(OUTSTATION)  # back closed, link dropped

            await reconnected_after_loss(driver, POINTS)
            r = await image(driver, POINTS)
            assert r["dbi:0"].value == 2  # the fresh integrity poll, not the cached open
            assert driver.stats["restarts"] == 2  # at power-up, and this one
            assert station.iin(OUTSTATION) & 0x80 == 0
        finally:
            await driver.close()


async def test_event_buffer_overflow_triggers_an_integrity_poll() -> None:
    port = free_port()
    with Dnp3Station(port, event_buffer=50) as station:
        driver = Dnp3Driver(config(port, unsolicited=False, event_poll_interval_s=0.2), POINTS)
        async with connected(driver):
            polls = driver.stats["integrity_polls"]
            station.overflow(OUTSTATION)
            await until(lambda: driver.stats["overflows"] >= 1, 20, "overflow seen")
            await until(lambda: driver.stats["integrity_polls"] > polls, 20, "integrity poll")
            await until(lambda: station.iin(OUTSTATION) & 0x0800 == 0, 20, "IIN2.3 cleared")
            r = await image(driver, POINTS)
            assert r["dbi:0"].value == 2


async def test_a_dropped_link_and_slow_answers_are_unavailable_then_recover() -> None:
    port = free_port()
    with Dnp3Station(port) as station:
        driver = Dnp3Driver(config(port, timeout_s=0.5), POINTS)
        await driver.connect()
        try:
            station.drop()

            await reconnected_after_loss(driver, POINTS)
            assert (await image(driver, POINTS))["dbi:0"].value == 2
            station.slow_s = 2.0  # later than timeout_s
            with pytest.raises(DeviceUnavailable):
                await driver.write(PointSpec("bo:0", "bo:0"), False)
            with pytest.raises(DeviceUnavailable):
                await driver.read(POINTS)
        finally:
            station.slow_s = 0.0
            await driver.close()


async def test_two_outstations_share_one_serial_line(serial_pair: tuple[str, str]) -> None:
    device_end, agent_end = serial_pair
    with Dnp3Station(serial=device_end, addresses=(10, 11), refresh_s=0.1) as station:
        shared: dict[str, Any] = {}
        first = Dnp3Driver(config(serial=agent_end, outstation=10), POINTS, shared)
        second = Dnp3Driver(config(serial=agent_end, outstation=11), POINTS, shared)
        async with connected(first), connected(second):
            assert len(shared) == 1  # one line, one link
            await second.write(PointSpec("bo:1", "bo:1"), False)
            assert station.outstations[11].commands == [("crob", 1, False)]
            assert station.outstations[10].commands == []

            async def both() -> bool:
                a, b = await image(first, POINTS), await image(second, POINTS)
                return a["dbi:1"].value == 2 and b["dbi:1"].value == 1

            await eventually(both)
            assert first.stats["unsolicited"] >= 1 and second.stats["unsolicited"] >= 1


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=600))
def test_a_peer_sending_garbage_is_unavailable_not_a_crash(garbage: bytes) -> None:
    async def run() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"\x05\x64" + garbage)  # a frame start, then anything
            await writer.drain()
            await reader.read(100)
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            driver = Dnp3Driver(config(port, timeout_s=0.3), POINTS)
            with pytest.raises(DeviceUnavailable):
                await driver.connect()
            await driver.close()

    asyncio.run(run())
