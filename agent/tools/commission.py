"""``edgetwin commission``: check a twin's device on site and record the twin as commissioned.

Checks, in order, against the device itself (not through a running agent): the device answers
(connect), every point of the twin is readable (good quality), and every value lies within its
point's physical ``range`` from the point map. Only when all pass is the twin recorded in
``commissioning.json``; an uncommissioned twin publishes but refuses control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgetwin.agent.runtime.config import AgentConfig
from edgetwin.agent.runtime.localstate import record_commissioning
from edgetwin.core.errors import ConfigError, DeviceError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    mrid: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


async def commission(config: AgentConfig, mrid: str, *, record: bool = True) -> Result:
    twin = next((t for t in config.twins if t.spec.mrid == mrid), None)
    if twin is None:
        known = ", ".join(t.spec.mrid for t in config.twins)
        raise ConfigError([f"no twin with mRID {mrid} (twins: {known})"])
    device = next(d for d in config.devices if d.name == twin.spec.device)
    every = list(twin.bound_points())
    driver: Any = config.driver_classes[device.name](device, [bp.spec for bp in every], {})
    points = [bp for bp in every if bp.polled]  # a command point has nothing to read
    result = Result(mrid)
    try:
        await driver.connect()
    except (DeviceError, OSError, TimeoutError) as err:
        result.checks.append(Check("device reachable", False, str(err)))
        return result
    try:
        result.checks.append(Check("device reachable", True, device.name))
        readings = {r.point: r for r in await driver.read([bp.spec for bp in points])}
    except (DeviceError, OSError, TimeoutError) as err:
        result.checks.append(Check("points readable", False, str(err)))
        return result
    finally:
        await driver.close()
    bad = [bp.field for bp in points if not readings[bp.spec.key].quality.is_good]
    result.checks.append(Check("points readable", not bad, ", ".join(bad) or f"{len(points)} ok"))
    outside = []
    for bp in points:
        value, rng = readings[bp.spec.key].value, bp.entry.range
        if rng is None or value is None or isinstance(value, bool):
            continue
        scaled = bp.entry.transform(value)
        if not rng[0] <= float(scaled) <= rng[1]:  # type: ignore[arg-type]
            outside.append(f"{bp.field}={scaled} not in [{rng[0]}, {rng[1]}]")
    result.checks.append(
        Check("values plausible", not outside, "; ".join(outside) or "all in range")
    )
    if result.ok and record:
        record_commissioning(
            config.agent.data_dir,
            mrid,
            [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks],
        )
    return result
