"""The solar twin's derived status, table-driven over SunSpec operating states and events."""

from __future__ import annotations

import pytest

from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.twins.base import TwinSpec
from edgetwin.twins.pointmap import (
    BUILTIN_DIR,
    PointEntry,
    ReportingSettings,
    load_raw,
    merged_points,
)
from edgetwin.twins.solar import GN_SYN_ST, HEALTH, STATE, SolarTwin

MRID = "00000000-0000-4000-8000-000000000001"


def twin() -> SolarTwin:
    entries = tuple(
        PointEntry.model_validate(p)
        for p in merged_points(load_raw(BUILTIN_DIR / "sunspec_inverter.toml"))
    )
    return SolarTwin(
        TwinSpec(
            MRID,
            "inv",
            "solar",
            "d",
            "openfmb",
            entries,
            ReportingSettings(integrity_period_s=60),
            {},
        )
    )


def feed(t: SolarTwin, st: int | None, evt: int, quality=GOOD) -> dict:  # type: ignore[no-untyped-def,type-arg]
    t.ingest([Reading(f"{MRID}/@St", st, quality, 1.0), Reading(f"{MRID}/@Evt1", evt, GOOD, 1.0)])
    return {o.topic.split("/")[2]: o.payload for o in t.report(1.0)}


@pytest.mark.parametrize(
    ("st", "evt", "producing", "state", "health"),
    [
        pytest.param(4, 0, True, "on", "OK", id="mppt"),
        pytest.param(5, 0, True, "on", "OK", id="throttled"),
        pytest.param(3, 0, False, "on", "OK", id="starting"),
        pytest.param(2, 0, False, "standby", "OK", id="sleeping"),
        pytest.param(8, 0, False, "standby", "OK", id="standby"),
        pytest.param(1, 0, False, "off", "OK", id="off"),
        pytest.param(7, 0, False, "off", "Alarm", id="fault"),
        pytest.param(4, 1 << 3, True, "on", "Alarm", id="event-bit"),
    ],
)
def test_status_from_operating_state(
    st: int, evt: int, producing: bool, state: str, health: str
) -> None:
    out = feed(twin(), st, evt)
    zgen = out["SolarStatusProfile"]["solarStatus"]["solarStatusZGEN"]["solarEventAndStatusZGEN"]
    assert zgen["GnSynSt"]["stVal"] is producing
    assert zgen["PointStatus"]["state"]["stVal"] == state
    assert zgen["logicalNodeForEventAndStatus"]["EEHealth"]["stVal"] == health


def test_status_is_reported_on_change_only_and_inputs_are_never_published() -> None:
    t = twin()
    first = feed(t, 4, 0)
    assert set(first) == {"SolarStatusProfile"}  # no reading points were fed
    assert "@St" not in str(first)
    assert feed(t, 4, 0) == {}  # unchanged: nothing
    changed = feed(t, 2, 0)["SolarStatusProfile"]["solarStatus"]
    assert changed["solarStatusZGEN"]["solarEventAndStatusZGEN"]["GnSynSt"]["stVal"] is False


def test_a_failed_input_makes_the_status_invalid() -> None:
    t = twin()
    t.ingest([Reading(f"{MRID}/@St", None, FAILURE, 1.0)])
    derived = t.derive(t.state().points)
    for field in (GN_SYN_ST, STATE, HEALTH):
        assert derived[field].quality == FAILURE and derived[field].value is None
