"""From a twin's config to its rule engine and interlocks, validated offline.

``build`` takes the twin's raw ``analytics`` and ``rules`` sections and ``interlocks``, and the
points the twin has (point-map fields, derived fields); it returns the engine -- analytics first,
in a fixed order (outage, voltage, tamper, loading, demand, demand response), then the
configured rules in file order -- and the compiled interlocks, or the problems found, each as
(key path below the twin, message). An expression may read only points defined before it: the
twin's own, then the analytics' outputs, then earlier rules' outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgetwin.core import registry
from edgetwin.core.errors import PluginError, validation_problems
from edgetwin.edge_rules.alarm import FloodPolicy
from edgetwin.edge_rules.analytics import (
    LoadingRule,
    LoadingSettings,
    OutageRule,
    OutageSettings,
    TamperRule,
    TamperSettings,
    VoltageRule,
    VoltageSettings,
)
from edgetwin.edge_rules.demand import DemandRule, DemandSettings, DrEvent, SettlementRule
from edgetwin.edge_rules.engine import Rule, RuleEngine
from edgetwin.edge_rules.expr import ExpressionError
from edgetwin.edge_rules.interlock import Interlock, InterlockSettings
from edgetwin.edge_rules.kinds import RuleSettings

Problem = tuple[tuple[int | str, ...], str]
PHASES = ("phsA", "phsB", "phsC")


class FloodSettings(BaseModel):
    """Agent-wide: an alarm raised more than ``max_raises`` times in ``window_s`` is chattering."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_raises: int = Field(5, ge=1)
    window_s: float = Field(60.0, gt=0)


class AnalyticsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    nominal_v: float | None = Field(None, gt=0, description="line-to-neutral service voltage")
    voltage_fields: tuple[str, str, str] = tuple(f"readingMMXU.PhV.{p}" for p in PHASES)  # type: ignore[assignment]
    current_fields: tuple[str, str, str] = tuple(f"readingMMXU.A.{p}" for p in PHASES)  # type: ignore[assignment]
    import_counter: str = "readingMMTR.SupWh"
    export_counter: str | None = "readingMMTR.DmdWh"
    outage: OutageSettings | None = None
    voltage: VoltageSettings | None = None
    tamper: TamperSettings | None = None
    loading: LoadingSettings | None = None
    demand: DemandSettings | None = None
    demand_response: list[DrEvent] = Field(default_factory=list)


def _key(name: str, settings: Any) -> str:
    text = settings.model_dump_json() if isinstance(settings, BaseModel) else repr(settings)
    return f"{name}:{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _pydantic(prefix: tuple[int | str, ...], err: ValidationError) -> list[Problem]:
    return [((*prefix, *loc), msg) for loc, msg in validation_problems(err)]


def _analytics(
    raw: dict[str, Any], known: set[str], flood: FloodPolicy, problems: list[Problem]
) -> list[Rule]:
    try:
        a = AnalyticsSettings.model_validate(raw)
    except ValidationError as err:
        problems.extend(_pydantic(("analytics",), err))
        return []

    def need(key: str, *fields: str | None) -> bool:
        ok = True
        for f in fields:
            if f is not None and f not in known:
                problems.append((("analytics", key), f"unknown point {f!r}"))
                ok = False
        return ok

    def nominal(key: str) -> float | None:
        if a.nominal_v is None:
            problems.append((("analytics", "nominal_v"), f"required by analytics.{key}"))
        return a.nominal_v

    rules: list[Rule] = []
    if a.outage and need("voltage_fields", *a.voltage_fields) and (v := nominal("outage")):
        rules.append(OutageRule(a.outage, v, a.voltage_fields, _key("outage", a.outage), flood))
    if a.voltage and need("voltage_fields", *a.voltage_fields) and (v := nominal("voltage")):
        rules.append(VoltageRule(a.voltage, v, a.voltage_fields, _key("voltage", a.voltage), flood))
    if a.tamper and (v := nominal("tamper")):
        t = a.tamper
        export = a.export_counter if t.consumption_only else None
        fields_ok = need("voltage_fields", *a.voltage_fields) & need(
            "current_fields", *a.current_fields
        )
        if t.consumption_only and export is None:
            problems.append(
                (("analytics", "export_counter"), "required by tamper.consumption_only")
            )
        elif fields_ok and need("export_counter", export) and need("tamper", t.flag):
            rules.append(TamperRule(t, v, a.voltage_fields, a.current_fields, export or "",
                                    _key("tamper", t), flood))  # fmt: skip
    if a.loading and need("loading", a.loading.va_field):
        rules.append(LoadingRule(a.loading, _key("loading", a.loading), flood))
    if a.demand and need("import_counter", a.import_counter):
        rules.append(DemandRule(a.demand, a.import_counter, _key("demand", a.demand)))
    if a.demand_response and need("import_counter", a.import_counter):
        export = a.export_counter if a.export_counter in known else None
        key = _key("demand_response", a.import_counter)  # events may be added: reads kept
        rules.append(SettlementRule(a.demand_response, a.import_counter, export, key))
    for rule in rules:
        known.update(rule.outputs)
    return rules


def _rule(
    j: int, raw: dict[str, Any], known: set[str], flood: FloodPolicy, problems: list[Problem]
) -> Rule | None:
    where: tuple[int | str, ...] = ("rules", j)
    kind = raw.get("kind")
    if not isinstance(kind, str):
        problems.append(((*where, "kind"), "required: threshold, derived, rate or stats"))
        return None
    try:
        cls = registry.load(registry.RULES, kind)
    except PluginError as err:
        problems.append(((*where, "kind"), str(err)))
        return None
    try:
        settings: RuleSettings = cls.settings.model_validate(raw)
    except ValidationError as err:
        problems.extend(_pydantic(where, err))
        return None
    name = settings.name
    if name in known:
        problems.append(((*where, "name"), f"{name!r} is already a point of this twin"))
        return None
    try:
        rule: Rule = cls(settings, _key(name, settings), flood, frozenset(known))
    except ExpressionError as err:
        problems.append(((*where, "expr"), f"rule {name!r}: {err}"))
        return None
    except ValueError as err:
        problems.append((where, f"rule {name!r}: {err}"))
        return None
    known.update(rule.outputs)
    return rule


def build(
    points: Collection[str],
    analytics: dict[str, Any] | None,
    rules: Sequence[dict[str, Any]],
    interlocks: Sequence[InterlockSettings],
    flood: FloodSettings,
) -> tuple[RuleEngine | None, list[Interlock], list[Problem]]:
    """The twin's engine (None without analytics or rules), interlocks, and problems."""
    problems: list[Problem] = []
    policy = FloodPolicy(flood.max_raises, flood.window_s)
    known = set(points)
    built = _analytics(analytics, known, policy, problems) if analytics else []
    for j, raw in enumerate(rules):
        rule = _rule(j, raw, known, policy, problems)
        if rule is not None:
            built.append(rule)
    locks = []
    for j, lock in enumerate(interlocks):
        try:
            locks.append(Interlock.build(lock, known))
        except ExpressionError as err:
            key = "when" if lock.when is not None else "field"
            problems.append((("interlocks", j, key), str(err)))
    return (RuleEngine(built) if built else None), locks, problems
