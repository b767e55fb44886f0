"""SunSpec end to end: ``edgetwin discover`` proposes a config for the simulated inverter, the
agent runs it, and a verifying subscriber gets SolarReadingProfile and SolarStatusProfile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.meter import TcpSimulator
from edgetwin.firmware_sim.solar_model import SolarModel
from edgetwin.firmware_sim.sunspec_inverter import InverterUnit
from tests.helpers import discover_into_config, until
from tests.test_end_to_end import running, subscribed


@pytest.mark.parametrize(
    ("hour", "producing", "state"), [(12, True, "on"), (0, False, "standby")], ids=["noon", "night"]
)
async def test_discovered_inverter_publishes_reading_and_status(
    tmp_path: Path,
    keys: dict[str, Path],
    mosquitto: Mosquitto,
    hour: int,
    producing: bool,
    state: str,
) -> None:
    model = SolarModel(seed=2)
    unit = InverterUnit(clock=lambda: hour * 3600.0, model=model)
    async with TcpSimulator(unit, port=free_port()) as sim:
        cfg, section = await discover_into_config(
            ["modbus", f"127.0.0.1:{sim.port}", "--unit", "1"], tmp_path, keys, mosquitto.port
        )
        assert "model 103 Inverter (Three Phase)" in section and 'kind = "solar"' in section
        mrid = re.search(r'mrid = "([0-9a-f-]+)"', cfg.read_text()).group(1)  # type: ignore[union-attr]
        reading_topic = f"openfmb/solarmodule/SolarReadingProfile/{mrid}"
        status_topic = f"openfmb/solarmodule/SolarStatusProfile/{mrid}"
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg):
                await until(lambda: got.on(reading_topic) and got.on(status_topic))
    reading = got.on(reading_topic)[0]
    assert reading["valid"]
    body = reading["payload"]["solarReading"]["readingMMXU"]
    st = model.state
    assert body["W"]["net"]["cVal"]["mag"] == round(st.ac_w)
    assert body["Hz"]["mag"] == pytest.approx(st.hz, abs=0.006)
    assert body["PF"]["net"]["cVal"]["mag"] == pytest.approx(st.pf, abs=0.006)  # percent -> ratio
    assert body["PhV"]["phsA"]["cVal"]["mag"] == pytest.approx(st.volts["phsA"], abs=0.06)
    assert reading["payload"]["solarInverter"]["conductingEquipment"]["mRID"] == mrid
    status = got.on(status_topic)[0]["payload"]["solarStatus"]["solarStatusZGEN"]
    zgen = status["solarEventAndStatusZGEN"]
    assert zgen["GnSynSt"]["stVal"] is producing
    assert zgen["PointStatus"]["state"]["stVal"] == state
    assert zgen["logicalNodeForEventAndStatus"]["EEHealth"]["stVal"] == "OK"
