"""``edgetwin discover dnp3`` / ``iec104`` / ``iec62056-21``: ask a device what it has, print it.

Both connect as the agent's driver would (DNP3: start-up and an integrity poll; IEC 104: STARTDT
and a general and counter interrogation), take every point the device reported and print it --
type, index or IOA, value, quality -- as TOML comments, followed by a ready config section: the
device, a breaker twin for every double point (DNP3 ``dbi:N`` with the CROB on ``bo:N`` when the
outstation has that output; IEC 104 ``dp:IOA``, whose double command's IOA the station does not
announce, so it is left for the engineer to fill in), and one generic twin holding the feeder
measurements and counters. ``iec62056-21`` prints one readout's data sets and a generic twin of
its numeric registers. Nothing is written anywhere; only the given address is contacted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from edgetwin.core.models import Quality, Value
from edgetwin.core.tomlwrite import toml_value

Found = tuple[str, int, Value, Quality, float]  # kind, index / IOA, value, quality, time

MEASUREMENTS = {"ai", "ao", "c", "fc", "float", "sva", "nva", "it", "st"}
COUNTERS = {"c", "fc", "it"}
POINT = '{ field = "%s", address = "%s", dtype = "%s", kind = "state" },'


async def interrogate(driver: Any) -> list[Found]:
    """Connect ``driver`` (its connect waits for the integrity poll / interrogation), take what
    was reported, close. Raises ``DeviceError`` when the device does not answer."""
    await driver.connect()
    try:
        found: list[Found] = driver.reported()
        return found
    finally:
        await driver.close()


def describe(quality: Quality) -> str:
    if quality.is_good:
        return "good"
    extra = [*sorted(quality.detail)]
    extra += ["substituted"] if quality.source != "process" else []
    extra += ["operatorBlocked"] if quality.operator_blocked else []
    return quality.validity.value + (f" ({', '.join(extra)})" if extra else "")


def points_table(found: Sequence[Found], index_name: str) -> list[str]:
    lines = [
        f"# {len(found)} points reported",
        f"# {'type':<6} {index_name:>8}  {'value':>14}  quality",
    ]
    for kind, index, value, quality, _ in found:
        shown = "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"# {kind:<6} {index:>8}  {shown:>14}  {describe(quality)}")
    return lines


def scada_section(protocol: str, device: dict[str, Any], found: Sequence[Found]) -> str:
    """The config section for ``found``: the device, breakers, and the feeder measurements."""
    name = str(device["name"])
    out = [*points_table(found, "IOA" if protocol == "iec104" else "index"), "", "[[devices]]"]
    out += [f"{key} = {toml_value(value)}" for key, value in device.items()]
    kinds = {(kind, index) for kind, index, *_ in found}
    double = "dbi" if protocol == "dnp3" else "dp"
    for kind, index, *_ in found:
        if kind != double:
            continue
        out += ["", "[[twins]]", f'mrid = "{uuid.uuid4()}"', 'kind = "breaker"',
                f"name = {toml_value(f'Breaker {kind}:{index}')}", f"device = {toml_value(name)}",
                "points = [", "    " + POINT % ("@DPos", f"{kind}:{index}", "uint16")]  # fmt: skip
        if protocol == "dnp3" and ("bo", index) in kinds:
            out.append("    " + POINT % ("@Cmd", f"bo:{index}", "bool"))
        elif protocol == "iec104":
            out.append("    # " + POINT % ("@Cmd", "dc:<IOA of its double command>", "bool"))
        out.append("]")
    measured = [(kind, index) for kind, index, *_ in found if kind in MEASUREMENTS]
    if measured:
        out += ["", "[[twins]]", f'mrid = "{uuid.uuid4()}"', 'kind = "generic"',
                f"name = {toml_value(f'{name} feeder measurements')}",
                f"device = {toml_value(name)}", "points = ["]  # fmt: skip
        for kind, index in measured:
            nature = ', kind = "counter"' if kind in COUNTERS else ""
            dtype = "int32" if kind in COUNTERS or kind in ("sva", "st") else "float32"
            out.append(f'    {{ field = "{kind}_{index}", address = "{kind}:{index}", '
                       f'dtype = "{dtype}"{nature} }},')  # fmt: skip
        out.append("]")
    return "\n".join(out) + "\n"


def readout_section(port: str, ident: str, data: dict[str, tuple[str, str]]) -> str:
    """``discover iec62056-21``: the readout's data sets, and a device with a generic twin of
    every numeric register (field names from the OBIS codes)."""
    out = [f"# meter {ident}: {len(data)} data sets", f"# {'OBIS':<14} {'value':>16}  unit"]
    out += [f"# {code:<14} {value:>16}  {unit}" for code, (value, unit) in data.items()]
    name = "meter-" + re.sub(r"[^A-Za-z0-9]+", "-", port.rsplit("/", 1)[-1]).strip("-")
    out += ["", "[[devices]]", f"name = {toml_value(name)}", 'driver = "iec62056_21"',
            f"serial_port = {toml_value(port)}", "poll_interval_s = 60.0", "",
            "[[twins]]", f'mrid = "{uuid.uuid4()}"', 'kind = "generic"',
            f"name = {toml_value(f'{ident} registers')}", f"device = {toml_value(name)}",
            "points = ["]  # fmt: skip
    for code, (value, unit) in data.items():
        if _is_number(value):
            field = "obis_" + re.sub(r"[^0-9]+", "_", code).strip("_")
            units = f", units = {toml_value(unit)}" if unit else ""
            counter = ', kind = "counter"' if unit.lower().endswith("wh") else ""
            entry = f"field = {toml_value(field)}, address = {toml_value(code)}{units}{counter}"
            out.append(f"    {{ {entry} }},")
    out.append("]")
    return "\n".join(out) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
