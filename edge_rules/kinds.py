"""The configurable rule kinds: ``threshold``, ``derived``, ``rate`` and ``stats``.

Each is declared in the twin's config as ``[[twins.rules]]`` with a ``name`` (unique in the
twin; the name of its output point and of its alarm) and a ``kind``; each kind has a settings
model (``settings``) that validates its keys. Every kind may carry alarm limits (``above``,
``below``, ``hysteresis``, ``on_delay_s``, ``off_delay_s``, ``priority``, ``message``): its output
is then watched by an alarm (``edge_rules.alarm``).

* ``threshold``: ``expr`` -- an expression (``edge_rules.expr``) watched by limits, or, with no
  limits, a condition whose truth raises the alarm. Output: the alarm's state (true = raised),
  not published unless ``publish = true``.
* ``derived``: ``expr`` computed into a new point (published).
* ``rate``: rate of change of ``point`` over the last ``window_s``, per ``per`` (s, min, h).
* ``stats``: ``stat`` (min, max, mean, std -- population) of ``point`` over a ``window_s``
  ``window``: ``sliding`` (updated on every sample) or ``fixed`` (aligned to multiples of
  ``window_s`` since the epoch, e.g. quarter hours; the value of the last completed window).

Third-party kinds register a class with the same shape under the entry point group
``edgetwin.rules``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.edge_rules.alarm import Alarm, AlarmSpec, FloodPolicy, beyond
from edgetwin.edge_rules.engine import Context
from edgetwin.edge_rules.expr import compile_expression

Priority = Literal["critical", "high", "medium", "low"]  # edge_rules.alarm.PRIORITIES


class Limits(BaseModel):
    """Alarm settings shared by every rule kind and analytic."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(0.0, ge=0)
    on_delay_s: float = Field(0.0, ge=0)
    off_delay_s: float = Field(0.0, ge=0)
    priority: Priority = "medium"
    message: str = ""

    @property
    def has_limits(self) -> bool:
        return self.above is not None or self.below is not None

    def alarm(self, name: str, flood: FloodPolicy) -> Alarm:
        return Alarm(
            AlarmSpec(name, self.priority, self.message, self.on_delay_s, self.off_delay_s, flood)
        )


class RuleSettings(Limits):
    name: str = Field(pattern=r"^@?[A-Za-z_][A-Za-z0-9_]*$")
    kind: str
    publish: bool | None = None
    units: str = ""
    deadband_abs: float | None = Field(None, ge=0, description="report-by-exception of the output")


class _ValueRule:
    """A rule that computes one value and may watch it with limits."""

    kind: ClassVar[str]
    publish_default: ClassVar[bool] = True

    def __init__(self, cfg: RuleSettings, key: str, flood: FloodPolicy) -> None:
        self.name = cfg.name
        self.key = key
        self._cfg = cfg
        self._alarm = cfg.alarm(cfg.name, flood) if cfg.has_limits else None
        publish = self.publish_default if cfg.publish is None else cfg.publish
        self.outputs: dict[str, str | None] = {
            cfg.name: self.value_type if publish and not cfg.name.startswith("@") else None
        }
        self.units = {cfg.name: cfg.units} if cfg.units else {}
        self.deadbands = {cfg.name: cfg.deadband_abs} if cfg.deadband_abs is not None else {}

    value_type = "MV"

    def watch(self, ctx: Context, reading: Reading) -> None:
        if self._alarm is None:
            return
        value = reading.value if reading.quality.is_good else None
        c = self._cfg
        condition = beyond(
            value, self._alarm.active, above=c.above, below=c.below, hysteresis=c.hysteresis
        )
        ctx.alarm(self._alarm, condition, value, self._detail)

    def _detail(self) -> dict[str, Any]:
        c, value = self._cfg, self._alarm.value if self._alarm else None
        high = c.above is not None and value is not None and value > c.above
        return {"rule": self.kind, "limit": c.above if high else c.below}

    def alarms(self) -> Sequence[Alarm]:
        return [self._alarm] if self._alarm else []

    def snapshot(self) -> Any:
        return {"alarm": self._alarm.snapshot()} if self._alarm else None

    def restore(self, state: Any) -> None:
        if self._alarm and state.get("alarm"):
            self._alarm.restore(state["alarm"])


class ExprSettings(RuleSettings):
    expr: str


