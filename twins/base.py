"""The twin contract, and ``PointMapTwin``: a twin whose points come entirely from a point map.

A twin adapts one asset. The runtime gives it readings from its device; the twin applies each
point's transform, keeps the live state (value, quality, time per field, and whether its device is
available), asks its report filter what changed enough to report, and turns that into OpenFMB
profile messages. It does no I/O: the pipeline (``agent.runtime.pipeline``) moves its messages
into the outbox. All methods are called from one task at a time.

Asset types with derived quantities or state machines subclass ``PointMapTwin`` and override
``derive``; a type that is fully described by data (like the meter) only names its profiles.
A twin may publish several profiles (a solar inverter: reading and status); each field belongs
to the one profile that defines it. A point-map field starting with ``@`` is an input for
``derive`` only and is never published (e.g. ``@St``, SunSpec's raw operating state).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from edgetwin.core.models import FAILURE, Reading
from edgetwin.core.points import PointSpec
from edgetwin.edge_rules.deadband import ReportByException, ReportPolicy
from edgetwin.edge_rules.engine import RuleEngine
from edgetwin.edge_rules.quality import QualityRules, QualitySettings
from edgetwin.twins.pointmap import PointEntry, ReportingSettings
from edgetwin.wire.openfmb import Profile, analytics_profile, event_body


class MessageClass(enum.IntEnum):
    """Outbox drop policy class: telemetry is dropped first, events last."""

    TELEMETRY = 0
    EVENT = 1


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: dict[str, Any]
    klass: MessageClass = MessageClass.TELEMETRY


@dataclass(frozen=True, slots=True)
class BoundPoint:
    """A point of a twin, with the driver-facing spec (``spec.key`` is ``"<mrid>/<field>"``)."""

    field: str
    spec: PointSpec
    entry: PointEntry

    @property
    def polled(self) -> bool:
        """False for a command point (``@Cmd``): written by control, never read -- an IEC 104
        double command or an OPC UA Command node has no value to read."""
        return self.field not in COMMAND_FIELDS


@dataclass(slots=True)
class TwinState:
    """A read-only view of a twin for other parts of the agent (status, CLI, later control)."""

    mrid: str
    name: str
    kind: str
    device: str
    available: bool
    last_update: float | None
    points: dict[str, Reading] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwinSpec:
    """Everything a twin is constructed from (validated config, resolved point map)."""

    mrid: str
    name: str
    kind: str
    device: str
    topic_prefix: str
    points: tuple[PointEntry, ...]
    reporting: ReportingSettings
    overrides: Mapping[str, ReportingSettings]
    quality: QualitySettings = QualitySettings()  # noqa: RUF009 (frozen: shared safely)


class Twin(Protocol):
    profiles: ClassVar[tuple[Profile, ...]]
    spec: TwinSpec

    def bound_points(self) -> Sequence[BoundPoint]: ...

    def ingest(self, readings: Iterable[Reading]) -> None: ...

    def set_available(self, available: bool, now: float) -> None: ...

    def report(self, now: float) -> list[Outgoing]: ...

    def state(self) -> TwinState: ...


def policy_for(
    entry: PointEntry, twin_default: ReportingSettings, override: ReportingSettings | None
) -> ReportPolicy:
    """A field's report policy. Precedence, lowest first: the twin's defaults, the point map
    entry, the per-point override in the config. Of the two deadband styles, the one set by the
    highest layer wins (``deadband_abs`` if a layer sets both)."""
    merged: dict[str, Any] = {"integrity_period_s": 300.0, "min_interval_s": 0.0}
    deadband: tuple[str, float] | None = None
    for layer in (twin_default, entry, override):
        if layer is None:
            continue
        for key in ("integrity_period_s", "min_interval_s"):
            if getattr(layer, key) is not None:
                merged[key] = getattr(layer, key)
        if layer.deadband_pct is not None:
            deadband = ("pct", layer.deadband_pct)
        if layer.deadband_abs is not None:
            deadband = ("abs", layer.deadband_abs)
    kind = "state" if entry.dtype == "bool" else entry.kind
    if deadband and deadband[0] == "pct" and entry.range is None:
        if kind == "analog":
            raise ValueError(f"{entry.field}: a percent deadband needs the point's range")
        deadband = None  # states report any change; counters need an absolute delta
    return ReportPolicy(
        deadband_abs=deadband[1] if deadband and deadband[0] == "abs" else None,
        deadband_pct=deadband[1] if deadband and deadband[0] == "pct" else None,
        range=entry.range,
        integrity_period_s=merged["integrity_period_s"],
        min_interval_s=merged["min_interval_s"],
        kind=kind,
    )


def combine(inputs: Sequence[Reading], value: object, field: str) -> Reading:
    """A derived sample: ``value`` with the worst quality of its inputs (no value unless all
    are good) and the newest of their times."""
    worst = next((r.quality for r in inputs if not r.quality.is_good), inputs[0].quality)
    ts = max(r.ts for r in inputs)
    return Reading(field, value if worst.is_good else None, worst, ts)  # type: ignore[arg-type]


def event_message(twin: Any, kind: str, body: Mapping[str, Any], now: float) -> Outgoing:
    """An event on ``twin``'s event profile -- ``{kind: body}`` (``wire.openfmb.event_body``),
    dropped last by the outbox. Rule events and command results both go out this way."""
    profile: Profile = twin.event_profile
    s: TwinSpec = twin.spec
    payload = profile.frame(mrid=s.mrid, body=event_body(kind, body), now=now)
    return Outgoing(profile.topic(s.topic_prefix, s.mrid), payload, MessageClass.EVENT)


COMMAND_FIELDS = frozenset({"@Cmd"})
INPUT = "@"  # prefix of point-map fields that feed ``derive`` and are not published


class PointMapTwin:
    """A twin described by its profiles and point map, plus optional derived fields."""

    profiles: ClassVar[tuple[Profile, ...]]
    #: fields ``derive`` may produce, with their report kind ("state" reports any change)
    derived_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, spec: TwinSpec) -> None:
        self.spec = spec
        self._points: list[BoundPoint] = []
        self._profile_of: dict[str, Profile] = {}
        for entry in spec.points:
            if not entry.field.startswith(INPUT):
                self._profile_of[entry.field] = self._find_profile(entry.field)
            point_spec = PointSpec(
                key=f"{spec.mrid}/{entry.field}",
                address=entry.address,
                dtype=entry.dtype,
                table=entry.table,
                order=entry.order,
            )
            self._points.append(BoundPoint(entry.field, point_spec, entry))
        for name in self.derived_fields:
            self._profile_of[name] = self._find_profile(name)
        self._by_key = {bp.spec.key: bp for bp in self._points}
        policies = {
            bp.field: policy_for(bp.entry, spec.reporting, spec.overrides.get(bp.field))
            for bp in self._points
        }
        for name, kind in self.derived_fields.items():
            policies[name] = ReportPolicy(
                kind=kind, integrity_period_s=spec.reporting.integrity_period_s or 300.0
            )
        self._filter = ReportByException(policies)
        self.topics = {p.name: p.topic(spec.topic_prefix, spec.mrid) for p in self.profiles}
        self._samples: dict[str, Reading] = {}
        self._published: dict[str, Reading] = {}  # the samples of published (non-@) fields
        self._available = True
        self._last_update: float | None = None
        self._quality = QualityRules(spec.quality, {e.field: e.range for e in spec.points})
        self.rules: RuleEngine | None = None
        self._outputs: dict[str, Reading] = {}  # the rules' latest outputs
        self._published_outputs: frozenset[str] = frozenset()
        self._changed = True  # new samples since the rules last ran

    def attach_rules(self, engine: RuleEngine) -> None:
        """Run ``engine`` at every report: its published outputs go to the twin's analytics
        profile (``<module>/<Prefix>AnalyticsProfile``), its events to the event profile."""
        if getattr(self, "event_profile", None) is None:
            raise ValueError(f"a {self.spec.kind} twin has no event profile for its rules")
        self.rules = engine
        published = engine.published
        self._published_outputs = frozenset(published)
        if published:
            profile = analytics_profile(self.profiles[0], published)
            self.profiles = (*self.profiles, profile)  # type: ignore[misc]
            self.topics[profile.name] = profile.topic(self.spec.topic_prefix, self.spec.mrid)
            integrity = self.spec.reporting.integrity_period_s or 300.0
            for name, cdc in published.items():
                self._profile_of[name] = profile
                kind = "state" if cdc in ("SPS", "ENS") else "analog"
                deadband = engine.deadband(name)
                self._filter.add(name, ReportPolicy(deadband_abs=deadband, kind=kind,
                                                    integrity_period_s=integrity))  # fmt: skip

    def _find_profile(self, field: str) -> Profile:
        for profile in self.profiles:
            if field in profile.fields:
                return profile
        names = " or ".join(p.name for p in self.profiles)
        raise ValueError(f"{field!r} is not a field of {names}")

    def bound_points(self) -> Sequence[BoundPoint]:
        return self._points

    def ingest(self, readings: Iterable[Reading]) -> None:
        for reading in readings:
            bp = self._by_key.get(reading.point)
            if bp is None:
                continue
            quality = reading.quality
            value = bp.entry.transform(reading.value) if quality.is_good else None
            quality = self._quality.check(bp.field, value, quality, reading.ts)
            sample = Reading(bp.field, value, quality, reading.ts)
            self._samples[bp.field] = sample
            if not bp.field.startswith(INPUT):
                self._published[bp.field] = sample
            self._last_update = reading.ts
            self._changed = True

    def set_available(self, available: bool, now: float) -> None:
        self._available = available
        if not available:
            self.ingest(Reading(bp.spec.key, None, FAILURE, now) for bp in self._points)

    def derive(self, samples: Mapping[str, Reading]) -> dict[str, Reading]:
        """Fields computed from other samples (state machines, derived quantities)."""
        return {}

    def report(self, now: float) -> list[Outgoing]:
        samples = dict(self._published)
        derived = self.derive(self._samples)
        samples.update(derived)
        events: list[Outgoing] = []
        if self.rules is not None and (self._changed or self.rules.waiting(now)):
            events = self._evaluate_rules(derived, now)  # on new samples, or when time is due
            self._changed = False
        for name in self._published_outputs:
            if name in self._outputs:
                samples[name] = self._outputs[name]
        chosen = self._filter.select(samples, now)
        by_profile: dict[str, dict[str, Reading]] = {}
        for name in chosen:
            by_profile.setdefault(self._profile_of[name].name, {})[name] = samples[name]
        out = []
        for profile in self.profiles:
            if profile.name in by_profile:
                payload = profile.build(
                    mrid=self.spec.mrid,
                    name=self.spec.name,
                    samples=by_profile[profile.name],
                    now=now,
                )
                out.append(Outgoing(self.topics[profile.name], payload))
        return events + out  # events first: in the outbox before the telemetry

    def _evaluate_rules(self, derived: Mapping[str, Reading], now: float) -> list[Outgoing]:
        assert self.rules is not None
        outputs, events = self.rules.evaluate({**self._samples, **derived, **self._outputs}, now)
        self._outputs.update(outputs)
        return [event_message(self, kind, body, now) for kind, body in events]

    def state(self) -> TwinState:
        return TwinState(
            mrid=self.spec.mrid,
            name=self.spec.name,
            kind=self.spec.kind,
            device=self.spec.device,
            available=self._available,
            last_update=self._last_update,
            points={**self._samples, **self.derive(self._samples), **self._outputs},
            units={
                **{bp.field: bp.entry.units for bp in self._points},
                **(self.rules.units if self.rules else {}),
            },
        )
