"""Utility analytics, table-driven on a manual clock: outage and restore, ANSI C84.1 sag and
swell, tamper (reverse energy, current without voltage, the meter's flag), transformer loading,
15-minute demand with the billing-period peak, and demand-response settlement reads."""

from __future__ import annotations

from typing import Any

import pytest

from tests.edge_rules.harness import RuleBench

V = [f"readingMMXU.PhV.{p}" for p in ("phsA", "phsB", "phsC")]
A = [f"readingMMXU.A.{p}" for p in ("phsA", "phsB", "phsC")]
VA, IMP, EXP = "readingMMXU.VA.net", "readingMMTR.SupWh", "readingMMTR.DmdWh"
METER: dict[str, Any] = {
    **dict.fromkeys(V, 277.0),
    **dict.fromkeys(A, 50.0),
    VA: 40_000.0,
    IMP: 1_000_000,
    EXP: 0,
    "@Tamper": 0,
}


def volts(a: float, b: float | None = None, c: float | None = None) -> dict[str, float]:
    return dict(zip(V, (a, a if b is None else b, a if c is None else c), strict=True))


def run(analytics: dict[str, Any], steps: list[tuple[float, dict[str, Any]]]) -> RuleBench:
    bench = RuleBench(METER, analytics={"nominal_v": 277.0, **analytics})
    for dt, values in steps:
        bench.step(values, dt=dt)
    return bench


# id, analytics settings, steps (seconds, values), expected alarm events
CASES: list[tuple[str, dict[str, Any], list[tuple[float, dict[str, Any]]], list[Any]]] = [
    (
        "outage on all phases is the last gasp; voltage back is the restore",
        {"outage": {}},
        [(1, volts(277)), (1, volts(0)), (1, volts(0)), (1, volts(100)), (1, volts(277))],
        [(2, "outage", "raised"), (5, "outage", "cleared")],
    ),
    (
        "one phase lost is not an outage",
        {"outage": {}},
        [(1, volts(277, 0, 277)), (1, volts(0, 0, 277))],
        [],
    ),
    (
        "sag: below range A (95 %), then below range B (91.7 %), then back",
        {"voltage": {}},
        [(1, volts(277)), (1, volts(277, 260)), (1, volts(277, 250)), (1, volts(277))],
        [
            (2, "sag_rangeA", "raised"),
            (3, "sag_rangeB", "raised"),
            (4, "sag_rangeA", "cleared"),
            (4, "sag_rangeB", "cleared"),
        ],
    ),
    (
        "swell above range A (105 %) but inside range B (105.8 %), with 0.5 % hysteresis",
        {"voltage": {}},
        [(1, volts(292)), (1, volts(290)), (1, volts(289))],
        [(1, "swell_rangeA", "raised"), (3, "swell_rangeA", "cleared")],
    ),
    (
        "a sustained-only sag: on delay 60 s",
        {"voltage": {"on_delay_s": 60}},
        [(1, volts(255)), (30, volts(277)), (1, volts(255)), (60, volts(255))],
        [(92, "sag_rangeA", "raised")],
    ),
    (
        "during an outage the sag holds; the outage speaks",
        {"voltage": {}, "outage": {}},
        [(1, volts(255)), (1, volts(0)), (1, volts(277))],
        [
            (1, "sag_rangeA", "raised"),
            (2, "outage", "raised"),
            (3, "outage", "cleared"),
            (3, "sag_rangeA", "cleared"),
        ],
    ),
    (
        "tamper: export counter rises on a consumption-only meter; clears 300 s after it stops",
        {"tamper": {}},
        [
            (1, {EXP: 0}),
            (1, {EXP: 5}),
            (1, {EXP: 9}),
            (1, {EXP: 9}),
            (299, {EXP: 9}),
            (1, {EXP: 9}),
        ],
        [(2, "tamper_reverse_energy", "raised"), (304, "tamper_reverse_energy", "cleared")],
    ),
    (
        "tamper: current on a phase whose voltage is near zero",
        {"tamper": {"off_delay_s": 0}},
        [(1, {V[1]: 0.0, A[1]: 20.0}), (1, {V[1]: 277.0})],
        [
            (1, "tamper_current_without_voltage", "raised"),
            (2, "tamper_current_without_voltage", "cleared"),
        ],
    ),
    (
        "tamper: the meter's own flag",
        {"tamper": {"flag": "@Tamper", "off_delay_s": 0, "consumption_only": False}},
        [(1, {"@Tamper": 1}), (1, {"@Tamper": 1}), (1, {"@Tamper": 0})],
        [(1, "tamper_flag", "raised"), (3, "tamper_flag", "cleared")],
    ),
    (
        "transformer loading above 100 % for 60 s; clears below 95 %",
        {"loading": {"rating_kva": 100}},
        [
            (1, {VA: 120_000.0}),
            (59, {VA: 120_000.0}),
            (1, {VA: 120_000.0}),
            (1, {VA: 96_000.0}),
            (1, {VA: 94_000.0}),
        ],
        [(61, "transformer_overload", "raised"), (63, "transformer_overload", "cleared")],
    ),
]