class DerivedRule(_ValueRule):
    kind = "derived"
    settings = ExprSettings

    def __init__(
        self, cfg: ExprSettings, key: str, flood: FloodPolicy, known: Collection[str]
    ) -> None:
        super().__init__(cfg, key, flood)
        self._expr = compile_expression(cfg.expr, known)

    def evaluate(self, ctx: Context) -> None:
        r = ctx.compute(self.name, self._expr)
        ctx.keep(r)
        self.watch(ctx, r)


class ThresholdRule(DerivedRule):
    kind = "threshold"
    publish_default = False
    value_type = "SPS"

    def __init__(
        self, cfg: ExprSettings, key: str, flood: FloodPolicy, known: Collection[str]
    ) -> None:
        super().__init__(cfg, key, flood, known)
        if self._alarm is None:  # the expression is the condition
            self._alarm = cfg.alarm(cfg.name, flood)
        self._state: Reading | None = None

    def _condition_detail(self) -> dict[str, Any]:
        return {"rule": self.kind, "expr": self._expr.source}

    def evaluate(self, ctx: Context) -> None:
        assert self._alarm is not None
        r = ctx.compute(self.name, self._expr)
        if self._cfg.has_limits:
            self.watch(ctx, r)
        else:
            condition = bool(r.value) if r.quality.is_good else None
            ctx.alarm(self._alarm, condition, r.value, self._condition_detail)
        unknown = None if r.quality.is_good else r.quality
        self._state = ctx.state(self._state, self.name, self._alarm.active, unknown)


class PointSettings(RuleSettings):
    point: str
    window_s: float = Field(gt=0)


class _SampleRule(_ValueRule):
    """Consumes each new good sample of ``point`` once (the tick re-evaluates the same one)."""

    def __init__(
        self, cfg: PointSettings, key: str, flood: FloodPolicy, known: Collection[str]
    ) -> None:
        super().__init__(cfg, key, flood)
        if cfg.point not in known:
            raise ValueError(f"point: unknown point {cfg.point!r}")
        self.point = cfg.point
        self.window_s = cfg.window_s
        self._last_ts: float | None = None

    def fresh(self, ctx: Context) -> Reading | None:
        r = ctx.points.get(self.point)
        if r is None or not r.quality.is_good or not isinstance(r.value, int | float):
            return None
        if self._last_ts is not None and r.ts <= self._last_ts:
            return None
        self._last_ts = r.ts
        return r

    def bad_input(self, ctx: Context) -> Reading | None:
        r = ctx.points.get(self.point)
        if r is None:
            return Reading(self.name, None, FAILURE, ctx.now)
        return None if r.quality.is_good else Reading(self.name, None, r.quality, r.ts)


class RateSettings(PointSettings):
    per: Literal["s", "min", "h"] = "s"


PER = {"s": 1.0, "min": 60.0, "h": 3600.0}


class RateRule(_SampleRule):
    kind = "rate"
    settings = RateSettings

    def __init__(
        self, cfg: RateSettings, key: str, flood: FloodPolicy, known: Collection[str]
    ) -> None:
        super().__init__(cfg, key, flood, known)
        self._per = PER[cfg.per]
        self._samples: deque[tuple[float, float]] = deque()

    def evaluate(self, ctx: Context) -> None:
        bad = self.bad_input(ctx)
        if bad is not None:
            self._samples.clear()
            ctx.put(self.name, None, bad.quality, bad.ts)
            self.watch(ctx, bad)
            return
        r = self.fresh(ctx)
        if r is None:
            return
        s = self._samples
        s.append((r.ts, float(r.value)))  # type: ignore[arg-type]
        while len(s) > 2 and s[1][0] <= r.ts - self.window_s:
            s.popleft()  # keep one sample at or before the window's start
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return
        rate = (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0]) * self._per
        out = Reading(self.name, rate, GOOD, r.ts)
        ctx.put(self.name, rate, GOOD, r.ts)
        self.watch(ctx, out)


class StatsSettings(PointSettings):
    stat: Literal["min", "max", "mean", "std"] = "mean"
    window: Literal["sliding", "fixed"] = "sliding"


def _stat(stat: str, values: Sequence[float]) -> float:
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    mean = math.fsum(values) / len(values)
    if stat == "mean":
        return mean
    return math.sqrt(max(0.0, math.fsum((v - mean) ** 2 for v in values) / len(values)))


