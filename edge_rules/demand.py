"""Demand and demand-response settlement reads, from a meter's energy counter.

**Block demand** (``[twins.analytics.demand]``): the average power of each fixed interval
(``interval_s``, 900 s by default, aligned to the clock), computed as a revenue meter does --
the counter's rise over the interval divided by its length -- so no sample is needed between
the boundaries. At the first sample of each new interval the ended interval's demand is
published as a ``demand`` event and as the point ``demand_kW``; the highest complete interval of
the billing period (the calendar month, UTC) is ``demand_peak_kW`` and the event says when a
new peak is set. An interval whose boundary samples are late by more than ``tolerance_s``
(a device or agent outage) is reported ``complete: false`` and never sets the peak; a counter
that went backwards (a meter exchange) gives no value.

**Settlement reads** (``[[twins.analytics.demand_response]]`` with ``id``, ``start``, ``end``):
for each demand-response event window, the first good counter readings at or after its start
and its end are published as ``settlementRead`` events (import and export Wh, how late the read
was, and at the end the energy over the window). A read is made once: the state is kept across
restarts; an end passed without a start read says so (``startRead: false``).

Both keep their state across restarts (``edge_rules.store``). Event times (keys ending in
``At``) are seconds since the epoch here and OpenFMB timestamps on the wire.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from edgetwin.core.models import FAILURE, GOOD, Reading
from edgetwin.edge_rules.alarm import Alarm
from edgetwin.edge_rules.engine import Context


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DemandSettings(_Strict):
    interval_s: float = Field(900.0, ge=60, le=86400)
    tolerance_s: float = Field(
        10.0, ge=0, description="boundary samples later than this: incomplete"
    )


def _good_counter(ctx: Context, field: str) -> Reading | None:
    r = ctx.points.get(field)
    if r is None or not r.quality.is_good or not isinstance(r.value, int | float):
        return None
    return r


def _period(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m")


class DemandRule:
    name = "demand"
    outputs = {"demand_kW": "MV", "demand_peak_kW": "MV"}
    units = {"demand_kW": "kW", "demand_peak_kW": "kW"}

    def __init__(self, cfg: DemandSettings, counter: str, key: str) -> None:
        self.cfg = cfg
        self.counter = counter
        self.key = key
        self._start: tuple[float, float, float] | None = None  # (interval start, ts, Wh)
        self._last: tuple[float | None, float] | None = None  # (kW, interval end)
        self._peak: tuple[str, float, float] | None = None  # (period, kW, interval start)
        self._kw: Reading | None = None  # the outputs, made again only when they change
        self._peak_r: Reading | None = None

    def alarms(self) -> Sequence[Alarm]:
        return ()

    def evaluate(self, ctx: Context) -> None:
        r = _good_counter(ctx, self.counter)
        if r is not None:
            self._sample(ctx, r.ts, float(r.value))  # type: ignore[arg-type]
        if self._last is not None:
            kw, end = self._last
            if self._kw is None or self._kw.ts != end:
                self._kw = Reading("demand_kW", kw, GOOD if kw is not None else FAILURE, end)
            ctx.keep(self._kw)
        if self._peak is not None:
            if self._peak_r is None or self._peak_r.ts != self._peak[2]:
                self._peak_r = Reading("demand_peak_kW", self._peak[1], GOOD, self._peak[2])
            ctx.keep(self._peak_r)

    def _sample(self, ctx: Context, ts: float, wh: float) -> None:
        length = self.cfg.interval_s
        interval = math.floor(ts / length) * length
        if self._start is None:
            self._start = (interval, ts, wh)
            return
        start, t0, e0 = self._start
        if interval <= start or ts <= t0:
            return
        end = start + length
        tol = self.cfg.tolerance_s
        complete = interval == end and t0 - start <= tol and ts - end <= tol
        kw = (wh - e0) / (ts - t0) * 3.6 if wh >= e0 else None  # Wh/s -> kW
        complete = complete and kw is not None
        period = _period(start)
        if self._peak is not None and self._peak[0] != period:
            self._peak = None  # a new billing period
        new_peak = complete and (self._peak is None or kw > self._peak[1])  # type: ignore[operator]
        if new_peak:
            self._peak = (period, kw, start)  # type: ignore[assignment]
        body: dict[str, Any] = {
            "intervalStartAt": start,
            "intervalEndAt": end,
            "kW": None if kw is None else round(kw, 4),
            "complete": complete,
            "newPeak": new_peak,
            "billingPeriod": period,
            "peakKW": None if self._peak is None else round(self._peak[1], 4),
            "peakAt": None if self._peak is None else self._peak[2],
            "energyWh": wh - e0,
        }
        missed = int((interval - end) // length)
        if missed:
            body["missedIntervals"] = missed
        ctx.emit("demand", body)
        self._last = (kw, end)
        self._start = (interval, ts, wh)

    def snapshot(self) -> Any:
        return {
            "start": list(self._start) if self._start else None,
            "last": list(self._last) if self._last else None,
            "peak": list(self._peak) if self._peak else None,
        }

    def restore(self, state: Any) -> None:
        s, last, peak = state.get("start"), state.get("last"), state.get("peak")
        self._start = (s[0], s[1], s[2]) if s else None
        self._last = (last[0], last[1]) if last else None
        self._peak = (peak[0], peak[1], peak[2]) if peak else None


class DrEvent(_Strict):
    id: str = Field(min_length=1)
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _order(self) -> DrEvent:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class SettlementRule:
    name = "demand_response"
    outputs: dict[str, str | None] = {}

    def __init__(
        self, events: Sequence[DrEvent], import_counter: str, export_counter: str | None, key: str
    ) -> None:
        self.events = sorted(events, key=lambda e: e.start)
        self.imp, self.exp = import_counter, export_counter
        self.key = key
        self._reads: dict[str, dict[str, Any]] = {}  # event id -> {"start": read, "end": read}

    def alarms(self) -> Sequence[Alarm]:
        return ()

    def evaluate(self, ctx: Context) -> None:
        r = _good_counter(ctx, self.imp)
        if r is None:
            return
        export = _good_counter(ctx, self.exp) if self.exp else None
        for ev in self.events:
            start, end = ev.start.timestamp(), ev.end.timestamp()
            if r.ts < start:
                break  # sorted: later events have not begun either
            done = self._reads.setdefault(ev.id, {})
            if "end" in done:
                continue
            read = {"readAt": r.ts, "importWh": r.value}
            if export is not None:
                read["exportWh"] = export.value
            if "start" not in done and r.ts < end:
                done["start"] = read
                self._emit(ctx, ev, "start", read, r.ts - start)
            elif r.ts >= end:
                done["end"] = read
                extra: dict[str, Any] = {"startRead": "start" in done}
                if "start" in done:
                    extra["energyWh"] = float(r.value) - float(done["start"]["importWh"])  # type: ignore[arg-type]
                self._emit(ctx, ev, "end", read, r.ts - end, **extra)

    def _emit(
        self, ctx: Context, ev: DrEvent, edge: str, read: dict[str, Any], late: float, **extra: Any
    ) -> None:
        ctx.emit(
            "settlementRead",
            {
                "eventId": ev.id,
                "edge": edge,
                "windowStartAt": ev.start.timestamp(),
                "windowEndAt": ev.end.timestamp(),
                **read,
                "lateS": round(late, 3),
                **extra,
            },
        )

    def snapshot(self) -> Any:
        return {k: dict(v) for k, v in self._reads.items()}

    def restore(self, state: Any) -> None:
        self._reads = {k: dict(v) for k, v in state.items()}
