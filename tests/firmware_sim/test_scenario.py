"""Fault scenarios: the shipped files load, and one plays every Modbus fault against the real
driver with each ending as its documented quality (no waiting: the scenario's sleep is
injected)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgetwin.agent.tools.broker import free_port
from edgetwin.core.errors import DeviceUnavailable
from edgetwin.core.models import BAD_REFERENCE, FAILURE, GOOD, Quality
from edgetwin.core.points import PointSpec
from edgetwin.drivers.modbus import ModbusTcpConfig, ModbusTcpDriver
from edgetwin.firmware_sim import scenario
from edgetwin.firmware_sim.scenario import Scenario, Step

SHIPPED = sorted((Path(scenario.__file__).parent / "scenarios").glob("*.toml"))
HZ = PointSpec("hz", 48, "float32", "holding")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_are_valid(path: Path) -> None:
    s = scenario.load(path)
    assert s.devices and s.steps


def test_a_step_on_an_unknown_device_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown device 'nope'"):
        Scenario.model_validate(
            {
                "devices": [{"name": "m", "kind": "meter", "port": 1}],
                "steps": [{"at": 1, "device": "nope", "fault": "busy"}],
            }
        )


async def test_every_modbus_fault_ends_as_its_quality() -> None:
    port = free_port()
    plan = Scenario.model_validate(
        {
            "devices": [{"name": "m", "kind": "meter", "port": port}],
            "steps": [
                {"at": t, "device": "m", "fault": f, "seconds": sec}
                for t, f, sec in [
                    (1, "none", 0),
                    (2, "busy", 0),
                    (3, "illegal", 0),
                    (4, "slow", 1.0),
                    (5, "silent", 0),
                    (6, "garbage", 0),
                    (7, "none", 0),
                    (8, "restart", 0.3),
                ]
            ],
        }
    )
    cfg = ModbusTcpConfig(name="m", driver="modbus_tcp", host="127.0.0.1", port=port, timeout_s=0.3)
    seen: dict[str, Quality | str] = {}

    async def probe(step: Step, devices: dict[str, Any]) -> None:
        drv = ModbusTcpDriver(cfg, [HZ])
        try:
            await drv.connect()
            (r,) = await drv.read([HZ])
            seen[step.fault] = r.quality
        except DeviceUnavailable:
            seen[step.fault] = "unavailable"
        finally:
            await drv.close()

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    await scenario.run(plan, sleep=no_wait, on_step=probe)
    assert seen == {
        "none": GOOD,  # after the restart the meter answers again (last "none" overwritten: good)
        "busy": FAILURE,
        "illegal": BAD_REFERENCE,
        "slow": "unavailable",
        "silent": "unavailable",
        "garbage": "unavailable",
        "restart": GOOD,
    }


async def test_scada_faults_from_a_scenario_reach_the_dnp3_master() -> None:
    """A scenario's DNP3 faults seen by the real driver: COMM_LOST, local mode, a restart."""
    from edgetwin.core.errors import DeviceRejected
    from edgetwin.drivers.dnp3 import Dnp3Config, Dnp3Driver

    port = free_port()
    plan = Scenario.model_validate(
        {
            "devices": [{"name": "rtu", "kind": "dnp3", "port": port, "outstations": [10]}],
            "steps": [
                {"at": 1, "device": "rtu", "fault": "quality", "point": "ai:0",
                 "flags": ["comm_lost"]},
                {"at": 2, "device": "rtu", "fault": "local", "breaker": 1},
                {"at": 3, "device": "rtu", "fault": "restart"},
            ],
        }
    )  # fmt: skip
    cfg = Dnp3Config(name="rtu", driver="dnp3", host="127.0.0.1", port=port, outstation=10)
    points = [PointSpec("ai:0", "ai:0"), PointSpec("bo:1", "bo:1")]
    seen: dict[str, Any] = {}

    async def probe(step: Step, devices: dict[str, Any]) -> None:
        drv = Dnp3Driver(cfg, points)
        await drv.connect()
        try:
            if step.fault == "local":
                with pytest.raises(DeviceRejected) as refused:
                    await drv.write(points[1], True)
                seen["local"] = refused.value.answer
            else:
                seen[step.fault] = {r.point: r for r in await drv.read(points)}["ai:0"].quality
            seen[f"{step.fault} restarts"] = drv.stats["restarts"]
        finally:
            await drv.close()

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    await scenario.run(plan, sleep=no_wait, on_step=probe)
    assert seen["quality"].detail == {"oldData"} and seen["local"] == "LOCAL"
    assert seen["restart"].is_good and seen["restart restarts"] == 1  # a fresh outstation


async def test_dlms_faults_from_a_scenario_reach_the_dlms_driver(tmp_path: Path) -> None:
    """Wrong password, an outage (logged, not captured), an invalid interval, a drifting clock."""
    import datetime as dt

    from edgetwin.core.errors import DeviceRejected
    from edgetwin.drivers.dlms import DlmsConfig, DlmsDriver

    port = free_port()
    plan = Scenario.model_validate({
        "devices": [{"name": "m", "kind": "dlms", "port": port}],
        "steps": [{"at": 1, "device": "m", "fault": "password"},
                  {"at": 2, "device": "m", "fault": "none"},
                  {"at": 3, "device": "m", "fault": "outage"},
                  {"at": 4, "device": "m", "fault": "none"},
                  {"at": 5, "device": "m", "fault": "invalid"},
                  {"at": 6, "device": "m", "fault": "drift", "seconds": 120}],
    })  # fmt: skip
    password = tmp_path / "pw"
    password.write_text("12345678\n")
    password.chmod(0o600)
    cfg = DlmsConfig(name="m", driver="dlms", host="127.0.0.1", port=port, timeout_s=0.3,
                     password_file=password)  # fmt: skip
    seen: dict[str, Any] = {}

    async def probe(step: Step, devices: dict[str, Any]) -> None:
        drv = DlmsDriver(cfg, [])
        try:
            await drv.connect()
            now = await drv.meter_time()
            log = await drv.profile("0.0.99.98.0.255", now - dt.timedelta(minutes=5), now)
            seen[f"{step.at:g} log"] = [r.values[0] for r in log.rows]
            seen[f"{step.at:g} drift"] = drv.offset_s
        except (DeviceRejected, DeviceUnavailable) as err:
            seen[f"{step.at:g}"] = type(err).__name__
        finally:
            await drv.close()
        if step.fault == "invalid":
            st = devices["m"].state
            seen["invalid"] = set(st.invalid)

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    await scenario.run(plan, sleep=no_wait, on_step=probe)
    assert seen["1"] == "DeviceRejected"  # the password no longer matches
    assert seen["3"] == "DeviceUnavailable"  # no supply: no answer
    assert seen["4 log"][-2:] == [1, 2]  # power down, then up, in the meter's log
    assert len(seen["invalid"]) == 1
    assert seen["6 drift"] == pytest.approx(120, abs=2)
