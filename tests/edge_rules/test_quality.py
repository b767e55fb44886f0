"""Quality rules on a real meter twin (the built-in simulated meter's point map): ``oldData``
after N polls without a fresh value, ``outOfRange`` outside the physical range, both clearing
by themselves, and what is published; then rules on a twin -- events ahead of telemetry, on the
twin's event profile."""

from __future__ import annotations

from typing import Any

from edgetwin.core.models import FAILURE, GOOD, Reading, Validity
from edgetwin.edge_rules.config import FloodSettings, build
from edgetwin.edge_rules.quality import QualitySettings
from edgetwin.twins.base import MessageClass, TwinSpec
from edgetwin.twins.meter import MeterTwin
from edgetwin.twins.pointmap import (
    BUILTIN_DIR,
    PointEntry,
    ReportingSettings,
    load_raw,
    merged_points,
)

MRID = "00000000-0000-4000-8000-000000000003"
VA, HZ = "readingMMXU.PhV.phsA", "readingMMXU.Hz"


def meter(quality: QualitySettings | None = None) -> MeterTwin:
    entries = tuple(
        PointEntry.model_validate(p)
        for p in merged_points(load_raw(BUILTIN_DIR / "sim_meter.toml"))
    )
    spec = TwinSpec(MRID, "m", "meter", "dev", "openfmb", entries, ReportingSettings(), {},
                    quality or QualitySettings())  # fmt: skip
    return MeterTwin(spec)


def poll(twin: MeterTwin, ts: float, **values: Any) -> dict[str, Reading]:
    twin.ingest(Reading(f"{MRID}/{f.replace('_', '.')}", v, GOOD, ts) for f, v in values.items())
    return twin.state().points


def flags(r: Reading) -> tuple[str, frozenset[str]]:
    return r.quality.validity.value, r.quality.detail


def test_a_value_not_refreshed_for_three_polls_is_old_data_until_it_is() -> None:
    twin = meter()
    seen = []
    # the source timestamp stays at 10.0 (a server that stopped updating), then moves on
    for ts in (10.0, 10.0, 10.0, 10.0, 10.0, 11.0):
        seen.append(flags(poll(twin, ts, readingMMXU_Hz=60.0)[HZ]))
    good, old = ("good", frozenset()), ("questionable", frozenset({"oldData"}))
    assert seen == [good, good, good, old, old, good]


def test_old_data_can_be_turned_off() -> None:
    twin = meter(QualitySettings(old_after_polls=None))
    for _ in range(10):
        points = poll(twin, 10.0, readingMMXU_Hz=60.0)
    assert points[HZ].quality.is_good


def test_out_of_range_keeps_the_value_flags_it_and_clears() -> None:
    twin = meter()
    out = poll(twin, 1.0, readingMMXU_Hz=230.5)[HZ]  # the map says 45 .. 65 Hz
    assert out.value == 230.5 and flags(out) == ("questionable", frozenset({"outOfRange"}))
    assert poll(twin, 2.0, readingMMXU_Hz=60.0)[HZ].quality.is_good
    (msg,) = twin.report(2.0)
    assert msg.payload["meterReading"]["readingMMXU"]["Hz"]["q"] == {"validity": "good"}


def test_range_check_can_be_turned_off_and_an_invalid_sample_is_left_alone() -> None:
    twin = meter(QualitySettings(range_check=False))
    assert poll(twin, 1.0, readingMMXU_Hz=230.5)[HZ].quality.is_good
    twin.ingest([Reading(f"{MRID}/{HZ}", None, FAILURE, 2.0)])
    assert twin.state().points[HZ].quality == FAILURE


def test_both_flags_at_once() -> None:
    twin = meter()
    for _ in range(4):
        r = poll(twin, 5.0, readingMMXU_Hz=99.0)[HZ]
    assert r.quality.validity is Validity.QUESTIONABLE
    assert r.quality.detail == {"oldData", "outOfRange"}


def test_rule_events_go_first_on_the_event_profile_and_outputs_on_the_analytics_profile() -> None:
    twin = meter()
    points = {bp.field for bp in twin.bound_points()}
    engine, _, problems = build(
        points,
        {"nominal_v": 277, "outage": {}, "loading": {"rating_kva": 100}},
        [{"name": "hz_dev", "kind": "derived", "expr": "abs(readingMMXU.Hz - 60)", "units": "Hz"}],
        [],
        FloodSettings(),
    )
    assert not problems and engine is not None
    twin.attach_rules(engine)
    values = {f"readingMMXU.PhV.{p}": 0.0 for p in ("phsA", "phsB", "phsC")}
    values |= {"readingMMXU.VA.net": 50_000.0, HZ: 60.5}
    twin.ingest(Reading(f"{MRID}/{f}", v, GOOD, 100.0) for f, v in values.items())
    out = twin.report(100.0)
    event, *telemetry = out
    assert event.klass is MessageClass.EVENT
    assert event.topic == f"openfmb/metermodule/MeterEventProfile/{MRID}"
    alarm = event.payload["meterEvent"]["alarm"]
    assert (alarm["name"], alarm["state"], alarm["event"]) == ("outage", "raised", "lastGasp")
    assert alarm["raisedAt"] == {"seconds": 100, "nanoseconds": 0}  # an OpenFMB timestamp
    assert all(m.klass is MessageClass.TELEMETRY for m in telemetry)
    analytics = next(m for m in telemetry if "MeterAnalyticsProfile" in m.topic)
    body = analytics.payload["meterAnalytics"]
    assert body["loading_pct"]["mag"] == 50.0 and body["hz_dev"]["mag"] == 0.5
    state = twin.state()
    assert state.points["outage"].value is True and state.units["hz_dev"] == "Hz"
    assert [p.name for p in twin.profiles] == ["MeterReadingProfile", "MeterAnalyticsProfile"]


def test_the_tick_runs_rules_only_when_time_matters() -> None:
    """Rules run on new samples; on the tick alone only while a delay runs or a fixed window
    is due -- a thousand idle twins cost nothing between polls."""
    twin = meter()
    points = {bp.field for bp in twin.bound_points()}
    engine, _, problems = build(
        points,
        None,
        [{"name": "hot", "kind": "threshold", "expr": "readingMMXU.Hz", "above": 61,
          "on_delay_s": 3},
         {"name": "hz15", "kind": "stats", "point": "readingMMXU.Hz", "window_s": 900,
          "window": "fixed"}],
        [],
        FloodSettings(),
    )  # fmt: skip
    assert not problems and engine is not None
    twin.attach_rules(engine)
    twin.ingest([Reading(f"{MRID}/{HZ}", 60.0, GOOD, 1_800_000_000.0)])
    twin.report(1_800_000_000.0)
    runs = engine.evaluations
    for t in range(1, 5):  # ticks, no sample, nothing pending
        twin.report(1_800_000_000.0 + t)
    assert engine.evaluations == runs

    twin.ingest([Reading(f"{MRID}/{HZ}", 62.0, GOOD, 1_800_000_010.0)])  # the delay starts
    twin.report(1_800_000_010.0)
    raised = []
    for t in range(11, 15):  # ticks only: the delay runs out on one of them
        raised += [o for o in twin.report(1_800_000_000.0 + t) if o.klass is MessageClass.EVENT]
    assert [o.payload["meterEvent"]["alarm"]["state"] for o in raised] == ["raised"]
    assert twin.state().points["hot"].value is True

    runs = engine.evaluations
    twin.report(1_800_000_900.0)  # a tick after the quarter hour: the fixed window closes
    assert engine.evaluations > runs
    assert twin.state().points["hz15"].value == 61.0  # (60 + 62) / 2
