"""Rule kinds, table-driven on a manual clock: threshold (hysteresis, on / off delays, a bare
condition, unknown inputs), derived, rate, sliding and fixed statistics, chattering alarms, and
state surviving a restart through a real SQLite file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from edgetwin.core.models import FAILURE, GOOD
from edgetwin.edge_rules.config import FloodSettings
from edgetwin.edge_rules.store import RuleStore
from tests.edge_rules.harness import RuleBench

X = {"x": 0.0, "a": 0.0, "b": 0.0, "c": 0.0}
BAD = object()  # a step whose sample is invalid (device failure)

# id, rule, values of x at t = 1, 2, 3 ... (one per second), expected alarm events, outputs at end
CASES: list[tuple[str, dict[str, Any], list[Any], list[tuple[float, str, str]], dict[str, Any]]] = [
    (
        "threshold: on delay 3 s ignores a blip, hysteresis 5 holds at 97, off delay 2 s",
        {
            "name": "overload",
            "kind": "threshold",
            "expr": "x",
            "above": 100,
            "hysteresis": 5,
            "on_delay_s": 3,
            "off_delay_s": 2,
            "priority": "high",
        },
        [101, 99, 101, 102, 103, 104, 97, 94, 94, 94],
        [(6, "overload", "raised"), (10, "overload", "cleared")],
        {"overload": False},
    ),
    (
        "threshold below a limit",
        {"name": "low", "kind": "threshold", "expr": "x", "below": 10, "hysteresis": 1},
        [20, 9, 10.5, 11.5],
        [(2, "low", "raised"), (4, "low", "cleared")],
        {"low": False},
    ),
    (
        "threshold as a bare condition",
        {"name": "cond", "kind": "threshold", "expr": "x > 1 and a == 0"},
        [0, 2, 2, 0],
        [(2, "cond", "raised"), (4, "cond", "cleared")],
        {"cond": False},
    ),
    (
        "an invalid input holds the alarm: neither cleared nor raised on untrusted data",
        {"name": "hold", "kind": "threshold", "expr": "x", "above": 5},
        [6, BAD, BAD, 6, 1],
        [(1, "hold", "raised"), (5, "hold", "cleared")],
        {"hold": False},
    ),
    (
        "derived point with its own limit",
        {"name": "twice", "kind": "derived", "expr": "2 * x + a", "above": 15},
        [1, 5, 8],
        [(3, "twice", "raised")],
        {"twice": 16.0},
    ),
    (
        "rate of change per minute over 10 s",
        {"name": "ramp", "kind": "rate", "point": "x", "window_s": 10, "per": "min", "above": 30},
        [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
        [(2, "ramp", "raised"), (7, "ramp", "cleared")],
        {"ramp": 0.0},
    ),
    (
        "sliding mean over 3 s",
        {"name": "avg", "kind": "stats", "point": "x", "stat": "mean", "window_s": 3},
        [1, 2, 3, 4, 5],
        [],
        {"avg": 4.0},
    ),
    (
        "sliding max over 3 s forgets old peaks",
        {"name": "peak", "kind": "stats", "point": "x", "stat": "max", "window_s": 3},
        [9, 1, 2, 3, 1],
        [],
        {"peak": 3.0},
    ),
    (
        "sliding population standard deviation",
        {"name": "sd", "kind": "stats", "point": "x", "stat": "std", "window_s": 3},
        [1, 2, 3, 4, 5],
        [],
        {"sd": math.sqrt(2 / 3)},
    ),
]


@pytest.mark.parametrize(("rule", "xs", "alarms", "outputs"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_rule_kinds(
    rule: dict[str, Any],
    xs: list[Any],
    alarms: list[tuple[float, str, str]],
    outputs: dict[str, Any],
) -> None:
    bench = RuleBench(X, rules=[rule])
    for x in xs:
        if x is BAD:
            bench.step({"x": None}, quality=FAILURE)
        else:
            bench.step({"x": x}, quality=GOOD)
    assert bench.alarms() == alarms
    for name, expected in outputs.items():
        assert bench.value(name) == pytest.approx(expected)


def test_alarm_events_carry_priority_times_value_and_limit() -> None:
    bench = RuleBench(X, rules=[CASES[0][1]])
    for x in CASES[0][2]:
        bench.step({"x": x})
    raised, cleared = bench.of("alarm")
    assert raised == {
        "name": "overload", "state": "raised", "priority": "high", "raisedAt": bench.start + 6,
        "value": 104.0, "message": "", "rule": "threshold", "limit": 100.0,
    }  # fmt: skip
    assert cleared["clearedAt"] == bench.start + 10 and cleared["durationS"] == 4.0
    assert cleared["value"] == 94.0


def test_fixed_window_is_aligned_and_reports_the_completed_window() -> None:
    # 15-minute mean of W: one window from the quarter hour, value published when it closes
    bench = RuleBench(
        X,
        rules=[{"name": "w15", "kind": "stats", "point": "x", "stat": "mean", "window_s": 900,
                "window": "fixed", "units": "W"}],
    )  # fmt: skip
    for i in range(14):  # samples at 60 .. 840 s
        bench.step({"x": 1000.0 if i % 2 else 2000.0}, dt=60)
    assert "w15" not in bench.outputs  # not before the window closes
    bench.step({"x": 5000.0}, dt=60)  # t = 900: the next window's first sample
    w15 = bench.outputs["w15"]
    assert w15.value == pytest.approx(1500.0) and w15.ts == bench.start + 900
    bench.step(dt=900)  # silence: the second window (one sample) closes on the tick
    assert bench.value("w15") == pytest.approx(5000.0)
    assert bench.engine.units == {"w15": "W"}


def test_chattering_alarm_is_summarised_not_repeated() -> None:
    bench = RuleBench(
        X,
        rules=[{"name": "flap", "kind": "threshold", "expr": "x > 1"}],
        flood=FloodSettings(max_raises=3, window_s=60),
    )
    for t in range(1, 21):
        bench.step({"x": 2 if t % 2 else 0})
    for _ in range(60):
        bench.step()
    assert bench.alarms() == [
        (1, "flap", "raised"), (2, "flap", "cleared"), (3, "flap", "raised"),
        (4, "flap", "cleared"), (5, "flap", "raised"), (6, "flap", "cleared"),
        (7, "flap", "chattering"), (80, "flap", "cleared"),
    ]  # fmt: skip
    summary = bench.of("alarm")[-1]
    assert summary["suppressed"] == 13  # the transitions at 8 .. 20 s
    assert bench.of("alarm")[-2]["raisesInWindow"] == 4


def test_rule_state_survives_a_restart(tmp_path: Path) -> None:
    rules = [
        {"name": "hot", "kind": "threshold", "expr": "x", "above": 50},
        {"name": "m", "kind": "stats", "point": "a", "stat": "mean", "window_s": 900,
         "window": "fixed"},
    ]  # fmt: skip
    first = RuleBench(X, rules=rules)
    for _ in range(5):
        first.step({"x": 60.0, "a": 10.0}, dt=60)  # raised at 60 s; 5 samples of a
    assert first.alarms() == [(60, "hot", "raised")]
    store = RuleStore(tmp_path / "rules.db")
    store.save({"twin": first.engine.snapshot()})
    assert first.engine.snapshot() == {}  # nothing changed since: nothing to write
    store.close()

    store = RuleStore(tmp_path / "rules.db")
    second = RuleBench(X, rules=rules, start=first.clock.time())
    second.engine.restore(store.load("twin"))
    for _ in range(10):
        second.step({"x": 60.0 if _ < 9 else 20.0, "a": 40.0}, dt=60)  # t = 360 .. 900 s
    # still raised: not raised a second time; cleared once x falls
    assert second.alarms() == [(600, "hot", "cleared")]
    # the quarter hour closed at 900 s with all 14 samples, the 5 from before the restart too
    assert second.outputs["m"].ts == first.start + 900
    assert second.value("m") == pytest.approx((5 * 10 + 9 * 40) / 14)
    assert second.engine.rules[1].snapshot()["acc"][1] == 1  # the 900 s sample opened the next
    cleared = second.of("alarm")[0]
    assert cleared["raisedAt"] == first.start + 60  # the raise time from before the restart


def test_a_changed_rule_starts_afresh(tmp_path: Path) -> None:
    rule = {"name": "hot", "kind": "threshold", "expr": "x", "above": 50}
    first = RuleBench(X, rules=[rule])
    first.step({"x": 60.0})
    store = RuleStore(tmp_path / "rules.db")
    store.save({"twin": first.engine.snapshot()})
    changed = RuleBench(X, rules=[{**rule, "above": 70}])
    changed.engine.restore(store.load("twin"))
    changed.step({"x": 60.0})
    assert changed.value("hot") is False  # not resumed as raised under the old limit
