"""Built-in utility analytics on a twin's voltages, currents and power: outage and restore,
voltage sag and swell (ANSI C84.1), meter tamper and transformer loading. Each is a rule
(``edge_rules.engine.Rule``) enabled per twin under ``[twins.analytics]``; their settings and
the fields they read are validated with the config. Demand and settlement reads are in
``edge_rules.demand``.

Voltages are line-to-neutral, as percentages of ``nominal_v`` (the service voltage the meter
sees, e.g. 120 or 277). The phase fields default to OpenFMB's ``readingMMXU.PhV.phsA/B/C`` and
``readingMMXU.A.phsA/B/C``; a twin whose map names them otherwise sets ``voltage_fields`` /
``current_fields``. An input that is not of good quality makes a condition unknown, and an
unknown condition holds its alarm (``edge_rules.alarm``): a meter that stops answering is not
an outage -- the device's own quality says that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgetwin.core.models import GOOD, Reading, Value
from edgetwin.edge_rules.alarm import Alarm, AlarmSpec, FloodPolicy, beyond
from edgetwin.edge_rules.engine import Context
from edgetwin.edge_rules.kinds import Priority


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Delays(_Strict):
    on_delay_s: float = Field(0.0, ge=0)
    off_delay_s: float = Field(0.0, ge=0)


def _alarm(name: str, priority: str, message: str, d: _Delays, flood: FloodPolicy) -> Alarm:
    return Alarm(AlarmSpec(name, priority, message, d.on_delay_s, d.off_delay_s, flood))


class _Analytic:
    """Name, key and alarms common to the analytics; alarm states are what persists."""

    name: str
    outputs: dict[str, str | None] = {}

    def __init__(self, key: str) -> None:
        self.key = key
        self._alarms: list[Alarm] = []

    def alarms(self) -> Sequence[Alarm]:
        return self._alarms

    def snapshot(self) -> Any:
        return {a.spec.name: a.snapshot() for a in self._alarms}

    def restore(self, state: Any) -> None:
        for a in self._alarms:
            if a.spec.name in state:
                a.restore(state[a.spec.name])


def _volts(ctx: Context, fields: tuple[str, ...]) -> list[float] | None:
    """The good values of ``fields`` (None unless all are good numbers); computed once per
    evaluation for the analytics that share them."""
    if fields in ctx.memo:
        return ctx.memo[fields]
    out: list[float] | None = []
    for f in fields:
        r = ctx.points.get(f)
        if r is None or not r.quality.is_good or not isinstance(r.value, int | float):
            out = None
            break
        out.append(float(r.value))  # type: ignore[union-attr]
    ctx.memo[fields] = out
    return out


class OutageSettings(_Delays):
    outage_pct: float = Field(10.0, gt=0, lt=100, description="all phases below: outage")
    restore_pct: float = Field(80.0, gt=0, le=100, description="all phases at or above: restore")
    priority: Priority = "critical"


class _PhaseAnalytic(_Analytic):
    """An analytic of the phase voltages against the nominal."""

    def __init__(self, key: str, nominal_v: float, fields: Sequence[str]) -> None:
        super().__init__(key)
        self.fields = tuple(fields)
        self.nominal = nominal_v


class OutageRule(_PhaseAnalytic):
    """Loss of voltage on every phase is an outage (the *last gasp* event); voltage back on
    every phase is the restore (with the outage's duration). Output ``outage`` (true during an
    outage; kept in the twin's state, not published: the events say it)."""

    name = "outage"
    outputs = {"outage": None}

    def __init__(
        self,
        cfg: OutageSettings,
        nominal_v: float,
        fields: Sequence[str],
        key: str,
        flood: FloodPolicy,
    ) -> None:
        super().__init__(key, nominal_v, fields)
        self.out_v = nominal_v * cfg.outage_pct / 100
        self.restore_v = nominal_v * cfg.restore_pct / 100
        msg = "loss of voltage on all phases"
        self.alarm = _alarm("outage", cfg.priority, msg, cfg, flood)
        self._alarms = [self.alarm]
        self._state: Reading | None = None

    def _detail(self) -> dict[str, Any]:
        return {"limitV": round(self.out_v, 3)}

    def evaluate(self, ctx: Context) -> None:
        volts = _volts(ctx, self.fields)
        condition: bool | None = None
        if volts is not None:
            if max(volts) < self.out_v:
                condition = True
            elif min(volts) >= self.restore_v:
                condition = False  # between the two: partly back, the outage holds
        value = None if volts is None else max(volts)
        for body in ctx.alarm(self.alarm, condition, value, self._detail):
            body["event"] = "lastGasp" if body["state"] == "raised" else "restore"
        unknown = ctx.bad(self.fields) if volts is None else None
        self._state = ctx.state(self._state, "outage", self.alarm.active, unknown)


class VoltageSettings(_Delays):
    """ANSI C84.1 service-voltage ranges, in percent of nominal (120 V base: range A
    114-126 V, range B 110-127 V)."""

    range_a: tuple[float, float] = (95.0, 105.0)
    range_b: tuple[float, float] = (91.7, 105.8)
    hysteresis_pct: float = Field(0.5, ge=0)
    outage_pct: float = Field(10.0, gt=0, lt=100, description="below on all phases: not a sag")


class VoltageRule(_PhaseAnalytic):
    """Sag and swell against ANSI C84.1: ``sag_rangeA`` / ``swell_rangeA`` (medium) when the
    lowest / highest phase leaves range A, ``sag_rangeB`` / ``swell_rangeB`` (high) when it
    leaves range B. During an outage (every phase below ``outage_pct``) the sag alarms hold:
    the outage analytic speaks for it."""

    name = "voltage"

    def __init__(
        self,
        cfg: VoltageSettings,
        nominal_v: float,
        fields: Sequence[str],
        key: str,
        flood: FloodPolicy,
    ) -> None:
        super().__init__(key, nominal_v, fields)
        self.hyst = nominal_v * cfg.hysteresis_pct / 100
        self.out_v = nominal_v * cfg.outage_pct / 100
        self._limits: list[tuple[Alarm, str, float, Callable[[], dict[str, Any]]]] = []
        for rng, (low, high), prio in (("A", cfg.range_a, "medium"), ("B", cfg.range_b, "high")):
            for kind, pct in (("sag", low), ("swell", high)):
                name = f"{kind}_range{rng}"
                text = f"voltage {'below' if kind == 'sag' else 'above'} ANSI C84.1 range {rng}"
                alarm = _alarm(name, prio, text, cfg, flood)
                limit = nominal_v * pct / 100
                detail = functools.partial(self._detail, kind, limit, rng)
                self._limits.append((alarm, kind, limit, detail))
                self._alarms.append(alarm)
        self._quiet = (nominal_v * cfg.range_a[0] / 100, nominal_v * cfg.range_a[1] / 100)
        self._volts: list[float] = []  # of the evaluation under way, for the details

    def _detail(self, kind: str, limit: float, rng: str) -> dict[str, Any]:
        worst = min(self._volts) if kind == "sag" else max(self._volts)
        return {
            "phase": self.fields[self._volts.index(worst)],
            "limitV": round(limit, 3),
            "range": rng,
            "pctOfNominal": round(worst / self.nominal * 100, 2),
        }

    def evaluate(self, ctx: Context) -> None:
        volts = _volts(ctx, self.fields)
        if (
            volts is not None
            and self._quiet[0] <= min(volts)
            and max(volts) <= self._quiet[1]
            and all(a.idle for a in self._alarms)
        ):
            return  # inside range A with nothing raised or pending: nothing can change
        if volts is None or max(volts) < self.out_v:  # unknown, or an outage: the alarms hold
            for alarm, *_ in self._limits:
                ctx.alarm(alarm, None)
            return
        self._volts = volts
        low, high = min(volts), max(volts)
        for alarm, kind, limit, detail in self._limits:
            worst = low if kind == "sag" else high
            condition = beyond(
                worst,
                alarm.active,
                above=limit if kind == "swell" else None,
                below=limit if kind == "sag" else None,
                hysteresis=self.hyst,
            )
            ctx.alarm(alarm, condition, round(worst, 3), detail)


class TamperSettings(_Delays):
    consumption_only: bool = True
    reverse_wh: float = Field(1.0, gt=0, description="export counter rise that is reverse flow")
    flag: str | None = Field(None, description="a point that is true while the meter says tamper")
    min_current_a: float = Field(1.0, gt=0)
    zero_voltage_pct: float = Field(10.0, gt=0, lt=100)
    off_delay_s: float = Field(300.0, ge=0)
    priority: Priority = "high"


class TamperRule(_Analytic):
    """Meter tamper, three signs: ``tamper_reverse_energy`` (the export counter rises on a
    consumption-only meter), ``tamper_current_without_voltage`` (a phase carries current while
    its voltage is near zero: a bypassed or disconnected voltage circuit) and ``tamper_flag``
    (the meter's own tamper indication). They clear after ``off_delay_s`` without the sign."""

    name = "tamper"

    def __init__(
        self,
        cfg: TamperSettings,
        nominal_v: float,
        volts: Sequence[str],
        amps: Sequence[str],
        export_counter: str,
        key: str,
        flood: FloodPolicy,
    ) -> None:
        super().__init__(key)
        self.cfg = cfg
        self.volts, self.amps, self.export = tuple(volts), tuple(amps), export_counter
        self.zero_v = nominal_v * cfg.zero_voltage_pct / 100
        self.reverse = (
            _alarm("tamper_reverse_energy", cfg.priority, "energy exported on a consumption-only "
                   "meter", cfg, flood)
            if cfg.consumption_only else None
        )  # fmt: skip
        self.no_voltage = _alarm(
            "tamper_current_without_voltage", cfg.priority, "current with no voltage", cfg, flood
        )
        self.flag = (
            _alarm("tamper_flag", cfg.priority, "the meter reports tampering", cfg, flood)
            if cfg.flag
            else None
        )
        self._alarms = [a for a in (self.reverse, self.no_voltage, self.flag) if a]
        self._no_voltage: dict[str, Any] = {}  # the phase that shows it, for the event
        self._export: tuple[float, float] | None = None  # (ts, Wh) of the last sample

    def evaluate(self, ctx: Context) -> None:
        if self.reverse is not None:
            self._reverse(ctx)
        condition: bool | None = False
        current = None
        for vf, af in zip(self.volts, self.amps, strict=True):
            v, a = ctx.good(vf), ctx.good(af)
            if not isinstance(v, int | float) or not isinstance(a, int | float):
                condition = None
                break
            if a > self.cfg.min_current_a and v < self.zero_v:
                condition, current = True, round(float(a), 3)
                self._no_voltage = {
                    "phase": af,
                    "currentA": current,
                    "voltageV": round(float(v), 3),
                }
        ctx.alarm(self.no_voltage, condition, current, self._no_voltage_detail)
        if self.flag is not None and self.cfg.flag is not None:
            r = ctx.points.get(self.cfg.flag)
            flag: Value = r.value if r is not None and r.quality.is_good else None
            ctx.alarm(self.flag, None if flag is None else bool(flag), flag, self._flag_detail)

    def _no_voltage_detail(self) -> dict[str, Any]:
        return dict(self._no_voltage)

    def _flag_detail(self) -> dict[str, Any]:
        return {"point": self.cfg.flag}

    def _reverse_detail(self) -> dict[str, Any]:
        return {"counter": self.export, "exportWh": self._export[1] if self._export else None}

    def _reverse(self, ctx: Context) -> None:
        assert self.reverse is not None
        r = ctx.points.get(self.export)
        if r is None or not r.quality.is_good or not isinstance(r.value, int | float):
            ctx.alarm(self.reverse, None)
            return
        rise = 0.0
        if self._export is not None and r.ts > self._export[0]:
            rise = float(r.value) - self._export[1]
        if self._export is None or r.ts > self._export[0]:
            self._export = (r.ts, float(r.value))
        ctx.alarm(self.reverse, rise >= self.cfg.reverse_wh, round(rise, 3), self._reverse_detail)

    def snapshot(self) -> Any:
        return {**super().snapshot(), "_export": list(self._export) if self._export else None}

    def restore(self, state: Any) -> None:
        super().restore(state)
        export = state.get("_export")
        self._export = (export[0], export[1]) if export else None


class LoadingSettings(_Delays):
    rating_kva: float = Field(gt=0)
    va_field: str = "readingMMXU.VA.net"
    above_pct: float = Field(100.0, gt=0)
    hysteresis_pct: float = Field(5.0, ge=0)
    on_delay_s: float = Field(60.0, ge=0)
    priority: Priority = "high"


class LoadingRule(_Analytic):
    """Transformer loading: apparent power as a percentage of the nameplate rating, published
    as ``loading_pct``; ``transformer_overload`` above ``above_pct`` for ``on_delay_s``."""

    name = "loading"
    outputs = {"loading_pct": "MV"}
    units = {"loading_pct": "%"}
    deadbands = {"loading_pct": 0.5}

    def __init__(self, cfg: LoadingSettings, key: str, flood: FloodPolicy) -> None:
        super().__init__(key)
        self.cfg = cfg
        msg = f"transformer loading above {cfg.above_pct:g} % of {cfg.rating_kva:g} kVA"
        self.alarm = _alarm("transformer_overload", cfg.priority, msg, cfg, flood)
        self._alarms = [self.alarm]

    def evaluate(self, ctx: Context) -> None:
        r = ctx.points.get(self.cfg.va_field)
        if r is None or not r.quality.is_good or not isinstance(r.value, int | float):
            quality = r.quality if r is not None else GOOD
            if r is not None:
                ctx.put("loading_pct", None, quality, r.ts)
            ctx.alarm(self.alarm, None)
            return
        pct = abs(float(r.value)) / (self.cfg.rating_kva * 1000) * 100
        ctx.put("loading_pct", pct, GOOD, r.ts)
        condition = beyond(
            pct, self.alarm.active, above=self.cfg.above_pct, hysteresis=self.cfg.hysteresis_pct
        )
        ctx.alarm(self.alarm, condition, round(pct, 2), self._detail)

    def _detail(self) -> dict[str, Any]:
        return {"ratingKVA": self.cfg.rating_kva}
