"""Edge analytics end to end with real parts: the simulated meter (pymodbus) is driven into a
voltage sag, an outage and a restore, then its tamper switch is thrown; the agent's events reach
a central subscriber through mosquitto, signed and verified, in order and ahead of nothing they
should follow. Then the agent restarts with the tamper still present: the alarm is not raised a
second time (its state was kept in rules.db), and its clearing carries the original raise time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import MeterSimulator
from tests.conftest import METER_MRID
from tests.helpers import meter_config, until
from tests.test_end_to_end import running, subscribed

EVENTS = f"openfmb/metermodule/MeterEventProfile/{METER_MRID}"
ANALYTICS = f"openfmb/metermodule/MeterAnalyticsProfile/{METER_MRID}"
TWIN = {
    # the simulated meter's status word: bit 0 is its tamper switch
    "points": [
        {"field": "@Tamper", "address": 113, "table": "holding", "dtype": "uint16", "mask": 1}
    ],
    "analytics": {
        "nominal_v": 277.0,
        "outage": {},
        "voltage": {},
        "tamper": {"flag": "@Tamper", "off_delay_s": 0.0},
        "loading": {"rating_kva": 500.0, "on_delay_s": 0.0},
    },
}


def config(tmp_path: Path, keys: dict[str, Path], mqtt_port: int, meter_port: int) -> Path:
    return meter_config(
        tmp_path,
        keys,
        mqtt_port,
        meter_port,
        twin=TWIN,
        status_interval_s=0.2,
        device={"poll_interval_s": 0.1, "timeout_s": 0.5},
        top={"rules_save_interval_s": 0.2},
    )


def alarms(got: Any) -> list[tuple[str, str]]:
    return [
        (a["name"], a["state"])
        for r in got.on(EVENTS)
        if (a := r["payload"]["meterEvent"].get("alarm")) is not None
    ]


async def test_sag_outage_restore_and_tamper_reach_the_subscriber_verified(
    mosquitto: Mosquitto, keys: dict[str, Path], tmp_path: Path
) -> None:
    async with MeterSimulator(port=free_port(), refresh_s=0.02) as sim:
        cfg = config(tmp_path, keys, mosquitto.port, sim.port)
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg):
                await until(lambda: len(got.on(ANALYTICS)) >= 1, what="loading %")
                sim.model.voltage_factor = 0.93  # 257.6 V: below range A, inside range B
                await until(lambda: ("sag_rangeA", "raised") in alarms(got), what="sag")
                sim.model.voltage_factor = 0.0
                await until(lambda: ("outage", "raised") in alarms(got), what="last gasp")
                listed = await _cli_alarms(cfg)  # the technician's view during the outage
                sim.model.voltage_factor = 1.0
                await until(lambda: ("outage", "cleared") in alarms(got), what="restore")
                await until(lambda: ("sag_rangeA", "cleared") in alarms(got), what="sag cleared")
                sim.tamper = True
                await until(lambda: ("tamper_flag", "raised") in alarms(got), what="tamper")

            assert alarms(got) == [
                ("sag_rangeA", "raised"),
                ("outage", "raised"),
                ("outage", "cleared"),
                ("sag_rangeA", "cleared"),
                ("tamper_flag", "raised"),
            ]
            events = got.on(EVENTS)
            assert all(r["valid"] and r["kid"] == "test-agent" for r in events)
            gasp, restore = (r["payload"]["meterEvent"]["alarm"] for r in events[1:3])
            assert gasp["event"] == "lastGasp" and gasp["priority"] == "critical"
            assert restore["event"] == "restore" and restore["durationS"] > 0
            assert events[0]["payload"]["meterEvent"]["alarm"]["range"] == "A"
            assert "outage" in listed and "critical" in listed and "sag_rangeA" in listed
            loading = got.on(ANALYTICS)[0]["payload"]["meterAnalytics"]["loading_pct"]
            assert 0 < loading["mag"] < 100 and loading["q"] == {"validity": "good"}
            raised_at = events[-1]["payload"]["meterEvent"]["alarm"]["raisedAt"]

            # a restart with the tamper still there: no second raise; the clear comes later
            async with running(cfg):
                await until(lambda: len(got.on(ANALYTICS)) >= 2, what="a report after restart")
                await asyncio.sleep(0.5)  # several polls with the tamper flag still set
                assert alarms(got).count(("tamper_flag", "raised")) == 1
                sim.tamper = False
                await until(lambda: ("tamper_flag", "cleared") in alarms(got), what="cleared")
            cleared = got.on(EVENTS)[-1]["payload"]["meterEvent"]["alarm"]
            assert cleared["raisedAt"] == raised_at


async def _cli_alarms(cfg: Path) -> str:
    """``edgetwin alarms CONFIG`` as a real process, once alarms.json lists the outage."""
    out = ""

    def listed() -> bool:
        nonlocal out
        proc = subprocess.run(
            [sys.executable, "-m", "edgetwin.agent", "alarms", str(cfg)],
            capture_output=True,
            text=True,
        )
        out = proc.stdout
        return proc.returncode == 0 and "outage" in out

    for _ in range(50):
        if await asyncio.to_thread(listed):
            return out
        await asyncio.sleep(0.1)
    return out
