"""The rule engine of one twin: its rules in a defined order, evaluated on the twin's state.

The twin calls ``evaluate`` when it reports after a poll that brought samples, and on the
runtime's one-second tick while ``waiting`` says time alone matters (a delay running, a window
to close), so delays and windows end even when nothing arrives and idle twins cost nothing.
Rules run in their configured order -- quality rules already ran at ingest (``edge_rules.quality``),
then the built-in analytics, then the configured rules in file order -- and each rule sees the
outputs of the rules before it as points. A rule's outputs become points of the twin (in its
state, usable by interlocks); those not starting with ``@`` are published on the twin's analytics
profile. Events (alarm transitions, demand intervals, settlement reads) are returned for the twin
to publish on its event profile, ahead of its telemetry.

State that matters across a restart (alarm states, windows, demand, settlement reads) is taken
with ``snapshot`` and given back with ``restore``; ``edge_rules.store`` keeps it in SQLite. Each
rule's state is keyed by its name and a fingerprint of its settings, so a changed rule starts
afresh instead of resuming state that no longer fits it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from edgetwin.core.models import FAILURE, GOOD, Quality, Reading, Validity, Value
from edgetwin.edge_rules.alarm import Alarm
from edgetwin.edge_rules.expr import Expression

#: a value the expression could not compute (division by zero, sqrt of a negative number)
INCONSISTENT = Quality(Validity.INVALID, frozenset({"inconsistent"}))


_NO_EVENTS: list[dict[str, Any]] = []  # returned empty, never appended to


class Context:
    """What a rule sees and writes during one evaluation."""

    __slots__ = ("events", "memo", "now", "outputs", "points")

    def __init__(self, now: float, points: dict[str, Reading]) -> None:
        self.now = now
        self.points = points  # owned: rules add their outputs to it
        self.outputs: dict[str, Reading] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.memo: dict[Any, Any] = {}  # what several rules compute alike (e.g. the voltages)

    def good(self, name: str) -> Value:
        """The point's value if it is known with good quality, else None."""
        r = self.points.get(name)
        return r.value if r is not None and r.quality.is_good else None

    def put(self, name: str, value: Value, quality: Quality, ts: float) -> None:
        reading = Reading(name, value if quality.is_good else None, quality, ts)
        self.points[name] = self.outputs[name] = reading

    def keep(self, reading: Reading) -> None:
        """Output ``reading`` as it is (named by its ``point``)."""
        self.points[reading.point] = self.outputs[reading.point] = reading

    def state(
        self, cached: Reading | None, name: str, value: Value, unknown: Quality | None = None
    ) -> Reading | None:
        """Output a state (e.g. an alarm's), reusing ``cached`` while the value is unchanged:
        its time is when the state last changed. With ``unknown`` (the quality of inputs that
        are not good) the state is output without a value, so an interlock reading it refuses
        rather than trusting a held state. Returns what to cache."""
        if unknown is not None:
            self.put(name, None, unknown, self.now)
            return None
        if cached is None or cached.value != value:
            cached = Reading(name, value, GOOD, self.now)
        self.keep(cached)
        return cached

    def bad(self, names: Iterable[str]) -> Quality | None:
        """The quality of the first of ``names`` not known with good quality, or None."""
        for n in names:
            r = self.points.get(n)
            if r is None:
                return FAILURE
            if not r.quality.is_good:
                return r.quality
        return None

    def compute(self, name: str, expr: Expression) -> Reading:
        """``expr`` over the points: a value only when every input is good, else the first bad
        input's quality (``failure`` for one never read); the newest input's time."""
        if expr.bare is not None:  # just a point: its sample under the rule's name
            r = self.points.get(expr.bare)
            if r is None:
                return Reading(name, None, FAILURE, self.now)
            return Reading(name, r.value if r.quality.is_good else None, r.quality, r.ts)
        values: dict[str, Any] = {}
        ts = None
        for n in expr.names:
            r = self.points.get(n)
            if r is None:
                return Reading(name, None, FAILURE, self.now)
            if not r.quality.is_good:
                return Reading(name, None, r.quality, r.ts)
            values[n] = r.value
            if ts is None or r.ts > ts:
                ts = r.ts
        value = expr.evaluate(values)
        when = self.now if ts is None else ts
        if value is None:
            return Reading(name, None, INCONSISTENT, when)
        return Reading(name, value, GOOD, when)

    def alarm(
        self,
        alarm: Alarm,
        condition: bool | None,
        value: Any = None,
        detail: Callable[[], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Feed ``alarm``; queue its events and return their bodies (a rule may annotate).
        ``detail`` (what the raised event says besides the value) is called only when the alarm
        raises: rules pass a callable made once, not one per evaluation."""
        if alarm.quiet(condition, self.now):  # the common case, without a call to update
            if condition and alarm.active:
                alarm.value = value
            return _NO_EVENTS
        bodies = alarm.update(condition, self.now, value, detail)
        if bodies:
            self.events.extend(("alarm", body) for body in bodies)
        return bodies

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        self.events.append((kind, body))


class Rule(Protocol):
    """One rule of a twin. ``outputs`` maps each point it writes to its value type (``MV``,
    ``SPS``), or to None for an output kept in the twin's state but not published. A rule may
    also have ``units`` and ``deadbands`` (absolute, for reporting) per output."""

    name: str
    key: str

    @property
    def outputs(self) -> Mapping[str, str | None]: ...

    def evaluate(self, ctx: Context) -> None: ...

    def alarms(self) -> Sequence[Alarm]: ...

    def snapshot(self) -> Any:
        """JSON-able state worth keeping across a restart, or None."""
        ...

    def restore(self, state: Any) -> None: ...


class RuleEngine:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self._saved: dict[str, str] = {}
        self.evaluations = 0

        self.units: dict[str, str] = {}
        self._deadbands: dict[str, float] = {}
        for rule in self.rules:
            self.units.update(getattr(rule, "units", {}))
            self._deadbands.update(getattr(rule, "deadbands", {}))

    @property
    def published(self) -> dict[str, str]:
        """Outputs published on the analytics profile, with their value types."""
        return {n: t for r in self.rules for n, t in r.outputs.items() if t is not None}

    def deadband(self, name: str) -> float | None:
        return self._deadbands.get(name)

    def evaluate(
        self, points: dict[str, Reading], now: float
    ) -> tuple[dict[str, Reading], list[tuple[str, dict[str, Any]]]]:
        """Run every rule in order on ``points`` (consumed: outputs are added to it); return the
        outputs and the events ``(kind, body)``."""
        ctx = Context(now, points)
        for rule in self.rules:
            rule.evaluate(ctx)
        self.evaluations += len(self.rules)
        return ctx.outputs, ctx.events

    def alarms(self) -> list[Alarm]:
        return [a for rule in self.rules for a in rule.alarms()]

    def waiting(self, now: float) -> bool:
        """Whether time alone may change something now, with no new sample: an alarm's on /
        off delay is running or it is chattering, or a rule's ``wake_at()`` has come (a fixed
        window to close). Otherwise the twin skips the evaluation on its tick."""
        for rule in self.rules:
            for alarm in rule.alarms():
                if alarm.timing:
                    return True
            wake = getattr(rule, "wake_at", None)
            if wake is not None and (at := wake()) is not None and now >= at:
                return True
        return False

    def snapshot(self, *, changed_only: bool = True) -> dict[str, str]:
        """Rule states by key, as JSON; by default only those changed since the last one."""
        out = {}
        for rule in self.rules:
            state = rule.snapshot()
            if state is None:
                continue
            text = json.dumps(state, sort_keys=True)
            if not changed_only or self._saved.get(rule.key) != text:
                out[rule.key] = self._saved[rule.key] = text
        return out

    def unsaved(self) -> None:
        """The last snapshot could not be written: the next one includes every state."""
        self._saved.clear()

    def restore(self, states: Mapping[str, str]) -> None:
        """Give each rule its saved state (JSON by key); rules with none start afresh."""
        for rule in self.rules:
            if rule.key in states:
                rule.restore(json.loads(states[rule.key]))
                self._saved[rule.key] = states[rule.key]
