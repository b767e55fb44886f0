"""OPC UA end to end: ``edgetwin discover opcua`` proposes a config for the simulated substation,
the agent runs it (subscription mode), and a verifying subscriber gets the feeder's readings."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from edgetwin.agent.tools.broker import Mosquitto, free_port
from edgetwin.firmware_sim.opcua_substation import SubstationSimulator
from tests.helpers import discover_into_config, until
from tests.test_end_to_end import running, subscribed

logging.getLogger("asyncua").setLevel(logging.CRITICAL)


async def test_discovered_feeder_is_published(
    tmp_path: Path, keys: dict[str, Path], mosquitto: Mosquitto
) -> None:
    async with SubstationSimulator(port=free_port()) as sim:
        cfg, section = await discover_into_config(
            ["opcua", sim.url, "--match", "Feeder1"], tmp_path, keys, mosquitto.port
        )
        assert "Substation/Feeder1/W" in section and "Feeder2" not in section
        mrid = re.search(r'mrid = "([0-9a-f-]+)"', section).group(1)  # type: ignore[union-attr]
        topic = f"openfmb/metermodule/MeterReadingProfile/{mrid}"
        with subscribed(mosquitto.url, keys["trust"]) as got:
            async with running(cfg):
                await until(lambda: len(got.on(topic)) >= 1, what="feeder reading")
                expected = sim.values["Feeder1.V"]
    mmxu = got.on(topic)[0]["payload"]["meterReading"]["readingMMXU"]
    assert got.on(topic)[0]["valid"]
    assert set(mmxu) == {"W", "VAr", "A", "PhV"}
    assert mmxu["PhV"]["net"]["cVal"]["mag"] == pytest.approx(expected, rel=0.01)
