"""Report-by-exception with an injected clock (times are passed in, nothing sleeps)."""

from __future__ import annotations

import pytest

from edgetwin.core.clock import ManualClock
from edgetwin.core.models import FAILURE, GOOD, OLD_DATA, Reading
from edgetwin.edge_rules.deadband import ReportByException, ReportPolicy


def sample(value: float | bool | None, quality=GOOD) -> dict[str, Reading]:  # type: ignore[no-untyped-def]
    return {"v": Reading("v", value, quality, 0.0)}


def run(policy: ReportPolicy, values: list, clock: ManualClock, step: float = 1.0) -> list:  # type: ignore[type-arg]
    rbe = ReportByException({"v": policy})
    reported = []
    for value in values:
        if rbe.select(sample(value), clock.time()):
            reported.append(value)
        clock.advance(step)
    return reported


def test_slow_ramp_is_reported_step_by_step() -> None:
    # each sample moves 0.3, below the deadband of 1.0: comparing with the previous sample would
    # never report; comparing with the last *reported* value reports every ~4th sample
    ramp = [round(100 + 0.3 * i, 1) for i in range(20)]
    reported = run(ReportPolicy(deadband_abs=1.0, integrity_period_s=None), ramp, ManualClock())
    assert reported == [100.0, 101.2, 102.4, 103.6, 104.8]  # 105.7 is only 0.9 above


def test_noise_inside_the_deadband_is_not_reported() -> None:
    noise = [230.0, 230.4, 229.7, 230.3, 229.6, 230.45, 229.55]
    assert run(ReportPolicy(deadband_abs=0.5, integrity_period_s=None), noise, ManualClock()) == [
        230.0
    ]


def test_percent_of_range_deadband() -> None:
    policy = ReportPolicy(deadband_pct=1.0, range=(0, 600), integrity_period_s=None)  # 6 V
    assert policy.threshold == pytest.approx(6.0)
    assert run(policy, [277.0, 282.9, 283.1, 277.0], ManualClock()) == [277.0, 283.1, 277.0]


@pytest.mark.parametrize("new_quality", [FAILURE, OLD_DATA], ids=["invalid", "questionable"])
def test_quality_change_is_always_reported(new_quality) -> None:  # type: ignore[no-untyped-def]
    rbe = ReportByException({"v": ReportPolicy(deadband_abs=100.0, integrity_period_s=None)})
    assert rbe.select(sample(5.0), 0.0) == ["v"]
    assert rbe.select(sample(5.0), 1.0) == []
    assert rbe.select(sample(5.0, new_quality), 2.0) == ["v"]
    assert rbe.select(sample(5.0, new_quality), 3.0) == []
    assert rbe.select(sample(5.0), 4.0) == ["v"]  # and back to good


def test_integrity_period_reports_unchanged_values() -> None:
    clock = ManualClock()
    reported = run(ReportPolicy(deadband_abs=1.0, integrity_period_s=10), [50.0] * 31, clock)
    assert len(reported) == 4  # t=0, 10, 20, 30


def test_state_points_report_any_change() -> None:
    clock = ManualClock()
    assert run(
        ReportPolicy(kind="state", integrity_period_s=None),
        [False, False, True, True, False],
        clock,
    ) == [False, True, False]


def test_counter_reports_on_delta() -> None:
    counts = [1000, 1050, 1099, 1101, 1150, 1202]
    assert run(
        ReportPolicy(deadband_abs=100, kind="counter", integrity_period_s=None),
        counts,
        ManualClock(),
    ) == [1000, 1101, 1202]


def test_min_interval_holds_back_a_chattering_value_but_not_quality() -> None:
    rbe = ReportByException({"v": ReportPolicy(min_interval_s=5, integrity_period_s=None)})
    assert rbe.select(sample(1.0), 0.0) == ["v"]
    assert rbe.select(sample(2.0), 1.0) == []  # held back
    assert rbe.select(sample(2.0, FAILURE), 2.0) == ["v"]  # quality goes through at once
    assert rbe.select(sample(3.0), 3.0) == ["v"]  # quality back to good: reported
    assert rbe.select(sample(4.0), 8.0) == ["v"]  # 5 s after the last report


def test_percent_deadband_needs_a_range() -> None:
    with pytest.raises(ValueError, match="range"):
        ReportPolicy(deadband_pct=1.0)
