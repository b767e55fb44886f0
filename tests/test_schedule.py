"""Schedules end to end, on an injected clock: a signed ESSControlProfile schedule applied to a
simulated battery over Modbus at its curve points' times, through a broker outage and an agent
restart; out-of-order and out-of-range schedules refused with nothing written."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetwin.agent.runtime.app import Agent
from edgetwin.agent.runtime.config import load_config
from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.agent.tools.commission import commission
from edgetwin.central.command import ResultWaiter, build_command, publish
from edgetwin.core.clock import ManualClock
from edgetwin.firmware_sim.battery import BatterySimulator
from edgetwin.wire.keys import generate, load_private, load_trust_dir
from tests.helpers import until, write_config

ESS = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
SETPOINT = "W_net_mag"


def ess_config(tmp: Path, keys: dict[str, Path], trust: Path, mqtt_port: int, port: int) -> Path:
    return write_config(
        tmp,
        keys,
        mqtt_port,
        f"""
[control]
trust_file = "{trust}"

[[devices]]
name = "bess1"
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
poll_interval_s = 1
timeout_s = 0.5

[[twins]]
mrid = "{ESS}"
kind = "ess"
name = "Substation BESS"
device = "bess1"
point_map = "sim_battery"

[[twins.interlocks]]
action = "schedule"
field = "@Fault"
equals = true
reason = "battery fault"
""",
        reporting={"integrity_period_s": 600},
    )


@pytest.fixture
def central(tmp_path: Path) -> dict[str, Any]:
    key, _ = generate(tmp_path / "central" / "dispatch-1.key")
    trust = tmp_path / "central" / "trust.toml"
    trust.write_text(
        f'[[keys]]\nkid = "dispatch-1"\npublic_key = "dispatch-1.pub.pem"\ntwins = ["{ESS}"]\n'
        'actions = ["schedule"]\n'
    )
    return {"key": load_private(key), "trust": trust}


@contextlib.asynccontextmanager
async def agent_on(cfg: Path, clock: ManualClock) -> AsyncIterator[Agent]:
    agent = Agent(load_config(cfg), clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await until(lambda: agent.ready.is_set() or task.done())
    await until(lambda: agent._listener is not None and agent._listener.subscribed.is_set())
    await until(lambda: agent.devices[0].stats.polls >= 1, what="the first poll")
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def send(
    url: str, trust: Path, key: Ed25519PrivateKey, clock: ManualClock, points: list[Any], **kw: Any
) -> dict[str, Any]:
    """Sign (at the injected clock's time) and publish a schedule; return its result event."""
    topic, envelope, cmd = build_command(
        key,
        "dispatch-1",
        kind="ess",
        mrid=ESS,
        action="schedule",
        schedule=points,
        ts_ms=kw.pop("ts_ms", int(clock.time() * 1000)),
        **kw,
    )

    def roundtrip() -> dict[str, Any] | None:
        with ResultWaiter(url, load_trust_dir(trust), kind="ess", mrid=ESS) as waiter:
            publish(url, topic, envelope)
            return waiter.wait(cmd, 10)

    result = await asyncio.to_thread(roundtrip)
    assert result is not None, "no result event"
    return result


async def test_schedule_runs_at_its_times_through_outage_and_restart(
    tmp_path: Path, keys: dict[str, Path], central: dict[str, Any]
) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    clock = ManualClock(start=time.time())
    t0 = clock.time()
    try:
        async with BatterySimulator(port=free_port(), clock=clock.time) as sim:
            cfg = ess_config(tmp_path, keys, central["trust"], broker.port, sim.port)
            writes = sim.unit.setpoint_writes
            async with agent_on(cfg, clock):
                url, trust, key = broker.url, keys["trust"], central["key"]
                refused = await send(url, trust, key, clock, [(t0 + 60, {SETPOINT: -20000})])
                assert (refused["result"], refused["reason"]) == ("refused", "not_commissioned")
                assert (await commission(load_config(cfg), ESS)).ok

                # charge at 20 kW from t0+60, discharge 30 kW from t0+120, stop at t0+180
                plan = [
                    (t0 + 60, {SETPOINT: -20000}),
                    (t0 + 120, {SETPOINT: 30000}),
                    (t0 + 180, {SETPOINT: 0}),
                ]
                accepted = await send(url, trust, key, clock, plan)
                assert (accepted["result"], accepted["points"]) == ("accepted", 3)

                # refused, with nothing written: times going backwards, a setpoint beyond the
                # point map's range, a parameter the twin does not have, and a schedule signed
                # before the one in force
                backwards = [(t0 + 90, {SETPOINT: 1000}), (t0 + 70, {SETPOINT: 2000})]
                too_big = [(t0 + 90, {SETPOINT: 250000})]
                unknown = [(t0 + 90, {"VAr_net_mag": 5000})]
                for points, reason, kw in [
                    (backwards, "out_of_order", {}),
                    (too_big, "out_of_range", {}),
                    (unknown, "unknown_action", {}),
                    ([(t0 + 90, {SETPOINT: 0})], "out_of_order", {"ts_ms": int(t0 * 1000) - 1}),
                ]:
                    result = await send(url, trust, key, clock, points, **kw)
                    assert (result["result"], result["reason"]) == ("refused", reason), points
                assert writes == []

                clock.advance(59.0)
                await asyncio.sleep(0.3)
                assert writes == [], "nothing before the first start time"
                clock.advance(1.0)
                await until(lambda: len(writes) == 1, what="the first curve point")
                assert writes[0] == (t0 + 60, -20000.0)

                broker.stop()  # the link to the central system is lost
                clock.advance(60.0)
                await until(lambda: len(writes) == 2, what="the second point, broker down")
                assert writes[1] == (t0 + 120, 30000.0)
                broker.start()

            # restart (the broker is back): the schedule in force is resumed from control.db
            # and its current point applied again
            clock.advance(30.0)
            async with agent_on(cfg, clock) as agent:
                await until(lambda: len(writes) == 3, what="the point in force, re-applied")
                assert writes[2] == (t0 + 150, 30000.0)
                clock.advance(30.0)
                await until(lambda: len(writes) == 4, what="the last point")
                assert writes[3] == (t0 + 180, 0.0)
                assert agent.control is not None
                status = agent.control.status()
                assert status["schedules"][ESS] == {"points": 3, "in_force": 2}
    finally:
        broker.stop()


async def test_schedule_point_refused_by_interlock_writes_nothing(
    tmp_path: Path, keys: dict[str, Path], central: dict[str, Any], mosquitto: Mosquitto
) -> None:
    clock = ManualClock(start=time.time())
    t0 = clock.time()
    async with BatterySimulator(port=free_port(), clock=clock.time) as sim:
        cfg = ess_config(tmp_path, keys, central["trust"], mosquitto.port, sim.port)
        assert (await commission(load_config(cfg), ESS)).ok
        trust = load_trust_dir(keys["trust"])
        with ResultWaiter(mosquitto.url, trust, kind="ess", mrid=ESS) as events:
            async with agent_on(cfg, clock) as agent:
                plan = [(t0 + 10, {SETPOINT: 5000})]
                result = await send(mosquitto.url, keys["trust"], central["key"], clock, plan)
                assert result["result"] == "accepted"
                sim.unit.fault_flag = True  # the battery faults before the point is due
                polls = agent.devices[0].stats.polls
                clock.advance(1.0)
                await until(lambda: agent.devices[0].stats.polls > polls, what="a fault poll")
                clock.advance(9.0)
                await until(lambda: len(events.points) == 1, what="the point's result event")
        point = events.points[0]
        assert (point["result"], point["reason"], point["detail"]) == (
            "refused",
            "interlock",
            "battery fault",
        )
        assert point["schedulePoint"] == 0 and point["commandMRID"] == result["commandMRID"]
        assert sim.unit.setpoint_writes == []
