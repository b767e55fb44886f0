"""The meter twin: point map + driver readings -> OpenFMB MeterReadingProfile, state, quality."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edgetwin.agent.runtime.config import load_config
from edgetwin.core.models import FAILURE
from edgetwin.drivers.modbus import ModbusTcpDriver
from edgetwin.firmware_sim.meter import MeterSimulator
from edgetwin.twins.base import PointMapTwin
from tests.conftest import example_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def twin_and_device(meter: MeterSimulator, tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(example_config(tmp_path, meter.port))
    (twin,) = cfg.twins
    assert isinstance(twin, PointMapTwin)
    points = [bp.spec for bp in twin.bound_points()]
    return twin, ModbusTcpDriver(cfg.devices[0], points), points  # type: ignore[arg-type]


async def test_profile_carries_the_simulators_values(
    twin_and_device, meter: MeterSimulator
) -> None:  # type: ignore[no-untyped-def]
    twin, driver, points = twin_and_device
    async with driver:
        readings = await driver.read(points)
    twin.ingest(readings)
    out, analytics = twin.report(now=1000.0)  # the example config runs analytics too
    assert analytics.topic.split("/")[2] == "MeterAnalyticsProfile"
    assert out.topic == f"openfmb/metermodule/MeterReadingProfile/{twin.spec.mrid}"
    p = out.payload
    info = p["readingMessageInfo"]["messageInfo"]
    uuid.UUID(info["identifiedObject"]["mRID"])
    assert info["messageTimeStamp"] == {"seconds": 1000, "nanoseconds": 0}
    assert p["meter"]["conductingEquipment"]["mRID"] == twin.spec.mrid
    mmxu = p["meterReading"]["readingMMXU"]
    st = meter.model.state
    assert mmxu["PhV"]["phsA"]["cVal"]["mag"] == pytest.approx(st.volts["phsA"], rel=1e-6)
    assert mmxu["W"]["net"]["cVal"]["mag"] == pytest.approx(st.watts["net"], rel=1e-6)
    assert mmxu["Hz"]["mag"] == pytest.approx(st.hz, rel=1e-6)
    assert mmxu["PhV"]["phsA"]["q"] == {"validity": "good"}  # defaults left out
    assert set(mmxu) == {"PhV", "A", "W", "VAr", "VA", "PF", "Hz"}
    mmtr = p["meterReading"]["readingMMTR"]
    assert mmtr["SupWh"]["actVal"] == int(st.import_wh)
    assert twin.report(now=1000.5) == []  # nothing changed enough


async def test_unavailable_device_reports_invalid_failure_once(twin_and_device) -> None:  # type: ignore[no-untyped-def]
    twin, driver, points = twin_and_device
    async with driver:
        twin.ingest(await driver.read(points))
    twin.report(now=1.0)
    twin.set_available(False, now=2.0)
    out, _analytics = twin.report(now=2.0)
    mmxu = out.payload["meterReading"]["readingMMXU"]
    assert mmxu["Hz"]["q"]["validity"] == "invalid"
    assert mmxu["Hz"]["q"]["detailQual"] == {"failure": True}
    assert "mag" not in mmxu["Hz"]
    state = twin.state()
    assert state.available is False
    # every point, and every rule output computed from them (outage, hz_deviation, loading_pct)
    assert all(r.quality == FAILURE for r in state.points.values())
    assert {"outage", "hz_deviation", "loading_pct"} <= set(state.points)
    twin.set_available(False, now=3.0)
    assert twin.report(now=3.0) == []  # the same bad quality is not repeated


async def test_state_is_readable_by_other_parts(twin_and_device) -> None:  # type: ignore[no-untyped-def]
    twin, driver, points = twin_and_device
    async with driver:
        twin.ingest(await driver.read(points))
    state = twin.state()
    assert state.available and state.last_update is not None
    assert state.units["readingMMXU.PhV.phsA"] == "V"
    assert 200 < state.points["readingMMXU.PhV.phsA"].value < 350  # type: ignore[operator]
