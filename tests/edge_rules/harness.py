"""A twin's rule engine on a manual clock: set point values, move time, collect events.

Rules are built through ``edge_rules.config.build`` -- the path the agent's config takes -- so the
tests exercise the same validation and ordering."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from edgetwin.core.clock import ManualClock
from edgetwin.core.models import GOOD, Quality, Reading, Value
from edgetwin.edge_rules.config import FloodSettings, build
from edgetwin.edge_rules.engine import RuleEngine

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a quarter-hour boundary


class RuleBench:
    def __init__(
        self,
        points: Mapping[str, Value],
        *,
        analytics: dict[str, Any] | None = None,
        rules: Iterable[dict[str, Any]] = (),
        flood: FloodSettings | None = None,
        start: float = T0,
    ) -> None:
        self.clock = ManualClock(start)
        engine, _, problems = build(
            set(points), analytics, list(rules), [], flood or FloodSettings()
        )
        assert not problems, problems
        assert engine is not None
        self.engine: RuleEngine = engine
        self.start = start
        self.points = {n: Reading(n, v, GOOD, start) for n, v in points.items()}
        self.outputs: dict[str, Reading] = {}
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def step(
        self, values: Mapping[str, Value] | None = None, dt: float = 1.0, quality: Quality = GOOD
    ) -> list[tuple[str, dict[str, Any]]]:
        """Advance ``dt`` seconds, take ``values`` as fresh samples (a poll), evaluate."""
        self.clock.advance(dt)
        now = self.clock.time()
        for name, value in (values or {}).items():
            self.points[name] = Reading(name, value if quality.is_good else None, quality, now)
        outputs, events = self.engine.evaluate({**self.points, **self.outputs}, now)
        self.outputs.update(outputs)
        self.events.extend((now - self.start, kind, body) for kind, body in events)
        return events

    def value(self, name: str) -> Value:
        return self.outputs[name].value

    def alarms(self) -> list[tuple[float, str, str]]:
        """(seconds since start, alarm name, state) of every alarm event so far."""
        return [(round(t, 3), b["name"], b["state"]) for t, k, b in self.events if k == "alarm"]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [b for _, k, b in self.events if k == kind]
