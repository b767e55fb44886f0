"""``edgetwin discover dlms ADDRESS``: associate with a DLMS/COSEM meter, read its object list,
print what it holds -- the clock (and its drift from ours), registers by OBIS code with value,
scaler and unit, profiles with their capture objects, period and entries, event logs -- as TOML
comments, then a ready config section: the device with the profiles the data concentrator
collects (the load profile: the profile with the shortest period under a day; billing: the
daily one; event logs: profiles captured on events) and a meter twin whose point map maps the
registers OpenFMB names (energy import / export, phase voltages, currents, power).

Only the given meter is contacted; nothing is written anywhere (not even the meter's clock).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from edgetwin.core.tomlwrite import toml_value
from edgetwin.drivers.dlms import DlmsDriver, scaled

#: OBIS (value group C.D.E) -> OpenFMB meter reading field
FIELDS = {
    "1.8.0": "readingMMTR.SupWh", "2.8.0": "readingMMTR.DmdWh",
    "3.8.0": "readingMMTR.SupVArh", "4.8.0": "readingMMTR.DmdVArh",
    "32.7.0": "readingMMXU.PhV.phsA", "52.7.0": "readingMMXU.PhV.phsB",
    "72.7.0": "readingMMXU.PhV.phsC", "31.7.0": "readingMMXU.A.phsA",
    "51.7.0": "readingMMXU.A.phsB", "71.7.0": "readingMMXU.A.phsC",
    "1.7.0": "readingMMXU.W.net", "14.7.0": "readingMMXU.Hz",
}  # fmt: skip
COUNTER_FIELDS = {"readingMMTR.SupWh", "readingMMTR.DmdWh", "readingMMTR.SupVArh",
                  "readingMMTR.DmdVArh"}  # fmt: skip


@dataclass
class MeterFound:
    clock: float | None = None
    drift_s: float | None = None
    registers: list[tuple[str, Any, int, str | None]] = field(default_factory=list)
    profiles: list[tuple[str, int, list[tuple[int, str, int]], int | None]] = field(
        default_factory=list
    )
    others: list[tuple[int, str]] = field(default_factory=list)


async def survey(driver: DlmsDriver) -> MeterFound:
    """Associate, read the object list and every object's description; release."""
    found = MeterFound()
    await driver.connect()
    try:
        when = await _maybe(driver.meter_time())
        if when is not None:
            found.clock, found.drift_s = when.timestamp(), driver.offset_s
        for class_id, code in await driver.object_list():
            if class_id in (3, 4):
                value = await _maybe(driver.get_value(class_id, code, 2))
                scaler, unit = await driver.scaler_unit(class_id, code)
                found.registers.append((code, scaled(value, scaler), scaler, unit))
            elif class_id == 7:
                period, columns = await driver.shape(code)
                entries = await _maybe(driver.get_value(7, code, 7))
                found.profiles.append((code, period, columns,
                                       entries if isinstance(entries, int) else None))  # fmt: skip
            elif class_id not in (8, 15):
                found.others.append((class_id, code))
    finally:
        await driver.close()
    return found


async def _maybe(call: Any) -> Any:
    from edgetwin.core.errors import DeviceRejected

    try:
        return await call
    except DeviceRejected:
        return None


def roles(found: MeterFound) -> dict[str, Any]:
    """Which profile is the load profile, the billing profile, the event logs."""
    interval = [(p, code) for code, p, _, _ in found.profiles if 0 < p < 86400]
    daily = [code for code, p, _, _ in found.profiles if p == 86400]
    logs = [code for code, p, cols, _ in found.profiles if p == 0 and len(cols) >= 2]
    return {"load_profile": min(interval)[1] if interval else None,
            "billing_profile": daily[0] if daily else None, "event_logs": logs}  # fmt: skip


def meter_section(device: dict[str, Any], found: MeterFound) -> str:
    out = []
    if found.clock is not None:
        moment = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(found.clock))
        out.append(f"# clock {moment} UTC, {found.drift_s:+.1f} s from this machine")
    out.append(f"# {len(found.registers)} registers")
    out.append(f"# {'OBIS':<16} {'value':>14}  scaler  unit")
    for code, value, scaler, unit in found.registers:
        out.append(f"# {code:<16} {value!s:>14}  {scaler:>6}  {unit or '-'}")
    out.append(f"# {len(found.profiles)} profiles")
    for code, period, columns, entries in found.profiles:
        kind = f"every {period} s" if period else "on events"
        held = f", {entries} entries" if entries is not None else ""
        cols = ", ".join(f"{c}/{o}/{a}" for c, o, a in columns)
        out.append(f"# {code:<16} {kind}{held}: {cols}")
    for class_id, code in found.others:
        out.append(f"# {code:<16} class {class_id}")
    name = str(device["name"])
    settings = {**device, **{k: v for k, v in roles(found).items() if v}}
    out += ["", "[[devices]]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    mapped = [(FIELDS[c.split(".", 2)[2].rsplit(".", 1)[0]], c) for c, *_ in found.registers
              if c.split(".", 2)[2].rsplit(".", 1)[0] in FIELDS]  # fmt: skip
    out += ["", "[[twins]]", f'mrid = "{uuid.uuid4()}"', 'kind = "meter"',
            f"name = {toml_value(f'Meter {name}')}", f"device = {toml_value(name)}",
            "points = ["]  # fmt: skip
    for fieldname, code in mapped:
        counter = ', kind = "counter"' if fieldname in COUNTER_FIELDS else ""
        out.append(
            f"    {{ field = {toml_value(fieldname)}, address = {toml_value(code)}{counter} }},"
        )
    out.append("]")
    return "\n".join(out) + "\n"