@pytest.mark.parametrize(("analytics", "steps", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_analytics(analytics: dict[str, Any], steps: list[Any], expected: list[Any]) -> None:
    assert run(analytics, steps).alarms() == expected


def test_outage_events_say_last_gasp_and_restore_with_duration() -> None:
    bench = run({"outage": {}}, [(1, volts(0)), (42, volts(277))])
    gasp, restore = bench.of("alarm")
    assert gasp["event"] == "lastGasp" and gasp["priority"] == "critical"
    assert restore["event"] == "restore" and restore["durationS"] == 42.0
    assert bench.value("outage") is False


def test_sag_event_names_the_phase_the_limit_and_the_range() -> None:
    bench = run({"voltage": {}}, [(1, volts(277, 262, 270))])
    (sag,) = bench.of("alarm")
    assert sag["phase"] == V[1] and sag["value"] == 262.0 and sag["range"] == "A"
    assert sag["limitV"] == pytest.approx(263.15) and sag["pctOfNominal"] == pytest.approx(94.58)


def test_loading_percent_is_published() -> None:
    bench = run({"loading": {"rating_kva": 50}}, [(1, {VA: 40_000.0})])
    assert bench.value("loading_pct") == pytest.approx(80.0)
    assert bench.engine.published == {"loading_pct": "MV"}


def kw_steps(kw: float, minutes: int, wh: list[float]) -> list[tuple[float, dict[str, Any]]]:
    """A sample a minute for ``minutes`` at ``kw``, the counter continuing from ``wh[0]``."""
    steps = []
    for _ in range(minutes):
        wh[0] += kw * 1000 / 60
        steps.append((60.0, {IMP: round(wh[0])}))
    return steps


def test_fifteen_minute_demand_and_the_billing_peak() -> None:
    wh = [1_000_000.0]
    bench = RuleBench(METER, analytics={"demand": {}})
    bench.step({IMP: 1_000_000}, dt=1)  # t = 1 s: the first interval starts
    # 100 kW, 50 kW, 150 kW in three quarter hours (samples at 61 s, 121 s, ...)
    for kw in (100, 50, 150):
        for dt, values in kw_steps(kw, 15, wh):
            bench.step(values, dt=dt)
    events = bench.of("demand")
    assert [round(e["kW"], 1) for e in events] == [100.0, 50.0, 150.0]
    assert [e["newPeak"] for e in events] == [True, False, True]
    assert [e["complete"] for e in events] == [True, True, True]
    assert events[0]["intervalStartAt"] == bench.start
    assert events[0]["intervalEndAt"] == bench.start + 900
    assert events[1]["peakKW"] == pytest.approx(100.0, abs=0.1)
    assert bench.value("demand_peak_kW") == pytest.approx(150.0, abs=0.1)
    assert bench.outputs["demand_peak_kW"].ts == bench.start + 1800  # when the peak interval began
    assert events[0]["billingPeriod"] == "2026-01"


def test_a_gap_makes_an_interval_incomplete_and_it_never_sets_the_peak() -> None:
    bench = RuleBench(METER, analytics={"demand": {}})
    bench.step({IMP: 1_000_000}, dt=1)
    bench.step({IMP: 1_010_000}, dt=1000)  # t = 1001 s: 100 s late for the boundary
    (event,) = bench.of("demand")
    assert event["complete"] is False and event["newPeak"] is False
    assert "demand_peak_kW" not in bench.outputs


def test_counter_going_backwards_gives_no_demand() -> None:
    bench = RuleBench(METER, analytics={"demand": {}})
    bench.step({IMP: 1_000_000}, dt=1)
    bench.step({IMP: 5}, dt=900)  # a meter exchange
    (event,) = bench.of("demand")
    assert "kW" not in event or event["kW"] is None
    assert event["complete"] is False


def test_settlement_reads_at_the_start_and_end_of_a_demand_response_event() -> None:
    from edgetwin.edge_rules.demand import DrEvent

    start = "2026-01-01T00:05:00Z"  # T0 + 300 s
    end = "2026-01-01T00:20:00Z"  # T0 + 1200 s
    bench = RuleBench(
        METER, analytics={"demand_response": [{"id": "DR-42", "start": start, "end": end}]}
    )
    wh = 1_000_000
    for _ in range(30):  # a sample a minute, 1 kWh a minute
        wh += 1000
        bench.step({IMP: wh, EXP: 7}, dt=60)
    first, last = bench.of("settlementRead")
    assert (first["eventId"], first["edge"], first["lateS"]) == ("DR-42", "start", 0.0)
    assert first["readAt"] == bench.start + 300 and first["importWh"] == 1_005_000
    assert first["exportWh"] == 7
    assert (last["edge"], last["importWh"], last["energyWh"]) == ("end", 1_020_000, 15_000)
    assert last["startRead"] is True
    assert (
        first["windowStartAt"]
        == DrEvent.model_validate({"id": "x", "start": start, "end": end}).start.timestamp()
    )


def test_a_settlement_read_waits_for_a_good_reading_and_says_how_late() -> None:
    from edgetwin.core.models import FAILURE

    bench = RuleBench(
        METER,
        analytics={"demand_response": [
            {"id": "DR-1", "start": "2026-01-01T00:00:10Z", "end": "2026-01-01T00:01:00Z"}]},
    )  # fmt: skip
    bench.step({IMP: None}, dt=10, quality=FAILURE)  # the meter is down at the start
    bench.step({IMP: None}, dt=5, quality=FAILURE)
    bench.step({IMP: 1_000_100}, dt=5)  # t = 20 s
    (read,) = bench.of("settlementRead")
    assert read["edge"] == "start" and read["lateS"] == 10.0


def test_outage_state_is_unknown_while_the_voltages_are() -> None:
    # a held state must not look trustworthy: an interlock reading `outage` then refuses
    from edgetwin.core.models import FAILURE

    bench = run({"outage": {}}, [(1, volts(277))])
    assert bench.value("outage") is False and bench.outputs["outage"].quality.is_good
    bench.step({V[0]: None}, quality=FAILURE)
    assert bench.outputs["outage"].value is None
    assert bench.outputs["outage"].quality == FAILURE
    bench.step({V[0]: 277.0})
    assert bench.value("outage") is False
