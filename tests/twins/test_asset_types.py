"""Asset types: the ESS, breaker, recloser and generic twins' profiles and derived status, and
how each twin type turns control maps into commands (and refuses the ones it cannot take)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.twins.base import PointMapTwin, TwinSpec
from edgetwin.twins.control import BadCommand, Command, CurvePoint, Write
from edgetwin.twins.ess import EssTwin
from edgetwin.twins.generic import GenericTwin
from edgetwin.twins.pointmap import (
    BUILTIN_DIR,
    PointEntry,
    ReportingSettings,
    load_raw,
    merged_points,
)
from edgetwin.twins.solar import SolarTwin
from edgetwin.twins.switch import BreakerTwin, RecloserTwin, SwitchTwin

MRID = "00000000-0000-4000-8000-000000000002"


def make(cls: type[PointMapTwin], points: str | list[dict[str, Any]]) -> Any:
    raw = (
        merged_points(load_raw(BUILTIN_DIR / f"{points}.toml"))
        if isinstance(points, str)
        else points
    )
    entries = tuple(PointEntry.model_validate(p) for p in raw)
    spec = TwinSpec(MRID, "asset", "kind", "dev", "openfmb", entries, ReportingSettings(), {})
    return cls(spec)


def feed(twin: Any, values: dict[str, Any], quality=GOOD) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    twin.ingest(Reading(f"{MRID}/{f}", v, quality, 5.0) for f, v in values.items())
    return {o.topic.split("/", 1)[1]: o.payload for o in twin.report(5.0)}


@pytest.mark.parametrize(
    ("st", "fault", "on", "producing", "state", "health"),
    [
        (0, False, False, False, "off", "OK"),
        (1, False, True, False, "standby", "OK"),
        (2, False, True, True, "on", "OK"),
        (3, False, True, True, "on", "OK"),
        (4, False, False, False, "off", "Alarm"),
        (1, True, True, False, "standby", "Alarm"),
    ],
)
def test_ess_status(
    st: int, fault: bool, on: bool, producing: bool, state: str, health: str
) -> None:
    ess = make(EssTwin, "sim_battery")
    out = feed(ess, {"@St": st, "@Fault": fault, "essStatusZBAT.Soc": 61.5})
    status = out[f"essmodule/ESSStatusProfile/{MRID}"]["essStatus"]
    zgen = status["essStatusZGEN"]["eSSEventAndStatusZGEN"]
    assert status["essStatusZBAT"]["BatSt"]["stVal"] is on
    assert status["essStatusZBAT"]["Soc"]["mag"] == 61.5
    assert zgen["GnSynSt"]["stVal"] is producing
    assert zgen["PointStatus"]["state"]["stVal"] == state
    assert zgen["logicalNodeForEventAndStatus"]["EEHealth"]["stVal"] == health
    assert "@St" not in str(out)  # inputs are never published


def test_ess_state_unknown_when_its_input_is_invalid() -> None:
    ess = make(EssTwin, "sim_battery")
    out = feed(ess, {"@St": None}, quality=FAILURE)
    zgen = out[f"essmodule/ESSStatusProfile/{MRID}"]["essStatus"]["essStatusZGEN"][
        "eSSEventAndStatusZGEN"
    ]
    assert "stVal" not in zgen["PointStatus"]["state"]
    assert zgen["PointStatus"]["state"]["q"]["validity"] == "invalid"


@pytest.mark.parametrize(
    ("cls", "module", "ln"),
    [
        (SwitchTwin, "switchmodule/SwitchStatusProfile", ("switchStatus", "switchStatusXSWI")),
        (
            BreakerTwin,
            "breakermodule/BreakerStatusProfile",
            ("breakerStatus", "statusAndEventXCBR"),
        ),
        (
            RecloserTwin,
            "reclosermodule/RecloserStatusProfile",
            ("recloserStatus", "statusAndEventXCBR"),
        ),
    ],
)
def test_switch_family_positions(cls: type[SwitchTwin], module: str, ln: tuple[str, str]) -> None:
    twin = make(cls, "sim_breaker")
    status = feed(twin, {"@Pos": True, "@Fault": True, "@OpCnt": 7})[f"{module}/{MRID}"]
    node = status[ln[0]][ln[1]]
    assert node["Pos"]["stVal"] == "closed"
    assert node["logicalNodeForEventAndStatus"]["EEHealth"]["stVal"] == "Alarm"
    assert node["OpCnt"]["mag"] == 7
    assert feed(twin, {"@Pos": False})[f"{module}/{MRID}"][ln[0]][ln[1]]["Pos"]["stVal"] == "open"
    assert twin.state().points[f"{ln[1]}.Pos"].value == "open"  # technicians see it too
    # control: the type's own discrete control profile, open/close from Pos.ctlVal
    assert twin.actions() == ("open", "close")
    body = {twin.control_profile.body: cls.control.body("close")}
    assert twin.parse_command(body) == Command("close", writes=(Write("@Pos", True),))
    with pytest.raises(BadCommand) as err:
        twin.parse_command({twin.control_profile.body: {cls.control.ln: {"Pos": {"ctlVal": 1}}}})
    assert err.value.reason == "malformed"


def test_a_switch_without_a_writable_position_offers_no_control() -> None:
    twin = make(
        SwitchTwin, [{"field": "@Fault", "address": 1, "table": "discrete", "dtype": "bool"}]
    )
    assert twin.actions() == ()


def test_schedule_parsing_for_ess_and_solar() -> None:
    ess = make(EssTwin, "sim_battery")
    assert ess.actions() == ("schedule",)
    body = {"essControl": EssTwin.control.body("schedule", [(100.5, {"W_net_mag": -5000})])}
    assert ess.parse_command(body) == Command(
        "schedule", schedule=(CurvePoint(100.5, (Write("@set.W_net_mag", -5000.0),)),)
    )
    cases: list[tuple[list[Any], str]] = [
        ([(100, {"W_net_mag": 1}), (100, {"W_net_mag": 2})], "out_of_order"),
        ([(100, {"W_net_mag": 1e6})], "out_of_range"),
        ([(100, {"Hz": 60.0})], "unknown_action"),
        ([(100, {"W_net_mag": float("nan")})], "malformed"),
    ]
    for points, reason in cases:
        with pytest.raises(BadCommand) as err:
            ess.parse_command({"essControl": EssTwin.control.body("schedule", points)})
        assert err.value.reason == reason, points
    with pytest.raises(BadCommand):
        ess.parse_command({"essControl": {"essControlFSCC": {}}})
    # the built-in SunSpec inverter map has no setpoint: that solar twin takes no control
    assert make(SolarTwin, "sunspec_inverter").actions() == ()


def test_generic_twin_publishes_its_own_fields_and_setpoints() -> None:
    points = [
        {"field": "tank.Temperature", "address": 0, "units": "degC"},
        {"field": "tank.Alarm", "address": 0, "table": "coil", "dtype": "bool"},
        {"field": "pump.Starts", "address": 2, "dtype": "uint32", "kind": "counter"},
        {"field": "@set.TempSetpoint", "address": 4, "range": [0, 90]},
    ]
    twin = make(GenericTwin, points)
    out = feed(twin, {"tank.Temperature": 61.25, "tank.Alarm": False, "pump.Starts": 12})
    reading = out[f"genericmodule/GenericReadingProfile/{MRID}"]["genericReading"]
    assert reading["tank"]["Temperature"]["mag"] == 61.25
    assert reading["tank"]["Alarm"]["stVal"] is False
    assert reading["pump"]["Starts"]["actVal"] == 12
    assert twin.actions() == ("schedule",)
    body = {"genericControl": GenericTwin.control.body("schedule", [(1.0, {"TempSetpoint": 45})])}
    assert twin.parse_command(body).schedule[0].writes == (Write("@set.TempSetpoint", 45.0),)


def test_a_position_that_cannot_be_read_is_invalid() -> None:
    twin = make(BreakerTwin, "sim_breaker")
    feed(twin, {"@Pos": True})
    twin.set_available(False, 6.0)  # the device stopped answering
    status = {o.topic.split("/", 1)[1]: o.payload for o in twin.report(6.0)}
    pos = status[f"breakermodule/BreakerStatusProfile/{MRID}"]["breakerStatus"][
        "statusAndEventXCBR"
    ]["Pos"]
    assert pos["stVal"] == "invalid"
    assert pos["q"]["validity"] == "invalid" and pos["q"]["detailQual"]["failure"] is True


def test_a_meter_read_request_names_obis_codes() -> None:
    from edgetwin.twins.meter import MeterTwin

    twin = make(MeterTwin, [{"field": "readingMMTR.SupWh", "address": "1.0.1.8.0.255"}])
    body = {"meterControl": MeterTwin.control.body("read", registers=["1.0.1.8.0.255"] * 2)}
    assert twin.actions() == ("read",)
    assert twin.parse_command(body) == Command("read", reads=("1.0.1.8.0.255",))
    assert twin.parse_command({"meterControl": {"readRequest": {"registers": []}}}).reads == ()
    for bad in ([1], ["1.8.0"], ["1.0.1.8.0.255"] * 33, "1.0.1.8.0.255", None):
        with pytest.raises(BadCommand, match="malformed"):
            twin.parse_command({"meterControl": {"readRequest": {"registers": bad}}})


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=60,
    )
)
def test_any_meter_control_body_is_a_read_or_a_refusal(body: object) -> None:
    from edgetwin.twins.meter import MeterTwin

    twin = make(MeterTwin, [{"field": "readingMMTR.SupWh", "address": "1.0.1.8.0.255"}])
    for candidate in (body, {"meterControl": {"readRequest": {"registers": body}}}):
        try:
            command = twin.parse_command(candidate)  # type: ignore[arg-type]
        except BadCommand:
            continue
        assert command.action == "read" and command.reads is not None
        assert len(command.reads) <= 32