class StatsRule(_SampleRule):
    """Windowed statistics. Sliding windows keep their samples; fixed windows keep a running
    count, sum, sum of squares, min and max, so a 15-minute window costs O(1) per sample."""

    kind = "stats"
    settings = StatsSettings

    def __init__(
        self, cfg: StatsSettings, key: str, flood: FloodPolicy, known: Collection[str]
    ) -> None:
        super().__init__(cfg, key, flood, known)
        self.stat = cfg.stat
        self.fixed = cfg.window == "fixed"
        self._samples: deque[tuple[float, float]] = deque()
        self._sum, self._added = 0.0, 0  # sliding: running sum of the samples' values
        self._acc: list[float] | None = None  # fixed: [start, n, sum, sumsq, min, max]
        self._result: tuple[float | None, float] | None = None  # fixed: (value, window end)
        self._out: Reading | None = None

    def evaluate(self, ctx: Context) -> None:
        r = self.fresh(ctx)
        if self.fixed:
            self._fixed(ctx, r)
        elif r is not None:
            self._sliding(ctx, r)
        elif (bad := self.bad_input(ctx)) is not None and not self._samples:
            ctx.put(self.name, None, bad.quality, bad.ts)

    def _sliding(self, ctx: Context, r: Reading) -> None:
        s = self._samples
        v = float(r.value)  # type: ignore[arg-type]
        s.append((r.ts, v))
        self._sum += v
        while s and s[0][0] <= r.ts - self.window_s:
            self._sum -= s.popleft()[1]
        self._added += 1
        if self._added >= 1000:  # bound the rounding drift of the running sum
            self._added, self._sum = 0, math.fsum(x for _, x in s)
        if self.stat == "mean":
            value = self._sum / len(s)
        else:
            value = _stat(self.stat, [x for _, x in s])
        out = Reading(self.name, value, GOOD, r.ts)
        ctx.keep(out)
        self.watch(ctx, out)

    def _fixed(self, ctx: Context, r: Reading | None) -> None:
        w = self.window_s
        now = r.ts if r is not None else ctx.now
        acc = self._acc
        if acc is not None and now >= acc[0] + w:  # the window closed
            end = acc[0] + w
            value = self._close(acc) if acc[1] else None
            self._result = (value, end)
            self._acc = acc = None
        if r is not None:
            if acc is None:
                acc = self._acc = [math.floor(r.ts / w) * w, 0, 0.0, 0.0, math.inf, -math.inf]
            v = float(r.value)  # type: ignore[arg-type]
            acc[1] += 1
            acc[2] += v
            acc[3] += v * v
            acc[4] = min(acc[4], v)
            acc[5] = max(acc[5], v)
        if self._result is not None:
            value, end = self._result
            if self._out is None or self._out.ts != end:  # made again only when a window closes
                self._out = Reading(self.name, value, GOOD if value is not None else FAILURE, end)
            ctx.keep(self._out)
            self.watch(ctx, self._out)

    def wake_at(self) -> float | None:
        """A fixed window closes at its end even if no sample comes (``RuleEngine.waiting``)."""
        return self._acc[0] + self.window_s if self.fixed and self._acc is not None else None

    def _close(self, acc: list[float]) -> float:
        _, n, total, squares, low, high = acc
        if self.stat == "min":
            return low
        if self.stat == "max":
            return high
        mean = total / n
        return mean if self.stat == "mean" else math.sqrt(max(0.0, squares / n - mean * mean))

    def snapshot(self) -> Any:
        state = super().snapshot() or {}
        state.update(last_ts=self._last_ts, samples=[list(p) for p in self._samples])
        state.update(acc=self._acc, result=list(self._result) if self._result else None)
        return state

    def restore(self, state: Any) -> None:
        super().restore(state)
        self._last_ts = state.get("last_ts")
        self._samples = deque((float(t), float(v)) for t, v in state.get("samples") or [])
        self._sum = math.fsum(v for _, v in self._samples)
        self._acc = state.get("acc")
        result = state.get("result")
        self._result = (result[0], result[1]) if result else None


KINDS: dict[str, type] = {
    "threshold": ThresholdRule,
    "derived": DerivedRule,
    "rate": RateRule,
    "stats": StatsRule,
}
